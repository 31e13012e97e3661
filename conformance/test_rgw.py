"""The engine's and restore's S3-facing behaviour against Ceph RGW, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conformance.conftest import client
from conformance.rgw import RadosGateway
from immich_tui.demo.library import SampleLibrary
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
VIDEO = "library/b41e9d22-anna/2024/05/VID_0002.mp4"
AWKWARD = ["upload/tricky/a b+c&d=e.jpg", "upload/tricky/ünïcödé 😀.jpg", "upload/tricky/%41 #?[x].jpg"]


def _backed_up(sample: SampleLibrary) -> dict[str, int]:
    return {PREFIX + k: v for k, v in sample.files.items() if k.startswith(("upload/", "library/", "profile/"))}


def test_backup_noop_verify_and_restore_byte_for_byte(
    run_sync, rgw: RadosGateway, bucket: str, sample: SampleLibrary, tmp_path: Path
):
    for rel in AWKWARD:
        (sample.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (sample.root / rel).write_bytes(rel.encode())
    first = run_sync("backup", "-o", "json")
    assert first.code == 0, first.json()["problems"]
    want = _backed_up(sample) | {PREFIX + rel: len(rel.encode()) for rel in AWKWARD}
    pages = client(rgw.endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
    stored = {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
    assert stored == want
    assert first.json()["totals"]["uploaded"] == len(want)

    again = run_sync("backup", "-o", "json")
    assert again.code == 0 and again.json()["totals"]["uploaded"] == 0

    assert run_sync("verify").code == 0

    target = tmp_path / "restored"
    restored = run_sync("restore", "--to", str(target))
    assert restored.code == 0, restored.err
    for key in want:
        rel = key.removeprefix(PREFIX)
        assert (
            hashlib.md5((target / rel).read_bytes()).digest() == hashlib.md5((sample.root / rel).read_bytes()).digest()
        ), rel


def test_rgw_answers_an_empty_completion_etag_and_the_listing_confirms_it(run_sync, sample: SampleLibrary):
    """The Ceph bug this suite exists for: every multipart file used to fail, every night."""
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.json()["problems"]
    assert result.json()["requests"].get("CompleteMultipartUpload", 0) >= 1


def test_a_wrong_completion_etag_still_fails_loudly(
    run_sync, rgw: RadosGateway, monkeypatch: pytest.MonkeyPatch, sample: SampleLibrary
):
    proxy = Proxy(rgw.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        proxy.rules.append(
            fail(
                lambda r: r.op == "CompleteMultipartUpload",
                ("body", (rb"<ETag>[^<]*</ETag>", b"<ETag>&quot;0123456789abcdef0123456789abcdef-2&quot;</ETag>")),
            )
        )
        result = run_sync("backup", "-o", "json")
    finally:
        proxy.close()
    assert result.code == 1
    [problem] = [p for p in result.json()["problems"] if p["path"] == VIDEO]
    assert "0123456789abcdef0123456789abcdef-2" in problem["detail"]
