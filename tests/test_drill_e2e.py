"""`kubectl immich-backup drill` end to end: a real PostgreSQL holding an Immich-shaped database archives its
WAL and a base backup through barman-cloud into the local S3, the media sync backs the sample library up
for real, and the drill runs against the Kubernetes emulator over HTTP.

Two small test-side controllers stand in for what the cluster would do. The "CNPG operator" sees the scratch
Cluster created, checks it recovers from the source's archive under a serverName of its own, restores the
newest base backup with barman-cloud-restore into a fresh server, replays the archive (barman-cloud-wal-restore
as restore_command) to its end, creates the application Secret and a PVC as CNPG does, and reports the
Cluster healthy. The "Job runner" runs the probe Job's own `sh -c` script, with the environment the Job
declares (its Secret references resolved from the emulated API), against that server, and publishes its
output as the pod's log.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.emulator import EmulatorServer, PodLog
from immich_tui.demo.fixtures import DB_CLUSTER, DB_NS, NS, World, iso, seed
from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.plugin.cli import main
from immich_tui.services.cnpg import GROUP, VERSION
from immich_tui.services.drill import DrillReport
from immich_tui.services.drill_run import DRILL_LABEL, DRILL_SECRET, DrillRunner, drill_reader
from immich_tui.services.immich_schema import AssetRow, ProbeResult
from immich_tui.services.kube import Access, Kube
from immich_tui.services.status import Services, Target
from tests.conftest import Result, list_keys
from tests.pg import SERVER_USER, PgLab, PgServer, S3Access, utc
from tests.rbac_eval import AuthorizedKube, Rbac, Subject
from tests.test_deploy import render
from tests.test_immich_schema import CURRENT_DDL

SERVER_NAME = "immich-db"
DB_PREFIX = "immich/postgres"
MEDIA_PREFIX = "immich/media/"
DATABASE = "immich"
DRILL_SECRET_VALUE = "drill-secret-never-printed-77ab"
PVC = ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _originals(sample: SampleLibrary) -> list[str]:
    """Every file an Immich asset points at: the upload and library folders, without their markers."""
    return sorted(
        rel for rel in sample.files if rel.split("/", 1)[0] in ("upload", "library") and not rel.endswith("/.immich")
    )


@dataclass
class Source:
    """The Immich database server that archives into the bucket, and what it holds."""

    lab: PgLab
    pg: PgServer
    destination: str
    backup_end: dt.datetime
    assets: list[str]

    def insert(self, rels: list[str], created: str) -> None:
        values = ", ".join(f"(gen_random_uuid(), {_lit('/data/' + rel)}, {created})" for rel in rels)
        self.pg.sql(f'INSERT INTO "asset" ("ownerId", "originalPath", "createdAt") VALUES {values}', DATABASE)
        self.assets.extend(rels)

    def archive_everything(self, s3: LocalS3, bucket: str) -> None:
        """Switch to a new WAL segment and wait until barman has the finished one in the bucket."""
        wal = self.pg.sql("SELECT pg_walfile_name(pg_switch_wal())")
        prefix = f"{DB_PREFIX}/{SERVER_NAME}/wals/"

        def archived() -> bool:
            names = {k.rsplit("/", 1)[-1].removesuffix(".gz") for k in list_keys(s3, bucket, prefix)}
            return wal in names

        self.pg.wait_until(f"{wal} in the bucket", archived)


@pytest.fixture
def source(s3: LocalS3, bucket: str, sample: SampleLibrary) -> Iterator[Source]:
    destination = f"s3://{bucket}/{DB_PREFIX}"
    with PgLab(S3Access(s3.endpoint, DEMO_KEY_ID, DEMO_SECRET)) as lab:
        barman = lab.barman(destination, SERVER_NAME)
        pg = lab.server("immich-db")
        pg.initdb()
        pg.configure(
            wal_level="replica",
            archive_mode=True,
            archive_command=barman.archive_command(),
            archive_timeout=1,
        )
        pg.start()
        pg.sql(f'CREATE DATABASE "{DATABASE}"')
        for statement in CURRENT_DDL:
            pg.sql(statement, DATABASE)
        pg.sql("INSERT INTO version_history (version) VALUES ('v1.137.3')", DATABASE)
        pg.sql("INSERT INTO system_metadata VALUES ('MediaLocation', '{\"location\": \"/data\"}')", DATABASE)
        src = Source(lab, pg, destination, dt.datetime.now(dt.UTC), [])
        src.insert(_originals(sample), "now() - interval '1 day'")
        barman.backup(pg)
        src.backup_end = utc(pg.sql("SELECT now()"))
        yield src


@dataclass
class Controllers:
    """The test's CNPG operator and Job runner, and what they saw."""

    server: EmulatorServer
    source: Source
    recovered: dict[str, PgServer] = field(default_factory=dict)
    probes: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def created(self, plural: str, obj: dict[str, Any]) -> None:
        if plural == "clusters":
            target = self.operate
        elif plural == "jobs":
            target = self.run_job
        else:
            return
        thread = threading.Thread(target=self._guard, args=(target, obj), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _guard(self, fn: Any, obj: dict[str, Any]) -> None:
        try:
            fn(obj)
        except Exception as exc:  # reported by the test, which would otherwise only see a timeout
            self.errors.append(f"{fn.__name__}: {exc}")

    def operate(self, cluster: dict[str, Any]) -> None:
        """CNPG's part: recover the archive the Cluster names into a new server, as CNPG would."""
        meta, spec = cluster["metadata"], cluster["spec"]
        name, namespace = meta["name"], meta["namespace"]
        recovery = spec["bootstrap"]["recovery"]
        [origin] = [c for c in spec["externalClusters"] if c["name"] == recovery["source"]]
        store = origin["barmanObjectStore"]
        assert (store["destinationPath"], store["serverName"]) == (self.source.destination, SERVER_NAME)
        assert "backup" not in spec and "plugins" not in spec, "a scratch cluster must not archive"
        self.server.patch(
            "postgresql.cnpg.io/v1/clusters", namespace, name, {"status": {"phase": "Setting up primary"}}
        )
        lab = self.source.lab
        barman = lab.barman(store["destinationPath"], store["serverName"])
        backup = [b for b in barman.backup_list() if b["status"] == "DONE"][-1]
        pg = lab.server(name)
        barman.restore(backup["backup_id"], pg.data)
        settings: dict[str, object] = {"restore_command": barman.restore_command(), "archive_mode": False}
        target = (recovery.get("recoveryTarget") or {}).get("targetTime")
        if target:
            # CNPG hands PostgreSQL the RFC 3339 target in PostgreSQL's own timestamp form (a space, microseconds,
            # an offset): recovery_target_time refuses the "T" form and zone abbreviations such as "Z".
            moment = dt.datetime.fromisoformat(target.replace("Z", "+00:00")).astimezone(dt.UTC)
            settings |= {
                "recovery_target_time": moment.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
                "recovery_target_action": "promote",
            }
        pg.configure(**settings)
        (pg.data / "recovery.signal").touch()
        pg.start()
        pg.wait_promoted()
        self.recovered[name] = pg
        secret = {"username": SERVER_USER, "password": "app-password-from-cnpg", "dbname": DATABASE}
        self.server.put(
            "v1/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-app", "namespace": namespace, "labels": {"cnpg.io/cluster": name}},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
            },
        )
        self.server.put(
            "v1/persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{name}-1", "namespace": namespace, "labels": {"cnpg.io/cluster": name}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
            },
        )
        status = {"phase": "Cluster in healthy state", "readyInstances": 1, "instances": 1}
        self.server.patch("postgresql.cnpg.io/v1/clusters", namespace, name, {"status": status})

    def _env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            secret = self.server.get("v1/secrets", namespace, ref["name"])
            assert secret is not None, f"secret {ref['name']} not found"
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    def run_job(self, job: dict[str, Any]) -> None:
        """The kubelet's part: run the container's command with its environment, publish its output."""
        meta = job["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        pod_spec = job["spec"]["template"]["spec"]
        [container] = pod_spec["containers"]
        env = self._env(namespace, container)
        self.probes.append(env)
        cluster = env["PGHOST"].removesuffix("-rw")
        pg = self.recovered[cluster]
        local = {
            **pg.env,
            **{k: v for k, v in env.items() if k.startswith(("PG", "PROBE_"))},
            "PGHOST": str(pg.socket_dir),  # the Service `<cluster>-rw` is this server's socket here
            "PGPORT": str(pg.port),
        }
        # Over a unix socket libpq uses no TLS anyway; this PostgreSQL build has none compiled in and refuses
        # the setting itself, which the Job sets for CNPG's TLS-only Service.
        assert local.pop("PGSSLMODE") == "require"
        pod = f"{name}-x7k2p"
        log = PodLog()
        self.server.emulator.pod_logs[(namespace, pod)] = log
        self.server.put(
            "v1/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "labels": {"job-name": name}},
                "status": {"phase": "Running"},
            },
        )
        done = subprocess.run(
            pg.drop.argv(container["command"]),
            env=local,
            cwd=self.source.lab.workspace.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in (done.stdout + done.stderr).splitlines():
            log.write(line)
        log.finish()
        state = {"terminated": {"exitCode": done.returncode, "reason": "Completed" if not done.returncode else "Error"}}
        pod_status = {
            "phase": "Succeeded" if done.returncode == 0 else "Failed",
            "containerStatuses": [{"name": container["name"], "state": state}],
        }
        self.server.patch("v1/pods", namespace, pod, {"status": pod_status})
        condition = "Complete" if done.returncode == 0 else "Failed"
        now = iso(dt.datetime.now(dt.UTC))
        status = {
            "startTime": now,
            "conditions": [{"type": condition, "status": "True", "lastTransitionTime": now}],
            **({"completionTime": now} if done.returncode == 0 else {}),
        }
        self.server.patch("batch/v1/jobs", namespace, name, {"status": status})

    def close(self) -> None:
        for thread in self.threads:
            thread.join(120)
        for pg in self.recovered.values():
            pg.stop()


@dataclass
class Drill:
    server: EmulatorServer
    kubeconfig: Path
    controllers: Controllers
    env: dict[str, str]

    def run(self, *argv: str) -> Result:
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main([*argv, "--kubeconfig", str(self.kubeconfig)], stdout=stdout, stderr=stderr, env=self.env)
        out, err = stdout.getvalue(), stderr.getvalue()
        assert DRILL_SECRET_VALUE not in out and DRILL_SECRET_VALUE not in err, "a secret value was printed"
        assert not self.controllers.errors, self.controllers.errors
        return Result(code, out, err)

    def objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Listed through the API with the official client, as kubectl would see them."""
        kube = Kube(str(self.kubeconfig))
        try:
            access = Access("list", plural, namespace)
            if plural == "clusters":
                fn, args = kube.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, "clusters")
            elif plural == "jobs":
                fn, args = kube.batch.list_namespaced_job, (namespace,)
            else:
                fn, args = getattr(kube.core, f"list_namespaced_{plural}"), (namespace,)
            return list(kube.list(access, fn, *args))
        finally:
            kube.close()


@pytest.fixture
def drill(tmp_path: Path, s3: LocalS3, bucket: str, source: Source, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drill]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    server = EmulatorServer().start()
    seed(server, World(cnpg="in-tree", jobs=0, backups=0))
    server.emulator.serve((PVC,))
    cluster = server.get("postgresql.cnpg.io/v1/clusters", DB_NS, DB_CLUSTER)
    assert cluster is not None
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    store |= {"destinationPath": source.destination, "serverName": SERVER_NAME}
    first = iso(source.backup_end - dt.timedelta(seconds=5))
    server.patch(
        "postgresql.cnpg.io/v1/clusters",
        DB_NS,
        DB_CLUSTER,
        {
            "spec": {"backup": {"barmanObjectStore": store}},
            "status": {"firstRecoverabilityPoint": first, "lastSuccessfulBackup": iso(source.backup_end)},
        },
    )
    keys = {
        "AWS_ACCESS_KEY_ID": "AKIADRILL",
        "AWS_SECRET_ACCESS_KEY": DRILL_SECRET_VALUE,
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": bucket,
        "MEDIA_PREFIX": MEDIA_PREFIX,
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
    }
    server.put(
        "v1/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": DRILL_SECRET, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
        },
    )
    controllers = Controllers(server, source)
    server.emulator.on_create.append(controllers.created)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
    env = {"PATH": os.environ.get("PATH", ""), "AWS_CONFIG_FILE": "/nonexistent"}
    try:
        yield Drill(server, kubeconfig, controllers, env)
    finally:
        controllers.close()
        server.stop()


def _report(s3: LocalS3, bucket: str) -> tuple[str, DrillReport]:
    [key] = [k for k in list_keys(s3, bucket, "immich/sync-reports/drills/")]
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return key, DrillReport.from_json(json.loads(body))


def _assert_cleaned_up(drill: Drill, probe_jobs: int = 1) -> None:
    """The scratch Cluster, its PVCs and the probe Jobs are gone; the source Cluster is untouched."""
    clusters = [c["metadata"]["name"] for c in drill.objects("clusters", DB_NS)]
    assert clusters == [DB_CLUSTER]
    assert drill.objects("persistent_volume_claim", DB_NS) == []
    assert drill.objects("jobs", DB_NS) == []
    deletes = [r for r in drill.server.emulator.requests if r.method.value == "DELETE"]
    assert len(deletes) == probe_jobs + 2  # the probe Jobs, the scratch Cluster, its one PVC


def _last_wal_stored(s3: LocalS3, bucket: str) -> tuple[str, dt.datetime]:
    """The archive's last full WAL segment and when S3 stored it, read from the bucket."""
    pages = (
        s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{DB_PREFIX}/{SERVER_NAME}/wals/")
    )
    segments = {}
    for page in pages:
        for obj in page.get("Contents", ()):
            name = obj["Key"].rsplit("/", 1)[-1].removesuffix(".gz")
            if len(name) == 24:
                segments[name] = obj["LastModified"]
    last = max(segments, key=lambda name: (name[8:], name[:8]))
    return last, segments[last]


def test_a_consistent_backup_passes_the_drill(drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str) -> None:
    source.archive_everything(s3, bucket)
    assert run_sync("backup").code == 0
    result = drill.run("drill", "--sample", "5", "--timeout", "5")
    assert result.code == 0, result.out + result.err
    assert "Restore drill of postgresql/immich-db: PASSED" in result.out
    assert f"assets           {len(source.assets)} (layout current, Immich v1.137.3)" in result.out
    assert "missing offsite  0\n" in result.out
    assert "sample           5 of 5 verified, 0 failed" in result.out
    assert "drill: waiting for cluster/immich-db-drill-" in result.err
    key, report = _report(s3, bucket)
    assert f"report           {key}" in result.out
    assert report.outcome == "ok" and report.problems == [] and not report.kept
    assert report.probe_assets == len(source.assets)
    assert report.cross_check is not None
    assert (report.cross_check.missing, report.cross_check.not_yet_offsite) == (0, 0)
    assert report.cross_check.offsite_originals == len(source.assets)
    assert report.rpo_db_seconds is not None and report.rpo_media_seconds is not None
    assert report.rto_db_seconds is not None and report.db_ready_seconds == report.rto_db_seconds
    assert report.media_seconds_per_gib is not None and report.rto_media_seconds_estimate is not None
    assert report.sample is not None and report.sample.verified == 5
    # the latest point: bounded by when the archive stored its last segment, not by the drill's own clock
    segment, stored = _last_wal_stored(s3, bucket)
    assert report.recovery_point == stored
    assert (
        report.recovery_point_basis == f"latest point: at most when the archive stored its last WAL segment {segment}"
    )
    assert f"recovery point   {report.recovery_point:%Y-%m-%dT%H:%M:%S}Z (latest point: at most when" in result.out
    assert report.recovery_point < report.started
    [probe] = drill.controllers.probes
    assert probe["PGDATABASE"] == DATABASE and probe["PGHOST"].endswith("-rw")
    assert "default_transaction_read_only=on" in probe["PGOPTIONS"]
    _assert_cleaned_up(drill)


def test_a_photo_missing_offsite_fails_the_drill_naming_it(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str
) -> None:
    source.archive_everything(s3, bucket)
    assert run_sync("backup").code == 0
    gone = next(rel for rel in source.assets if rel.startswith("upload/"))
    s3.client().delete_object(Bucket=bucket, Key=f"{MEDIA_PREFIX}{gone}")  # an admin's delete: a delete marker
    result = drill.run("drill", "--sample", "3", "--timeout", "5", "-o", "json")
    assert result.code == 1, result.out + result.err
    data = result.json()
    assert data["outcome"] == "failed"
    assert data["cross_check"]["missing"] == 1
    assert data["cross_check"]["missing_examples"] == [gone]
    assert any(gone in problem for problem in data["problems"])
    _, report = _report(s3, bucket)
    assert report.outcome == "failed"
    _assert_cleaned_up(drill)


def test_an_asset_newer_than_the_last_media_sync_is_not_yet_offsite(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str
) -> None:
    assert run_sync("backup").code == 0
    late = f"upload/7f3c2a10-admin/ff/ee/{uuid.uuid4().hex}.jpg"
    source.insert([late], "now()")  # after the sync started: the database recovered past it knows it
    source.archive_everything(s3, bucket)
    result = drill.run("drill", "--sample", "2", "--timeout", "5")
    assert result.code == 0, result.out + result.err  # nothing is missing: it was never due offsite yet
    assert f"not yet offsite  1: {late}" in result.out
    assert "in the database, not yet offsite" in result.out
    assert "pick a --target-time before the last media sync" in result.out
    assert "missing offsite  0\n" in result.out
    _, report = _report(s3, bucket)
    assert report.cross_check is not None and report.cross_check.not_yet_offsite_examples == [late]
    assert report.probe_assets == len(source.assets)
    _assert_cleaned_up(drill)


def test_the_scratch_cluster_is_labelled_and_recovers_under_its_own_name(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str
) -> None:
    """--keep leaves the Cluster, its PVC and the probe Job for a look; they carry the drill label."""
    source.archive_everything(s3, bucket)
    assert run_sync("backup").code == 0
    result = drill.run("drill", "--sample", "1", "--timeout", "5", "--keep")
    assert result.code == 0, result.out + result.err
    [scratch] = [c for c in drill.objects("clusters", DB_NS) if c["metadata"]["name"] != DB_CLUSTER]
    name = scratch["metadata"]["name"]
    assert name.startswith("immich-db-drill-") and len(name) == len("immich-db-drill-") + 12
    assert scratch["metadata"]["labels"][DRILL_LABEL] == "true"
    assert scratch["spec"]["instances"] == 1
    assert "recoveryTarget" not in scratch["spec"]["bootstrap"]["recovery"]  # the latest point
    [job] = drill.objects("jobs", DB_NS)
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["image"] == scratch["spec"]["imageName"]
    assert len(drill.objects("persistent_volume_claim", DB_NS)) == 1
    assert f"scratch cluster  {name} (kept)" in result.out


class _DrillServices(Services):
    """The tools' services on a given cluster access: here the drill's service account, RBAC-checked."""

    def __init__(self, target: Target, env: dict[str, str], kube: Kube) -> None:
        super().__init__(target, env)
        self._kube = kube


def _as_users(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ServiceAccount subject is the user `system:serviceaccount:<ns>:<name>` to the API server."""
    out = []
    for obj in objs:
        if obj["kind"] == "RoleBinding":
            obj = dict(obj)
            obj["subjects"] = [
                {"kind": "User", "name": f"system:serviceaccount:{s['namespace']}:{s['name']}"}
                if s["kind"] == "ServiceAccount"
                else s
                for s in obj["subjects"]
            ]
        out.append(obj)
    return out


def test_the_cronjob_s_identity_can_run_the_drill_and_nothing_more_is_asked(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """The drill as the CronJob runs it: the overlay's Roles for its service account, its keys as files."""
    source.archive_everything(s3, bucket)
    assert run_sync("backup").code == 0
    secret = drill.server.get("v1/secrets", NS, DRILL_SECRET)
    assert secret is not None
    files = tmp_path / "secrets"
    files.mkdir()
    for name, value in secret["data"].items():
        (files / name).write_bytes(base64.b64decode(value))
    who = Subject("system:serviceaccount:immich:immich-restore-drill")
    kube = AuthorizedKube(str(drill.kubeconfig), Rbac(_as_users(render("overlays/drill"))), who)
    env = {"IMMICH_SYNC_SECRETS_DIR": str(files), "AWS_CONFIG_FILE": "/nonexistent"}
    services = _DrillServices(Target(kubeconfig=str(drill.kubeconfig)), env, kube)
    lines: list[str] = []
    runner = DrillRunner(services, sample=2, timeout=300, scratch_dir=tmp_path / "scratch", progress=lines.append)
    try:
        report = runner.run()
    finally:
        services.close()
    assert kube.denied == [], kube.denied
    assert report.outcome == "ok", report.problems
    used = {(a.verb, a.resource, a.subresource) for a in kube.accesses}
    assert {("create", "clusters", ""), ("delete", "clusters", ""), ("create", "jobs", "")} <= used
    assert {
        ("delete", "jobs", ""),
        ("list", "persistentvolumeclaims", ""),
        ("delete", "persistentvolumeclaims", ""),
    } <= used
    assert ("get", "secrets", "") not in used  # the keys came from the files
    assert runner.key.startswith("immich/sync-reports/drills/")
    _assert_cleaned_up(drill)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--read-only"], "read-only mode: the drill creates a scratch Cluster and a Job"),
        (["--sample", "-1"], "argument --sample: must be between 0 and 1,000,000"),
        (["--sample", "many"], "argument --sample: 'many' is not a whole number"),
        (["--timeout", "nan"], "argument --timeout: must be a number of minutes above 0"),
        (["--target-time", "2026-11-27T02:00:00"], "--target-time '2026-11-27T02:00:00' must be RFC 3339"),
        (["-o", "name"], "-o name does not apply to `drill`"),
    ],
)
def test_bad_drill_flags_are_one_line_errors_before_anything_is_created(
    argv: list[str], needle: str, tmp_path: Path
) -> None:
    """Exit 2 and one line; no cluster is even asked (the kubeconfig names nothing that listens)."""
    kubeconfig = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "operator", "user": {"token": "unused"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "operator"}}],
        "current-context": "nowhere",
    }
    kubeconfig.write_text(yaml.safe_dump(config))
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(["drill", *argv, "--kubeconfig", str(kubeconfig)], stdout=stdout, stderr=stderr, env={})
    assert code == 2
    assert stdout.getvalue() == ""
    [line] = stderr.getvalue().splitlines()
    assert needle in line


def test_a_recovery_to_a_target_time_holds_only_what_was_committed_by_then(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str
) -> None:
    """--target-time before an upload that came after the last media sync: the scratch cluster stops replay
    there, so the late asset is not in it and the pair is consistent; the recovery point is the target."""
    assert run_sync("backup").code == 0
    target = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    while dt.datetime.now(dt.UTC) <= target + dt.timedelta(milliseconds=200):
        time.sleep(0.1)
    late = f"upload/7f3c2a10-admin/ff/ee/{uuid.uuid4().hex}.jpg"
    source.insert([late], "now()")  # committed after the target
    source.archive_everything(s3, bucket)
    stamp = target.isoformat().replace("+00:00", "Z")
    result = drill.run("drill", "--sample", "2", "--timeout", "2", "--target-time", stamp, "--keep")
    assert result.code == 0, result.out + result.err
    assert f"recovery point   {stamp} (the target time asked for)" in result.out
    assert "not yet offsite  0\n" in result.out and "missing offsite  0\n" in result.out
    [scratch] = [c for c in drill.objects("clusters", DB_NS) if c["metadata"]["name"] != DB_CLUSTER]
    assert scratch["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == stamp
    pg = drill.controllers.recovered[scratch["metadata"]["name"]]
    assert pg.sql(f'SELECT count(*) FROM "asset" WHERE "originalPath" = {_lit("/data/" + late)}', DATABASE) == "0"
    _, report = _report(s3, bucket)
    assert (report.target, report.recovery_point) == (target, target)
    assert report.probe_assets == len(source.assets) - 1  # everything but the late upload
    assert report.cross_check is not None and report.cross_check.not_yet_offsite == 0


def test_a_large_library_is_probed_a_page_per_job(
    drill: Drill, source: Source, run_sync, s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """A pod's log is rotated at 10 MiB: the asset table is read a page per probe Job, each starting where
    the previous one ended, and every page's Job is deleted with the scratch cluster."""
    source.archive_everything(s3, bucket)
    assert run_sync("backup").code == 0
    services = Services(Target(kubeconfig=str(drill.kubeconfig)), drill.env)
    lines: list[str] = []
    runner = DrillRunner(
        services, sample=1, timeout=300, scratch_dir=tmp_path / "scratch", progress=lines.append, page_rows=4
    )
    try:
        report = runner.run()
    finally:
        services.close()
    assert report.outcome == "ok", report.problems
    pages = -(-len(source.assets) // 4)
    assert pages >= 3
    assert report.probe_assets == len(source.assets)
    assert report.cross_check is not None and report.cross_check.offsite_originals == len(source.assets)
    probes = drill.controllers.probes
    assert len(probes) == len(runner.probe_jobs) == pages
    assert [p["PROBE_PAGE_ROWS"] for p in probes] == ["4"] * pages
    assert probes[0]["PROBE_AFTER_ID"] == "" and all(p["PROBE_AFTER_ID"] for p in probes[1:])
    assert len({p["PROBE_AFTER_ID"] for p in probes}) == pages
    assert sum("reading the next page" in line for line in lines) == pages - 1
    assert f"deleted cluster/{report.cluster}, its 1 PVC(s) and {pages} probe job(s)" in lines
    _assert_cleaned_up(drill, probe_jobs=pages)


def test_the_recovery_point_says_what_it_rests_on(drill: Drill, source: Source, s3: LocalS3, bucket: str) -> None:
    """A latest-point recovery ends in the archive's last WAL segment: its storage time bounds the recovery
    point. An archive that cannot be listed leaves only the scratch cluster's readiness, and the report says
    so; an asset newer than the bound means the clocks disagree, and its creation is taken instead."""
    source.archive_everything(s3, bucket)
    services = Services(Target(kubeconfig=str(drill.kubeconfig)), drill.env)
    lines: list[str] = []
    runner = DrillRunner(services, scratch_dir=Path("/nonexistent"), progress=lines.append)
    try:
        reader = drill_reader(services)
        cluster = services.database.state().cluster
        segment, stored = _last_wal_stored(s3, bucket)
        ready = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        old = ProbeResult("current", None, 1, [AssetRow("/data/upload/a.jpg", stored - dt.timedelta(hours=1))])

        point, basis = runner._recovery_point(reader, cluster, ready, old)
        assert point == stored
        assert basis == f"latest point: at most when the archive stored its last WAL segment {segment}"

        elsewhere = dataclasses.replace(cluster, object_store="s3://no-such-archive-bucket/immich/postgres")
        point, basis = runner._recovery_point(reader, elsewhere, ready, old)
        assert point == ready
        assert basis.startswith("latest point: at most the scratch cluster's readiness (the archive's end is unknown: ")
        assert "no-such-archive-bucket" in basis
        assert lines == [f"note: {basis}"]

        later = stored + dt.timedelta(seconds=30)
        newer = ProbeResult("current", None, 1, [AssetRow("/data/upload/b.jpg", later)])
        point, basis = runner._recovery_point(reader, cluster, ready + dt.timedelta(minutes=1), newer)
        assert point == later
        assert basis.endswith("; raised to the newest asset's creation, which is later (the clocks disagree)")
    finally:
        services.close()
