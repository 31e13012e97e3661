"""`kubectl immich-backup` reads like kubectl: tables that fit 120 columns with kubectl's AGE, `-o wide`,
`-o name`, `--no-headers`, short per-command help with the global flags under `options`, `--version`,
Jobs found by their name's end, `--wait` that says where it is, idempotent suspend/resume, and a media
restore that previews like `db restore` and refuses while the Immich server runs.

Driven against the sandbox: kmock's emulator over HTTP to the official client, moto S3, the real engine.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

import pytest

from immich_tui.demo.emulator import CORE_RESOURCES
from immich_tui.demo.fixtures import CRONJOB, SERVER_POD, World
from immich_tui.plugin.cli import main
from immich_tui.plugin.output import human_duration
from tests.cluster import Cluster, MakeCluster

NS = "immich"
PINNED = "2026-12-01T06:08:00Z"  # 3h38m after the seeded nightly run at 02:30
HINT = "Use `kubectl immich-backup options` for a list of global command-line options (applies to all commands)."
SCALE_DOWN = "kubectl -n immich scale deployment/immich-server --replicas=0"


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMMICH_BACKUP_NOW", PINNED)


def _posts(cluster: Cluster, path: str) -> int:
    return len(cluster.requests("POST", path))


def _stop_server_pod(cluster: Cluster) -> None:
    """What `kubectl scale deployment/immich-server --replicas=0` leaves behind: no server pod."""
    cluster.server.call(lambda: cluster.emulator.objects.__delitem__(("v1/pods", NS, SERVER_POD)))


def _serve_deployment(cluster: Cluster, replicas: int) -> None:
    cluster.emulator.serve((("apps/v1/deployments", "Deployment", True),))
    cluster.server.put(
        "apps/v1/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "immich-server", "namespace": NS},
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": replicas} if replicas else {},
        },
    )


# 1. tables ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45s"),
        (119, "119s"),
        (330, "5m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 38 * 60, "3h38m"),
        (17 * 3600, "17h"),
        (47 * 3600, "47h"),
        (5 * 86400 + 2 * 3600, "5d2h"),
        (6 * 86400, "6d"),
        (30 * 86400, "30d"),
        (2 * 365 * 86400 + 45 * 86400, "2y45d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_as_kubectl_prints_them(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_every_table_fits_120_columns(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(World(failed_job_days=(1,), job_pods=3))
    assert cluster.run("sync", "--wait").code == 0
    cluster.jobs.target = None  # the restore Job only has to show in the history
    restored = cluster.run("media", "restore", "--apply", "--allow-running-server", "-o", "name")
    assert restored.code == 0, restored.err
    commands = (["status"], ["jobs"], ["inventory"], ["offsite"], ["db", "status"], ["db", "backups"])
    for argv in commands:
        result = cluster.run(*argv)
        assert result.code in (0, 1), (argv, result.err)
        wide = [line for line in result.out.splitlines() if len(line) > 120]
        assert not wide, (argv, wide)


def test_jobs_and_backups_have_kubectl_columns_and_ages(make_cluster: MakeCluster, pinned: None) -> None:
    cluster = make_cluster(World(failed_job_days=(1,), job_pods=3))
    cluster.jobs.target = None  # created Jobs stay as created
    manual = cluster.run("sync", "-o", "name").out.strip().removeprefix("job.batch/")
    restored = cluster.run("media", "restore", "--apply", "--allow-running-server", "-o", "name")
    restore = restored.out.strip().removeprefix("job.batch/")
    jobs = cluster.run("jobs").out.splitlines()
    assert not [line for line in jobs if len(line) > 120]
    header = next(line for line in jobs if line.startswith("NAME"))
    assert header.split() == ["NAME", "TRIGGER", "STATUS", "AGE", "DURATION", "REASON"]
    rows = {line.split()[0]: line.split() for line in jobs if line.startswith("immich-")}
    assert rows[f"{CRONJOB}-29934870"][1:4] == ["schedule", "succeeded", "3h38m"]
    assert rows[f"{CRONJOB}-29927670"][3] == "5d3h"
    assert rows[manual][1:2] == ["manual"] and rows[manual][3] == "0s"
    assert rows[restore][1] == "restore"
    assert "(manual)" not in "\n".join(jobs)
    failed = rows[f"{CRONJOB}-29933430"]
    assert failed[2] == "failed" and " ".join(failed[5:]).startswith("BackoffLimitExceeded: Error")
    assert len(max(jobs, key=len)) == 120  # the free-text reason is cut to fit; -o wide keeps it whole
    wide = cluster.run("jobs", "-o", "wide").out
    assert "BackoffLimitExceeded: Error (exit 3)" in wide and max(len(line) for line in wide.splitlines()) > 120
    assert not any(re.search(r"\d{4}-\d\d-\d\dT", line) for line in jobs[3:])  # no timestamps in the table
    backups = cluster.run("db", "backups").out.splitlines()
    assert backups[0].split()[:4] == ["NAME", "PHASE", "METHOD", "AGE"]
    assert backups[1].split()[3] == "4h8m"  # the newest Backup started at 02:00


def test_wide_shows_full_timestamps_and_the_pod(make_cluster: MakeCluster, pinned: None) -> None:
    cluster = make_cluster()
    wide = cluster.run("jobs", "-o", "wide").out.splitlines()
    header = next(line for line in wide if line.startswith("NAME"))
    assert header.split() == ["NAME", "TRIGGER", "STATUS", "STARTED", "DURATION", "POD", "REASON"]
    row = next(line for line in wide if line.startswith(f"{CRONJOB}-29934870"))
    assert "2026-12-01T02:30:00Z" in row and f"{CRONJOB}-29934870-" in row
    backups = cluster.run("db", "backups", "-o", "wide").out
    assert "2026-12-01T02:00:00Z" in backups


def test_no_headers_and_name_output(make_cluster: MakeCluster, pinned: None) -> None:
    cluster = make_cluster()
    rows = cluster.run("jobs", "--no-headers", "--limit", "4")
    assert rows.code == 0
    lines = rows.out.splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"{CRONJOB}-29934870 ")
    assert not any(word in rows.out for word in ("NAME", "cronjob/", "of 14 jobs"))
    names = cluster.run("jobs", "-o", "name", "--limit", "2", "--context", "sandbox")
    assert names.out.splitlines() == [f"job.batch/{CRONJOB}-29934870", f"job.batch/{CRONJOB}-29933430"]
    backups = cluster.run("-o", "name", "db", "backups").out.splitlines()
    assert backups[0] == "backup.postgresql.cnpg.io/immich-db-daily-20261201020000"
    assert backups[-1] == "scheduledbackup.postgresql.cnpg.io/immich-db-daily"
    assert len(backups) == 15
    created = cluster.run("sync", "-o", "name")
    assert re.fullmatch(rf"job\.batch/{CRONJOB}-manual-[a-z0-9]{{5}}\n", created.out)
    refused = cluster.run("status", "-o", "name")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.strip() == (
        "kubectl immich-backup: error: -o name does not apply to `status`: use -o json, yaml, table or wide"
    )


# 2. and 3. version and help ----------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"kubectl immich-backup {metadata.version('immich-offsite-backup')}\n"


def _help(*argv: str) -> tuple[int, str]:
    import io

    stdout = io.StringIO()
    code = main(list(argv), stdout=stdout, stderr=io.StringIO())
    return code, stdout.getvalue()


def test_bare_command_prints_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _help()
    assert code == 0
    assert out.startswith("usage: kubectl immich-backup")
    assert "Examples:\n  kubectl immich-backup status" in out
    assert out.rstrip().endswith(HINT)
    assert "--kubeconfig" not in out and "options" in out


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("jobs",),
        ("logs",),
        ("sync",),
        ("suspend",),
        ("resume",),
        ("inventory",),
        ("offsite",),
        ("db",),
        ("db", "status"),
        ("db", "backups"),
        ("db", "backup"),
        ("db", "restore"),
        ("db", "catalog"),
        ("media",),
        ("media", "restore"),
    ],
)
def test_each_command_help_is_short_with_examples(capsys: pytest.CaptureFixture[str], command: tuple[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kubectl immich-backup {' '.join(command)}")
    for flag in ("--kubeconfig", "--context", "--db-namespace", "--stale-after", "--read-only", "--s3-profile"):
        assert flag not in out, (command, flag)
    examples = out.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 1 <= len(examples) <= 4 and all(e.startswith("  kubectl immich-backup ") for e in examples), examples
    assert out.rstrip().endswith(HINT)


def test_options_lists_the_global_flags_that_work_on_every_command(make_cluster: MakeCluster) -> None:
    code, out = _help("options")
    assert code == 0
    for flag in ("--kubeconfig", "--context", "--namespace", "--db-cluster", "--no-headers", "--output", "--read-only"):
        assert flag in out
    cluster = make_cluster()
    before = cluster.run("--read-only", "-n", NS, "--db-namespace", "postgresql", "suspend")
    after = cluster.run("suspend", "--read-only", "-n", NS, "--db-namespace", "postgresql")
    assert before.code == after.code == 2
    assert "read-only mode: refusing to patch cronjobs.batch" in before.err == after.err


# 4. logs by the end of a Job's name --------------------------------------------------------------
def test_logs_finds_a_job_by_its_name_suffix(make_cluster: MakeCluster, pinned: None) -> None:
    cluster = make_cluster()
    short = cluster.run("logs", "29934870", "--tail", "1")
    assert short.code == 0, short.err
    assert short.err == f"# job/{CRONJOB}-29934870 pod/{CRONJOB}-29934870-45519\n"
    assert '"event": "done"' in short.out
    full = cluster.run("logs", f"{CRONJOB}-29934870", "--tail", "1")
    assert full.out == short.out
    copy: dict[str, Any] = cluster.get("batch/v1/jobs", NS, f"{CRONJOB}-29934870")  # type: ignore[assignment]
    copy["metadata"] = {**copy["metadata"], "name": "immich-media-offsite-sync-retry-29934870", "uid": "u-2"}
    cluster.server.put("batch/v1/jobs", copy)
    ambiguous = cluster.run("logs", "29934870")
    assert ambiguous.code == 2 and ambiguous.out == ""
    [line] = ambiguous.err.splitlines()
    assert "'29934870' is ambiguous" in line
    assert f"{CRONJOB}-29934870" in line and "immich-media-offsite-sync-retry-29934870" in line
    missing = cluster.run("logs", "12345678")
    assert missing.code == 2
    assert missing.err.splitlines() == ["kubectl immich-backup: error: Job immich/12345678 not found"]


# 5. --wait says where it is ----------------------------------------------------------------------
def test_wait_reports_phase_and_elapsed_on_stderr(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    sync = cluster.run("sync", "--wait")
    assert sync.code == 0, sync.err
    name = sync.out.splitlines()[0].split()[0].removeprefix("job/")
    lines = sync.err.splitlines()
    assert re.fullmatch(rf"waiting for job/{name}: Pending, \d+s", lines[0]), lines
    assert re.fullmatch(rf"job/{name}: Succeeded after \d+(s|m\d*s?)", lines[-1]), lines
    backup = cluster.run("db", "backup", "--wait")
    assert backup.code == 0, backup.err
    waits = backup.err.splitlines()
    assert waits[0].startswith("waiting for backup/immich-db-ondemand-")
    assert re.fullmatch(r"backup/immich-db-ondemand-\S+: completed after \d+s", waits[-1]), waits
    _stop_server_pod(cluster)
    restore = cluster.run("media", "restore", "--apply", "--wait")
    assert restore.code == 0, restore.out + restore.err
    assert re.search(r"^waiting for job/immich-media-restore-\S+: Pending, \d+s$", restore.err, re.M)
    assert re.search(r"^job/immich-media-restore-\S+: Succeeded after \d+s$", restore.err, re.M)


# 6. suspend and resume change only what needs changing --------------------------------------------
def test_resume_when_running_and_suspend_when_suspended_patch_nothing(make_cluster: MakeCluster) -> None:
    running = make_cluster()
    resumed = running.run("resume")
    assert resumed.code == 0
    assert resumed.out.startswith(f"cronjob/{CRONJOB} already runs (not suspended); next run ")
    assert not running.requests("PATCH")
    suspended = make_cluster(World(suspended=True))
    again = suspended.run("suspend")
    assert again.code == 0
    assert again.out.strip() == f"cronjob/{CRONJOB} is already suspended; nothing to do"
    assert suspended.run("suspend", "-o", "json").json()["suspended"] is True
    assert not suspended.requests("PATCH")
    assert suspended.run("resume").out.startswith(f"cronjob/{CRONJOB} resumed")
    assert len(suspended.requests("PATCH")) == 1


# 7. media restore previews, and refuses while Immich runs ----------------------------------------
def test_media_restore_previews_and_creates_nothing_without_apply(make_cluster: MakeCluster, bucket: str) -> None:
    cluster = make_cluster()
    cluster.jobs.target = None
    preview = cluster.run(
        "media", "restore", "--pvc", "immich-library-new", "--as-of", "2026-11-27T12:00:00+01:00", "--force"
    )
    assert preview.code == 0, preview.err
    out = preview.out
    assert out.startswith("Media restore into pvc/immich-library-new in immich\n")
    assert f"s3://{bucket}/immich/media/" in out
    assert "as of           2026-11-27T11:00:00Z" in out
    assert "existing files  allowed (--force): the restore writes into a volume that already holds files" in out
    assert f"immich server   RUNNING: pod {SERVER_POD} running" in out and SCALE_DOWN in out
    assert re.search(r"job             job/immich-media-restore-\d{8}-\d{6}-[a-z0-9]{5} \(image ", out)
    assert "rerun with --apply" in out
    assert _posts(cluster, "/jobs") == 0
    manifest = cluster.run("media", "restore", "-o", "json").json()
    assert manifest["kind"] == "Job" and manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "restore"
    assert _posts(cluster, "/jobs") == 0
    wait = cluster.run("media", "restore", "--wait")
    assert wait.code == 2 and wait.out == ""
    assert wait.err.splitlines() == [
        "kubectl immich-backup: error: --wait needs --apply: without it `media restore` only previews and creates "
        "nothing"
    ]
    assert _posts(cluster, "/jobs") == 0


def test_media_restore_apply_refuses_while_the_server_pod_runs(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.jobs.target = None
    refused = cluster.run("media", "restore", "--apply")
    assert refused.code == 2 and refused.out == ""
    [line] = refused.err.splitlines()
    assert line == (
        f"kubectl immich-backup: error: the Immich server is running in immich (pod {SERVER_POD} running): stop it "
        f"first with `{SCALE_DOWN}`, or pass --allow-running-server"
    )
    assert _posts(cluster, "/jobs") == 0
    pods = [r for r in cluster.requests("GET", "/namespaces/immich/pods") if "labelSelector" in r.params]
    assert pods[-1].params["labelSelector"] == "app.kubernetes.io/name=server,app.kubernetes.io/instance=immich"
    anyway = cluster.run("media", "restore", "--apply", "--allow-running-server", "-o", "json")
    assert anyway.code == 0, anyway.err
    assert f"warning: the Immich server is running (pod {SERVER_POD} running)" in anyway.err
    assert _posts(cluster, "/jobs") == 1
    other = cluster.run("media", "restore", "--apply", "--server-selector", "app=photos-server")
    assert other.code == 0, other.err  # the chart was installed under another name: nothing matches it
    assert _posts(cluster, "/jobs") == 2


def test_media_restore_apply_refuses_while_the_deployment_has_replicas(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.jobs.target = None
    _stop_server_pod(cluster)
    _serve_deployment(cluster, replicas=2)
    refused = cluster.run("media", "restore", "--apply")
    assert refused.code == 2
    assert "(deployment/immich-server has 2 replicas)" in refused.err and SCALE_DOWN in refused.err
    assert _posts(cluster, "/jobs") == 0
    _serve_deployment(cluster, replicas=0)
    created = cluster.run("media", "restore", "--apply")
    assert created.code == 0, created.err
    assert created.out.startswith("job/immich-media-restore-") and "created" in created.out
    assert _posts(cluster, "/jobs") == 1


def test_media_restore_apply_without_an_apps_api(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.jobs.target = None
    assert "apps/v1/deployments" not in {key for key, _kind, _ns in CORE_RESOURCES}
    _stop_server_pod(cluster)
    created = cluster.run("media", "restore", "--apply", "-o", "name")
    assert created.code == 0, created.err
    assert re.fullmatch(r"job\.batch/immich-media-restore-\S+\n", created.out)
