"""Libraries and answers that must not stop a run: refused keys, very deep trees, odd sort orders.

An S3 refusal of one object (a key over S3's 1,024-byte limit, a 403 on one key) fails that file and
the run goes on; only an outage (unreachable, dropped connections, 5xx, throttling) may abandon it. A
directory tree deeper than Python's recursion limit is walked like any other, in S3 key order.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.config import S3Settings
from sync_engine.models import LocalFile, ScanProblem
from sync_engine.scan import walk_folder, walk_unit
from sync_engine.store import ObjectStore, StaticCredentials
from sync_engine.units import list_units
from tests.conftest import Result, list_keys, open_multipart_uploads
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
S3_KEY_LIMIT = 1024  # bytes, AWS's limit on an object key

RunSync = Callable[..., Result]


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    return proxy


def upload_keys(sample: SampleLibrary) -> set[str]:
    return {PREFIX + rel for rel in sample.files if rel.startswith("upload/")}


def write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def failed_paths(report: dict[str, object]) -> dict[str, str]:
    problems = report["problems"]
    assert isinstance(problems, list)
    return {p["path"]: p["detail"] for p in problems if p["kind"] == "failed"}


# -- 1. a refusal of one object fails that file, an outage aborts the run ------------------------------


def long_rel(n: int) -> str:
    """A path whose key is over S3's limit, though no name in it is over the file system's 255 bytes."""
    dirs = "/".join(f"{c}{'x' * 219}" for c in "abcde")
    return f"upload/!long/{dirs}/photo-{n:02}.jpg"


def test_keys_s3_refuses_as_too_long_fail_alone_and_the_run_goes_on(
    run_sync: RunSync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    """Twenty refused keys sort before everything else: each fails, every later file is still uploaded."""
    longs = [long_rel(n) for n in range(20)]
    assert all(len((PREFIX + rel).encode()) > S3_KEY_LIMIT for rel in longs)
    assert all(len(name.encode()) < 255 for rel in longs for name in rel.split("/"))
    for rel in longs:
        write(sample.root, rel, f"photo at {rel[-12:]}".encode())
    too_long = ("PutObject", "CreateMultipartUpload")
    via_proxy.rules.append(
        fail(
            lambda r: r.op in too_long and len(r.key.encode()) > S3_KEY_LIMIT,
            ("error", (400, "KeyTooLongError")),
        )
    )

    result = run_sync("backup", "-o", "json", "--only", "upload", "--workers", "2", "--settle-seconds", "0")
    report = result.json()
    assert result.code == 1, report.get("error")
    assert report["status"] == "partial"
    assert set(list_keys(s3, bucket, PREFIX)) == upload_keys(sample)
    failed = failed_paths(report)
    assert set(failed) == set(longs)
    assert all("KeyTooLongError" in detail for detail in failed.values())
    assert report["totals"]["failed"] == 20
    assert open_multipart_uploads(s3, bucket) == []


def test_access_denied_on_some_keys_fails_those_files_only(
    run_sync: RunSync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    """A bucket policy that denies a few keys (a Deny on a sub-prefix) is not S3 being down."""
    denied = [f"upload/!denied/IMG_{n:04}.jpg" for n in range(10)]
    for rel in denied:
        write(sample.root, rel, rel.encode())
    keys = {PREFIX + rel for rel in denied}
    via_proxy.rules.append(fail(lambda r: r.op == "PutObject" and r.key in keys, ("error", (403, "AccessDenied"))))

    result = run_sync("backup", "-o", "json", "--only", "upload", "--workers", "2", "--settle-seconds", "0")
    report = result.json()
    assert result.code == 1, report.get("error")
    assert report["status"] == "partial"
    assert set(list_keys(s3, bucket, PREFIX)) == upload_keys(sample)
    failed = failed_paths(report)
    assert set(failed) == set(denied)
    assert all("AccessDenied" in detail or "access denied" in detail for detail in failed.values())


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (503, "ServiceUnavailable"), (500, "InternalError"), (400, "RequestTimeout")],
)
def test_an_outage_still_aborts_the_run(
    run_sync: RunSync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary, status: int, code: str
) -> None:
    """Every upload answered with a server error or throttling: failing the whole library file by file
    would take hours, so the run stops (exit 3) and says why."""
    writes = ("PutObject", "UploadPart", "CreateMultipartUpload")
    via_proxy.rules.append(fail(lambda r: r.op in writes and r.key.startswith(PREFIX), ("error", (status, code))))
    result = run_sync("backup", "-o", "json", "--workers", "2", "--max-attempts", "1", "--settle-seconds", "0")
    report = result.json()
    assert result.code == 3
    assert report["status"] == "aborted"
    assert "S3 keeps failing" in report["error"] and code in report["error"]
    assert report["totals"]["failed"] < 40
    assert list_keys(s3, bucket, PREFIX) == {}
    assert open_multipart_uploads(s3, bucket) == []


def test_an_unreachable_endpoint_mid_run_still_aborts(
    run_sync: RunSync, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    via_proxy.rules.append(fail(lambda r: r.op in ("PutObject", "UploadPart"), ("drop", None)))
    result = run_sync("backup", "-o", "json", "--workers", "2", "--max-attempts", "1", "--settle-seconds", "0")
    assert result.code == 3
    assert "S3 keeps failing" in result.json()["error"]


def store_via(endpoint: str, bucket: str, checksum_mode: str) -> ObjectStore:
    from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET

    settings = S3Settings(
        bucket=bucket, region="us-east-1", endpoint_url=endpoint, max_attempts=1, checksum_mode=checksum_mode
    )
    return ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))


@pytest.mark.parametrize("checksum_mode", ["when_required", "when_supported"])  # direct PUT, botocore PUT
@pytest.mark.parametrize(
    ("answer", "outage"),
    [
        (("error", (400, "KeyTooLongError")), False),
        (("error", (400, "InvalidArgument")), False),
        (("error", (403, "AccessDenied")), False),
        (("error", (404, "NoSuchUpload")), False),
        (("error", (400, "RequestTimeout")), True),
        (("error", (429, "TooManyRequests")), True),
        (("error", (500, "InternalError")), True),
        (("error", (502, "BadGateway")), True),
        (("error", (503, "SlowDown")), True),
        (("error", (504, "GatewayTimeout")), True),
        (("error", (507, "SomethingNew")), True),
        (("drop", None), True),
    ],
)
def test_store_errors_tell_an_outage_from_a_refusal(
    proxy: Proxy, bucket: str, checksum_mode: str, answer: tuple[str, object], outage: bool
) -> None:
    import hashlib

    from sync_engine.store import is_outage

    proxy.rules.append(fail(lambda r: r.op == "PutObject", answer))  # type: ignore[arg-type]
    store = store_via(proxy.endpoint, bucket, checksum_mode)
    with pytest.raises(Exception) as caught:
        store.put_object("immich/media/upload/a.jpg", b"x", hashlib.md5(b"x").digest(), None)
    assert is_outage(caught.value) is outage
    assert len(proxy.ops("PutObject")) == 1  # --max-attempts 1: one request, on either path


# -- 2. deep trees and key order ---------------------------------------------------------------------

DEPTH = 1200


def make_deep_tree(top: Path, depth: int = DEPTH) -> list[str]:
    """`top/d/d/…/d/bottom.jpg`, `depth` directories down, with files and directories beside the chain at
    some levels. Returns the files' paths relative to `top.parent`, in no particular order."""
    files: list[str] = []
    rel = top.name
    os.mkdir(top)
    for level in range(depth):
        here = top.parent / rel
        if level % 97 == 0:
            for name in ("c.jpg", "d.jpg", "d-x.jpg", "e.jpg"):
                (here / name).write_bytes(f"{rel}/{name}".encode())
                files.append(f"{rel}/{name}")
            os.mkdir(here / "d.side")
            (here / "d.side/in.jpg").write_bytes(b"beside")
            files.append(f"{rel}/d.side/in.jpg")
        rel = f"{rel}/d"
        os.mkdir(top.parent / rel)  # not makedirs: it recurses once per missing level
    (top.parent / rel / "bottom.jpg").write_bytes(b"at the bottom")
    files.append(f"{rel}/bottom.jpg")
    return files


def remove_deep_tree(top: Path) -> None:
    """Bottom-up, without recursion (shutil.rmtree recurses once per level)."""
    chain = [top]
    while (chain[-1] / "d").is_dir():
        chain.append(chain[-1] / "d")
    for directory in reversed(chain):
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                for inner in os.scandir(entry.path):
                    os.unlink(inner.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        os.rmdir(directory)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    root = tmp_path / "deep-library"
    root.mkdir()
    files = make_deep_tree(root / "upload")
    (root / "upload/.immich").write_bytes(b"")  # Immich's marker: the library is mounted
    files.append("upload/.immich")
    try:
        yield root, files
    finally:
        if (root / "upload").exists():
            remove_deep_tree(root / "upload")


def local_rels(entries: Iterator[LocalFile | ScanProblem]) -> list[str]:
    out = []
    for entry in entries:
        assert isinstance(entry, LocalFile), entry
        out.append(entry.rel)
    return out


def test_a_tree_deeper_than_the_recursion_limit_is_walked_in_key_order(deep: tuple[Path, list[str]]) -> None:
    root, files = deep
    walked = local_rels(walk_folder(root, "upload"))
    assert walked == sorted(files)
    assert max(rel.count("/") for rel in walked) == DEPTH + 1

    units = list_units(root, "upload", limit=50)
    assert len(units) > 1  # split: the deep chain and the files beside it are separate units
    per_unit = [local_rels(walk_unit(root, u.rel_dir, u.covered)) for u in units]
    assert all(rels == sorted(rels) for rels in per_unit)
    listed = [rel for rels in per_unit for rel in rels]
    assert sorted(listed) == sorted(files) and len(listed) == len(set(listed))


def test_plan_and_backup_finish_on_a_very_deep_tree(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, deep: tuple[Path, list[str]]
) -> None:
    """The bottom file's key is far over S3's limit: AWS refuses it (one failed file, one line), the local
    test server stores it; either way the walk gets there and every other file is backed up."""
    root, files = deep
    monkeypatch.setenv("LIBRARY_ROOT", str(root))
    plan = run_sync("plan", "-o", "json", "--only", "upload", "--settle-seconds", "0")
    assert plan.code == 0, plan.err[-2000:]
    assert plan.json()["totals"]["files"] == len(files)
    assert "Traceback" not in plan.err

    backup = run_sync("backup", "-o", "json", "--only", "upload", "--settle-seconds", "0")
    report = backup.json()
    assert backup.code in (0, 1), report.get("error")
    assert "Traceback" not in backup.err
    stored = set(list_keys(s3, bucket, PREFIX))
    bottom = max(files, key=len)
    assert stored >= {PREFIX + rel for rel in files if rel != bottom}
    if PREFIX + bottom not in stored:
        (detail,) = [p["detail"] for p in report["problems"] if p["path"] == bottom]
        assert "\n" not in detail
    else:
        assert report["totals"]["uploaded"] == len(files)


# Names whose key order differs from a naive sort of paths: bytes below and above "/" (0x2F), spaces,
# dots and dashes, upper case, non-ASCII (two-, three- and four-byte UTF-8), and prefixes of each other.
NAME_PARTS = ["a", "a.", "a-", "a b", "a0", "A", "ab", "a~", "é", "e\u0301", "日本", "😀", "_", "+", ".x", "a.b", "!"]


def random_tree(root: Path, rng: random.Random, *, dirs: int, files: int) -> list[str]:
    """Directories and files with colliding-looking names, rooted at `root/upload`. Returns file rels."""
    made = ["upload"]
    (root / "upload").mkdir(parents=True)
    for _ in range(dirs):
        parent = rng.choice(made)
        name = rng.choice(NAME_PARTS) + rng.choice(["", "", "z", "."])
        rel = f"{parent}/{name}"
        if not (root / rel).exists():
            (root / rel).mkdir()
            made.append(rel)
    out = []
    for _ in range(files):
        parent = rng.choice(made)
        name = rng.choice(NAME_PARTS) + rng.choice(["", ".jpg", "-1", " 2", ".JPG"])
        rel = f"{parent}/{name}"
        if not (root / rel).exists():
            (root / rel).write_bytes(b"")
            out.append(rel)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_walk_order_is_s3_key_order_on_random_trees(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    files = random_tree(tmp_path, rng, dirs=60, files=300)
    walked = local_rels(walk_folder(tmp_path, "upload"))
    # S3 lists keys in UTF-8 byte order
    assert walked == sorted(files, key=lambda rel: rel.encode())
    assert walked == sorted(files)

    for limit in (1, 7, 40):
        units = list_units(tmp_path, "upload", limit=limit)
        per_unit = [local_rels(walk_unit(tmp_path, u.rel_dir, u.covered)) for u in units]
        assert all(rels == sorted(rels) for rels in per_unit)
        listed = [rel for rels in per_unit for rel in rels]
        assert sorted(listed) == sorted(files) and len(listed) == len(set(listed))


def test_problems_are_reported_where_they_occur_in_a_deep_tree(deep: tuple[Path, list[str]]) -> None:
    """An unreadable or odd entry far down the chain is one problem, and the walk goes on past it."""
    root, files = deep
    rel = "upload" + "/d" * 600
    os.mkfifo(root / rel / "pipe.jpg")
    os.symlink("/nonexistent", root / rel / "link.jpg")
    seen = list(walk_folder(root, "upload"))
    problems = {(p.rel, p.kind.value) for p in seen if isinstance(p, ScanProblem)}
    assert problems == {(f"{rel}/pipe.jpg", "special-file"), (f"{rel}/link.jpg", "symlink")}
    assert [e.rel for e in seen if isinstance(e, LocalFile)] == sorted(files)
    for name in ("pipe.jpg", "link.jpg"):
        path = root / rel / name
        assert stat.S_ISFIFO(os.lstat(path).st_mode) or os.path.islink(path)
        os.unlink(path)
