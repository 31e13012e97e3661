"""Incremental listing: directories whose every file is exactly as a run confirmed it are not listed again."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from tests.conftest import list_keys
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str], sample: SampleLibrary) -> Proxy:
    """The sample copied a moment ago: let its ctimes age past the trust margin, count requests."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    monkeypatch.setenv("IMMICH_SYNC_SETTLE_SECONDS", "0")
    time.sleep(2.2)  # report names have one-second resolution, plus the 1 s margin
    return proxy


def _backed_up(sample: SampleLibrary) -> int:
    return len([k for k in sample.files if k.startswith(("upload/", "library/", "profile/"))])


def test_nothing_changed_means_only_the_report_prefix_is_listed(run_sync, settled: Proxy, sample: SampleLibrary):
    first = run_sync("backup", "-o", "json").json()
    assert first["listing"] == "full" and first["report_key"].endswith("-ok-full.json")
    settled.reset()
    second = run_sync("backup", "-o", "json").json()
    assert second["listing"] == "incremental"
    assert second["trusted_run"] == first["report_key"]
    assert second["units_trusted"] == second["list_units"] and second["units_listed"] == 0
    assert second["totals"]["unchanged"] == _backed_up(sample) and second["totals"]["uploaded"] == 0
    assert settled.counts["ListObjectsV2"] == 1  # the report prefix, to find the last successful run
    assert second["report_key"].endswith("-ok-incremental.json")


def test_new_moved_and_renamed_files_are_still_found(
    run_sync, settled: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    assert run_sync("backup").code == 0
    time.sleep(2.2)  # report names have one-second resolution, plus the 1 s margin
    lib = sample.root
    old = time.time() - 86_400 * 30
    # a new photo with an old timestamp (as a camera import would give it)
    (lib / "library/7f3c2a10-admin/2024/01/IMG_new.jpg").write_bytes(b"n" * 1234)
    os.utime(lib / "library/7f3c2a10-admin/2024/01/IMG_new.jpg", (old, old))
    # a file moved in from a skipped folder: mv keeps its mtime
    thumb = next(p for p in (lib / "thumbs").rglob("*.webp"))
    shutil.move(thumb, lib / "upload/moved-in.webp")
    # a renamed directory: its files keep their times
    (lib / "library/7f3c2a10-admin/2024/06").rename(lib / "library/7f3c2a10-admin/2024/06-june")
    report = run_sync("backup", "-o", "json").json()
    keys = list_keys(s3, bucket, PREFIX)
    assert PREFIX + "library/7f3c2a10-admin/2024/01/IMG_new.jpg" in keys
    assert PREFIX + "upload/moved-in.webp" in keys
    assert PREFIX + "library/7f3c2a10-admin/2024/06-june/Café – Zürich.jpg" in keys
    assert report["totals"]["uploaded"] == 1 + 1 + len(os.listdir(lib / "library/7f3c2a10-admin/2024/06-june"))
    assert report["listing"] == "incremental" and report["units_trusted"] == 1  # profile/ did not change


def test_after_an_unsuccessful_run_the_failed_files_are_listed_and_sent(
    run_sync, settled: Proxy, sample: SampleLibrary
):
    settled.rules.append(
        fail(lambda r: r.op == "PutObject" and r.key.endswith("avatar.jpg"), ("error", (403, "AccessDenied")))
    )
    assert run_sync("backup", "-o", "json").json()["status"] == "partial"
    settled.rules.clear()
    settled.reset()
    second = run_sync("backup", "-o", "json").json()
    assert second["totals"]["uploaded"] == 2 and second["status"] == "ok"
    # the files that failed have no confirmed look, so exactly their directories are listed
    listed = {r.query["prefix"][0] for r in settled.ops("ListObjectsV2")} - {"immich/sync-reports/"}
    assert listed == {PREFIX + "profile/7f3c2a10-admin/", PREFIX + "profile/b41e9d22-anna/"} or listed == {
        PREFIX + "profile/"
    }
    third = run_sync("backup", "-o", "json").json()
    assert third["listing"] == "incremental" and third["units_listed"] == 0
    assert third["files_cache"].startswith(second["report_key"].removesuffix(".json"))


def test_an_object_lost_from_the_bucket_is_healed_by_the_next_full_listing(
    run_sync, settled: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    assert run_sync("backup").code == 0
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    s3.client().delete_object(Bucket=bucket, Key=victim)
    trusted = run_sync("backup", "-o", "json").json()
    assert trusted["listing"] == "incremental" and victim not in list_keys(s3, bucket, PREFIX)
    assert run_sync("verify").code == 1  # verify sees the gap at any time
    full = run_sync("backup", "-o", "json", "--full-listing-days", "0").json()
    assert full["listing"] == "full" and full["totals"]["uploaded"] == 1
    assert victim in list_keys(s3, bucket, PREFIX)


def test_a_run_from_another_library_copy_vouches_for_nothing(
    run_sync, settled: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path, sample: SampleLibrary
):
    """An operator's partial copy elsewhere, backed up to the same prefix, must not let the CronJob
    skip directories it never saw."""
    partial = tmp_path / "partial"
    shutil.copytree(sample.root / "profile", partial / "profile")
    assert run_sync("backup", "--library-root", str(partial), "--only", "profile").code == 0
    report = run_sync("backup", "-o", "json", "--only", "profile").json()
    assert report["listing"] == "full" and report["trusted_run"] == ""


def test_a_writer_that_may_not_list_the_reports_lists_every_directory(run_sync, settled: Proxy, sample: SampleLibrary):
    """A policy limiting ListBucket to the media prefix is answered with AccessDenied for the report
    prefix: the run falls back to a full listing instead of failing."""
    settled.rules.append(
        fail(
            lambda r: r.op == "ListObjectsV2" and r.query.get("prefix", [""])[0].startswith("immich/sync-reports/"),
            ("error", (403, "AccessDenied")),
        )
    )
    for _ in range(2):
        result = run_sync("backup", "-o", "json")
        assert result.code == 0, result.err
        assert result.json()["listing"] == "full"
    assert result.json()["totals"]["uploaded"] == 0
