"""Files that change, grow or vanish while the run is going.

The proxy holds a chosen request until the test has changed the file on disk, so the race that
corrupts aws-cli backups happens every time, not by luck. The invariant checked everywhere: what S3
holds is a version of the file that existed as a whole, and nothing half-uploaded is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.config import MiB
from tests.conftest import list_keys, open_multipart_uploads
from tests.s3proxy import Proxy, Request, hold

# Rewrites the file in place, one MiB at a time, forever, putting its old mtime back after each pass.
REWRITER = """
import os, sys
path, size, old = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mib = 1 << 20
fill = 0
while True:
    fill = (fill + 1) % 256
    chunk = bytes([fill]) * mib
    fd = os.open(path, os.O_WRONLY)
    for offset in range(0, size, mib):
        os.pwrite(fd, chunk, offset)
    os.close(fd)
    os.utime(path, (old, old))
"""

PREFIX = "immich/media/"
OLD = time.time() - 7200


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def _rewrite_in_place(path: Path, fill: int) -> None:
    """Same size, new bytes, written into the same inode (as an editor saving in place would)."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.write(bytes([fill]) * size)


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    monkeypatch.setenv("IMMICH_SYNC_WORKERS", "1")
    monkeypatch.setenv("IMMICH_SYNC_SETTLE_SECONDS", "0")
    return proxy


def _body(s3: LocalS3, bucket: str, rel: str) -> bytes:
    return bytes(s3.client().get_object(Bucket=bucket, Key=PREFIX + rel)["Body"].read())


def _is_part(rel: str, number: int):  # type: ignore[no-untyped-def]
    return lambda r: r.op == "UploadPart" and r.key == PREFIX + rel and r.query["partNumber"] == [str(number)]


def test_multipart_file_rewritten_between_parts_is_reuploaded_whole(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    rel = "library/video.mp4"
    path = sample.root / rel
    _write(path, b"\x01" * (40 * MiB))
    via_proxy.rules.append(hold(_is_part(rel, 2), lambda r: _rewrite_in_place(path, 2)))
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    assert _body(s3, bucket, rel) == b"\x02" * (40 * MiB)  # never the 1/2 mix
    assert len([r for r in via_proxy.ops("CreateMultipartUpload") if r.key == PREFIX + rel]) == 2
    assert len([r for r in via_proxy.ops("AbortMultipartUpload") if r.key == PREFIX + rel]) == 1
    assert open_multipart_uploads(s3, bucket) == []


def test_file_that_never_settles_is_not_committed_and_reported_unstable(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    rel = "library/recording.mp4"
    path = sample.root / rel
    _write(path, b"\x00" * (20 * MiB))
    fills = iter(range(1, 100))
    via_proxy.rules.append(
        hold(
            lambda r: r.op == "UploadPart" and r.key == PREFIX + rel, lambda r: _rewrite_in_place(path, next(fills)), 99
        )
    )
    result = run_sync("backup", "-o", "json")
    report = result.json()
    assert result.code == 0  # a file being written is not an error: the next run takes it
    assert report["totals"]["unstable"] == 1
    assert [p["kind"] for p in report["problems"]] == ["unstable"]
    assert "nothing committed" in report["problems"][0]["detail"]
    assert PREFIX + rel not in list_keys(s3, bucket, PREFIX)
    assert open_multipart_uploads(s3, bucket) == []
    assert report["totals"]["uploaded"] == len(
        [k for k in sample.files if k.startswith(("upload/", "library/", "profile/"))]
    )
    via_proxy.rules.clear()
    again = run_sync("backup", "-o", "json").json()
    assert again["totals"]["uploaded"] == 1
    assert _body(s3, bucket, rel) == path.read_bytes()


def test_single_part_rewritten_during_put_is_reuploaded(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """The aws-cli failure: the PUT carries the old bytes, the file gets new bytes of the same size
    and an mtime older than the object's LastModified, so later runs would never re-send it."""
    rel = "upload/IMG_rewrite.jpg"
    path = sample.root / rel
    _write(path, b"A" * 300_000)
    via_proxy.rules.append(
        hold(lambda r: r.op == "PutObject" and r.key == PREFIX + rel, lambda r: _rewrite_in_place(path, ord("B")))
    )
    result = run_sync("backup", "-o", "json")
    assert result.code == 0
    assert _body(s3, bucket, rel) == b"B" * 300_000
    assert len([r for r in via_proxy.ops("PutObject") if r.key == PREFIX + rel]) == 2


def test_file_replaced_by_rename_during_put_is_reuploaded(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    rel = "upload/IMG_renamed.jpg"
    path = sample.root / rel
    _write(path, b"old" * 1000)

    def replace(_: Request) -> None:
        tmp = path.with_name(".tmp-upload")
        tmp.write_bytes(b"new" * 1000)
        os.utime(tmp, (OLD, OLD))  # even with an old mtime the change is caught (inode and ctime)
        tmp.rename(path)

    via_proxy.rules.append(hold(lambda r: r.op == "PutObject" and r.key == PREFIX + rel, replace))
    assert run_sync("backup").code == 0
    assert _body(s3, bucket, rel) == b"new" * 1000


def test_file_growing_during_multipart_upload(
    run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    rel = "library/growing.mp4"
    path = sample.root / rel
    _write(path, b"g" * (17 * MiB))

    def append(_: Request) -> None:
        with path.open("ab") as fh:
            fh.write(b"h" * MiB)

    via_proxy.rules.append(hold(_is_part(rel, 1), append))
    assert run_sync("backup").code == 0
    assert _body(s3, bucket, rel) == b"g" * (17 * MiB) + b"h" * MiB
    assert open_multipart_uploads(s3, bucket) == []


def test_file_deleted_mid_run_is_a_warning(run_sync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary):
    first, doomed = "upload/aaa-first.jpg", "upload/zzz-doomed.jpg"
    _write(sample.root / first, b"1" * 1000)
    _write(sample.root / doomed, b"2" * 1000)
    via_proxy.rules.append(
        hold(lambda r: r.op == "PutObject" and r.key == PREFIX + first, lambda r: (sample.root / doomed).unlink())
    )
    result = run_sync("backup", "-o", "json")
    report = result.json()
    assert result.code == 0
    assert report["totals"]["vanished"] == 1
    # Deleted before the walk reached it or after: either way a warning, not a failure.
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [(doomed, "vanished")]
    assert PREFIX + first in list_keys(s3, bucket, PREFIX)


def test_file_rewritten_while_being_read_is_never_stored_mixed(
    run_sync, sync_env, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """A writer rewrites a 12 MiB file over and over, 1 MiB at a time, while the engine reads it, and
    puts the old mtime back each time (as `rsync -t` or a restore tool would), so only size, inode and
    ctime can betray the change. A run that reports the file uploaded must have stored one whole
    version (all bytes equal), never a mix.

    The writer is its own process: as a thread of this one it can wait for the GIL half way through a
    rewrite for longer than the engine's settle time, leaving a torn file standing still on disk, which
    is what any reader then copies. Even so, the engine must not call such a copy good: it sees the
    file change again before the run ends and reports it unstable."""
    monkeypatch.setenv("IMMICH_SYNC_SETTLE_SECONDS", "0")
    rel = "library/hot.bin"
    path = sample.root / rel
    size = 12 * MiB
    _write(path, b"\x00" * size)
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(path), str(size), str(OLD)])
    try:
        report = run_sync("backup", "-o", "json", "--only", "library").json()
    finally:
        writer.kill()
        writer.wait()
    keys = list_keys(s3, bucket, PREFIX)
    if PREFIX + rel in keys:
        body = _body(s3, bucket, rel)
        whole = len(body) == size and body.count(body[:1]) == size
        assert whole or report["totals"]["unstable"] == 1, (report["totals"], report["problems"])
    else:
        assert report["totals"]["unstable"] == 1, (report["totals"], report["problems"])
    assert open_multipart_uploads(s3, bucket) == []
