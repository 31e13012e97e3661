"""The whole embedded world behind `immich-tui --demo`, the TUI tests and the TUI benchmarks.

A generated Immich library, a local S3 endpoint (moto on 127.0.0.1) with a bucket, a simulated
cluster (kmock's emulator) seeded with the CronJob, its Job history, the Immich server pod and a CNPG
cluster, and the controllers that make a triggered Job really run `immich-sync backup`.

The bucket starts with a fortnight of nightly run reports matching the seeded Job history. They
describe the CronJob's runs (library root `/library`), so the sync engine never takes them as
evidence about the local sample library: its first real run lists everything.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import yaml

from immich_tui.emulator import EmulatorServer
from immich_tui.sandbox import DEMO_KEY_ID, DEMO_SECRET, LocalS3, make_sample_library
from immich_tui.sandbox_cluster import BackupController, JobController, SyncTarget, World, seed
from immich_tui.services import clock
from immich_tui.services.status import Target
from sync_engine.config import S3Settings
from sync_engine.models import FolderStats
from sync_engine.report import RunReport, report_key, write_report
from sync_engine.store import ObjectStore, StaticCredentials

BUCKET = "immich-offsite"
MEDIA_PREFIX = "immich/media/"
REPORT_PREFIX = "immich/sync-reports/"
CRONJOB_ROOT = "/library"


def history_reports(nights: int, failed_nights: tuple[int, ...], now: dt.datetime) -> list[RunReport]:
    """Nightly reports shaped like the seeded Jobs: 02:30 UTC, a few MB a night, one failed night."""
    last = now.replace(hour=2, minute=30, second=0, microsecond=0)
    if last > now:
        last -= dt.timedelta(days=1)
    reports = []
    for night in range(nights):
        start = last - dt.timedelta(days=night)
        seed_n = (night * 7919) % 97
        uploaded = 1 + seed_n % 6  # a few photos a night, on the scale of the sample library
        photo_bytes = uploaded * (180_000 + 2_500 * seed_n)
        failed = night in failed_nights
        age = night // 2  # the library grew by about one photo every other night
        library = FolderStats(files=103 - age, bytes=43_100_000 - 150_000 * age)
        library.uploaded, library.uploaded_bytes = (0, 0) if failed else (uploaded, photo_bytes)
        library.unchanged = library.files - library.uploaded
        upload = FolderStats(files=97 - age, bytes=4_580_000 - 50_000 * age)
        upload.uploaded = 0 if failed else 1 + seed_n % 2
        upload.uploaded_bytes = upload.uploaded * 50_000
        upload.unchanged = upload.files - upload.uploaded
        profile = FolderStats(files=3, bytes=80_000, unchanged=3, unchanged_bytes=80_000)
        per_folder = {"upload": upload, "library": library, "profile": profile}
        totals = FolderStats()
        for stats in per_folder.values():
            totals.add(stats)
        seconds = 1.5 + seed_n * 0.05
        reports.append(
            RunReport(
                run_id=uuid.UUID(int=night + 1).hex[:8],
                engine_version="0.1.0",
                command="backup",
                started_at=clock.iso(start) or "",
                finished_at=clock.iso(start + dt.timedelta(seconds=seconds)) or "",
                duration_seconds=seconds,
                bucket=BUCKET,
                media_prefix=MEDIA_PREFIX,
                library_root=CRONJOB_ROOT,
                folders=["upload", "library", "profile"],
                status="aborted" if failed else "ok",
                exit_code=3 if failed else 0,
                totals=totals,
                per_folder=per_folder,
                listing="full" if night % 7 == 0 else "incremental",
                error="S3 unreachable after 8 consecutive failures" if failed else "",
            )
        )
    return reports


class Sandbox:
    """Start with `with Sandbox() as box:`; `box.target` and `box.env` are what the TUI is given."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        world: World | None = None,
        initial_sync: bool = True,
        history_nights: int = 14,
    ) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="immich-sandbox-"))
        self.world = world or World()
        self.initial_sync = initial_sync
        self.history_nights = history_nights
        self.s3 = LocalS3()
        self.server = EmulatorServer()
        self.kubeconfig = self.root / "kubeconfig"
        self.library = self.root / "library"

    @property
    def target(self) -> Target:
        return Target(kubeconfig=str(self.kubeconfig), context="sandbox")

    @property
    def env(self) -> dict[str, str]:
        """The operator's environment: no AWS keys (S3 is read through the restorer Secret)."""
        keep = ("PATH", "HOME", "LANG", "TERM", "TMPDIR", "IMMICH_BACKUP_NOW", "COLORTERM")
        return {k: v for k, v in os.environ.items() if k in keep} | {
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }

    def sync_target(self) -> SyncTarget:
        target = SyncTarget(self.s3.endpoint, BUCKET, MEDIA_PREFIX, self.library, DEMO_KEY_ID, DEMO_SECRET)
        target.restore_root = self.root / "restored-volume"  # the PVC a media restore Job writes to
        return target

    def store(self) -> ObjectStore:
        settings = S3Settings(bucket=BUCKET, region="us-east-1", endpoint_url=self.s3.endpoint)
        return ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))

    def start(self) -> Sandbox:
        if not self.library.exists():
            make_sample_library(self.library)
        self.s3.start()
        self.s3.client().create_bucket(Bucket=BUCKET)
        store = self.store()
        failed = tuple(d for d in self.world.failed_job_days if d < self.history_nights)
        for report in history_reports(self.history_nights, failed, clock.now()):
            write_report(store, report_key(REPORT_PREFIX, report), report, b"")
        if self.initial_sync:
            self.sync()
            self.add_new_photos()
        self.server.start()
        restorer = {
            "AWS_ACCESS_KEY_ID": DEMO_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DEMO_SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
            "BUCKET_NAME": BUCKET,
            "MEDIA_PREFIX": MEDIA_PREFIX,
        }
        seed(self.server, replace(self.world, library=self.library, restorer=restorer))
        self.jobs = JobController(self.server, self.sync_target())
        self.backups = BackupController(self.server, seconds=2.0)
        self.kubeconfig.write_text(yaml.safe_dump(self.server.kubeconfig()))
        return self

    def add_new_photos(self, count: int = 3) -> None:
        """Photos taken since the last sync: the Library tab shows them pending, `t` uploads them."""
        rng = random.Random(count)
        when = time.time()  # after the first sync started, so they count as pending
        folder = self.library / "library" / "7f3c2a10-admin" / "2026" / "11"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            path = folder / f"IMG_{9001 + n}.jpg"
            path.write_bytes(rng.randbytes(rng.randint(150_000, 400_000)))
            os.utime(path, (when, when))

    def sync(self) -> int:
        """One real `immich-sync backup` of the sample library into the bucket."""
        done = subprocess.run(
            [sys.executable, "-m", "sync_engine", "backup", "--quiet", "--no-progress"],
            env=self.sync_target().env(),
            capture_output=True,
            check=False,
        )
        return done.returncode

    def stop(self) -> None:
        if hasattr(self, "jobs"):
            self.jobs.join(30)
            self.backups.join(30)
        self.server.stop()
        self.s3.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
