"""Servers that commit a multipart upload without saying its ETag (Ceph RGW answers
CompleteMultipartUpload with an empty `<ETag></ETag>`, a known Ceph bug) must not fail every large
file, and must not be believed blindly either: the object is confirmed from a listing of its key."""

from __future__ import annotations

import pytest

from immich_tui.demo.library import SampleLibrary
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
VIDEO = "library/b41e9d22-anna/2024/05/VID_0002.mp4"  # 18 MiB: multipart at the tests' 16 MiB threshold


def _completion(r) -> bool:  # type: ignore[no-untyped-def]
    return r.op == "CompleteMultipartUpload"


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    return proxy


def test_an_empty_completion_etag_is_confirmed_from_the_listing(run_sync, via_proxy: Proxy, sample: SampleLibrary):
    via_proxy.rules.append(fail(_completion, ("body", (rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>"))))
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.json()["problems"]
    assert result.json()["totals"]["failed"] == 0
    exact = [r for r in via_proxy.ops("ListObjectsV2") if r.query.get("prefix") == [PREFIX + VIDEO]]
    assert len(exact) == 1  # one listing of exactly that key, no GET or HEAD
    assert via_proxy.counts["HeadObject"] == via_proxy.counts["GetObject"] == 0
    via_proxy.rules.clear()
    assert run_sync("verify").code == 0


def test_an_empty_completion_etag_with_a_wrong_listed_etag_fails_loudly(
    run_sync, via_proxy: Proxy, sample: SampleLibrary
):
    via_proxy.rules.append(fail(_completion, ("body", (rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>"))))
    listed = rb"(<Key>" + (PREFIX + VIDEO).encode() + rb"</Key>.*?<ETag>)[^<]*(</ETag>)"
    via_proxy.rules.append(
        fail(
            lambda r: r.op == "ListObjectsV2",
            ("body", (listed, rb"\g<1>&quot;00000000000000000000000000000000-2&quot;\g<2>")),
        )
    )
    result = run_sync("backup", "-o", "json")
    assert result.code == 1
    [problem] = [p for p in result.json()["problems"] if p["path"] == VIDEO]
    assert "S3 answered no ETag and lists ETag 00000000000000000000000000000000-2" in problem["detail"]


def test_a_wrong_completion_etag_still_fails_loudly(run_sync, via_proxy: Proxy, sample: SampleLibrary):
    via_proxy.rules.append(
        fail(
            _completion,
            ("body", (rb"<ETag>[^<]*</ETag>", b"<ETag>&quot;0123456789abcdef0123456789abcdef-2&quot;</ETag>")),
        )
    )
    result = run_sync("backup", "-o", "json")
    assert result.code == 1
    [problem] = [p for p in result.json()["problems"] if p["path"] == VIDEO]
    assert "S3 returned ETag 0123456789abcdef0123456789abcdef-2" in problem["detail"]
