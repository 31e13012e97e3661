"""Run manifests (`sync_engine/manifests.py`): one reader for verify and restore, and untrusted input.

A manifest comes from the bucket, so anything in it may be wrong. A line that does not fit the schema
makes its manifest unreadable: verify reports it as a difference (exit 1), restore skips it and says so;
neither ever shows a traceback.
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
from sync_engine.manifests import MAX_LINE, Recorded, read_manifest
from tests.conftest import Result

RunSync = Callable[..., Result]

REPORTS = "immich/sync-reports/"
# Sorts after every real run's manifest: as the newest, it would win for every key it names.
ROGUE = f"{REPORTS}20991231T235959Z-0badc0de-00000000-ok-full.manifest.jsonl.gz"


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
        gzip.compress(b'{"key": "x", "size": 1, "etag": "e"}\n')[:-6],  # truncated
        body(b"{not json"),
        body([1, 2, 3]),
        body({**GOOD, "key": ""}),
        body({**GOOD, "size": "big"}),
        body({**GOOD, "size": -1}),
        body({**GOOD, "size": True}),
        body({**GOOD, "etag": 5}),
        body({**GOOD, "mtime": "yesterday"}),
        body({**GOOD, "part_size": 1.5}),
        body(GOOD, b"x" * (MAX_LINE + 10)),
        body(b"\xff\xfe"),
    ],
    ids=[
        "not-gzip",
        "truncated",
        "not-json",
        "not-object",
        "no-key",
        "size-text",
        "size-negative",
        "size-bool",
        "etag-number",
        "mtime-text",
        "part-size-float",
        "line-too-long",
        "not-utf8",
    ],
)
def test_anything_else_is_one_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(data))
    assert "\n" not in str(caught.value)


def test_verify_counts_an_unreadable_manifest_as_a_difference(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    assert run_sync("backup").code == 0
    s3.client().put_object(Bucket=bucket, Key=ROGUE, Body=body(GOOD, {**GOOD, "size": "big"}))
    result = run_sync("verify", "-o", "json")
    assert result.code == 1 and "Traceback" not in result.err
    data = result.json()
    assert data["unreadable_manifests"] == 1 and data["missing"] == 0 and data["verified"] > 0
    assert [p["kind"] for p in data["problems"]] == ["unreadable-manifest"]
    assert data["problems"][0]["key"] == ROGUE
    text = run_sync("verify")
    assert text.code == 1 and "1 manifests unreadable" in text.out and ROGUE in text.out


def test_restore_skips_an_unreadable_manifest_and_says_so(
    run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary, tmp_path: Path
) -> None:
    assert run_sync("backup").code == 0
    # a rogue manifest that would make every restored file "changed in S3", were it believed
    s3.client().put_object(Bucket=bucket, Key=ROGUE, Body=body({**GOOD, "key": "immich/media/upload/x"}, b"{bad"))
    result = run_sync("restore", "--to", str(tmp_path / "restored"), "-o", "json")
    assert result.code == 0, result.err
    report = result.json()
    assert ROGUE in report["records_note"] and "unreadable" in report["records_note"]
    assert report["totals"]["failed"] == 0 and report["totals"]["downloaded"] == report["recorded"] > 0
