"""Manifests are read from the bucket, so they are untrusted input for `verify` and `restore`.

A bad line costs that line, never the whole manifest and never a traceback: the rest is used, the bad
lines are counted and shown (manifest key and line number), verify fails because it cannot vouch for
what it could not read, and restore finishes the job and exits 1. A manifest that inflates without
bound is cut off at a cap and reported unreadable, with memory staying flat (measured in a child
process). The backup's `verified`/`s3_etag` fields round-trip, and an upload S3 did not confirm fails
verify even when the listing happens to agree.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine import manifests
from sync_engine.models import LocalFile, Outcome, PlanItem, Reason, UploadResult
from tests.conftest import SECRET, Result, list_keys
from tests.forgery import planted_manifest_key
from tests.s3proxy import Proxy, Request, hold

RunSync = Callable[..., Result]

PREFIX = "immich/media/"
REPORTS = "immich/sync-reports/"
MiB = 1024 * 1024


def rogue(n: int) -> str:
    """A manifest key that sorts after every real run's (so it is the newest); larger n sorts later."""
    return planted_manifest_key(n)


def body(*lines: object) -> bytes:
    out = b""
    for line in lines:
        out += (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
    return gzip.compress(out)


def good_line(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    etag = obj["ETag"].strip('"')
    line = {
        "key": obj["Key"],
        "size": obj["Size"],
        "mtime": 1_500_000_000.25,
        "etag": etag,
        "part_size": 16 * MiB if "-" in etag else None,
    }
    return {**line, **changes}


@pytest.fixture
def backed_up(run_sync: RunSync, sample: SampleLibrary, s3: LocalS3, bucket: str) -> dict[str, dict[str, Any]]:
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    return list_keys(s3, bucket, PREFIX)


def restore(run_sync: RunSync, target: Path, *args: str) -> Result:
    return run_sync("restore", "--to", str(target), "-o", "json", *args)


AVATAR = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
OTHER = PREFIX + "profile/b41e9d22-anna/avatar.jpg"
BAD_LINES: list[bytes | object] = [
    [1, 2, 3],
    {"key": OTHER, "size": "big", "etag": "e"},
    {"key": OTHER, "size": 1, "etag": "e", "mtime": "yesterday"},
    b'{"key": "' + OTHER.encode() + b'", "size": 1, "etag": "e", "mtime": NaN}',
    b'{"key": "' + OTHER.encode() + b'", "size": 1, "etag": "e", "mtime": Infinity}',
    {"key": OTHER, "size": 1, "etag": "e", "mtime": True},
    "just a string",
    b"[" * 60_000,  # nesting deeper than any parser's recursion limit
    b"x" * (manifests.MAX_LINE + 10),
]


# -- A: bad lines ---------------------------------------------------------------------------------


def test_restore_uses_the_good_lines_and_reports_each_bad_one(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], tmp_path: Path, s3: LocalS3, bucket: str
) -> None:
    """Every kind of bad line in the newest manifest; its good line (a new mtime) must still be used."""
    s3.client().put_object(
        Bucket=bucket, Key=rogue(9), Body=body(good_line(backed_up[AVATAR]), *BAD_LINES, good_line(backed_up[OTHER]))
    )
    target = tmp_path / "restored"
    result = restore(run_sync, target)
    assert "Traceback" not in result.err
    assert result.code == 1, result.err
    report = result.json()
    assert report["status"] == "partial"
    assert report["bad_manifest_lines"] == len(BAD_LINES)
    assert report["totals"]["failed"] == report["totals"]["conflicts"] == 0
    assert report["totals"]["downloaded"] == report["totals"]["objects"]  # the rest came back
    bad = [p for p in report["problems"] if p["kind"] == "bad-manifest-line"]
    assert bad and all(p["path"] == rogue(9) for p in bad)
    assert bad[0]["detail"].startswith("line 2: ") and "not a JSON object" in bad[0]["detail"]
    assert "line 3: " in bad[1]["detail"] and "size" in bad[1]["detail"]
    assert all("\n" not in p["detail"] and len(p["detail"]) < 300 for p in bad)
    assert "manifest" in report["records_note"] and str(len(BAD_LINES)) in report["records_note"]
    # the rogue manifest's good lines won: their mtime, not the backup's
    assert (target / "profile/7f3c2a10-admin/avatar.jpg").stat().st_mtime == 1_500_000_000.25
    assert (target / "profile/b41e9d22-anna/avatar.jpg").stat().st_mtime == 1_500_000_000.25
    text = run_sync("restore", "--to", str(tmp_path / "again"))
    assert text.code == 1 and "bad-manifest-line" in text.out and rogue(9) in text.out
    assert "Traceback" not in text.err


def test_a_bad_newest_line_does_not_leave_an_older_record_in_charge(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], tmp_path: Path, s3: LocalS3, bucket: str
) -> None:
    """The newest word on a key is unreadable (a NaN mtime): what an older manifest said no longer holds,
    so the object is checked against S3 alone and dated by LastModified, instead of failing."""
    s3.client().put_object(
        Bucket=bucket,
        Key=rogue(9),
        Body=body(b'{"key": "' + AVATAR.encode() + b'", "size": 1, "etag": "e", "mtime": NaN}'),
    )
    target = tmp_path / "restored"
    result = restore(run_sync, target, "--only", "profile")
    assert result.code == 1, result.err
    report = result.json()
    assert report["totals"]["failed"] == 0 and report["totals"]["downloaded"] == report["totals"]["objects"]
    assert report["bad_manifest_lines"] == 1
    assert "mtime" in report["problems"][0]["detail"]
    got = (target / "profile/7f3c2a10-admin/avatar.jpg").stat().st_mtime
    assert got == backed_up[AVATAR]["LastModified"].timestamp()


def test_verify_fails_when_a_line_is_bad_but_checks_the_rest(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], s3: LocalS3, bucket: str
) -> None:
    s3.client().put_object(
        Bucket=bucket, Key=rogue(9), Body=body(good_line(backed_up[AVATAR]), b"[" * 60_000, {"key": OTHER})
    )
    result = run_sync("verify", "-o", "json")
    assert "Traceback" not in result.err
    assert result.code == 1, result.err
    data = result.json()
    assert data["ok"] is False and data["bad_manifest_lines"] == 2 and data["unreadable_manifests"] == 0
    # the newest word on OTHER is unreadable, so no older record vouches for it any more
    assert data["verified"] == len(backed_up) - 1 and data["unrecorded"] == 1 and data["missing"] == 0
    bad = [p for p in data["problems"] if p["kind"] == "bad-manifest-line"]
    assert [(p["key"], p["line"]) for p in bad] == [(rogue(9), 2), (rogue(9), 3)]
    assert "nested" in bad[0]["detail"] and "size" in bad[1]["detail"]
    text = run_sync("verify")
    assert text.code == 1 and "MISMATCH" in text.out and "bad-manifest-line" in text.out


@pytest.mark.parametrize(
    "line",
    [{"key": OTHER, "size": 1, "etag": "e", "verified": "no"}, {"key": OTHER, "size": 1, "etag": "e", "s3_etag": 5}],
    ids=["verified-text", "s3-etag-number"],
)
def test_wrong_types_of_the_new_fields_are_bad_lines(line: dict[str, Any]) -> None:
    assert [type(x) for x in manifests.read_manifest(body(line))] == [manifests.BadLine]


# -- A: caps --------------------------------------------------------------------------------------


def _gzip_stream(lines: Iterator[bytes]) -> bytes:
    """Compressed as it is generated: the bomb's inflated size never exists in this process."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(line) for line in lines]
    out.append(packer.flush())
    return b"".join(out)


def long_key_bomb(target_bytes: int) -> bytes:
    """Distinct keys of 60,000 bytes each (S3 allows 1,024): 1,000:1 in gzip, all kept by a naive reader."""
    pad = "a" * 60_000

    def lines() -> Iterator[bytes]:
        for i in range(100_000):
            yield json.dumps({"key": f"{PREFIX}profile/{pad}{i}", "size": 1, "etag": "e"}).encode() + b"\n"

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out: list[bytes] = []
    produced = 0
    for line in lines():
        piece = packer.compress(line)
        out.append(piece)
        produced += len(piece)
        if produced >= target_bytes:
            break
    out.append(packer.flush())
    return b"".join(out)


def newline_bomb(inflated: int) -> bytes:
    return _gzip_stream(b"\n" * MiB for _ in range(inflated // MiB))


def endless_line_bomb(inflated: int) -> bytes:
    return _gzip_stream(b" " * MiB for _ in range(inflated // MiB))


MEASURE = textwrap.dedent(
    """
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    sys.stdout.write(f"{peak}\\n{proc.returncode}\\n" + proc.stdout)
    sys.stderr.write(proc.stderr)
    """
)


def test_a_small_manifest_that_inflates_without_bound_keeps_memory_flat(
    backed_up: dict[str, dict[str, Any]], sync_env: dict[str, str], tmp_path: Path, s3: LocalS3, bucket: str
) -> None:
    """600 KiB of gzip holding ~600 MB of distinct 60 KB keys: a reader that keeps what it parses, or
    holds a decompressed body, needs that much memory; the restore must stay near its usual size."""
    bomb = long_key_bomb(600 * 1024)
    assert len(bomb) < 700 * 1024
    s3.client().put_object(Bucket=bucket, Key=rogue(9), Body=bomb)
    target = tmp_path / "restored"
    env = dict(os.environ, **sync_env)
    cmd = [sys.executable, "-m", "sync_engine", "restore", "--to", str(target), "-o", "json", "--only", "profile"]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True, timeout=300, cwd=os.getcwd()
    )
    elapsed = time.monotonic() - started
    peak_kib, code, out = proc.stdout.split("\n", 2)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert SECRET not in proc.stdout + proc.stderr
    peak = int(peak_kib) * 1024
    assert peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    assert int(code) == 1, proc.stderr
    report = json.loads(out)
    assert report["totals"]["downloaded"] == report["totals"]["objects"] > 0
    assert report["problems"] and rogue(9) in " ".join(p["path"] for p in report["problems"])
    assert elapsed < 120


@pytest.mark.parametrize("make", [newline_bomb, endless_line_bomb], ids=["newlines", "one-endless-line"])
def test_inflation_past_the_cap_makes_the_manifest_unreadable_and_the_others_are_used(
    run_sync: RunSync,
    backed_up: dict[str, dict[str, Any]],
    tmp_path: Path,
    s3: LocalS3,
    bucket: str,
    make: Callable[[int], bytes],
) -> None:
    bomb = make(200 * MiB)  # about 200 KiB of gzip
    assert len(bomb) < 400 * 1024
    s3.client().put_object(Bucket=bucket, Key=rogue(9), Body=bomb)
    started = time.monotonic()
    result = run_sync("verify", "-o", "json")
    assert time.monotonic() - started < 30, "the whole bomb was inflated"
    assert result.code == 1
    data = result.json()
    assert data["unreadable_manifests"] == 1 and data["verified"] == len(backed_up)
    assert data["problems"][0]["key"] == rogue(9) and "inflates to more than" in data["problems"][0]["detail"]

    result = restore(run_sync, tmp_path / "restored", "--only", "profile")
    assert result.code == 1, result.err
    report = result.json()
    assert report["totals"]["downloaded"] == report["totals"]["objects"] > 0
    assert [p["kind"] for p in report["problems"]] == ["unreadable-manifest"]
    assert "inflates to more than" in report["problems"][0]["detail"]


def test_a_manifest_larger_than_the_cap_is_not_even_downloaded(
    run_sync: RunSync,
    backed_up: dict[str, dict[str, Any]],
    tmp_path: Path,
    proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    s3: LocalS3,
    bucket: str,
) -> None:
    monkeypatch.setattr(manifests, "MAX_COMPRESSED", 1 * MiB)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    big = body(*(good_line(backed_up[AVATAR], etag=os.urandom(16).hex()) for _ in range(80_000)))
    assert len(big) > MiB
    s3.client().put_object(Bucket=bucket, Key=rogue(9), Body=big)
    result = run_sync("verify", "-o", "json")
    assert result.code == 1
    data = result.json()
    assert data["unreadable_manifests"] == 1 and data["verified"] == len(backed_up)
    assert "larger than" in data["problems"][0]["detail"]
    assert [r.key for r in proxy.ops("GetObject") if r.key == rogue(9)] == []


def test_a_manifest_that_grew_after_the_listing_is_cut_off(
    run_sync: RunSync,
    backed_up: dict[str, dict[str, Any]],
    tmp_path: Path,
    proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    s3: LocalS3,
    bucket: str,
) -> None:
    """The listing said a few bytes; by the GET the object is a bomb. The listed size is what is read."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    client = s3.client()
    client.put_object(Bucket=bucket, Key=rogue(9), Body=body(good_line(backed_up[AVATAR])))
    swapped = threading.Event()

    def swap(_: Request) -> None:
        client.put_object(Bucket=bucket, Key=rogue(9), Body=newline_bomb(64 * MiB))
        swapped.set()

    proxy.rules.append(hold(lambda r: r.op == "GetObject" and r.key == rogue(9), swap))
    result = run_sync("verify", "-o", "json")
    assert swapped.is_set()
    assert result.code == 1
    data = result.json()
    assert data["unreadable_manifests"] == 1
    assert "listing" in data["problems"][0]["detail"]


# -- B: unconfirmed uploads and S3's own ETag -----------------------------------------------------


def _result(key: str, **fields: Any) -> UploadResult:
    local = LocalFile(rel=key.removeprefix(PREFIX), size=3, mtime_ns=1_500_000_000_500_000_000)
    item = PlanItem(local=local, key=key, reason=Reason.MISSING)
    return UploadResult(item, Outcome.UPLOADED, size=3, mtime_ns=local.mtime_ns, etag="ab" * 16, **fields)


def test_the_writer_records_unconfirmed_uploads_and_s3s_etag() -> None:
    writer = manifests.ManifestWriter()
    writer.add(_result(PREFIX + "upload/plain.jpg"))
    writer.add(_result(PREFIX + "upload/kms.jpg", s3_etag="0123456789abcdef" * 2))
    writer.add(_result(PREFIX + "upload/unconfirmed.jpg", unconfirmed=True))
    data = writer.finish()
    lines = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert "verified" not in lines[0] and "s3_etag" not in lines[0]
    assert lines[1]["s3_etag"] == "0123456789abcdef" * 2 and "verified" not in lines[1]
    assert lines[2]["verified"] is False and "s3_etag" not in lines[2]
    assert list(manifests.read_manifest(data)) == [
        (PREFIX + "upload/plain.jpg", manifests.Recorded(3, "ab" * 16, 1_500_000_000.5, None)),
        (
            PREFIX + "upload/kms.jpg",
            manifests.Recorded(3, "ab" * 16, 1_500_000_000.5, None, s3_etag="0123456789abcdef" * 2),
        ),
        (PREFIX + "upload/unconfirmed.jpg", manifests.Recorded(3, "ab" * 16, 1_500_000_000.5, None, verified=False)),
    ]


def test_verify_fails_a_key_whose_newest_upload_s3_did_not_confirm(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], s3: LocalS3, bucket: str
) -> None:
    """The listing agrees with the recorded ETag, but the last upload of the key was not confirmed."""
    client = s3.client()
    client.put_object(Bucket=bucket, Key=rogue(8), Body=body(good_line(backed_up[AVATAR], verified=False)))
    result = run_sync("verify", "-o", "json")
    assert result.code == 1, result.out
    data = result.json()
    assert data["unconfirmed"] == 1 and data["verified"] == len(backed_up) - 1
    assert [(p["kind"], p["key"]) for p in data["problems"]] == [("unconfirmed-upload", AVATAR)]
    assert "not confirmed" in data["problems"][0]["detail"]
    assert "unconfirmed-upload" in run_sync("verify").out

    # a newer, confirmed upload of the same key settles it
    client.put_object(Bucket=bucket, Key=rogue(9), Body=body(good_line(backed_up[AVATAR])))
    assert run_sync("verify").code == 0


def test_restore_reports_an_unconfirmed_upload_whose_bytes_s3_does_not_hold(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], tmp_path: Path, s3: LocalS3, bucket: str
) -> None:
    """S3 answered another ETag than the bytes sent: the manifest's MD5 is what the file must hash to."""
    line = good_line(backed_up[AVATAR], etag="0" * 32, verified=False)
    s3.client().put_object(Bucket=bucket, Key=rogue(9), Body=body(line))
    target = tmp_path / "restored"
    result = restore(run_sync, target, "--only", "profile")
    assert result.code == 1
    report = result.json()
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [
        ("profile/7f3c2a10-admin/avatar.jpg", "changed-in-s3")
    ]
    assert "not confirmed by S3" in report["problems"][0]["detail"]
    assert not (target / "profile/7f3c2a10-admin/avatar.jpg").exists()
