"""An overwrite must never destroy the only good copy, and a mass change must not reach the bucket.

Local damage — a photo truncated to 0 bytes, one scrambled in place — once went up the next night
(`size-differs`, exit 0) over its good copy. Now the changed files are held until the whole library has
been compared: with versioning off the original is kept (`changed-original-kept`, exit 1); with
versioning on the overwrite happens and is recorded; and when more than a few percent of the bucket's
files changed at once, nothing is overwritten (`suspicious-mass-change`, exit 1) while new photos still go
up. Each test is run against moto over HTTP with the engine as the CronJob runs it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from tests.conftest import list_keys

PREFIX = "immich/media/"


def photos(sample: SampleLibrary, count: int) -> list[Path]:
    """`count` originals of the sample (upload/ and library/), in a stable order."""
    found = sorted(p for p in (sample.root / "upload").rglob("*.jpg") if p.stat().st_size > 100)
    found += sorted(p for p in (sample.root / "library").rglob("*.jpg") if p.stat().st_size > 100)
    assert len(found) >= count
    return found[:count]


def scramble(path: Path) -> None:
    """Same size, other bytes, times kept: what ransomware or a bit-rotting disk leaves behind."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[: min(64, len(data))] = os.urandom(min(64, len(data)))
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def etags(s3: LocalS3, bucket: str) -> dict[str, str]:
    return {k: v["ETag"] for k, v in list_keys(s3, bucket, PREFIX).items()}


def key_of(sample: SampleLibrary, path: Path) -> str:
    return PREFIX + path.relative_to(sample.root).as_posix()


def backed_up(run_sync: Any) -> dict[str, Any]:
    first = run_sync("backup", "-o", "json")
    assert first.code == 0, first.err
    time.sleep(2.2)  # every ctime older than the racy window: the next run trusts its cache
    return first.json()


def problems(report: dict[str, Any], kind: str) -> list[str]:
    return sorted(p["path"] for p in report["problems"] if p["kind"] == kind)


def test_without_versioning_local_damage_never_replaces_the_good_copy(
    run_sync, s3: LocalS3, unversioned_bucket: str, sample: SampleLibrary
) -> None:  # type: ignore[no-untyped-def]
    bucket = unversioned_bucket
    first = backed_up(run_sync)
    assert first["versioning"] == "Off"
    truncated, scrambled = photos(sample, 2)
    good = etags(s3, bucket)
    truncated.write_bytes(b"")
    scramble(scrambled)
    new = sample.root / "upload/7f3c2a10-admin/new-after-damage.jpg"
    new.write_bytes(b"n" * 5000)
    second = run_sync("backup", "-o", "json")
    assert second.code == 1, second.err
    report = second.json()
    damaged = sorted(p.relative_to(sample.root).as_posix() for p in (truncated, scrambled))
    assert problems(report, "changed-original-kept") == damaged
    after = etags(s3, bucket)
    for path in (truncated, scrambled):
        assert after[key_of(sample, path)] == good[key_of(sample, path)]
    assert key_of(sample, new) in after  # new photos still go up
    assert report["totals"]["kept"] == 2
    assert report["status"] == "partial"
    # the next night says the same, until an operator acts
    again = run_sync("backup", "-o", "json")
    assert again.code == 1
    assert problems(again.json(), "changed-original-kept") == damaged
    assert etags(s3, bucket) == after


def test_allow_overwrite_replaces_and_records_without_versioning(
    run_sync, s3: LocalS3, unversioned_bucket: str, sample: SampleLibrary
) -> None:  # type: ignore[no-untyped-def]
    bucket = unversioned_bucket
    assert backed_up(run_sync)["versioning"] == "Off"
    [edited] = photos(sample, 1)
    old = list_keys(s3, bucket, PREFIX)[key_of(sample, edited)]
    edited.write_bytes(b"edited" * 1000)
    result = run_sync("backup", "-o", "json", "--allow-overwrite")
    assert result.code == 0, result.err
    report = result.json()
    [record] = report["overwrites"]
    assert record["key"] == key_of(sample, edited)
    assert (record["old_size"], record["old_etag"]) == (old["Size"], old["ETag"].strip('"'))
    assert record["new_size"] == 6000
    assert list_keys(s3, bucket, PREFIX)[key_of(sample, edited)]["Size"] == 6000


def test_with_versioning_an_overwrite_happens_is_recorded_and_the_old_version_stays(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:  # type: ignore[no-untyped-def]
    first = backed_up(run_sync)
    assert first["versioning"] == "Enabled"
    [edited] = photos(sample, 1)
    key = key_of(sample, edited)
    old = list_keys(s3, bucket, PREFIX)[key]
    scramble(edited)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    [record] = result.json()["overwrites"]
    assert record["key"] == key and record["old_etag"] == old["ETag"].strip('"')
    assert record["new_etag"] != record["old_etag"] and record["new_size"] == old["Size"]
    versions = s3.client().list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert sorted(v["ETag"] for v in versions) == sorted([old["ETag"], f'"{record["new_etag"]}"'])


def test_a_mass_change_trips_the_breaker_until_accepted_once(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:  # type: ignore[no-untyped-def]
    first = backed_up(run_sync)
    in_bucket = first["totals"]["uploaded"]
    damaged = photos(sample, 25)  # > 2% of the bucket's files, and more than a handful
    good = etags(s3, bucket)
    for path in damaged:
        scramble(path)
    new = sample.root / "upload/7f3c2a10-admin/new-during-attack.jpg"
    new.write_bytes(b"m" * 7000)
    tripped = run_sync("backup", "-o", "json")
    assert tripped.code == 1, tripped.err
    report = tripped.json()
    assert report["mass_change"]["tripped"] is True
    assert report["mass_change"]["changed"] == 25 and report["mass_change"]["in_bucket"] == in_bucket
    assert len(report["mass_change"]["examples"]) == 10
    assert len(problems(report, "suspicious-mass-change")) == 25
    assert report["overwrites"] == []
    after = etags(s3, bucket)
    assert {k: after[k] for k in good} == good  # not one original replaced
    assert key_of(sample, new) in after  # but the new photo is offsite
    accepted = run_sync("backup", "-o", "json", "--accept-mass-change")
    assert accepted.code == 0, accepted.err
    assert len(accepted.json()["overwrites"]) == 25
    assert accepted.json()["mass_change"]["accepted"] is True


@pytest.mark.parametrize("changed", [1, 5])
def test_a_few_changes_are_not_a_mass_change(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary, changed: int
) -> None:  # type: ignore[no-untyped-def]
    """5 of ~200 files is 2.5%, over the share, but fewer than the 10 files a breaker needs."""
    backed_up(run_sync)
    for path in photos(sample, changed):
        scramble(path)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["mass_change"]["tripped"] is False
    assert len(result.json()["overwrites"]) == changed


def test_the_breaker_thresholds_are_settings(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary) -> None:  # type: ignore[no-untyped-def]
    backed_up(run_sync)
    for path in photos(sample, 3):
        scramble(path)
    result = run_sync("backup", "-o", "json", "--mass-change-percent", "1", "--mass-change-min-files", "3")
    assert result.code == 1
    assert result.json()["mass_change"]["tripped"] is True
    bad = run_sync("backup", "--mass-change-percent", "nan")
    assert bad.code == 2 and "--mass-change-percent / IMMICH_SYNC_MASS_CHANGE_PERCENT" in bad.err
