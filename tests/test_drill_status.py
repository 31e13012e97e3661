"""The `drill` check of `kubectl immich-backup status` (and the TUI's Overview) against the emulated cluster and
moto: off until a drill report exists, ok when the newest drill passed recently, stale when it is old,
failing when it failed, unknown when no drill report can be believed. Drill reports are written into the
cluster's bucket as the drill writes them; their age is S3's LastModified against the pinned clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.flags import target_from_args
from immich_tui.services.drill import CrossCheck, DrillReport, SampleResult, write_drill_report
from immich_tui.services.status import Services, Target
from immich_tui.widgets.overview import attention, chips, render
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.cluster import Cluster, MakeCluster

REPORTS = "immich/sync-reports/"


def _synced(cluster: Cluster) -> None:
    result = cluster.run("sync", "--wait")
    assert result.code == 0, result.err + result.out


def _drill(s3: LocalS3, bucket: str, outcome: str = "ok", missing: list[str] | None = None) -> str:
    """A drill report as the drill writes it, stored now (S3's clock)."""
    store = ObjectStore(
        S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint),
        credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET),
    )
    started = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=12)
    missing = missing or []
    report = DrillReport(
        started=started,
        cluster="immich-db-drill-x",
        source_cluster="immich-db",
        finished=started + dt.timedelta(minutes=10),
        recovery_point=started - dt.timedelta(minutes=2),
        db_ready_seconds=240.0,
        probe_layout="current",
        probe_assets=201,
        cross_check=CrossCheck(201, 201 - len(missing), len(missing), missing, 0, [], 0, [], 0),
        sample=SampleResult(100, 100, [], 10 * 1024**2, 20.0),
        rpo_db_seconds=120.0,
        rpo_media_seconds=7200.0,
        rto_db_seconds=240.0,
        media_seconds_per_gib=2048.0,
        library_bytes=45 * 1024**2,
        rto_media_seconds_estimate=90.0,
        outcome=outcome,
        problems=[f"{len(missing)} asset(s) are missing their original offsite"] if missing else [],
    )
    return write_drill_report(store, REPORTS, report)


def _checks(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["verdict"]["checks"]}


def test_without_a_drill_the_check_is_off_and_the_verdict_unaffected(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    _synced(cluster)
    result = cluster.run("status")
    assert result.code == 0, result.out + result.err
    assert "Verdict: HEALTHY" in result.out
    row = next(line for line in result.out.splitlines() if line.startswith("drill "))
    assert row.split()[1] == "off" and row.endswith("no restore drill on record")
    assert "Drill " not in result.out and "drill:" not in result.out  # no drill line, no hint to act on
    data = cluster.run("status", "-o", "json").json()
    assert [c["name"] for c in data["verdict"]["checks"]] == ["media", "database", "wal", "drill"]
    assert (data["verdict"]["state"], _checks(data)["drill"]["state"], data["drill"]) == (
        "healthy",
        "off",
        {"value": None, "error": ""},
    )


def test_a_fresh_passed_drill_is_ok_with_its_figures(make_cluster: MakeCluster, s3: LocalS3, bucket: str) -> None:
    cluster = make_cluster()
    _synced(cluster)
    key = _drill(s3, bucket)
    result = cluster.run("status")
    assert result.code == 0, result.out + result.err
    row = next(line for line in result.out.splitlines() if line.startswith("drill "))
    assert row.split()[1] == "ok"
    assert "passed: RPO DB 2m, media 2h, RTO DB 4m, 0 missing" in row
    assert f"report {key}" in result.out
    assert "Drill       ok " in result.out
    assert ": RPO database 2m, media 120m, RTO database 4m, media ≈ 90s" in result.out
    assert "201 assets, 0 missing offsite, 0 not yet offsite, 0 orphans" in result.out
    data = cluster.run("status", "-o", "json").json()
    assert _checks(data)["drill"]["state"] == "ok"
    assert data["drill"]["value"]["key"] == key
    assert data["drill"]["value"]["report"]["outcome"] == "ok"
    assert data["drill"]["value"]["report"]["cross_check"]["missing"] == 0

    services = Services(Target(kubeconfig=str(cluster.kubeconfig)), env=cluster.env)
    try:
        report = services.status()
    finally:
        services.close()
    overview = render(report).plain
    assert "last verified restore" in overview
    assert "RPO         DB 2m · media 2h" in overview
    assert "0 missing of 201" in overview
    assert "DRILL " in chips(report.verdict).plain


def test_an_old_drill_is_stale_and_degrades_the_verdict(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster()
    _synced(cluster)
    _drill(s3, bucket)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    monkeypatch.setenv("IMMICH_BACKUP_NOW", later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # the nightly backups are as old: a wide media/DB threshold keeps this about the drill alone
    result = cluster.run("status", "--stale-after", "8000")
    assert result.code == 1, result.out + result.err
    assert "Verdict: DEGRADED" in result.out
    row = next(line for line in result.out.splitlines() if line.startswith("drill "))
    assert row.split()[1] == "stale" and "(older than 35 days)" in row
    assert "drill: is the CronJob immich-restore-drill suspended or failing?" in result.out

    relaxed = cluster.run("status", "--stale-after", "8000", "--drill-stale-after", "60", "-o", "json")
    assert relaxed.code == 0, relaxed.out + relaxed.err
    assert _checks(relaxed.json())["drill"]["state"] == "ok"


def test_a_failed_drill_is_failing_and_names_the_missing_assets(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str
) -> None:
    cluster = make_cluster()
    _synced(cluster)
    missing = ["library/7f3c2a10-admin/2024/01/IMG_0001.jpg", "upload/b41e9d22-anna/aa/bb/aabb.jpg"]
    key = _drill(s3, bucket, outcome="failed", missing=missing)
    result = cluster.run("status")
    assert result.code == 1, result.out + result.err
    row = next(line for line in result.out.splitlines() if line.startswith("drill "))
    assert row.split()[1] == "failing"
    assert f"failed: 2 asset(s) missing their original offsite (e.g. {missing[0]})" in row
    assert f"drill: read the drill report {key}" in result.out

    services = Services(Target(kubeconfig=str(cluster.kubeconfig)), env=cluster.env)
    try:
        report = services.status()
    finally:
        services.close()
    assert any(line.startswith("drill: last drill") for _, line in attention(report))
    assert "2 missing of 201" in render(report).plain


def test_a_drill_report_that_cannot_be_believed_makes_the_check_unknown(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str
) -> None:
    cluster = make_cluster()
    _synced(cluster)
    s3.client().put_object(Bucket=bucket, Key=f"{REPORTS}drills/20261201T000000Z.json", Body=b'{"schema": 1}')
    data = cluster.run("status", "-o", "json")
    assert data.code == 1, data.out + data.err
    check = _checks(data.json())["drill"]
    assert check["state"] == "unknown"
    assert check["detail"] == (
        f"no drill report can be believed: ignored drill report {REPORTS}drills/20261201T000000Z.json "
        "(not a drill report: no started)"
    )


def test_the_drill_threshold_flag_is_checked() -> None:
    from immich_tui.plugin.cli import main

    for bad in ("0", "-3", "nan", "inf", "400", "soon"):
        import io

        err = io.StringIO()
        code = main(["status", "--drill-stale-after", bad], stdout=io.StringIO(), stderr=err, env={})
        assert code == 2, bad
        assert "--drill-stale-after" in err.getvalue()
    import argparse

    from immich_tui.flags import global_flags, with_defaults

    args = with_defaults(global_flags().parse_args(["--drill-stale-after", "14"]))
    assert target_from_args(args).drill_stale_after_days == 14.0
    assert target_from_args(with_defaults(argparse.Namespace())).drill_stale_after_days == 35.0
