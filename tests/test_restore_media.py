"""`immich-sync restore`: the media comes back byte for byte, verified, resumable and never clobbering.

The bucket is filled by the real backup engine, then restored over real HTTP into a temporary
directory and compared file by file (bytes and mtimes). Faults come from S3 itself (objects replaced
behind the backup's back, archived storage classes, moto's own restore state machine) or from a real
HTTP hop between the engine and moto; nothing in the engine is patched.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.exceptions
import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3, bucket_policy, free_port
from sync_engine.config import IMMICH_FOLDERS
from sync_engine.target import PROGRESS_MARKER
from tests.conftest import SECRET, Result
from tests.s3proxy import Proxy, Request, fail, hold

PREFIX = "immich/media/"
DEFAULT = ("upload", "library", "profile")
BIG = "library/b41e9d22-anna/2024/05/VID_0002.mp4"  # the sample's 18 MiB video: two 16 MiB parts
ODD_NAMES = ["a b/c d.jpg", "?q.jpg", "#x.jpg", "%41.jpg", "a+b.jpg", "é.jpg", "e\u0301.jpg", "z~.jpg"]

RunSync = Callable[..., Result]


# -- helpers ---------------------------------------------------------------------------------------


def files_under(root: Path, folders: tuple[str, ...] = IMMICH_FOLDERS) -> dict[str, Path]:
    """Every regular file below the folders, by path relative to `root`."""
    out: dict[str, Path] = {}
    for folder in folders:
        for path in (root / folder).rglob("*"):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = path
    return out


def assert_restored(library: Path, target: Path, folders: tuple[str, ...]) -> int:
    """Each file of the folders is back with the same bytes and mtime; nothing else came along.

    Manifests hold mtimes as float seconds, exact to well under a microsecond at today's dates (the
    sample's own files have whole seconds and come back exactly)."""
    want = files_under(library, folders)
    got = files_under(target, folders)
    assert sorted(got) == sorted(want)
    for rel, src in want.items():
        assert got[rel].read_bytes() == src.read_bytes(), rel
        assert abs(got[rel].stat().st_mtime_ns - src.stat().st_mtime_ns) < 1000, rel
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    return len(want)


def assert_markers(target: Path) -> None:
    for folder in IMMICH_FOLDERS:
        assert (target / folder / ".immich").is_file(), folder


def assert_one_line_error(result: Result, *needles: str) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("immich-sync: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert "Traceback" not in result.err
    return lines[0]


def add_odd_names(sample: SampleLibrary) -> None:
    old = time.time() - 3600
    for name in ODD_NAMES:
        path = sample.root / "upload" / "odd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 100)
        os.utime(path, (old, old))


@pytest.fixture
def backed_up(run_sync: RunSync, sample: SampleLibrary) -> SampleLibrary:
    """The sample library (plus odd names) in the bucket, written by the backup engine."""
    add_odd_names(sample)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    return sample


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "restored"


def restore(run_sync: RunSync, target: Path, *args: str) -> Result:
    return run_sync("restore", "--to", str(target), "-o", "json", *args)


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    return proxy


# -- the whole library -----------------------------------------------------------------------------


def test_restore_brings_back_every_file_byte_for_byte(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, s3: LocalS3, bucket: str
):
    result = restore(run_sync, target)
    assert result.code == 0, result.err
    report = result.json()
    count = assert_restored(backed_up.root, target, DEFAULT)
    want_bytes = sum(p.stat().st_size for p in files_under(backed_up.root, DEFAULT).values())
    assert report["status"] == "ok" and report["exit_code"] == 0
    assert report["totals"]["downloaded"] == report["totals"]["objects"] == count
    assert report["totals"]["downloaded_bytes"] == want_bytes
    assert report["totals"]["conflicts"] == report["totals"]["failed"] == report["totals"]["pending"] == 0
    assert (target / BIG).stat().st_size == 18 * 1024 * 1024
    assert (target / BIG).stat().st_mtime_ns == (backed_up.root / BIG).stat().st_mtime_ns
    assert s3.client().head_object(Bucket=bucket, Key=PREFIX + BIG)["ETag"].strip('"').endswith("-2")
    assert (target / "upload/odd/?q.jpg").read_bytes() == b"?q.jpg" * 100
    # the manifests told the part size and mtimes: one HEAD (the access check), one GET per file
    assert report["requests"]["HeadObject"] == 1
    assert report["requests"]["GetObject"] == count + report["manifests"]
    assert "RestoreObject" not in report["requests"]
    assert report["manifests"] == 1 and report["recorded"] == count
    # Immich starts only with all six markers; the opt-in folders were not in the bucket
    assert_markers(target)
    assert report["markers_created"] == ["thumbs", "encoded-video", "backups"]
    assert {f: s["objects"] for f, s in report["per_folder"].items() if f not in DEFAULT} == {
        "thumbs": 0,
        "encoded-video": 0,
        "backups": 0,
    }
    assert not (target / PROGRESS_MARKER).exists()
    assert report["regenerate"] == ["thumbs", "encoded-video"]
    steps = " ".join(report["next_steps"])
    assert '"Generate Thumbnails" (All)' in steps and '"Transcode Videos" (All)' in steps
    assert "database" in steps and report["last_sync"] in steps


def test_text_summary_names_counts_and_what_immich_must_regenerate(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path
):
    result = run_sync("restore", "--to", str(target))
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("restore ok in ")
    assert "already there" in out and "library/" in out and "total" in out
    assert "Administration → Jobs" in out and "Generate Thumbnails" in out and "Transcode Videos" in out
    assert "restore the database to a time no later than the last media sync" in out
    assert ".immich markers created in thumbs/, encoded-video/, backups/" in out


def test_all_six_folders_need_nothing_regenerated_and_only_narrows(
    run_sync: RunSync, sample: SampleLibrary, tmp_path: Path
):
    assert run_sync("backup", "--include", "thumbs,encoded-video,backups").code == 0
    everything = tmp_path / "all"
    result = restore(run_sync, everything)
    assert result.code == 0, result.err
    assert assert_restored(sample.root, everything, IMMICH_FOLDERS) == len(sample.files)
    assert result.json()["regenerate"] == [] and result.json()["markers_created"] == []
    assert "Generate Thumbnails" not in " ".join(result.json()["next_steps"])

    originals = tmp_path / "originals"
    result = restore(run_sync, originals, "--exclude", "thumbs,encoded-video")
    assert result.code == 0, result.err
    assert result.json()["folders"] == ["upload", "library", "profile", "backups"]
    assert_restored(sample.root, originals, ("upload", "library", "profile", "backups"))
    assert files_under(originals, ("thumbs", "encoded-video")).keys() == {"thumbs/.immich", "encoded-video/.immich"}
    assert result.json()["regenerate"] == ["thumbs", "encoded-video"]

    one = tmp_path / "one"
    result = restore(run_sync, one, "--only", "profile")
    assert result.code == 0, result.err
    assert list(result.json()["per_folder"]) == ["profile"]
    assert_restored(sample.root, one, ("profile",))
    assert_markers(one)


# -- resumable, and never clobbering ----------------------------------------------------------------


def test_failed_files_are_fetched_by_the_next_run_without_force(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, via_proxy: Proxy
):
    broken = {PREFIX + "profile/7f3c2a10-admin/avatar.jpg", PREFIX + BIG}
    via_proxy.rules.append(fail(lambda r: r.op == "GetObject" and r.key in broken, ("error", (500, "InternalError"))))
    first = restore(run_sync, target)
    assert first.code == 1, first.err
    report = first.json()
    assert report["status"] == "partial" and report["totals"]["failed"] == 2
    assert report["failed_by_kind"] == {"s3-error": 2}
    assert "run the same restore again to retry" in " ".join(report["next_steps"])
    assert {p["path"] for p in report["problems"]} == {k.removeprefix(PREFIX) for k in broken}
    assert not any((target / k.removeprefix(PREFIX)).exists() for k in broken)
    assert (target / PROGRESS_MARKER).is_file()  # the restore is not finished

    via_proxy.reset()
    second = restore(run_sync, target)  # the progress marker lets it into the non-empty target
    assert second.code == 0, second.err
    again = second.json()
    assert again["resumed"] is True
    assert again["totals"]["downloaded"] == 2
    assert again["totals"]["already_there"] == report["totals"]["downloaded"]
    assert sorted(r.key for r in via_proxy.ops("GetObject") if r.key.startswith(PREFIX)) == sorted(broken)
    assert_restored(backed_up.root, target, DEFAULT)
    assert not (target / PROGRESS_MARKER).exists()


def test_rerun_fetches_only_deleted_files_and_leaves_a_truncated_one_to_overwrite(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path
):
    assert restore(run_sync, target).code == 0
    deleted = [
        "upload/odd/#x.jpg",
        "library/7f3c2a10-admin/2024/06/Café – Zürich.jpg",
        "profile/b41e9d22-anna/avatar.jpg",
    ]
    for rel in deleted:
        (target / rel).unlink()
    with (target / BIG).open("r+b") as fh:
        fh.truncate(5 * 1024 * 1024)  # what a copy killed half-way leaves
    total = len(files_under(backed_up.root, DEFAULT))

    result = restore(run_sync, target, "--force")  # finished restores leave no marker: the target is "not empty"
    assert result.code == 1
    report = result.json()
    assert report["totals"]["downloaded"] == len(deleted)
    assert report["totals"]["conflicts"] == 1 and report["problems"][0]["path"] == BIG
    assert report["totals"]["already_there"] == total - len(deleted) - 1
    assert report["requests"]["GetObject"] == len(deleted) + report["manifests"]
    assert (target / BIG).stat().st_size == 5 * 1024 * 1024  # left alone

    result = restore(run_sync, target, "--overwrite")  # unfinished: no --force needed
    assert result.code == 0, result.err
    report = result.json()
    assert report["totals"]["downloaded"] == 1 and report["totals"]["downloaded_bytes"] == 18 * 1024 * 1024
    assert report["requests"]["GetObject"] == 1 + report["manifests"]
    assert report["requests"]["HeadObject"] == 1  # the part size came from the manifest
    assert_restored(backed_up.root, target, DEFAULT)


def test_differing_local_files_are_conflicts_unless_overwrite(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path
):
    assert restore(run_sync, target).code == 0
    same_size = target / "library/7f3c2a10-admin/2024/01/IMG_0001.jpg"
    other_size = target / "profile/7f3c2a10-admin/avatar.jpg"
    edited = {same_size: bytes(len(same_size.read_bytes())), other_size: b"my own avatar"}
    for path, data in edited.items():
        path.write_bytes(data)
        os.utime(path, (1_600_000_000, 1_600_000_000))

    result = restore(run_sync, target, "--force")
    assert result.code == 1
    report = result.json()
    assert report["status"] == "partial" and report["totals"]["conflicts"] == 2
    assert report["totals"]["downloaded"] == 0 and report["requests"]["GetObject"] == report["manifests"]
    assert {p["kind"] for p in report["problems"]} == {"conflict"}
    assert "--overwrite" in report["problems"][0]["detail"]
    for path, data in edited.items():
        assert path.read_bytes() == data and path.stat().st_mtime == 1_600_000_000
    assert "--overwrite" in " ".join(report["next_steps"])

    result = restore(run_sync, target, "--overwrite")
    assert result.code == 0, result.err
    assert result.json()["totals"]["downloaded"] == 2
    assert_restored(backed_up.root, target, DEFAULT)

    # a directory where a file belongs is never removed, --overwrite or not
    other_size.unlink()
    other_size.mkdir()
    result = restore(run_sync, target, "--force", "--overwrite")
    assert result.code == 1
    assert result.json()["problems"] == [
        {"path": "profile/7f3c2a10-admin/avatar.jpg", "kind": "conflict", "detail": "a directory is in the way"}
    ]


def test_sigterm_leaves_no_partial_file_and_the_next_run_finishes(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, proxy: Proxy
):
    """Kubernetes stops a restore Job with SIGTERM; the half-downloaded video must not look restored."""
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=proxy.endpoint, IMMICH_SYNC_WORKERS="1")
    started, release = threading.Event(), threading.Event()

    def pause(_: Request) -> None:
        started.set()
        release.wait(30)

    proxy.rules.append(hold(lambda r: r.op == "GetObject" and r.key == PREFIX + BIG, pause))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync_engine", "restore", "--to", str(target), "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert started.wait(60), "the download of the video never started"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    release.set()  # the body now streams in, and the worker must stop and remove its temporary file
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    report = json.loads(out)
    assert report["status"] == "aborted" and "interrupted" in report["error"]
    assert "restore aborted" in err and SECRET not in out + err
    assert not (target / BIG).exists()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]
    assert (target / PROGRESS_MARKER).is_file()
    done_before = report["totals"]["downloaded"]
    assert done_before > 0

    proxy.reset()
    result = restore(run_sync, target)
    assert result.code == 0, result.err
    assert result.json()["totals"]["already_there"] == done_before
    assert_restored(backed_up.root, target, DEFAULT)


# -- the target directory --------------------------------------------------------------------------


def test_non_empty_target_is_refused_without_force(run_sync: RunSync, backed_up: SampleLibrary, target: Path):
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, str(target), "not empty", "--force")
    assert result.out == ""
    assert os.listdir(target) == ["notes.txt"]

    # an unfinished restore of another bucket or prefix is not resumed by accident either
    (target / "notes.txt").unlink()
    (target / PROGRESS_MARKER).write_text(json.dumps({"bucket": "another-bucket", "media_prefix": "x/"}))
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, "unfinished restore from s3://another-bucket/x/", "--force")

    result = restore(run_sync, target, "--force")
    assert result.code == 0, result.err
    assert_restored(backed_up.root, target, DEFAULT)


def test_fresh_volume_with_lost_and_found_counts_as_empty(run_sync: RunSync, backed_up: SampleLibrary, target: Path):
    (target / "lost+found").mkdir(parents=True)
    result = restore(run_sync, target, "--only", "profile")
    assert result.code == 0, result.err
    assert_restored(backed_up.root, target, ("profile",))


def test_target_that_is_a_file_is_refused(run_sync: RunSync, backed_up: SampleLibrary, target: Path):
    target.write_bytes(b"not a directory")
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, str(target), "not a directory")
    assert target.read_bytes() == b"not a directory"


# -- integrity -------------------------------------------------------------------------------------


def test_object_replaced_in_s3_is_reported_and_not_restored(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, s3: LocalS3, bucket: str
):
    """S3 now holds bytes the backup never wrote (its ETag no longer matches the manifest)."""
    rel = "library/7f3c2a10-admin/2024/02/IMG_0007.jpg"
    original = (backed_up.root / rel).read_bytes()
    s3.client().put_object(Bucket=bucket, Key=PREFIX + rel, Body=b"\0" * len(original))
    result = restore(run_sync, target)
    assert result.code == 1
    report = result.json()
    assert report["totals"]["failed"] == 1
    assert report["problems"][0]["path"] == rel and report["problems"][0]["kind"] == "changed-in-s3"
    assert "manifest" in report["problems"][0]["detail"]
    assert report["failed_by_kind"] == {"changed-in-s3": 1}
    assert "immich-sync verify" in " ".join(report["next_steps"])
    assert "retry" not in " ".join(report["next_steps"])  # another run would not change the answer
    assert not (target / rel).exists()
    count = len(files_under(backed_up.root, DEFAULT))
    assert report["totals"]["downloaded"] == count - 1
    # its GET is opened for the encryption header (no SSE-KMS: the differing ETag is an MD5, so the object
    # changed) and closed before the body
    assert report["requests"]["GetObject"] == count + report["manifests"]
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]


class CorruptingHop:
    """A real HTTP hop to moto that flips one byte in the body of chosen GETs, headers (ETag included)
    unchanged: what a faulty NIC, proxy or disk between S3 and the restore would do."""

    def __init__(self, upstream: str, corrupt: dict[str, int | None]) -> None:
        self.corrupt = dict(corrupt)  # key -> GETs to corrupt (None: all)
        self.gets: dict[str, int] = {}
        lock = threading.Lock()
        up = urlsplit(upstream)
        hop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                key = unquote(urlsplit(self.path).path).split("/", 2)[-1]
                if self.command == "GET" and resp.status == 200 and key in hop.corrupt and data:
                    with lock:
                        hop.gets[key] = hop.gets.get(key, 0) + 1
                        times = hop.corrupt[key]
                        flip = times is None or hop.gets[key] <= times
                    if flip:
                        data = bytes([data[len(data) // 2] ^ 0xFF]).join(
                            (data[: len(data) // 2], data[len(data) // 2 + 1 :])
                        )
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def corrupting(s3: LocalS3, monkeypatch: pytest.MonkeyPatch, sync_env: dict[str, str]) -> Iterator[CorruptingHop]:
    hop = CorruptingHop(s3.endpoint, {})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", hop.endpoint)
    yield hop
    hop.close()


def test_bytes_damaged_in_transit_are_retried_then_reported(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, corrupting: CorruptingHop
):
    once = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    always = PREFIX + "profile/b41e9d22-anna/avatar.jpg"
    corrupting.corrupt.update({once: 1, always: None, PREFIX + BIG: 1})
    result = restore(run_sync, target, "--only", "profile,library")
    assert result.code == 1
    report = result.json()
    assert corrupting.gets == {once: 2, always: 3, PREFIX + BIG: 2}  # the multipart ETag caught it too
    assert report["totals"]["failed"] == 1
    problem = report["problems"][0]
    assert problem["path"] == always.removeprefix(PREFIX) and problem["kind"] == "verify-failed"
    assert "does not match the ETag" in problem["detail"] and "3 attempts" in problem["detail"]
    assert not (target / always.removeprefix(PREFIX)).exists()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]
    assert (target / once.removeprefix(PREFIX)).read_bytes() == (
        backed_up.root / once.removeprefix(PREFIX)
    ).read_bytes()
    assert (target / BIG).read_bytes() == (backed_up.root / BIG).read_bytes()


def test_objects_no_manifest_describes_are_checked_against_s3_and_dated_by_last_modified(
    run_sync: RunSync, sample: SampleLibrary, target: Path, s3: LocalS3, bucket: str
):
    """The old aws-cli loop wrote multipart objects with its own part size and no manifest: HEAD with
    PartNumber=1 tells the part size (s3:GetObject is enough)."""
    client = s3.client()
    body = os.urandom(11 * 1024 * 1024 + 17)
    key = PREFIX + "library/legacy/VID_old.mp4"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(body), 5 * 1024 * 1024), start=1):
        chunk = body[start : start + 5 * 1024 * 1024]
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk)["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    client.put_object(Bucket=bucket, Key=PREFIX + "upload/legacy.jpg", Body=b"small")
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")

    result = restore(run_sync, target)
    assert result.code == 0, result.err
    report = result.json()
    assert report["manifests"] == 0 and report["totals"]["downloaded"] == 2
    assert report["requests"]["HeadObject"] == 2  # the access check, and part 1 of the video
    assert (target / "library/legacy/VID_old.mp4").read_bytes() == body
    assert (target / "library/legacy/VID_old.mp4").stat().st_mtime == head["LastModified"].timestamp()
    assert "last media sync" in " ".join(report["next_steps"]) and report["last_sync"] == ""


def test_keys_that_would_escape_the_target_are_refused(
    run_sync: RunSync, sample: SampleLibrary, target: Path, s3: LocalS3, bucket: str
):
    client = s3.client()
    for key in (PREFIX + "upload/../../escape.jpg", PREFIX + "upload/a//b.jpg", PREFIX + "upload/ok.jpg"):
        client.put_object(Bucket=bucket, Key=key, Body=b"data")
    result = restore(run_sync, target)
    assert result.code == 1
    report = result.json()
    assert report["totals"]["downloaded"] == 1 and report["totals"]["failed"] == 2
    assert {p["kind"] for p in report["problems"]} == {"unsafe-key"}
    assert (target / "upload/ok.jpg").read_bytes() == b"data"
    assert not (target.parent / "escape.jpg").exists() and not (target / "escape.jpg").exists()
    assert not (target / "upload/a/b.jpg").exists()


# -- archived storage classes ----------------------------------------------------------------------


def put_archived(s3: LocalS3, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    objects = {
        "library/archive/2019/old-1.jpg": (os.urandom(3000), "GLACIER"),
        "library/archive/2019/old-2.jpg": (os.urandom(4000), "DEEP_ARCHIVE"),
    }
    for rel, (body, storage_class) in objects.items():
        client.put_object(Bucket=bucket, Key=PREFIX + rel, Body=body, StorageClass=storage_class)
    return {rel: body for rel, (body, _) in objects.items()}


@pytest.mark.parametrize(
    ("tier", "glacier", "deep"),
    [("Standard", "usually 3–5 hours", "within 12 hours"), ("Bulk", "usually 5–12 hours", "within 48 hours")],
)
def test_archived_objects_are_requested_reported_pending_and_fetched_later(
    run_sync: RunSync,
    backed_up: SampleLibrary,
    target: Path,
    s3: LocalS3,
    bucket: str,
    tier: str,
    glacier: str,
    deep: str,
):
    archived = put_archived(s3, bucket)
    admin = s3.client()
    # what S3 (and moto) do: an archived object cannot be read until it is restored
    with pytest.raises(botocore.exceptions.ClientError) as err:
        admin.get_object(Bucket=bucket, Key=PREFIX + "library/archive/2019/old-1.jpg")
    assert err.value.response["Error"]["Code"] == "InvalidObjectState"

    first = restore(run_sync, target, "--restore-tier", tier, "--restore-days", "3")
    assert first.code == 4, first.err
    report = first.json()
    assert report["status"] == "pending" and report["exit_code"] == 4
    assert report["totals"]["pending"] == 2 and report["totals"]["pending_bytes"] == 7000
    assert report["totals"]["failed"] == 0 and report["totals"]["conflicts"] == 0
    assert {p["path"]: (p["storage_class"], p["state"], p["estimate"]) for p in report["pending"]} == {
        "library/archive/2019/old-1.jpg": ("GLACIER", "requested", glacier),
        "library/archive/2019/old-2.jpg": ("DEEP_ARCHIVE", "requested", deep),
    }
    assert report["requests"]["RestoreObject"] == 2
    assert report["per_folder"]["library"]["pending"] == 2
    assert not any((target / rel).exists() for rel in archived)
    assert (target / PROGRESS_MARKER).is_file()
    assert_markers(target)
    steps = " ".join(report["next_steps"])
    assert "run the same restore again" in steps and "3 days" in steps and tier in steps
    assert admin.head_object(Bucket=bucket, Key=PREFIX + "library/archive/2019/old-1.jpg").get("Restore")

    # moto finishes restores at once; S3 takes hours. The next run downloads the restored copies.
    second = restore(run_sync, target)
    assert second.code == 0, second.err
    report = second.json()
    assert report["totals"]["downloaded"] == 2 and report["totals"]["pending"] == 0
    assert "RestoreObject" not in report["requests"]
    for rel, body in archived.items():
        assert (target / rel).read_bytes() == body
        modified = admin.head_object(Bucket=bucket, Key=PREFIX + rel)["LastModified"].timestamp()
        assert (target / rel).stat().st_mtime == modified  # no manifest: S3's LastModified
    assert not (target / PROGRESS_MARKER).exists()

    # once they are here, archived objects cost nothing more: no HEAD, no restore request
    third = restore(run_sync, target, "--force")
    assert third.code == 0
    assert third.json()["totals"]["already_there"] == third.json()["totals"]["objects"]
    assert third.json()["requests"]["HeadObject"] == 1 and "RestoreObject" not in third.json()["requests"]


def test_pending_summary_in_text(run_sync: RunSync, backed_up: SampleLibrary, target: Path, s3: LocalS3, bucket: str):
    put_archived(s3, bucket)
    result = run_sync("restore", "--to", str(target), "--only", "library")
    assert result.code == 4
    assert "restore pending" in result.out
    assert "pending archived objects (2, 6.8 KiB):" in result.out
    assert "GLACIER       requested    library/archive/2019/old-1.jpg" in result.out
    assert "run the same restore again" in result.out


@pytest.fixture
def slow_restores(s3: LocalS3) -> Iterator[None]:
    """moto's state machine for object restores, stepped per request instead of finishing at once."""
    model = {"model_name": "s3::keyrestore"}
    s3.post(
        "/moto-api/state-manager/set-transition",
        json.dumps({**model, "transition": {"progression": "manual", "times": 1}}).encode(),
    )
    yield
    s3.post("/moto-api/state-manager/unset-transition", json.dumps(model).encode())


def test_restore_already_in_progress_is_pending_without_a_new_request(
    run_sync: RunSync, sample: SampleLibrary, target: Path, s3: LocalS3, bucket: str, slow_restores: None
):
    """Each request for the object steps moto's restore state once: the request below, then our HEAD
    (ongoing-request="true"), then the next run's HEAD ("false"). The access check HEADs the first
    listed key, so an ordinary object comes first."""
    admin = s3.client()
    admin.put_object(Bucket=bucket, Key=PREFIX + "upload/.immich", Body=b"")
    rel = "upload/archive/in-progress.jpg"
    admin.put_object(Bucket=bucket, Key=PREFIX + rel, Body=b"frozen", StorageClass="DEEP_ARCHIVE")
    admin.restore_object(Bucket=bucket, Key=PREFIX + rel, RestoreRequest={"Days": 1})  # someone asked already

    first = restore(run_sync, target)
    assert first.code == 4, first.err
    report = first.json()
    assert report["pending"] == [
        {
            "path": rel,
            "key": PREFIX + rel,
            "size": 6,
            "storage_class": "DEEP_ARCHIVE",
            "state": "in-progress",
            "estimate": "within 12 hours",
        }
    ]
    assert "RestoreObject" not in report["requests"]
    assert not (target / rel).exists()

    second = restore(run_sync, target)  # S3 says ongoing-request="false" now
    assert second.code == 0, second.err
    assert second.json()["totals"]["downloaded"] == 1 and second.json()["totals"]["already_there"] == 1
    assert (target / rel).read_bytes() == b"frozen"


def test_conflicting_restore_request_counts_as_in_progress(
    run_sync: RunSync, sample: SampleLibrary, target: Path, s3: LocalS3, bucket: str, via_proxy: Proxy
):
    """Two restores at once: S3 refuses the second request with 409 RestoreAlreadyInProgress."""
    s3.client().put_object(Bucket=bucket, Key=PREFIX + "upload/cold.jpg", Body=b"cold", StorageClass="GLACIER")
    via_proxy.rules.append(
        fail(lambda r: r.method == "POST" and "restore" in r.query, ("error", (409, "RestoreAlreadyInProgress")))
    )
    result = restore(run_sync, target)
    assert result.code == 4, result.err
    assert [(p["state"], p["estimate"]) for p in result.json()["pending"]] == [("in-progress", "usually 3–5 hours")]
    assert len([r for r in via_proxy.log if r.method == "POST"]) == 1


# -- least privilege -------------------------------------------------------------------------------

IAM_BUCKET = "immich-offsite-restore-iam"
RESTORER_ACTIONS = ["s3:GetObject", "s3:ListBucket", "s3:RestoreObject"]
WRITER_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket"]


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[LocalS3, dict[str, tuple[str, str]]]]:
    """A server of its own: IAM enforcement is process-wide in moto."""
    with LocalS3() as server:
        server.client().create_bucket(Bucket=IAM_BUCKET)
        keys = {
            "writer": server.iam_user("immich-offsite-writer", bucket_policy(IAM_BUCKET, WRITER_ACTIONS)),
            "restorer": server.iam_user("immich-offsite-restorer", bucket_policy(IAM_BUCKET, RESTORER_ACTIONS)),
            "admin": server.iam_user("admin", bucket_policy(IAM_BUCKET, ["s3:*"])),
        }
        server.enforce_iam()
        yield server, keys


def _use(monkeypatch: pytest.MonkeyPatch, server: LocalS3, key: tuple[str, str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("BUCKET_NAME", IAM_BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])


def test_full_restore_with_exactly_get_list_restore(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, iam_s3: Any, sample: SampleLibrary, target: Path
):
    server, keys = iam_s3
    _use(monkeypatch, server, keys["writer"])
    assert run_sync("backup").code == 0
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    admin.put_object(Bucket=IAM_BUCKET, Key=PREFIX + "library/cold/old.jpg", Body=b"cold photo", StorageClass="GLACIER")
    restorer = server.client(key_id=keys["restorer"][0], secret=keys["restorer"][1])
    for call in (restorer.put_object, restorer.delete_object):  # enforcement is really on
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call(Bucket=IAM_BUCKET, Key="probe/x", **({"Body": b"x"} if call == restorer.put_object else {}))
        assert err.value.response["Error"]["Code"] in ("AccessDenied", "403")

    _use(monkeypatch, server, keys["restorer"])
    first = restore(run_sync, target)
    assert first.code == 4, first.err
    assert first.json()["requests"]["RestoreObject"] == 1 and first.json()["totals"]["failed"] == 0
    second = restore(run_sync, target)
    assert second.code == 0, second.err
    assert keys["restorer"][1] not in first.out + first.err + second.out + second.err
    assert (target / "library/cold/old.jpg").read_bytes() == b"cold photo"
    (target / "library/cold/old.jpg").unlink()
    assert_restored(sample.root, target, DEFAULT)
    assert_markers(target)


def test_writer_credentials_cannot_restore_and_say_so(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, iam_s3: Any, target: Path
):
    server, keys = iam_s3
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    admin.put_object(Bucket=IAM_BUCKET, Key="writer-probe/upload/x.jpg", Body=b"x")
    _use(monkeypatch, server, keys["writer"])
    monkeypatch.setenv("MEDIA_PREFIX", "writer-probe/")
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, "access denied", "restorer")
    assert not target.exists()


@pytest.mark.parametrize(
    ("key_id", "secret_ok", "needle"),
    [("AKIAUNKNOWN000000000", True, "AWS_ACCESS_KEY_ID"), (None, False, "AWS_SECRET_ACCESS_KEY")],
)
def test_wrong_restorer_credentials(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    iam_s3: Any,
    target: Path,
    key_id: str | None,
    secret_ok: bool,
    needle: str,
):
    server, keys = iam_s3
    restorer_id, restorer_secret = keys["restorer"]
    _use(monkeypatch, server, (key_id or restorer_id, restorer_secret if secret_ok else "not-the-secret"))
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, needle)
    assert "not-the-secret" not in result.err + result.out
    assert not target.exists()


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unset", "named"),
    [("BUCKET_NAME", "BUCKET_NAME"), ("MEDIA_PREFIX", "MEDIA_PREFIX"), ("AWS_REGION", "AWS_REGION")],
)
def test_missing_setting_is_named(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, target: Path, unset: str, named: str
):
    monkeypatch.delenv(unset)
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, named)
    assert not target.exists()


def test_missing_credentials_are_named(run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, target: Path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, "AWS_ACCESS_KEY_ID")


def test_missing_bucket(run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, target: Path):
    monkeypatch.setenv("BUCKET_NAME", "no-such-bucket-here")
    result = restore(run_sync, target)
    assert result.code == 2
    assert_one_line_error(result, "does not exist")
    assert not target.exists()


def test_empty_prefix_is_not_a_successful_restore(run_sync: RunSync, sample: SampleLibrary, target: Path):
    result = restore(run_sync, target)  # nothing was ever backed up to this bucket
    assert result.code == 2
    assert_one_line_error(result, "nothing to restore", "MEDIA_PREFIX")
    assert not target.exists()


def test_unreachable_endpoint_aborts(run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, target: Path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("IMMICH_SYNC_MAX_ATTEMPTS", "1")
    result = restore(run_sync, target)
    assert result.code == 3
    assert_one_line_error(result, "cannot reach")
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--only", "photos"), "unknown folder(s) photos"),
        (("--only", "thumbs", "--exclude", "thumbs"), "no folder left"),
        (("--restore-days", "0"), "--restore-days"),
        (("--workers", "0"), "--workers"),
    ],
)
def test_bad_flags(run_sync: RunSync, target: Path, args: tuple[str, ...], named: str):
    result = restore(run_sync, target, *args)
    assert result.code == 2
    assert_one_line_error(result, named)


def test_to_is_required(run_sync: RunSync):
    with pytest.raises(SystemExit) as exit_:
        run_sync("restore")
    assert exit_.value.code == 2
