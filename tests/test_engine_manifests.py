"""Run manifests (`sync_engine/manifests.py`): one reader for verify and restore, and untrusted input.

A manifest comes from the bucket, so anything in it may be wrong. A line that does not fit the schema
costs that line (counted, with its number); a manifest that is not a gzip stream the engine wrote is
unreadable as a whole. Verify reports either as a difference (exit 1), restore reports it and restores
the rest (exit 1); neither ever shows a traceback.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.errors import ManifestError
from sync_engine.manifests import MAX_LINE, BadLine, Recorded, read_manifest
from tests.conftest import Result
from tests.forgery import planted_manifest_key

RunSync = Callable[..., Result]

REPORTS = "immich/sync-reports/"


def body(*lines: object) -> bytes:
    out = b""
    for line in lines:
        out += (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
    return gzip.compress(out)


GOOD = {"key": "immich/media/upload/a.jpg", "size": 3, "mtime": 1.5, "etag": '"ABC"', "part_size": None}


def test_a_manifest_line_is_read_and_normalised() -> None:
    entries = list(read_manifest(body(GOOD, {**GOOD, "key": "immich/media/upload/b.jpg", "part_size": 16})))
    assert entries == [
        ("immich/media/upload/a.jpg", Recorded(size=3, etag="abc", mtime=1.5, part_size=None)),
        ("immich/media/upload/b.jpg", Recorded(size=3, etag="abc", mtime=1.5, part_size=16)),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"not gzip at all",
        b"",
        gzip.compress(b'{"key": "x", "size": 1, "etag": "e"}\n')[:-6],  # truncated
        body(GOOD) + b"trailing junk",
        body(GOOD)[:-8] + bytes(4) + body(GOOD)[-4:],  # the checksum does not match
    ],
    ids=["not-gzip", "empty", "truncated", "trailing-junk", "bad-checksum"],
)
def test_a_stream_that_is_not_gzip_is_one_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(data))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"{not json", "not JSON"),
        ([1, 2, 3], "not a JSON object"),
        ({**GOOD, "key": ""}, "no key"),
        ({**GOOD, "key": "k" * 1025}, "not one S3 can hold"),
        ({**GOOD, "size": "big"}, "size 'big'"),
        ({**GOOD, "size": -1}, "size -1"),
        ({**GOOD, "size": True}, "size True"),
        ({**GOOD, "etag": 5}, "etag 5"),
        ({**GOOD, "etag": ""}, "etag is empty"),
        ({**GOOD, "mtime": "yesterday"}, "mtime 'yesterday'"),
        ({**GOOD, "mtime": 1e300}, "mtime 1e+300"),
        (b'{"key": "k", "size": 1, "etag": "e", "mtime": -Infinity}', "mtime -inf"),
        ({**GOOD, "part_size": 1.5}, "part_size 1.5"),
        ({**GOOD, "verified": 0}, "verified 0"),
        ({**GOOD, "s3_etag": None}, "s3_etag None"),
        (b"x" * (MAX_LINE + 10), "longer than"),
        (b"\xff\xfe", "not JSON"),
        ({"key": "\x1b]0;pwned\x07\u202e", "size": "\x1b[2J", "etag": "e"}, "size"),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-key",
        "key-too-long",
        "size-text",
        "size-negative",
        "size-bool",
        "etag-number",
        "etag-empty",
        "mtime-text",
        "mtime-huge",
        "mtime-infinite",
        "part-size-float",
        "verified-number",
        "s3-etag-null",
        "line-too-long",
        "not-utf8",
        "terminal-escapes",
    ],
)
def test_a_bad_line_costs_that_line_only(line: object, why: str) -> None:
    entries = list(read_manifest(body(GOOD, line, GOOD)))
    assert entries[0] == entries[2] == ("immich/media/upload/a.jpg", Recorded(3, "abc", 1.5, None))
    bad = entries[1]
    assert isinstance(bad, BadLine) and bad.number == 2 and why in bad.why, bad
    assert bad.detail.isprintable() and len(bad.detail) < 300


def test_verify_counts_an_unreadable_manifest_as_a_difference(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    assert run_sync("backup").code == 0
    s3.client().put_object(Bucket=bucket, Key=planted_manifest_key(), Body=body(GOOD, {**GOOD, "size": "big"})[:-6])
    result = run_sync("verify", "-o", "json")
    assert result.code == 1 and "Traceback" not in result.err
    data = result.json()
    assert data["unreadable_manifests"] == 1 and data["missing"] == 0 and data["verified"] > 0
    assert [p["kind"] for p in data["problems"]] == ["unreadable-manifest"]
    assert data["problems"][0]["key"] == planted_manifest_key()
    text = run_sync("verify")
    assert text.code == 1 and "1 manifests unreadable" in text.out and planted_manifest_key() in text.out


def test_restore_skips_an_unreadable_manifest_and_says_so(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, tmp_path: Path
) -> None:
    assert run_sync("backup").code == 0
    # a rogue manifest that would make every restored file "changed in S3", were it believed
    rogue = body(*({**GOOD, "key": f"immich/media/upload/{n}"} for n in range(100)))[:-6]
    s3.client().put_object(Bucket=bucket, Key=planted_manifest_key(), Body=rogue)
    result = run_sync("restore", "--to", str(tmp_path / "restored"), "-o", "json")
    assert result.code == 1, result.err  # restored, but what that manifest recorded cannot be checked
    report = result.json()
    assert planted_manifest_key() in report["records_note"] and "unreadable" in report["records_note"]
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [(planted_manifest_key(), "unreadable-manifest")]
    assert "truncated" in report["problems"][0]["detail"]
    assert report["totals"]["failed"] == 0 and report["totals"]["downloaded"] == report["recorded"] > 0
    assert "manifest(s) of the backup could not be read" in " ".join(report["next_steps"])
