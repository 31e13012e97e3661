"""The whole embedded world behind `immich-tui --demo`, the TUI tests and the TUI benchmarks.

A generated Immich library, a local S3 endpoint (moto on 127.0.0.1) with a bucket, a simulated
cluster (kmock's emulator) seeded with the CronJob, its Job history, the Immich server pod and a CNPG
cluster, and the controllers that make a triggered Job really run `immich-sync backup`.

The bucket starts with a fortnight of nightly run reports matching the seeded Job history. They
describe the CronJob's runs (library root `/library`), so the sync engine never takes them as
evidence about the local sample library: its first real run lists everything.
It also holds the database's Barman Cloud archive (base backups and WAL) that the seeded CNPG Backups
describe, so `db catalog` reads the same history `db backups` lists.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml

from immich_tui.demo.controllers import BackupController, JobController, SyncTarget
from immich_tui.demo.emulator import EmulatorServer
from immich_tui.demo.fixtures import (
    BUCKET,
    MEDIA_PREFIX,
    REPORT_PREFIX,
    World,
    barman_archive,
    history_reports,
    seed,
)
from immich_tui.demo.library import make_sample_library
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.services import clock
from immich_tui.services.status import Target
from sync_engine.config import S3Settings
from sync_engine.report import report_key, write_report
from sync_engine.store import ObjectStore, StaticCredentials


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
        # versioned, as deploy/README.md sets a bucket up: restore --as-of works in the sandbox too
        self.s3.client().put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        store = self.store()
        failed = tuple(d for d in self.world.failed_job_days if d < self.history_nights)
        for report in history_reports(self.history_nights, failed, clock.now()):
            write_report(store, report_key(REPORT_PREFIX, report), report, b"", None)
        with ThreadPoolExecutor(max_workers=1) as background:
            # the database archive is uploaded while the first sync (a process of its own) runs: start-up time
            archived = background.submit(self.archive_database) if self.world.cnpg else None
            if self.initial_sync:
                self.sync()
                self.add_new_photos()
            if archived is not None:
                archived.result()
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

    def archive_database(self) -> None:
        """What CNPG's barman-cloud would have written: base backups and WAL matching the seeded Backups, so
        `db catalog` reads a real Barman archive. Uploaded by several threads: it is on the demo's start-up path."""
        client = self.s3.client()
        objects = barman_archive(clock.now())
        with ThreadPoolExecutor(max_workers=8) as pool:
            for done in [pool.submit(client.put_object, Bucket=BUCKET, Key=k, Body=v) for k, v in objects.items()]:
                done.result()

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
