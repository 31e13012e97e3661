"""No file may be left out of the backup silently: every path below once ended in exit 0 with a photo
missing from S3 (or a wrong object kept forever). Each test is the reproduction."""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.backup import run
from sync_engine.cli import build_parser
from sync_engine.report import RunReport
from sync_engine.store import ObjectStore
from tests.conftest import list_keys, open_multipart_uploads
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
YEAR = 365 * 86_400


def _age_the_copy() -> None:
    """The sample was copied a moment ago; let every ctime get older than the racy window."""
    time.sleep(2.2)


def _backup_in_process(argv: list[str], clock: Callable[[], float]) -> RunReport:
    """A backup whose clock is the pod's: a node whose clock disagrees with the one stamping files."""
    from sync_engine.config import sync_settings

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = action.choices["backup"]
    settings = sync_settings(parser.parse_args(argv), os.environ)
    return run(settings, ObjectStore(settings.s3), clock=clock)


def test_a_photo_with_a_future_mtime_is_uploaded(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    """A phone with a wrong clock: Immich sets the original's mtime to its fileModifiedAt."""
    photo = sample.root / "upload/7f3c2a10-admin/future.jpg"
    photo.write_bytes(b"f" * 4000)
    later = time.time() + YEAR
    os.utime(photo, (later, later))
    time.sleep(1.2)  # written (ctime) longer ago than the settle window below
    result = run_sync("backup", "-o", "json", "--settle-seconds", "1")
    assert result.code == 0, result.err
    assert result.json()["totals"]["deferred"] == 0
    assert PREFIX + "upload/7f3c2a10-admin/future.jpg" in list_keys(s3, bucket, PREFIX)


def test_a_settle_window_lowered_between_runs_still_uploads_the_deferred_file(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    _age_the_copy()
    assert run_sync("backup", "--settle-seconds", "0").code == 0
    fresh = sample.root / "upload/7f3c2a10-admin/fresh.jpg"
    fresh.write_bytes(b"n" * 3000)
    time.sleep(2.5)  # older than any margin a run start (whole seconds in report names) could leave
    first = run_sync("backup", "-o", "json", "--settle-seconds", "60").json()
    assert first["totals"]["deferred"] == 1
    second = run_sync("backup", "-o", "json", "--settle-seconds", "0").json()
    assert second["totals"]["uploaded"] == 1, second["totals"]
    assert PREFIX + "upload/7f3c2a10-admin/fresh.jpg" in list_keys(s3, bucket, PREFIX)


def test_pod_clock_ahead_of_the_file_clock_still_finds_a_new_file(
    sync_env: dict[str, str], s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """The clock stamping files (NFS server, another node) runs 120 s behind the pod's."""
    _age_the_copy()
    ahead = lambda: time.time() + 120  # noqa: E731
    first = _backup_in_process(["--settle-seconds", "0"], ahead)
    assert first.status == "ok" and first.listing == "full"
    new = sample.root / "library/7f3c2a10-admin/2024/01/IMG_late.jpg"
    new.write_bytes(b"l" * 6000)
    second = _backup_in_process(["--settle-seconds", "0"], ahead)
    assert second.totals.uploaded == 1, second.totals
    assert PREFIX + "library/7f3c2a10-admin/2024/01/IMG_late.jpg" in list_keys(s3, bucket, PREFIX)


def test_pod_clock_behind_the_file_clock_defers_a_new_file_at_most_once(
    sync_env: dict[str, str], s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """The file clock runs 120 s ahead: a new file's ctime is in the pod's future. Its age cannot be
    judged, so the first run defers it; the next run finds it unchanged and uploads it."""
    _age_the_copy()
    behind = lambda: time.time() - 120  # noqa: E731
    assert _backup_in_process(["--settle-seconds", "0"], behind).status == "ok"
    new = sample.root / "upload/7f3c2a10-admin/from-the-future.jpg"
    new.write_bytes(b"a" * 6000)
    first = _backup_in_process(["--settle-seconds", "60"], behind)
    assert first.totals.deferred == 1 and first.totals.uploaded == 0
    second = _backup_in_process(["--settle-seconds", "60"], behind)
    assert second.totals.uploaded == 1 and second.totals.deferred == 0, second.totals
    assert PREFIX + "upload/7f3c2a10-admin/from-the-future.jpg" in list_keys(s3, bucket, PREFIX)


@pytest.mark.parametrize("full_listing_days", ["7", "0"])
def test_same_size_old_mtime_new_bytes_is_uploaded(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary, full_listing_days: str
):
    """`cp -p`, `rsync -a`, a restore from elsewhere: new bytes under an old mtime and the same size."""
    _age_the_copy()
    assert run_sync("backup").code == 0
    victim = sample.root / "library/7f3c2a10-admin/2024/01/IMG_0002.jpg"
    st = victim.stat()
    replacement = sample.root.parent / "replacement.jpg"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x5A
    replacement.write_bytes(bytes(data))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy2(replacement, victim)  # what `cp -p` does: same size, the old mtime
    assert victim.stat().st_mtime_ns == st.st_mtime_ns and victim.stat().st_size == st.st_size
    result = run_sync("backup", "-o", "json", "--full-listing-days", full_listing_days)
    assert result.code == 0
    assert result.json()["totals"]["uploaded"] == 1
    stored = s3.client().get_object(Bucket=bucket, Key=PREFIX + "library/7f3c2a10-admin/2024/01/IMG_0002.jpg")
    assert stored["Body"].read() == bytes(data)


def test_an_upload_s3_did_not_confirm_is_sent_again_and_fails_verify(
    run_sync, proxy: Proxy, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    victim = "upload/7f3c2a10-admin/b7/fc/b7fc3e9c3319bebc.jpg"
    proxy.rules.append(fail(lambda r: r.op == "PutObject" and r.key.endswith(victim), ("etag", "0" * 32)))
    first = run_sync("backup", "-o", "json")
    assert first.code == 1 and first.json()["totals"]["failed"] == 1
    assert run_sync("verify").code == 1  # the key's last upload was never confirmed
    proxy.rules.clear()
    second = run_sync("backup", "-o", "json").json()
    assert second["totals"]["uploaded"] == 1 and second["status"] == "ok", second["totals"]
    assert [r.key for r in proxy.ops("PutObject") if r.key.startswith(PREFIX)][-1].endswith(victim)
    assert run_sync("verify").code == 0


@pytest.mark.parametrize(
    "damage",
    ["empty-root", "missing-marker", "symlinked-folder"],
)
def test_a_library_that_is_not_mounted_is_refused(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary, tmp_path: Path, damage: str
):
    if damage == "empty-root":
        shutil.rmtree(sample.root)
        sample.root.mkdir()
    elif damage == "missing-marker":
        (sample.root / "library/.immich").unlink()
    else:
        elsewhere = tmp_path / "elsewhere"
        shutil.move(sample.root / "profile", elsewhere)
        (sample.root / "profile").symlink_to(elsewhere)
    result = run_sync("backup", "-o", "json")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "nothing was uploaded" in result.err
    assert list_keys(s3, bucket, PREFIX) == {}
    reports = [k for k in list_keys(s3, bucket, "immich/sync-reports/") if k.endswith(".json")]
    assert len(reports) == 1 and "-refused-" in reports[0]
    assert run_sync("plan").code == 2


def test_a_touched_multipart_file_is_checked_with_the_part_size_it_was_sent_with(
    run_sync, proxy: Proxy, monkeypatch: pytest.MonkeyPatch, sample: SampleLibrary
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    assert run_sync("backup", "--part-size-mib", "7", "--multipart-threshold-mib", "7").code == 0
    video = next(p for p in sample.root.rglob("*") if p.is_file() and p.stat().st_size > 16 << 20)
    time.sleep(1.1)  # S3's LastModified has one-second resolution: the touch is newer than the upload
    os.utime(video)  # touch
    proxy.reset()
    result = run_sync("backup", "-o", "json", "--settle-seconds", "0", "--part-size-mib", "16")
    assert result.code == 0
    assert result.json()["totals"]["uploaded"] == 0 and result.json()["totals"]["by_reason"]["changed"] == 1
    assert proxy.counts["UploadPart"] == proxy.counts["CreateMultipartUpload"] == 0


def test_a_file_changed_through_mmap_without_new_times_is_uploaded_next_run(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """Stores to an already-dirty mmap page change no time stamp. The upload that raced such a writer
    is confirmed as racy, so the next run compares the bytes again."""
    _age_the_copy()
    assert run_sync("backup").code == 0
    path = sample.root / "upload/7f3c2a10-admin/f9/27/f927be2510002f7a.jpg"
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[0] = mapped[0] ^ 0xFF  # dirties the page: mtime and ctime move now
        assert run_sync("backup", "-o", "json").json()["totals"]["uploaded"] == 1
        look = path.stat()
        mapped[1] = mapped[1] ^ 0xFF  # the page is still dirty: no time changes
        assert path.stat().st_mtime_ns == look.st_mtime_ns and path.stat().st_ctime_ns == look.st_ctime_ns
        expected = bytes(mapped[:])
    result = run_sync("backup", "-o", "json").json()
    assert result["totals"]["uploaded"] == 1, result["totals"]
    key = PREFIX + "upload/7f3c2a10-admin/f9/27/f927be2510002f7a.jpg"
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == expected


def test_unfinished_uploads_of_a_killed_run_are_aborted_and_counted(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """SIGKILL or the OOM killer leave multipart uploads open; the next run finds and aborts its own."""
    admin = s3.client()
    for key in (PREFIX + "upload/7f3c2a10-admin/killed.mp4", "immich/postgres/wals/0001.partial"):
        upload = admin.create_multipart_upload(Bucket=bucket, Key=key)
        admin.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["orphan_uploads"]["aborted"] == 1
    left = [u["Key"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["immich/postgres/wals/0001.partial"]  # the database archive's are not the engine's
    text = run_sync("backup")
    assert "unfinished multipart uploads" not in text.out  # nothing left to abort


class _BrokenDisplay:
    """A progress display that fails mid-run, as a terminal that went away does."""

    def __init__(self) -> None:
        self.seen = 0

    def folder_started(self, folder: str) -> None:
        pass

    def planned(self, item: object) -> None:
        self.seen += 1
        if self.seen == 50:
            raise BrokenPipeError(32, "Broken pipe")

    def problem(self, problem: object) -> None:
        pass

    def finished(self, result: object) -> None:
        pass


def test_an_unexpected_error_still_writes_the_report_and_exits_3(
    sync_env: dict[str, str], s3: LocalS3, bucket: str, sample: SampleLibrary
):
    from sync_engine.config import sync_settings

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    settings = sync_settings(action.choices["backup"].parse_args([]), os.environ)
    report = run(settings, ObjectStore(settings.s3), observer=_BrokenDisplay())  # type: ignore[arg-type]
    assert (report.status, report.exit_code) == ("aborted", 3)
    assert report.error == "internal error: BrokenPipeError: [Errno 32] Broken pipe"
    assert report.report_key in list_keys(s3, bucket, "immich/sync-reports/")
    assert open_multipart_uploads(s3, bucket) == []
