"""Bad input and hostile libraries: every mistake gets a one-line error naming it, and nothing is lost.

A configuration problem must stop the run before anything is written (exit 2), an unreachable endpoint
aborts (exit 3), and odd files (unreadable, symlinks, special files, undecodable names) are reported and
skipped while every other file is still backed up. Objects already in the bucket are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3, free_port
from tests.conftest import SECRET, Result, list_keys
from tests.s3proxy import Proxy, fail
from tests.unprivileged import unprivileged

PREFIX = "immich/media/"
DEFAULT = ("upload/", "library/", "profile/")
EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"  # MD5 of no bytes

RunSync = Callable[..., Result]


# -- helpers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """An object already in the bucket whose file no longer exists locally (an append-only backup keeps it)."""

    key: str
    body: bytes
    etag: str
    last_modified: datetime


@pytest.fixture
def kept(s3: LocalS3, bucket: str) -> Kept:
    # Sorted between the sample's upload/ entries, so the merge-join has to step over it.
    key = PREFIX + "upload/5-deleted-locally.jpg"
    body = b"only the backup still has this photo"
    client = s3.client()
    client.put_object(Bucket=bucket, Key=key, Body=body)
    head = client.head_object(Bucket=bucket, Key=key)
    return Kept(key, body, head["ETag"], head["LastModified"])


def assert_kept(s3: LocalS3, bucket: str, kept: Kept) -> None:
    """The pre-existing object is neither deleted nor rewritten."""
    obj = s3.client().get_object(Bucket=bucket, Key=kept.key)
    assert obj["Body"].read() == kept.body
    assert obj["ETag"] == kept.etag
    assert obj["LastModified"] == kept.last_modified


def assert_bucket_untouched(s3: LocalS3, bucket: str, kept: Kept) -> None:
    """A refused run writes nothing at all: no media, no report, and the old object is unchanged."""
    assert set(list_keys(s3, bucket)) == {kept.key}
    assert_kept(s3, bucket, kept)


def assert_one_line_error(result: Result, *needles: str) -> str:
    """The whole stderr is one `immich-sync: error:` line that names what to fix."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, tail(result.err)
    line = lines[0]
    assert line.startswith("immich-sync: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert "Traceback" not in result.err
    return line


def tail(text: str, lines: int = 5) -> str:
    """The end of a run's log, where the summary and any error are, for assertion messages."""
    return "\n".join(text.splitlines()[-lines:])


def sample_keys(sample: SampleLibrary) -> set[str]:
    return {PREFIX + rel for rel in sample.files if rel.startswith(DEFAULT)}


def old_time() -> float:
    """An hour ago: outside the settle window, and well before any upload's LastModified."""
    return time.time() - 3600


def write_file(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ts = old_time()
    os.utime(path, (ts, ts))
    return path


def problems_by_path(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {p["path"]: p for p in report["problems"]}


# -- missing settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        (("BUCKET_NAME",), "BUCKET_NAME"),
        (("MEDIA_PREFIX",), "MEDIA_PREFIX"),
        (("AWS_REGION", "AWS_DEFAULT_REGION"), "AWS_REGION"),
    ],
)
def test_missing_variable_is_named(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    s3: LocalS3,
    bucket: str,
    kept: Kept,
    unset: tuple[str, ...],
    named: str,
) -> None:
    """A CronJob whose Secret lacks a key must say which one, and change nothing."""
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    result = run_sync("backup")
    assert result.code == 2
    assert_one_line_error(result, named, "not set")
    assert_bucket_untouched(s3, bucket, kept)


@pytest.mark.parametrize(
    ("present", "named"),
    [
        ((), "AWS_ACCESS_KEY_ID"),
        (("AWS_ACCESS_KEY_ID",), "AWS_SECRET_ACCESS_KEY"),
        (("AWS_SECRET_ACCESS_KEY",), "AWS_ACCESS_KEY_ID"),
    ],
    ids=["none", "key-id-only", "secret-only"],
)
def test_missing_credentials_are_named(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    sync_env: dict[str, str],
    s3: LocalS3,
    bucket: str,
    kept: Kept,
    present: tuple[str, ...],
    named: str,
) -> None:
    """Half a credential pair is a configuration error naming the missing half, not a signing failure."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        if name not in present:
            monkeypatch.delenv(name, raising=False)
    # Keep the provider chain hermetic: no probe of the link-local instance metadata address.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert os.environ["AWS_CONFIG_FILE"] == os.environ["AWS_SHARED_CREDENTIALS_FILE"] == "/nonexistent"
    result = run_sync("backup")
    assert result.code == 2
    assert_one_line_error(result, named)
    assert_bucket_untouched(s3, bucket, kept)


# -- malformed settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "needles"),
    [
        (("--shard", "3/2"), {}, ("--shard", "3/2")),
        (("--shard", "x"), {}, ("--shard", "'x'")),
        (("--only", "nonsense"), {}, ("nonsense",)),
        ((), {"BUCKET_NAME": "Bad_Bucket"}, ("BUCKET_NAME", "Bad_Bucket")),
        ((), {"AWS_ENDPOINT_URL_S3": "ftp://x"}, ("AWS_ENDPOINT_URL_S3", "ftp://x")),
        ((), {"IMMICH_SYNC_WORKERS": "abc"}, ("IMMICH_SYNC_WORKERS", "abc")),
    ],
    ids=["shard-range", "shard-syntax", "only", "bucket-name", "endpoint-scheme", "workers"],
)
def test_malformed_setting_is_named(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    s3: LocalS3,
    bucket: str,
    kept: Kept,
    argv: tuple[str, ...],
    env: dict[str, str],
    needles: tuple[str, ...],
) -> None:
    """A typo in a flag or variable is caught before any request, with the bad value quoted back."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_sync("backup", *argv)
    assert result.code == 2
    assert_one_line_error(result, "configuration error", *needles)
    assert_bucket_untouched(s3, bucket, kept)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--workers", "0"), ("--max-attempts", "0"), ("--part-size-mib", "0")],
)
def test_zero_is_refused_not_replaced_by_the_default(
    run_sync: RunSync, s3: LocalS3, bucket: str, kept: Kept, flag: str, value: str
) -> None:
    """An explicit 0 is out of range; quietly running with the default instead hides the mistake."""
    result = run_sync("backup", flag, value)
    assert result.code == 2, tail(result.err)
    assert_one_line_error(result, "configuration error", flag)
    assert_bucket_untouched(s3, bucket, kept)


# -- missing bucket --------------------------------------------------------------------------------


def test_missing_bucket(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, kept: Kept
) -> None:
    """A wrong bucket name fails the access check up front; the engine never creates buckets."""
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("BUCKET_NAME", missing)
    result = run_sync("backup")
    assert result.code == 2
    assert_one_line_error(result, missing, "does not exist")
    assert missing not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}
    assert_bucket_untouched(s3, bucket, kept)


# -- endpoint unreachable --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["backup", "plan", "verify"])
def test_unreachable_endpoint_aborts(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, kept: Kept, command: str
) -> None:
    """Nothing listens on the port: exit 3 (aborted, retry later), not a configuration error; run_sync
    also checks that the secret key is not part of the connection error."""
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    result = run_sync(command, "--max-attempts", "1")
    assert result.code == 3
    assert_one_line_error(result, "cannot reach", f"127.0.0.1:{port}")
    assert_bucket_untouched(s3, bucket, kept)


# -- LIBRARY_ROOT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["backup", "plan", "verify", "inventory"])
@pytest.mark.parametrize("problem", ["does not exist", "is not a directory"])
def test_bad_library_root(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    s3: LocalS3,
    bucket: str,
    kept: Kept,
    command: str,
    problem: str,
) -> None:
    """An unmounted volume (missing path) or a mis-pointed variable (a file) must not look like an empty
    library, which would silently back up nothing."""
    target = tmp_path / "not-a-library"
    if problem == "is not a directory":
        target.write_bytes(b"just a file")
    monkeypatch.setenv("LIBRARY_ROOT", str(target))
    result = run_sync(command)
    assert result.code == 2
    assert_one_line_error(result, "LIBRARY_ROOT", str(target), problem)
    assert_bucket_untouched(s3, bucket, kept)


# -- unreadable file or directory ------------------------------------------------------------------

READABLE = {
    "upload/.immich": b"",
    "upload/a.jpg": b"a" * 1000,
    "upload/z.jpg": b"z" * 2000,
    "library/.immich": b"",
    "library/u/2024/01/IMG_0001.jpg": b"i" * 3000,
    "profile/.immich": b"",
    "profile/u/avatar.jpg": b"p" * 500,
}


@pytest.fixture
def private_library() -> Iterator[Path]:
    """A library under /tmp that the unprivileged user can traverse (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        yield base / "library"
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for name in dirnames:  # reopen locked directories before os.walk descends into them
                os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(base)


def open_to_everyone(base: Path) -> None:
    for dirpath, _, filenames in os.walk(base):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def run_unprivileged(argv: list[str], cwd: Path) -> Result:
    """Root reads 0000 files anyway, so drop every privilege to make permission bits count."""
    drop = unprivileged("the unreadable-file tests")
    proc = subprocess.run(
        drop.argv([sys.executable, "-m", "sync_engine", *argv]),
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        encoding="utf-8",
        errors="backslashreplace",
        timeout=240,
        check=False,
    )
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("locked", "files", "kind", "detail"),
    [
        ("upload/locked.jpg", {"upload/locked.jpg": b"private"}, "failed", "cannot read: Permission denied"),
        ("upload/locked-dir", {"upload/locked-dir/inside.jpg": b"private"}, "unreadable", "Permission denied"),
    ],
    ids=["file", "directory"],
)
def test_unreadable_entry_fails_alone(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    private_library: Path,
    s3: LocalS3,
    bucket: str,
    kept: Kept,
    locked: str,
    files: dict[str, bytes],
    kind: str,
    detail: str,
) -> None:
    """A file the pod cannot read is a partial run (exit 1) naming the file and errno text, while every
    readable file is still uploaded."""
    root = private_library
    for rel, data in {**READABLE, **files}.items():
        write_file(root, rel, data)
    open_to_everyone(root.parent)
    os.chmod(root / locked, 0o000)
    monkeypatch.setenv("LIBRARY_ROOT", str(root))
    argv = ["backup", "-o", "json"]
    result = run_unprivileged(argv, cwd=root.parent) if os.geteuid() == 0 else run_sync(*argv)

    assert result.code == 1, tail(result.err)
    assert problems_by_path(result.json())[locked] == {"path": locked, "kind": kind, "detail": detail}
    assert [line for line in result.err.splitlines() if locked in line and "Permission denied" in line]
    want = {PREFIX + rel for rel in READABLE} | {kept.key}
    assert set(list_keys(s3, bucket, PREFIX)) == want
    assert_kept(s3, bucket, kept)


# -- symlinks --------------------------------------------------------------------------------------


def test_symlinks_are_reported_not_followed(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, kept: Kept
) -> None:
    """Following a link could upload a file twice or reach outside the library; skipping is not an error."""
    target = sample.root / "profile/7f3c2a10-admin/avatar.jpg"
    links = {
        "upload/link-to-avatar.jpg": str(target),
        "upload/broken.jpg": str(sample.root / "upload/gone.jpg"),
        "upload/link-to-dir": str(sample.root / "profile"),
    }
    for rel, dest in links.items():
        os.symlink(dest, sample.root / rel)

    result = run_sync("backup", "-o", "json")
    assert result.code == 0, tail(result.err)
    problems = problems_by_path(result.json())
    for rel, dest in links.items():
        assert problems[rel]["kind"] == "symlink"
        assert dest in problems[rel]["detail"] and "not followed" in problems[rel]["detail"]
        assert f"skipped {rel}" in result.err
    assert "(broken)" in problems["upload/broken.jpg"]["detail"]
    assert "(broken)" not in problems["upload/link-to-avatar.jpg"]["detail"]
    assert set(list_keys(s3, bucket, PREFIX)) == sample_keys(sample) | {kept.key}
    assert_kept(s3, bucket, kept)


# -- odd names -------------------------------------------------------------------------------------

ODD_NAMES = [
    "upload/with space.jpg",
    "upload/caf\u00e9.jpg",  # NFC é
    "upload/cafe\u0301.jpg",  # NFD e + combining acute: a different file with the same look
    "upload/a+b.jpg",
    "upload/100%.jpg",
    "upload/x%20y.jpg",
    "upload/#hash.jpg",
    "upload/why?.jpg",
    "upload/a&b.jpg",
    "upload/k=v.jpg",
    "upload/semi;colon.jpg",
    "upload/-leading-dash.jpg",
    "upload/" + "L" * 196 + ".jpg",
    "library/odd dir+%20#?&=;/-sub \u00e9/cafe\u0301 + 50%.jpg",
    "profile/\u00e9/nfc.jpg",
    "profile/e\u0301/nfd.jpg",
    # A directory sorts as "sort/" in key order: "-" (0x2D) < "." < "/" (0x2F) < "0" (0x30).
    "library/sort-x.jpg",
    "library/sort.jpg",
    "library/sort/inner.jpg",
    "library/sort0.jpg",
]


def test_odd_names_map_to_exact_keys(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, kept: Kept
) -> None:
    """A key is the prefix plus the relative path, byte for byte: no normalisation, no URL (de)coding.
    The second run uploading nothing proves the listing decodes to the same keys in the walk's order."""
    assert len(ODD_NAMES[12].rsplit("/", 1)[1]) == 200
    contents = {rel: f"content of {rel}".encode() for rel in ODD_NAMES}
    for rel, data in contents.items():
        write_file(sample.root, rel, data)

    first = run_sync("backup", "-o", "json")
    assert first.code == 0, tail(first.err)
    assert first.json()["problems"] == []
    want = sample_keys(sample) | {PREFIX + rel for rel in ODD_NAMES}
    assert set(list_keys(s3, bucket, PREFIX)) == want | {kept.key}
    client = s3.client()
    for rel, data in contents.items():
        assert client.get_object(Bucket=bucket, Key=PREFIX + rel)["Body"].read() == data, rel

    second = run_sync("backup", "-o", "json")
    assert second.code == 0, tail(second.err)
    totals = second.json()["totals"]
    assert totals["uploaded"] == 0
    # files written a moment ago were confirmed as racy: compared by content again, none re-sent
    assert sum(totals["by_reason"].values()) == len(want) and set(totals["by_reason"]) <= {"unchanged", "recheck"}
    assert_kept(s3, bucket, kept)


# -- empty files -----------------------------------------------------------------------------------


def test_empty_files_are_uploaded(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, kept: Kept
) -> None:
    """Immich's .immich markers are empty, and a restore without them makes Immich refuse to start."""
    for rel in ("upload/zero.jpg", "library/7f3c2a10-admin/2024/07/zero bytes.mp4"):
        write_file(sample.root, rel, b"")
        sample.files[rel] = 0
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, tail(result.err)
    objects = list_keys(s3, bucket, PREFIX)
    empty = {PREFIX + rel for rel, size in sample.files.items() if size == 0 and rel.startswith(DEFAULT)}
    assert PREFIX + "upload/zero.jpg" in empty and PREFIX + "upload/.immich" in empty
    for key in empty:
        assert objects[key]["Size"] == 0, key
        assert objects[key]["ETag"].strip('"') == EMPTY_ETAG, key
    assert set(objects) == sample_keys(sample) | {kept.key}
    assert_kept(s3, bucket, kept)


# -- names that are not UTF-8 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "inside", "shown"),
    [
        (b"upload/bad\xff.jpg", None, "upload/bad\\xff.jpg"),
        (b"upload/bad\xfe-dir", b"photo.jpg", "upload/bad\\xfe-dir"),
    ],
    ids=["file", "directory"],
)
def test_non_utf8_name_is_skipped(
    run_sync: RunSync,
    s3: LocalS3,
    bucket: str,
    sample: SampleLibrary,
    kept: Kept,
    raw: bytes,
    inside: bytes | None,
    shown: str,
) -> None:
    """S3 keys must be UTF-8, so such a name cannot be stored; the operator has to rename it (exit 1).
    Logs and reports show the bytes escaped instead of crashing on them."""
    path = os.path.join(bytes(sample.root), raw)
    if inside is not None:
        os.mkdir(path)
        path = os.path.join(path, inside)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"photo with an undecodable name")
    finally:
        os.close(fd)
    ts = old_time()
    os.utime(path, (ts, ts))

    result = run_sync("backup", "-o", "json")
    assert result.code == 1, tail(result.err)
    assert problems_by_path(result.json())[shown] == {
        "path": shown,
        "kind": "invalid-name",
        "detail": "name is not valid UTF-8",
    }
    assert f"skipped {shown}" in result.err
    assert "Traceback" not in result.err
    assert set(list_keys(s3, bucket, PREFIX)) == sample_keys(sample) | {kept.key}
    assert_kept(s3, bucket, kept)

    text = run_sync("plan")
    assert text.code == 1, tail(text.err)
    assert shown in text.out and "invalid-name" in text.out
    assert "Traceback" not in text.err


# -- JSON log lines --------------------------------------------------------------------------------


def test_json_log_lines(
    run_sync: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    proxy: Proxy,
    s3: LocalS3,
    bucket: str,
    sample: SampleLibrary,
    kept: Kept,
) -> None:
    """Log pipelines parse every stderr line of a CronJob run; info, warning and error lines alike."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    monkeypatch.setenv("IMMICH_SYNC_MAX_ATTEMPTS", "1")
    refused = PREFIX + "profile/b41e9d22-anna/avatar.jpg"
    proxy.rules.append(fail(lambda r: r.op == "PutObject" and r.key == refused, ("error", (500, "InternalError"))))
    os.symlink(sample.root / "upload/.immich", sample.root / "upload/link.jpg")
    bad = os.path.join(bytes(sample.root), b"upload/bad\xff.jpg")
    os.close(os.open(bad, os.O_WRONLY | os.O_CREAT, 0o644))

    result = run_sync("backup", "--log-format", "json")
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines
    records = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "event", "msg"} <= set(record), line
        datetime.fromisoformat(record["time"])
        records.append(record)
    assert {r["level"] for r in records} >= {"info", "warning", "error"}
    events = {r["event"] for r in records}
    assert {"uploaded", "symlink", "invalid-name", "failed"} <= events
    assert [r for r in records if r["event"] == "failed" and refused.removeprefix(PREFIX) in r["msg"]]
    assert_kept(s3, bucket, kept)


# -- special files ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fifo_is_never_opened(run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, kept: Kept) -> None:
    """Opening a FIFO for reading blocks until a writer appears, so a run that opened one would hang
    forever; it must be skipped on its stat alone."""
    fifo = sample.root / "upload/pipe.jpg"
    os.mkfifo(fifo)
    try:
        for command in ("plan", "backup"):
            result = run_sync(command, "-o", "json")
            assert result.code == 0, tail(result.err)
            problem = problems_by_path(result.json())["upload/pipe.jpg"]
            assert problem["kind"] == "special-file"
            assert "not a regular file" in problem["detail"]
            assert "skipped upload/pipe.jpg: not a regular file" in result.err
        assert set(list_keys(s3, bucket, PREFIX)) == sample_keys(sample) | {kept.key}
        assert_kept(s3, bucket, kept)
    finally:
        # Should a reader be stuck in open() after all, give it a writer so the test process can exit.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
