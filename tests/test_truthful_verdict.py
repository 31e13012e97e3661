"""The media verdict rests on the nightly sync alone, and a suspended sync is never green.

Against the sandbox: kmock's emulator over HTTP with the official client, the Job controller running the
real engine into moto's S3. A media restore Job that succeeds stays in the Jobs history but moves neither
the media check, nor its last success, nor the CronJob's `lastSuccessfulTime`; a suspended CronJob makes
`status` degraded (exit 1) and says since when, as far as that can be known and believed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from immich_tui.demo.fixtures import CRONJOB, World
from immich_tui.services.media import SUSPENDED_AT, MediaBackup
from immich_tui.services.status import Services, Target
from tests.cluster import Cluster, MakeCluster

NS = "immich"


def _pin(monkeypatch: pytest.MonkeyPatch, when: dt.datetime) -> None:
    """Pin the services' clock (and so the sandbox controllers' and the emulator's) to `when`."""
    monkeypatch.setenv("IMMICH_BACKUP_NOW", when.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _media(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = cluster.run("status", "-o", "json", *args)
    checks = {c["name"]: c for c in result.json()["verdict"]["checks"]}
    return {"code": result.code, "verdict": result.json()["verdict"]["state"], **checks["media"]}


def _cronjob(cluster: Cluster) -> dict[str, Any]:
    cronjob = cluster.get("batch/v1/cronjobs", NS, CRONJOB)
    assert cronjob is not None
    return cronjob


def _batch(cluster: Cluster) -> client.BatchV1Api:
    """The official client on the sandbox's kubeconfig: what `kubectl` or another tool would send."""
    with cluster.kubeconfig.open() as handle:
        api = config.new_client_from_config_dict(yaml.safe_load(handle))
    return client.BatchV1Api(api)


def _media_backup(cluster: Cluster) -> MediaBackup:
    return Services(Target(kubeconfig=str(cluster.kubeconfig))).media


# A media restore is not a sync ------------------------------------------------------------------------
def test_a_media_restore_moves_neither_the_media_check_nor_the_cronjobs_last_success(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster()
    assert cluster.run("sync", "--wait").code == 0
    sync_done = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    # status two hours after the sync, then a restore one hour after it, then status at the same moment again
    _pin(monkeypatch, sync_done + dt.timedelta(hours=2))
    before = _media(cluster)
    assert before["code"] == 0 and before["state"] == "ok", before
    last_success = _cronjob(cluster)["status"]["lastSuccessfulTime"]
    _pin(monkeypatch, sync_done + dt.timedelta(hours=1))
    media = _media_backup(cluster)
    job = media.start_restore("immich-library")  # what `media restore --apply` and the TUI's Offsite `R` create
    assert media.wait_for_job(job.name, timeout=120, poll=0.2).status == "succeeded"
    _pin(monkeypatch, sync_done + dt.timedelta(hours=2))
    after = _media(cluster)
    assert after == before  # same state, age and "last success …" as before the restore
    assert after["detail"].startswith("last success 2h")
    assert _cronjob(cluster)["status"]["lastSuccessfulTime"] == last_success
    history = media.history()
    restore, sync = history.jobs[0], history.jobs[1]
    assert restore.name.startswith("immich-media-restore-") and restore.status == "succeeded"
    assert (restore.kind, sync.kind) == ("restore", "sync")
    assert sync.name.startswith(f"{CRONJOB}-manual-") and sync.status == "succeeded"
    assert history.latest_sync is not None and history.latest_sync.name == sync.name
    text = cluster.run("status").out  # the plugin's "latest job" line is the sync's, never the restore's
    assert f"latest job/{sync.name} succeeded" in text and restore.name not in text
    listed = cluster.run("jobs", "-o", "json").json()["jobs"]
    assert [(j["name"], j["kind"]) for j in listed[:2]] == [(restore.name, "restore"), (sync.name, "sync")]


def test_restores_after_the_last_sync_do_not_push_a_failed_sync_out_of_the_verdict(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(World(failed_job_days=(0,)))  # last night's sync failed
    media = _media_backup(cluster)
    for _ in range(5):  # five media restores since, as many as status reads Jobs
        job = media.start_restore("immich-library-new", force=True)
        assert media.wait_for_job(job.name, timeout=120, poll=0.2).status in ("succeeded", "failed")
    history = media.history(limit=5)
    assert [j.kind for j in history.jobs] == ["restore"] * 4 + ["sync"]
    assert history.latest_sync is not None and history.latest_sync.status == "failed"
    check = _media(cluster)
    assert (check["code"], check["state"]) == (1, "failing"), check
    assert check["detail"].startswith("the latest sync failed (BackoffLimitExceeded")


def test_a_job_the_cronjob_does_not_own_leaves_its_last_success_alone(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    last_success = _cronjob(cluster)["status"]["lastSuccessfulTime"]
    template = _cronjob(cluster)["spec"]["jobTemplate"]
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # the CronJob's labels, but no owner reference: created by hand, not by the CronJob
        "metadata": {"name": "by-hand", "namespace": NS, "labels": dict(template["metadata"]["labels"])},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "sync", "image": "x", "args": ["--help"]}]}
            }
        },
    }
    _batch(cluster).create_namespaced_job(NS, body)
    media = _media_backup(cluster)
    assert media.wait_for_job("by-hand", timeout=120, poll=0.2).status == "succeeded"
    assert _cronjob(cluster)["status"]["lastSuccessfulTime"] == last_success
    assert "by-hand" not in [j.name for j in media.history().jobs]


# A suspended sync is not healthy ---------------------------------------------------------------------
def test_suspend_degrades_the_verdict_and_resume_heals_it(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster()
    assert cluster.run("sync", "--wait").code == 0
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    _pin(monkeypatch, start)
    assert cluster.run("suspend").code == 0
    assert _cronjob(cluster)["metadata"]["annotations"][SUSPENDED_AT] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    _pin(monkeypatch, start + dt.timedelta(hours=3))
    check = _media(cluster)
    assert (check["code"], check["verdict"], check["state"]) == (1, "degraded", "suspended"), check
    assert check["detail"].startswith(f"suspended since 3h ago ({start:%Y-%m-%dT%H:%M:%SZ}); last success 3h")
    table = cluster.run("status")
    assert table.code == 1
    assert "Verdict: DEGRADED" in table.out
    assert "media: the nightly sync is suspended: `kubectl immich-backup resume`" in table.out
    assert f"SUSPENDED since {start:%Y-%m-%dT%H:%M:%SZ} (3h ago)" in table.out  # the media sync line says since when
    assert cluster.run("resume").code == 0
    assert SUSPENDED_AT not in (_cronjob(cluster)["metadata"].get("annotations") or {})
    healed = _media(cluster)
    assert (healed["code"], healed["verdict"], healed["state"]) == (0, "healthy", "ok"), healed
    assert "suspended" not in healed["detail"]


def test_a_suspended_cronjob_whose_latest_sync_failed_stays_failing_and_says_suspended(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(World(failed_job_days=(0,), suspended=True))
    check = _media(cluster)
    assert (check["code"], check["state"]) == (1, "failing"), check
    assert check["detail"].endswith("; suspended")  # the seeded CronJob says nothing of when


@pytest.mark.parametrize(
    "value",
    ["yesterday", "", "2999-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00Z", "nan"],
    ids=["words", "empty", "future", "before-time", "before-the-cronjob", "nan"],
)
def test_a_suspend_annotation_that_is_not_a_believable_time_says_suspended_without_a_time(
    make_cluster: MakeCluster, value: str
) -> None:
    cluster = make_cluster()
    # written past the API (no managedFields record of the update): only the annotation could date it
    cluster.server.patch(
        "batch/v1/cronjobs",
        NS,
        CRONJOB,
        {"metadata": {"annotations": {SUSPENDED_AT: value}}, "spec": {"suspend": True}},
    )
    check = _media(cluster)
    assert (check["code"], check["verdict"], check["state"]) == (1, "degraded", "suspended"), check
    assert check["detail"].startswith("suspended; last success ")
    assert cluster.run("jobs", "-o", "json").json()["cronjob"]["suspended_since"] is None


def test_a_suspension_by_another_tool_is_dated_by_the_api_servers_record(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    batch = _batch(cluster)

    def kubectl_patch(suspend: bool) -> None:
        """`kubectl patch cronjob … -p '{"spec":{"suspend":…}}'`: a merge patch under kubectl's field manager."""
        body = {"spec": {"suspend": suspend}}
        merge = "application/merge-patch+json"
        batch.patch_namespaced_cron_job(CRONJOB, NS, body, _content_type=merge, field_manager="kubectl-patch")

    # our suspend, then `kubectl patch` resumes (the annotation stays), then suspends a day later
    _pin(monkeypatch, start)
    assert cluster.run("suspend").code == 0
    _pin(monkeypatch, start + dt.timedelta(hours=1))
    kubectl_patch(False)
    _pin(monkeypatch, start + dt.timedelta(days=1))
    kubectl_patch(True)
    assert SUSPENDED_AT in _cronjob(cluster)["metadata"]["annotations"]  # left behind, and now wrong
    _pin(monkeypatch, start + dt.timedelta(days=1, hours=2))
    check = _media(cluster, "--stale-after", "100")  # the last sync is 42 h old by now
    assert check["state"] == "suspended", check
    later = start + dt.timedelta(days=1)
    assert check["detail"].startswith(f"suspended since 2h ago ({later:%Y-%m-%dT%H:%M:%SZ})")
