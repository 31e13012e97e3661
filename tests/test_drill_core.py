"""The restore drill's judgement against a real bucket: the sample library is backed up by the real engine
into moto over HTTP, then the bucket is changed behind its back with admin keys (a deleted original, an
overwritten one) and the drill's cross-check, media sample and report must say exactly what changed.
The restored database is stood in for by a ProbeResult built from the sample library's paths, as the
probe Job would print it for an Immich whose media location is `/data`.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.services.drill import (
    CrossCheck,
    DrillReport,
    SampleResult,
    cross_check,
    drill_report_key,
    latest_drill,
    offsite_keys_as_of,
    sample_media,
    write_drill_report,
)
from immich_tui.services.immich_schema import AssetRow, ProbeResult
from immich_tui.services.offsite import Offsite, Reader
from sync_engine.config import S3Settings, SyncSettings
from sync_engine.manifests import index_runs
from sync_engine.store import StaticCredentials
from sync_engine.verify import verify
from tests.conftest import Result
from tests.forgery import PREFIX, REPORTS, after, newest_modified

RunSync = Callable[..., Result]
USER = "7f3c2a10-admin"
PHOTO = f"library/{USER}/2024/01/IMG_0001.jpg"
CREATED = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def reader_for(s3: LocalS3, bucket: str) -> Reader:
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint)
    return Reader("restorer", settings, PREFIX, REPORTS, StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))


def originals(sample: SampleLibrary) -> list[str]:
    """The sample's asset originals: what an Immich database would reference."""
    return sorted(
        rel for rel in sample.files if rel.split("/", 1)[0] in ("upload", "library") and not rel.endswith("/.immich")
    )


def probe_of(
    paths: list[str], created: dt.datetime | None = CREATED, extra: list[AssetRow] | None = None
) -> ProbeResult:
    rows = [AssetRow(f"/data/{rel}", created) for rel in paths] + list(extra or [])
    return ProbeResult("current", "v1.140.0", len(rows), rows, media_location="/data")


@pytest.fixture
def backed_up(run_sync: RunSync, s3: LocalS3, bucket: str) -> tuple[Reader, dt.datetime, dt.datetime]:
    """The sample backed up into the versioned bucket: (restorer access, the sync's start, S3's time after it)."""
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    reader = reader_for(s3, bucket)
    index = index_runs(reader.store(), REPORTS)
    assert index.last_sync is not None
    return reader, utc(index.last_sync.started), utc(newest_modified(s3.client(), bucket))


# -- cross-check -----------------------------------------------------------------------------------


def test_a_consistent_database_has_nothing_missing_and_no_orphans(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary
) -> None:
    reader, sync_start, stored = backed_up
    keys = offsite_keys_as_of(reader.store(), PREFIX, stored)
    paths = originals(sample)
    external = [AssetRow("/mnt/nas/photos/2019/beach.jpg", CREATED)]
    result = cross_check(probe_of(paths, extra=external), keys, PREFIX, sync_start)
    assert result == CrossCheck(
        assets=len(paths) + 1,
        offsite_originals=len(paths),
        missing=0,
        missing_examples=[],
        not_yet_offsite=0,
        not_yet_offsite_examples=[],
        orphans=0,
        orphan_examples=[],
        external=1,
    )
    # profile pictures, thumbnails, encoded videos and markers are offsite but are no asset's original
    assert not any(k.startswith((f"{PREFIX}profile/", f"{PREFIX}thumbs/", f"{PREFIX}encoded-video/")) for k in keys)
    assert f"{PREFIX}library/.immich" not in keys


def test_an_original_deleted_offsite_is_missing_by_name_and_present_as_of_before(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary, s3: LocalS3, bucket: str
) -> None:
    reader, sync_start, stored = backed_up
    after(stored.timestamp())
    s3.client().delete_object(Bucket=bucket, Key=f"{PREFIX}{PHOTO}")
    probe = probe_of(originals(sample))

    now = cross_check(
        probe, offsite_keys_as_of(reader.store(), PREFIX, utc(newest_modified(s3.client(), bucket))), PREFIX, sync_start
    )
    assert (now.missing, now.missing_examples, now.not_yet_offsite, now.orphans) == (1, [PHOTO], 0, 0)
    assert now.offsite_originals == len(originals(sample)) - 1

    before = cross_check(probe, offsite_keys_as_of(reader.store(), PREFIX, stored), PREFIX, sync_start)
    assert (before.missing, before.missing_examples) == (0, [])


def test_an_asset_created_after_the_sync_started_is_not_yet_offsite(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary
) -> None:
    reader, sync_start, stored = backed_up
    fresh = [
        AssetRow(f"/data/upload/{USER}/ee/ff/eeff0001.jpg", sync_start + dt.timedelta(seconds=30)),
        AssetRow(f"/data/upload/{USER}/ee/ff/eeff0002.jpg", sync_start + dt.timedelta(minutes=5)),
    ]
    old_and_gone = AssetRow(f"/data/library/{USER}/2023/12/lost.jpg", sync_start - dt.timedelta(days=30))
    probe = probe_of(originals(sample), extra=[*fresh, old_and_gone])
    keys = offsite_keys_as_of(reader.store(), PREFIX, stored)

    result = cross_check(probe, keys, PREFIX, sync_start)
    assert result.not_yet_offsite == 2
    assert result.not_yet_offsite_examples == [f"upload/{USER}/ee/ff/eeff0001.jpg", f"upload/{USER}/ee/ff/eeff0002.jpg"]
    assert (result.missing, result.missing_examples) == (1, [f"library/{USER}/2023/12/lost.jpg"])

    # no sync had finished by the recovery point: nothing can be expected offsite yet
    nothing_yet = cross_check(probe, keys, PREFIX, None)
    assert (nothing_yet.missing, nothing_yet.not_yet_offsite) == (0, 3)


def test_offsite_originals_no_asset_references_are_orphans(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary
) -> None:
    reader, sync_start, stored = backed_up
    paths = originals(sample)
    dropped = [p for p in paths if p.startswith("upload/")][:12]
    keys = offsite_keys_as_of(reader.store(), PREFIX, stored)

    result = cross_check(probe_of([p for p in paths if p not in dropped]), keys, PREFIX, sync_start)
    assert result.orphans == 12
    assert result.orphan_examples == sorted(dropped)[:10]
    assert (result.missing, result.not_yet_offsite) == (0, 0)


# -- media sample ----------------------------------------------------------------------------------


def test_a_sample_restores_and_verifies_each_object_and_leaves_the_scratch_empty(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary, tmp_path: Path
) -> None:
    reader, _, stored = backed_up
    scratch = tmp_path / "scratch"
    result = sample_media(reader, PREFIX, scratch, sample=7, newer_than=stored, as_of=None, rng=random.Random(3))
    assert (result.requested, result.verified, result.failed) == (7, 7, [])
    assert result.notes == []
    assert 0 < result.bytes <= sum(sample.files[p] for p in originals(sample))
    assert list(scratch.rglob("*")) == []

    # the same seed draws the same sample: the bytes moved are the same
    again = sample_media(reader, PREFIX, scratch, sample=7, newer_than=stored, as_of=None, rng=random.Random(3))
    assert (again.requested, again.verified, again.bytes) == (7, 7, result.bytes)


def test_a_corrupted_object_fails_verification_by_name(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], sample: SampleLibrary, s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    reader, _, stored = backed_up
    after(stored.timestamp())
    size = sample.files[PHOTO]
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}{PHOTO}", Body=b"\x00" * size)
    scratch = tmp_path / "scratch"

    # everything written since the last drill is sampled, so the overwritten photo is among them
    result = sample_media(reader, PREFIX, scratch, sample=4, newer_than=stored, as_of=None, rng=random.Random(5))
    assert (result.requested, result.verified, len(result.failed)) == (5, 4, 1)
    assert result.failed[0].startswith(f"{PHOTO}: changed in S3 after the backup wrote it")
    assert list(scratch.rglob("*")) == []

    # as of the backup, the bucket still held the photo's recorded bytes (the version before the overwrite)
    then = sample_media(reader, PREFIX, scratch, sample=0, newer_than=utc(0), as_of=stored, rng=random.Random(5))
    assert (then.requested, then.verified, then.failed) == (len(originals(sample)), len(originals(sample)), [])


# -- drill reports ---------------------------------------------------------------------------------


def full_report(started: dt.datetime) -> DrillReport:
    return DrillReport(
        started=started,
        cluster="immich-db-drill-20261201t020000",
        source_cluster="immich-db",
        finished=started + dt.timedelta(minutes=9),
        target=None,
        recovery_point=started - dt.timedelta(minutes=3),
        db_ready_seconds=312.5,
        probe_layout="current",
        probe_assets=210,
        immich_version="v1.140.0",
        last_sync_start=started - dt.timedelta(hours=5),
        cross_check=CrossCheck(210, 211, 1, [PHOTO], 2, ["upload/a.jpg", "upload/b.jpg"], 3, ["x", "y", "z"], 4),
        sample=SampleResult(100, 99, [f"{PHOTO}: changed in S3"], 12_345_678, 41.0, ["a note"]),
        rpo_db_seconds=180.0,
        rpo_media_seconds=18_000.0,
        rto_db_seconds=312.5,
        media_seconds_per_gib=3.5,
        library_bytes=50 * 1024**3,
        rto_media_seconds_estimate=175.0,
        outcome="failed",
        problems=["1 asset is missing its original offsite", "1 sampled object failed verification"],
        kept=False,
    )


def test_a_drill_report_round_trips_through_the_bucket(s3: LocalS3, bucket: str) -> None:
    store = reader_for(s3, bucket).store()
    started = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=20)
    report = full_report(started)
    key = write_drill_report(store, REPORTS, report)
    assert key == drill_report_key(REPORTS, started) == f"{REPORTS}drills/{started:%Y%m%dT%H%M%SZ}.json"

    latest = latest_drill(store, REPORTS, dt.datetime.now(dt.UTC))
    assert latest is not None and latest.ignored == []
    assert latest.key == key
    assert latest.report == report
    assert latest.stored is not None and abs((latest.stored - dt.datetime.now(dt.UTC)).total_seconds()) < 900
    assert DrillReport.from_json(json.loads(json.dumps(report.to_json()))) == report
    assert latest_drill(store, "elsewhere/", dt.datetime.now(dt.UTC)) is None


def test_forged_and_oversized_drill_reports_are_ignored_with_a_reason(s3: LocalS3, bucket: str) -> None:
    store = reader_for(s3, bucket).store()
    client = s3.client()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    good = full_report(now - dt.timedelta(hours=2))
    good.outcome, good.problems = "ok", []
    write_drill_report(store, REPORTS, good)
    after(newest_modified(client, bucket))

    forged = full_report(now - dt.timedelta(hours=1)).to_json()
    forged["outcome"] = "splendid"
    client.put_object(Bucket=bucket, Key=f"{REPORTS}drills/a-forged.json", Body=json.dumps(forged).encode())
    early = full_report(now + dt.timedelta(hours=3)).to_json()  # says it started after S3 stored it
    client.put_object(Bucket=bucket, Key=f"{REPORTS}drills/b-early.json", Body=json.dumps(early).encode())
    wrong_type = full_report(now).to_json()
    wrong_type["sample"]["verified"] = "all of them"
    client.put_object(Bucket=bucket, Key=f"{REPORTS}drills/c-type.json", Body=json.dumps(wrong_type).encode())
    huge = full_report(now).to_json()
    huge["padding"] = "x" * (1024 * 1024)
    client.put_object(Bucket=bucket, Key=f"{REPORTS}drills/d-huge.json", Body=json.dumps(huge).encode())
    client.put_object(Bucket=bucket, Key=f"{REPORTS}drills/e-junk.json", Body=b"\x1f\x8b not json")

    latest = latest_drill(store, REPORTS, now + dt.timedelta(minutes=5))
    assert latest is not None and latest.report is not None
    assert latest.report.outcome == "ok" and latest.report.started == good.started
    reasons = {i.key.rsplit("/", 1)[1]: i.reason for i in latest.ignored}
    assert set(reasons) == {"a-forged.json", "b-early.json", "c-type.json", "d-huge.json", "e-junk.json"}
    assert "outcome 'splendid' is not one of ok, failed, error" in reasons["a-forged.json"]
    assert "written before its drill started" in reasons["b-early.json"]
    assert "sample.verified 'all of them' is not a count" in reasons["c-type.json"]
    assert "over the 1,048,576-byte cap" in reasons["d-huge.json"]
    assert "not JSON" in reasons["e-junk.json"]

    # a report S3 stored after the checking clock's now (beyond the skew allowed) vouches for nothing
    early_clock = latest_drill(store, REPORTS, now - dt.timedelta(hours=1))
    assert early_clock is not None and early_clock.report is None and early_clock.stored is None
    assert {i.reason for i in early_clock.ignored} == {"stored in the future by S3's date"}


def test_drill_reports_are_never_taken_for_run_reports(
    backed_up: tuple[Reader, dt.datetime, dt.datetime], s3: LocalS3, bucket: str
) -> None:
    reader, _, _ = backed_up
    store = reader.store()
    before = Offsite(reader).reports()
    write_drill_report(store, REPORTS, full_report(dt.datetime.now(dt.UTC).replace(microsecond=0)))

    index = index_runs(store, REPORTS)
    assert index.untrusted == [] and len(index.reports) == 1
    reports = Offsite(reader).reports()
    assert (reports.total, reports.unreadable, reports.ignored) == (before.total, {}, [])
    assert reports.latest_ok is not None and reports.latest_ok.key == before.latest_ok.key  # type: ignore[union-attr]
    settings = SyncSettings(library_root=Path("/"), media_prefix=PREFIX, report_prefix=REPORTS, s3=reader.settings)
    result = verify(settings, store)
    assert (result.untrusted_reports, result.ok) == (0, True), result.problems
