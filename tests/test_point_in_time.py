"""One point in time for the database and the media, and saying when the two cannot meet.

The media as of T are what the newest successful sync finished by T copied: the library as of that
sync's start. A database recovered past that start may reference photos the media lack, so the point
where both meet is the sync's start. Which sync had finished is judged by S3's LastModified of its
report, never by what the report says: a report written after T cannot vouch for T.

End to end through `kubectl immich-backup` on the emulator and moto: a real sync, a photo overwritten
afterwards with admin keys (as a leaked key or ransomware would), then `db restore --as-of` plans the
database at the sync's start and `media restore --as-of --wait` brings back the true bytes.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from immich_tui.services import clock
from immich_tui.services.pointintime import SyncPoint, align, sync_points
from immich_tui.services.recovery import RecoveryError, plan_recovery
from sync_engine.models import RemoteObject
from tests.cluster import Cluster, MakeCluster
from tests.crd_schema import validate
from tests.test_restore_db import _source

REPORTS = "immich/sync-reports/"
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def at(hours_ago: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=hours_ago)


def listed(started: dt.datetime, stored: dt.datetime, status: str = "ok", coverage: str = "0c0ffee0") -> RemoteObject:
    key = f"{REPORTS}{started:%Y%m%dT%H%M%SZ}-1234abcd-{coverage}-{status}-full.json"
    return RemoteObject(key, 100, stored.timestamp(), "e")


def night(hours_ago: float, minutes: float = 20, **kw: str) -> RemoteObject:
    """A sync that started `hours_ago` and whose report S3 stored `minutes` later."""
    return listed(at(hours_ago), at(hours_ago) + dt.timedelta(minutes=minutes), **kw)


def test_only_successful_syncs_of_the_nightly_coverage_whose_start_is_plausible_count() -> None:
    points = sync_points(
        [
            night(58),
            night(34),
            night(10),
            night(9, status="partial"),  # not a full copy
            night(8, coverage="deadbeef"),  # an ad-hoc run of one folder: a coverage of its own
            listed(at(2), at(6)),  # named 4 hours after S3 stored it: its start is a lie
            RemoteObject(f"{REPORTS}not-a-report.json", 1, at(1).timestamp(), "e"),
        ]
    )
    assert [(p.started, p.stored) for p in points] == [
        (at(58), at(58) + dt.timedelta(minutes=20)),
        (at(34), at(34) + dt.timedelta(minutes=20)),
        (at(10), at(10) + dt.timedelta(minutes=20)),
    ]


def test_the_media_as_of_a_time_are_the_newest_sync_finished_by_then() -> None:
    points = sync_points([night(58), night(34), night(10)])
    first = at(200)
    point = align(at(20), points, db_first=first, now=NOW)
    assert point.sync is not None and point.sync.started == at(34)
    assert point.db_target == at(34) and point.problems == []
    assert "the library as the sync started 2026-11-26T02:00:00Z copied it" in point.media_line()
    # a database at the chosen time itself may reference photos added after that sync started
    assert "added after 2026-11-26T02:00:00Z" in point.gap(at(20)) and point.gap(at(34)) == ""
    # a sync still running at T does not count: its report was stored after T
    running = align(at(10) + dt.timedelta(minutes=10), points, db_first=first, now=NOW)
    assert running.sync is not None and running.sync.started == at(34)


def test_where_the_two_cannot_meet_it_says_why() -> None:
    points = sync_points([night(58), night(34)])
    none_yet = align(at(100), points, db_first=at(200), now=NOW, listed_since=at(300))
    assert none_yet.db_target is None
    assert none_yet.problems == [
        "no media sync had finished by 2026-11-23T08:00:00Z (run reports listed since 2026-11-15T00:00:00Z), so "
        "the media as of then are not a full copy"
    ]
    window = align(at(40), points, db_first=at(50), now=NOW)
    assert window.db_target is None
    assert "the database's recovery window starts at 2026-11-25T10:00:00Z: the two cannot meet" in window.problems[0]
    future = align(NOW + dt.timedelta(hours=2), points, db_first=at(200), now=NOW)
    assert future.db_target is None and "is in the future" in future.problems[0]
    no_backup = align(at(20), points, db_first=None, now=NOW)
    assert no_backup.db_target is None and "no recoverability point" in no_backup.problems[0]


def test_the_recovery_plan_takes_one_point_for_both() -> None:
    cluster, backups = _source("plugin")
    now = clock.now()
    first = cluster.window.first_point
    assert first is not None
    sync_start = now - dt.timedelta(hours=3)
    syncs = [SyncPoint("r", sync_start, sync_start + dt.timedelta(minutes=5), "c")]
    point = now - dt.timedelta(hours=1)
    plan = plan_recovery(cluster, backups, as_of=point, syncs=syncs, syncs_since=first)
    validate(plan.manifest)
    assert plan.target.time == sync_start and plan.as_of == point
    assert plan.manifest["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {"targetTime": clock.iso(sync_start)}
    assert any("database changes after" in w for w in plan.warnings)
    with pytest.raises(RecoveryError, match=r"no point as of .* has both the database and the media: no media sync"):
        plan_recovery(cluster, backups, as_of=sync_start, syncs=syncs)
    with pytest.raises(RecoveryError, match="choose one of"):
        plan_recovery(cluster, backups, as_of=point, target_time=point, syncs=syncs)
    # an explicit target time: planned as asked, with what the media as of then would lack
    exact = plan_recovery(cluster, backups, target_time=point, syncs=syncs, media_sync=sync_start)
    assert exact.target.time == point
    assert any(w.startswith("restored as of the same time, the database at") for w in exact.warnings)


def test_db_and_media_restore_as_of_one_point_through_the_plugin(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    cluster: Cluster = make_cluster()
    before_any = clock.iso(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)) or ""
    assert cluster.run("sync", "--wait").code == 0
    started = cluster.run("offsite", "--from-report", "-o", "json").json()["reports"]["latest_ok"]["started"]
    time.sleep(1.1)  # S3 keeps LastModified to the second
    point = clock.iso(dt.datetime.now(dt.UTC)) or ""
    time.sleep(1.1)
    photo = "library/b41e9d22-anna/2024/01/IMG_0049.jpg"
    s3.client().put_object(Bucket=bucket, Key=f"immich/media/{photo}", Body=b"ransom note")  # after the point

    plan = cluster.run("db", "restore", "--as-of", point)
    assert plan.code == 0, plan.err
    assert f"point in time   {point}, for the database and the media" in plan.out
    assert f"target          {started}" in plan.out  # the database where the media as of the point meet it
    assert f"media           as of {point}: the library as the sync started {started} copied it" in plan.out
    assert f"kubectl immich-backup media restore --as-of {point} --apply --wait" in plan.out
    as_json = cluster.run("db", "restore", "--as-of", point, "-o", "json").json()
    assert as_json["as_of"] == point and as_json["media"]["db_target"] == started

    refused = cluster.run("db", "restore", "--as-of", before_any)
    assert refused.code == 2
    assert f"no point as of {before_any} has both the database and the media: no media sync had finished by" in (
        refused.err
    )
    assert len(refused.err.splitlines()) == 1

    restored = cluster.run("media", "restore", "--as-of", point, "--apply", "--allow-running-server", "--wait")
    assert restored.code == 0, restored.out + restored.err
    job = cluster.requests("POST", "/jobs")[-1].data
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--as-of", point]
    target = cluster.jobs.target.restore_root
    assert (target / photo).read_bytes() == (sample.root / photo).read_bytes() != b"ransom note"
    zoneless = cluster.run("media", "restore", "--as-of", "2026-11-27T02:00:00")
    assert zoneless.code == 2 and "--as-of '2026-11-27T02:00:00' must be RFC 3339 with an explicit zone" in zoneless.err
