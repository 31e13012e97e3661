"""`kubectl immich-backup` against kmock's Kubernetes emulator over HTTP and moto S3.

Every subcommand's table and JSON output, a manual Job identical to kubectl's, suspend/resume, logs
from a streamed pod log, plugin and in-tree CNPG clusters, RBAC denials, an unreachable cluster and a
cluster without CNPG.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.emulator import Denial, PodLog
from immich_tui.demo.fixtures import CRONJOB, DB_CLUSTER, World
from immich_tui.demo.s3 import LocalS3, free_port
from tests.cluster import Cluster, MakeCluster

NS = "immich"


def _synced(cluster: Cluster) -> None:
    """A real nightly run: trigger, wait, so the bucket holds the library and an `ok` report."""
    result = cluster.run("sync", "--wait")
    assert result.code == 0, result.err + result.out


def _lists(cluster: Cluster) -> list[Any]:
    return [r for r in cluster.emulator.requests if r.action is not None and r.action.value == "LIST"]


# status ------------------------------------------------------------------------------------------
def test_status_healthy_table_and_json(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    _synced(cluster)
    result = cluster.run("status")
    assert result.code == 0, result.out + result.err
    assert "Verdict: HEALTHY" in result.out
    assert "203 objects, 45.6 MiB" in result.out
    assert "Barman Cloud Plugin" in result.out
    data = cluster.run("status", "-o", "json").json()
    assert data["verdict"]["state"] == "healthy"
    # no drill has run in the sandbox: its check is off and leaves the verdict alone
    assert [c["state"] for c in data["verdict"]["checks"]] == ["ok", "ok", "ok", "off"]
    offsite = data["offsite"]["value"]
    # The totals come from the latest run report: one LIST of the report prefix, one GET, no media listing.
    assert offsite["basis"].startswith("run report immich/sync-reports/")
    assert offsite["requests"] == {"ListObjectsV2": 1, "GetObject": 1}
    assert sum(f["objects"] for f in offsite["folders"]) == 203


def test_every_list_call_is_scoped_and_paginated(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(jobs=30, job_pods=5, other_pods=40, backups=20))
    before = len(cluster.emulator.requests)
    assert cluster.run("status").code == 0
    lists = [r for r in _lists(cluster) if r.id >= before]
    assert lists, "status lists Jobs, pods and Backups"
    for request in lists:
        assert 0 < int(request.params.get("limit", "0")) <= 500, request.url
    pods = [r for r in lists if str(r.url.path).endswith("/pods")]
    jobs = [r for r in lists if str(r.url.path).endswith("/jobs")]
    assert all("job-name in (" in r.params["labelSelector"] for r in pods)
    selectors = {r.params["labelSelector"] for r in jobs}
    assert selectors == {
        f"app.kubernetes.io/name={CRONJOB},app.kubernetes.io/part-of=immich-offsite-backup",  # the CronJob's Jobs
        "app.kubernetes.io/name=immich-media-restore",  # media restore Jobs, shown in the same history
    }
    # one request per kind of object, never one per Job or per pod
    assert len(pods) == 1 and len(jobs) == 2
    assert len(lists) <= 5


def test_status_stale_exits_1(make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = make_cluster()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    monkeypatch.setenv("IMMICH_BACKUP_NOW", later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    result = cluster.run("status", "-o", "json")
    assert result.code == 1
    checks = {c["name"]: c for c in result.json()["verdict"]["checks"]}
    assert checks["media"]["state"] == "stale"
    assert checks["database"]["state"] == "stale"
    assert result.json()["verdict"]["state"] == "degraded"
    table = cluster.run("status", "--stale-after", "100")
    assert table.code == 0, table.out


def test_status_failing_wal_and_failed_sync(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(archiving=False, failed_job_days=(0,)))
    result = cluster.run("status")
    assert result.code == 1
    assert "wal        failing" in result.out
    assert "barman-cloud-wal-archive: exit status 4" in result.out
    assert "media      failing" in result.out and "BackoffLimitExceeded" in result.out
    assert "What to do:" in result.out


def test_status_without_cnpg_still_reports_media(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(cnpg=None))
    result = cluster.run("status", "-o", "json")
    assert result.code == 1
    data = result.json()
    assert data["database"]["error"] == "CloudNativePG is not installed (no postgresql.cnpg.io API)"
    checks = {c["name"]: c["state"] for c in data["verdict"]["checks"]}
    assert checks == {"media": "ok", "database": "unknown", "wal": "unknown", "drill": "off"}
    db = cluster.run("db", "status")
    assert db.code == 2
    assert db.err.strip() == "kubectl immich-backup: CloudNativePG is not installed (no postgresql.cnpg.io API)"
    assert cluster.run("jobs").code == 0


def test_unreachable_cluster(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    import io

    from immich_tui.plugin.cli import main

    for argv in (["status"], ["jobs"], ["sync"]):
        err = io.StringIO()
        code = main([*argv, "--kubeconfig", str(path)], stdout=io.StringIO(), stderr=err, env={})
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"kubectl immich-backup: error: cannot reach the cluster at http://127.0.0.1:{port}")


def test_bad_kubeconfig_and_context(tmp_path: Path, make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    missing = cluster.run("status", "--kubeconfig", str(tmp_path / "nope"), kubeconfig=False)
    assert missing.code == 2 and "kubeconfig" in missing.err and "does not exist" in missing.err
    wrong = cluster.run("status", "--context", "prod")
    assert wrong.code == 2
    assert "context 'prod' is not in" in wrong.err and "sandbox" in wrong.err


# jobs and logs -----------------------------------------------------------------------------------
def test_jobs_table_and_json(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(jobs=12, job_pods=3, failed_job_days=(1,)))
    result = cluster.run("jobs", "--limit", "5")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].startswith(f'cronjob/{CRONJOB}  schedule "30 2 * * *" (Etc/UTC)  suspended: no')
    assert "5 of 12 jobs (1 failed, 11 succeeded)" in result.out
    data = cluster.run("jobs", "-o", "json").json()
    jobs = data["jobs"]
    assert len(jobs) == 12
    starts = [j["started"] for j in jobs]
    assert starts == sorted(starts, reverse=True)
    assert jobs[1]["status"] == "failed"
    assert jobs[1]["exit_reason"] == "BackoffLimitExceeded: Error (exit 3)"
    assert all(j["pod"] for j in jobs[:3]) and not any(j["pod"] for j in jobs[3:])
    assert data["cronjob"]["next_run"].endswith("T02:30:00Z")


def test_logs_newest_and_named_job(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(failed_job_days=(1,)))
    newest = cluster.run("logs")
    assert newest.code == 0
    assert '"event": "done"' in newest.out
    jobs = cluster.run("jobs", "-o", "json").json()["jobs"]
    failed = cluster.run("logs", jobs[1]["name"], "--tail", "1")
    assert failed.out.strip().endswith('"error": "S3 unreachable after 8 consecutive failures"}')
    assert len(failed.out.strip().splitlines()) == 1
    gone = cluster.run("logs", jobs[5]["name"])
    assert gone.code == 2 and "has no pod" in gone.err


def test_logs_follow_streams_until_the_pod_ends(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    jobs = cluster.run("jobs", "-o", "json").json()["jobs"]
    pod = jobs[0]["pod"]
    log = PodLog(lines=["first"])
    cluster.emulator.pod_logs[(NS, pod)] = log

    def write() -> None:
        for i in range(50):
            time.sleep(0.01)
            log.write(f"line {i}")
        log.finish()

    writer = threading.Thread(target=write)
    writer.start()
    result = cluster.run("logs", "-f")
    writer.join()
    assert result.code == 0
    assert result.out.splitlines() == ["first", *[f"line {i}" for i in range(50)]]
    follow = [r for r in cluster.requests("GET", f"/pods/{pod}/log")]
    assert follow[-1].params.get("follow") == "True"


# actions -----------------------------------------------------------------------------------------
def _normalized(obj: Any) -> Any:
    """Drop what only differs by who serialised it: empty values and server-assigned metadata."""
    if isinstance(obj, dict):
        out = {k: _normalized(v) for k, v in obj.items() if k not in ("uid", "creationTimestamp", "resourceVersion")}
        return {k: v for k, v in out.items() if v not in ({}, [], None, "")}
    if isinstance(obj, list):
        return [_normalized(v) for v in obj]
    return obj


def test_trigger_creates_the_job_kubectl_would(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World())
    cluster.jobs.target = None  # this test only looks at the Job object
    kubectl = Path(sys.executable).parent / "kubectl"
    done = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            NS,
            "create",
            "job",
            "NAME",
            f"--from=cronjob/{CRONJOB}",
            "--dry-run=client",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = json.loads(done.stdout)
    result = cluster.run("sync", "-o", "json")
    assert result.code == 0, result.err
    name = result.json()["name"]
    assert name.startswith(f"{CRONJOB}-manual-")
    created = cluster.get("batch/v1/jobs", NS, name)
    assert created is not None
    created.pop("status", None)
    created["metadata"]["name"] = "NAME"
    cronjob_uid = cluster.get("batch/v1/cronjobs", NS, CRONJOB)["metadata"]["uid"]  # type: ignore[index]
    assert created["metadata"]["ownerReferences"][0]["uid"] == cronjob_uid
    assert _normalized(created) == _normalized(expected)
    # the permission was checked first, with a SelfSubjectAccessReview
    reviews = cluster.requests("POST", "/selfsubjectaccessreviews")
    assert reviews[-1].data["spec"]["resourceAttributes"] == {
        "namespace": NS,
        "verb": "create",
        "group": "batch",
        "resource": "jobs",
        "subresource": "",
        "name": "",
    }


def test_sync_wait_runs_the_engine_and_exits_with_the_job_result(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    result = cluster.run("sync", "--wait")
    assert result.code == 0, result.out + result.err
    assert "backup ok" in result.out
    assert result.out.strip().splitlines()[-1].endswith("succeeded")
    cronjob = cluster.get("batch/v1/cronjobs", NS, CRONJOB)
    assert cronjob is not None
    jobs = cluster.run("jobs", "-o", "json").json()["jobs"]
    assert jobs[0]["manual"] is True and jobs[0]["status"] == "succeeded"


def test_sync_wait_reports_a_failed_job(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(sync_bucket="no-such-bucket-here")
    result = cluster.run("sync", "--wait")
    assert result.code == 2  # the engine's configuration-error exit, passed through
    assert "no-such-bucket-here" in result.out
    assert "failed" in result.out.strip().splitlines()[-1]


def test_suspend_and_resume(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    assert cluster.run("suspend").out.strip() == f"cronjob/{CRONJOB} suspended"
    assert cluster.get("batch/v1/cronjobs", NS, CRONJOB)["spec"]["suspend"] is True  # type: ignore[index]
    jobs = cluster.run("jobs")
    assert "suspended: yes" in jobs.out and "next run -" in jobs.out
    resumed = cluster.run("resume", "-o", "json")
    assert resumed.code == 0 and resumed.json()["suspended"] is False
    assert cluster.get("batch/v1/cronjobs", NS, CRONJOB)["spec"]["suspend"] is False  # type: ignore[index]
    patches = cluster.requests("PATCH", f"/cronjobs/{CRONJOB}")
    assert [p.data["spec"] for p in patches] == [{"suspend": True}, {"suspend": False}]
    # suspend records when (status says "suspended since …"); resume removes the record
    marks = [p.data["metadata"]["annotations"]["immich-offsite-backup/suspended-at"] for p in patches]
    assert marks[0].endswith("Z") and marks[1] is None
    assert {p.headers.get("Content-Type") for p in patches} == {"application/merge-patch+json"}


@pytest.mark.parametrize(
    ("argv", "denial", "message"),
    [
        (["sync"], Denial("create", "jobs", group="batch"), "RBAC denies create jobs.batch in namespace immich"),
        (
            ["suspend"],
            Denial("patch", "cronjobs", group="batch"),
            "RBAC denies patch cronjobs.batch in namespace immich",
        ),
        (
            ["db", "backup"],
            Denial("create", "backups", group="postgresql.cnpg.io"),
            "RBAC denies create backups.postgresql.cnpg.io in namespace postgresql",
        ),
    ],
)
def test_rbac_denied_writes(make_cluster: MakeCluster, argv: list[str], denial: Denial, message: str) -> None:
    cluster = make_cluster()
    cluster.emulator.denials.append(denial)
    writes_before = len(cluster.requests("POST")) - len(cluster.requests("POST", "/selfsubjectaccessreviews"))
    result = cluster.run(*argv)
    assert result.code == 2
    assert result.err.strip().startswith(f"kubectl immich-backup: error: {message}")
    assert len(result.err.strip().splitlines()) == 1
    writes_after = len(cluster.requests("POST")) - len(cluster.requests("POST", "/selfsubjectaccessreviews"))
    assert writes_after == writes_before
    assert not cluster.requests("PATCH")


def test_rbac_denied_read_is_a_clear_error(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.emulator.denials.append(Denial("list", "jobs", group="batch"))
    result = cluster.run("jobs")
    assert result.code == 2
    assert "RBAC denies list jobs.batch in namespace immich" in result.err
    status = cluster.run("status", "-o", "json")
    assert status.code == 2
    assert status.json()["verdict"]["checks"][0]["state"] == "error"
    assert status.json()["database"]["value"] is not None  # the rest still works


def test_read_only_refuses_every_write_without_asking_the_cluster(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    for argv, verb in (
        (["sync"], "create jobs.batch"),
        (["suspend"], "patch cronjobs.batch"),
        (["db", "backup"], "create backups.postgresql.cnpg.io"),
    ):
        result = cluster.run(*argv, "--read-only")
        assert result.code == 2
        assert f"read-only mode: refusing to {verb}" in result.err
    suspended = make_cluster(World(suspended=True))  # `resume` of a running CronJob has nothing to patch
    resume = suspended.run("resume", "--read-only")
    assert resume.code == 2 and "read-only mode: refusing to patch cronjobs.batch" in resume.err
    assert not suspended.requests("PATCH")
    assert not cluster.requests("POST") and not cluster.requests("PATCH")


# library and bucket ------------------------------------------------------------------------------
def test_inventory_live_through_exec(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    result = cluster.run("inventory")
    assert result.code == 0, result.err
    assert "Source: live count through pod immich-server-" in result.out
    data = cluster.run("inventory", "-o", "json").json()
    folders = {f["name"]: f for f in data["folders"]}
    assert data["source"] == "live"
    assert {k: v["files"] for k, v in folders.items()} == {
        "upload": 97,
        "library": 103,
        "profile": 3,
        "thumbs": 97,
        "encoded-video": 4,
        "backups": 2,
    }
    assert folders["library"]["bytes"] == 43152557
    assert all(f["marker"] for f in folders.values())
    assert folders["library"]["backed_up"] and not folders["thumbs"]["backed_up"]
    # nothing synced yet: everything is pending
    assert folders["library"]["pending"] == 103
    children = {c["name"]: c["files"] for c in folders["library"]["children"]}
    assert children == {"library": 1, "library/7f3c2a10-admin": 50, "library/b41e9d22-anna": 52}  # `library` = .immich
    _synced(cluster)
    after = {f["name"]: f for f in cluster.run("inventory", "-o", "json").json()["folders"]}
    assert after["library"]["pending"] == 0


def test_inventory_falls_back_to_the_report_when_exec_is_denied(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.emulator.denials.append(Denial("create", "pods", subresource="exec"))
    none = cluster.run("inventory")
    assert none.code == 1
    assert "exec into immich/immich-server-" in none.out and "is not allowed" in none.out
    _synced(cluster)
    result = cluster.run("inventory", "-o", "json")
    data = result.json()
    assert data["source"] == "report"
    assert data["detail"].startswith("immich/sync-reports/") and data["detail"].endswith("-ok-full.json")
    assert "not allowed (RBAC: create pods/exec)" in data["fallback_reason"]
    files = {f["name"]: f["files"] for f in data["folders"] if f["backed_up"]}
    assert files == {"upload": 97, "library": 103, "profile": 3}
    assert not cluster.requests("GET", "/exec")


def test_offsite_listing_and_report(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    _synced(cluster)
    result = cluster.run("offsite")
    assert result.code == 0
    assert "read via Secret immich/immich-offsite-restorer" in result.out
    assert "library         103       41.2 MiB   STANDARD 103" in result.out
    data = cluster.run("offsite", "-o", "json").json()
    assert data["basis"] == "bucket listing"
    assert sum(f["objects"] for f in data["folders"]) == 203
    assert data["reports"]["latest_ok"]["uploaded"] == 203
    fast = cluster.run("offsite", "--from-report", "-o", "yaml")
    parsed = yaml.safe_load(fast.out)
    assert parsed["basis"].startswith("run report ")
    assert parsed["requests"] == {"ListObjectsV2": 1, "GetObject": 1}
    # the writer's Secret is never read
    assert not cluster.requests("GET", "/secrets/immich-offsite-writer")


def test_offsite_without_read_credentials_says_what_is_missing(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(restorer=False)
    result = cluster.run("offsite")
    assert result.code == 2
    assert result.err.strip() == (
        "kubectl immich-backup: error: no S3 read credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY with BUCKET_NAME, MEDIA_PREFIX and AWS_REGION, or create the viewer or the restorer "
        "Secret (Secret immich/immich-offsite-viewer does not exist; Secret immich/immich-offsite-restorer does not "
        "exist)"
    )
    status = cluster.run("status", "-o", "json")
    assert status.json()["offsite"]["error"].startswith("no S3 read credentials")
    assert status.code == 0  # offsite detail is informative; the verdict rests on the sync and the database


def test_offsite_with_wrong_reader_credentials(make_cluster: MakeCluster, s3: LocalS3) -> None:
    cluster = make_cluster(restorer=False)
    env = {
        **cluster.env,
        "AWS_ACCESS_KEY_ID": "AKIAREADER",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": "missing-bucket-xyz",
        "MEDIA_PREFIX": "immich/media",
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
    }
    result = cluster.run("offsite", env=env)
    assert result.code == 2
    assert "missing-bucket-xyz" in result.err and "does not exist" in result.err
    assert len(result.err.strip().splitlines()) == 1


# database ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plugin", "in-tree"])
def test_db_status_and_backups(make_cluster: MakeCluster, mode: str) -> None:
    cluster = make_cluster(World(cnpg=mode, backups=7))
    status = cluster.run("db", "status")
    assert status.code == 0
    expected = "Barman Cloud Plugin (ObjectStore immich-db-store)" if mode == "plugin" else "in-tree barmanObjectStore"
    assert expected in status.out
    data = cluster.run("db", "status", "-o", "json").json()
    assert data["cluster"]["method"] == ("plugin" if mode == "plugin" else "barmanObjectStore")
    assert data["cluster"]["server_name"] == "immich-db-2026"
    assert data["cluster"]["continuous_archiving"]["status"] == "True"
    assert data["cluster"]["window"]["first_point"] is not None
    assert (data["object_store"] is not None) == (mode == "plugin")
    backups = cluster.run("db", "backups", "-o", "json").json()
    assert backups["total"] == 7
    names = [b["name"] for b in backups["backups"]]
    assert names == sorted(names, reverse=True)
    table = cluster.run("db", "backups")
    assert "7 of 7 backups" in table.out and "immich-db-daily" in table.out


@pytest.mark.parametrize("mode", ["plugin", "in-tree"])
def test_db_backup_uses_the_cluster_method(make_cluster: MakeCluster, mode: str) -> None:
    cluster = make_cluster(World(cnpg=mode))
    result = cluster.run("db", "backup", "--wait")
    assert result.code == 0, result.err
    assert result.out.strip().splitlines()[-1].endswith("completed")
    created = cluster.requests("POST", "/backups")[-1].data
    if mode == "plugin":
        assert created["spec"] == {
            "cluster": {"name": DB_CLUSTER},
            "method": "plugin",
            "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"},
        }
    else:
        assert created["spec"] == {"cluster": {"name": DB_CLUSTER}, "method": "barmanObjectStore"}


def test_five_field_scheduled_backup_warns(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(schedule_5_field=True))
    backups = cluster.run("db", "backups")
    assert "5-field schedule '30 2 * * *': CNPG reads seconds first" in backups.out
    assert "use '0 30 2 * * *'" in backups.out
    assert "warning: scheduledbackup/immich-db-daily: 5-field schedule" in cluster.run("status").out
    good = make_cluster(World())
    assert "warning" not in good.run("db", "backups").out


# the command line itself -------------------------------------------------------------------------
def test_flags_before_or_after_the_subcommand(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    before = cluster.run("-o", "json", "-n", NS, "jobs")
    after = cluster.run("jobs", "-n", NS, "-o", "json")
    assert before.code == after.code == 0
    assert before.json()["cronjob"] == after.json()["cronjob"]
    wrong_ns = cluster.run("-n", "photos", "jobs")
    assert wrong_ns.code == 2
    assert "CronJob photos/immich-media-offsite-sync not found (wrong --namespace or --cronjob?)" in wrong_ns.err


def test_usage_names_the_kubectl_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    from immich_tui.plugin.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl immich-backup")
    for command in ("status", "jobs", "logs", "sync", "suspend", "resume", "inventory", "offsite", "db"):
        assert command in out
    assert main(["bogus"]) == 2
    assert "kubectl immich-backup: error: argument COMMAND: invalid choice" in capsys.readouterr().err


def test_kubectl_finds_and_runs_the_plugin(make_cluster: MakeCluster) -> None:
    """Through kubectl itself: `kubectl immich-backup` resolves to the `kubectl-immich_backup` executable."""
    cluster = make_cluster()
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(cluster.kubeconfig.parent)}
    done = subprocess.run(
        [str(bindir / "kubectl"), "immich-backup", "jobs", "--limit", "2", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 of 14 jobs" in done.stdout
    plugins = subprocess.run([str(bindir / "kubectl"), "plugin", "list"], capture_output=True, text=True, env=env)
    assert "kubectl-immich_backup" in plugins.stdout


def test_db_backup_json_and_a_failed_backup(make_cluster: MakeCluster) -> None:
    from immich_tui.demo.controllers import BackupController

    cluster = make_cluster()
    created = cluster.run("db", "backup", "-o", "json")
    assert created.code == 0
    data = created.json()
    assert data["name"].startswith("immich-db-ondemand-") and data["method"] == "plugin"
    cluster.emulator.on_create.clear()
    BackupController(cluster.server, fail=True)
    failed = cluster.run("db", "backup", "--wait")
    assert failed.code == 1
    assert "failed: can't execute backup: exit status 4" in failed.out


def test_a_log_follow_can_be_stopped(make_cluster: MakeCluster) -> None:
    from immich_tui.services.status import Services, Target

    cluster = make_cluster()
    services = Services(Target(kubeconfig=str(cluster.kubeconfig)), env={})
    _job, pod = services.media.newest_job_pod(None)
    log = PodLog(lines=["one", "two"])  # never finishes: a pod still running
    cluster.emulator.pod_logs[(NS, pod)] = log
    stream = services.media.logs(pod, follow=True)
    seen: list[str] = []

    def consume() -> None:
        for line in stream:
            seen.append(line)

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stream.close()
    reader.join(5)
    assert not reader.is_alive(), "closing the stream ends the follow"
    assert seen == ["one", "two"]
    services.close()


def test_tui_subcommand_opens_the_same_app(capsys: pytest.CaptureFixture[str]) -> None:
    from immich_tui.plugin.cli import main, parse

    args = parse(["tui", "--read-only", "--context", "homelab"])
    assert (args.command, args.read_only, args.context, args.namespace) == ("tui", True, "homelab", "immich")
    assert main(["tui", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: kubectl immich-backup tui")
