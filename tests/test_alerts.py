"""deploy/monitoring: the PrometheusRule's groups pass `promtool check rules`, and its unit tests
(deploy/monitoring/tests/alerts.yaml) pass `promtool test rules`: every alert fires on the synthetic series of
a broken backup and stays silent on those of a healthy one.

promtool reads plain rule files, so the object's `spec` is written to rules.yaml beside a copy of the tests.
promtool comes from Debian's prometheus package into the virtualenv (tests/tools/install-promtool.sh, which
`make test` runs); without it these tests fail, so a broken install cannot pass unnoticed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
PROMTOOL = Path(sys.executable).parent / "promtool"
SUSPEND = 'kube_cronjob_spec_suspend{namespace="immich", cronjob="immich-media-offsite-sync"}'
LAST_SYNC_SUCCESS = 'kube_cronjob_status_last_successful_time{namespace="immich", cronjob="immich-media-offsite-sync"}'
ALERTS = (
    "ImmichMediaSyncStale",
    "ImmichMediaSyncFailed",
    "ImmichMediaSyncSuspended",
    "ImmichDatabaseBackupStale",
    "ImmichDatabaseWalArchivingStale",
    "ImmichRestoreDrillFailed",
    "ImmichRestoreDrillStale",
)
DRILL_SUCCESS = 'kube_cronjob_status_last_successful_time{namespace="immich", cronjob="immich-restore-drill"}'


@pytest.fixture(scope="module")
def promtool() -> Path:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: run `sh tests/tools/install-promtool.sh` (`make test` does)")
    return PROMTOOL


def _rule() -> dict[str, Any]:
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())


UNIT_TESTS = ("alerts.yaml", "drill-alerts.yaml")  # the drill's span weeks, so they are evaluated more coarsely


def _unit_tests() -> dict[str, Any]:
    cases = [yaml.safe_load((MONITORING / "tests" / name).read_text())["tests"] for name in UNIT_TESTS]
    return {"tests": [case for group in cases for case in group]}


def _workdir(tmp_path: Path, spec: dict[str, Any]) -> Path:
    """rules.yaml (the PrometheusRule's spec) beside a copy of the unit tests, as their rule_files expect."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for name in UNIT_TESTS:
        shutil.copy(MONITORING / "tests" / name, tmp_path / name)
    return tmp_path


def _run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_promtool_runs(promtool: Path) -> None:
    done = _run(promtool, "--version", cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("promtool, version "), done.stdout + done.stderr


def test_the_rules_pass_promtool_check(promtool: Path, tmp_path: Path) -> None:
    rule = _rule()
    [group] = rule["spec"]["groups"]
    assert tuple(r["alert"] for r in group["rules"]) == ALERTS
    _workdir(tmp_path, rule["spec"])
    done = _run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in _unit_tests()["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert fired == silent == set(ALERTS)


def test_the_alerts_pass_their_unit_tests(promtool: Path, tmp_path: Path) -> None:
    _workdir(tmp_path, _rule()["spec"])
    done = _run(promtool, "test", "rules", *UNIT_TESTS, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _mutated(old: str, new: str) -> dict[str, Any]:
    """The spec with `old` replaced by `new` in every alert expression that has it (at least one)."""
    spec = _rule()["spec"]
    rules = [r for g in spec["groups"] for r in g["rules"] if old in r["expr"]]
    assert rules, old
    for rule in rules:
        rule["expr"] = rule["expr"].replace(old, new)
    return spec


@pytest.mark.parametrize(
    ("old", "new", "failing"),
    [
        # a day and a half is the promise: two days would be silent where the tests expect an alert
        (
            "> 36 * 3600",
            "> 48 * 3600",
            {
                "media sync stale - the last success is older than 36 hours",
                "database backup stale - in-tree Barman, the last base backup is older than 36 hours",
                "database backup stale - Barman Cloud Plugin, the last base backup is older than 36 hours",
            },
        ),
        # failed pods instead of the Failed condition: a retry that succeeded would alert, a failure would not
        (
            'kube_job_failed{namespace="immich", job_name=~"immich-media-offsite-sync-.*", condition="true"}',
            'kube_job_status_failed{namespace="immich", job_name=~"immich-media-offsite-sync-.*"}',
            {
                "media sync failed - a nightly Job failed",
                "media sync healthy - a retried pod, a failed restore and another namespace's Job",
            },
        ),
        # CNPG's metric alone: with the Barman Cloud Plugin it stays 0, a healthy database would alert
        (
            "cnpg_collector_last_available_backup_timestamp|barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
            "cnpg_collector_last_available_backup_timestamp",
            {
                "database backup stale - Barman Cloud Plugin, the last base backup is older than 36 hours",
                "database backup healthy - Barman Cloud Plugin, where CNPG's own metric stays 0",
            },
        ),
        # without absent(): a CronJob that never succeeded would never alert
        (
            f"\nor absent({LAST_SYNC_SUCCESS})",
            "",
            {"media sync stale - the CronJob never succeeded (kube-state-metrics has no last success for it)"},
        ),
        # any CronJob's suspension: another CronJob left suspended would page
        (
            SUSPEND,
            'kube_cronjob_spec_suspend{namespace="immich"}',
            {"media sync not suspended - a short maintenance, and another CronJob left suspended"},
        ),
        # the sync's suspension not read at all: a CronJob left suspended would never page
        (
            SUSPEND,
            'kube_cronjob_spec_suspend{namespace="immich", cronjob="immich-media-offsite-sync-typo"}',
            {"media sync suspended - left suspended for more than 12 hours"},
        ),
        # a drill every 40 days would be silent where the tests expect an alert after 35
        (
            "> 35 * 86400",
            "> 40 * 86400",
            {
                "restore drill stale - the last passed drill is older than 35 days",
                "restore drill stale - the drill CronJob never succeeded in 35 days",
            },
        ),
        # every failed drill Job still in the history: a drill that passed since would keep paging
        (
            f"\n> scalar(max({DRILL_SUCCESS}) or vector(0))",
            "",
            {"restore drill not failed - a failed drill passed since, a failed media sync, another namespace's Job"},
        ),
        # the CronJob's age without `unless` a success: a drill CronJob older than 35 days would always page
        (
            f"\n  unless on () max({DRILL_SUCCESS})",
            "",
            {"restore drill fresh - a drill passes every 30 days, and no drill CronJob at all is silent"},
        ),
    ],
    ids=[
        "threshold",
        "failed-pods",
        "plugin-metric",
        "never-succeeded",
        "suspend-any-cronjob",
        "suspend-unread",
        "drill-threshold",
        "drill-failed-since-passed",
        "drill-cronjob-age",
    ],
)
def test_the_unit_tests_catch_a_broken_rule(
    promtool: Path, tmp_path: Path, old: str, new: str, failing: set[str]
) -> None:
    _workdir(tmp_path, _mutated(old, new))
    done = _run(promtool, "test", "rules", *UNIT_TESTS, cwd=tmp_path)
    assert done.returncode == 1
    assert set(re.findall(r"^\s*name: (.+),$", done.stdout + done.stderr, re.MULTILINE)) == failing


def test_a_short_suspension_does_not_page(promtool: Path, tmp_path: Path) -> None:
    """The suspension alert waits: a maintenance of a few hours is deliberate, one left overnight is not."""
    spec = _rule()["spec"]
    [suspended] = [r for g in spec["groups"] for r in g["rules"] if r["alert"] == "ImmichMediaSyncSuspended"]
    assert suspended["for"] == "12h"
    suspended["for"] = "5m"
    _workdir(tmp_path, spec)
    done = _run(promtool, "test", "rules", *UNIT_TESTS, cwd=tmp_path)
    assert done.returncode == 1
    assert set(re.findall(r"^\s*name: (.+),$", done.stdout + done.stderr, re.MULTILINE)) == {
        "media sync suspended - left suspended for more than 12 hours",
        "media sync not suspended - a short maintenance, and another CronJob left suspended",
    }
