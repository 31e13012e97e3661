"""`kubectl immich-backup db restore`: a new Cluster that recovers from the object store, never the old one.

Every generated CNPG object is validated against the CRD schemas of CNPG 1.30 and the Barman Cloud
Plugin 0.14 (tests/crds/), so what the API server would reject fails here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest
import yaml

from immich_tui.demo.fixtures import DB_CLUSTER, DB_NS, World, db_backup, db_cluster, object_store
from immich_tui.demo.library import SampleLibrary
from immich_tui.services import clock
from immich_tui.services.cnpg import _backup, _cluster, _object_store
from immich_tui.services.recovery import RecoveryError, plan_recovery
from tests.cluster import Cluster, MakeCluster
from tests.crd_schema import validate
from tests.test_deploy import SECRETS_DIR, credentials_in_env, mounted_secret


def test_the_validator_rejects_what_the_api_server_would() -> None:
    bad = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "x"},
        "spec": {"instances": "two", "bootstrap": {"recovery": {"recoveryTarget": {"targetImmediate": "yes"}}}},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


def _source(mode: str) -> tuple[Any, list[Any]]:
    now = clock.now()
    cluster = _cluster(db_cluster(mode, now, last_backup=now - dt.timedelta(hours=7)))
    if mode == "plugin":  # the plugin keeps the recovery window in the ObjectStore, as Database.state() reads it
        cluster.window = _object_store(object_store(now, now - dt.timedelta(hours=7))).windows["immich-db-2026"]
    backups = [_backup(db_backup(f"daily-{d}", mode, now - dt.timedelta(days=d, hours=7))) for d in range(3)]
    return cluster, backups


@pytest.mark.parametrize("mode", ["plugin", "in-tree"])
def test_manifest_recovers_from_the_source_archive_into_its_own(mode: str) -> None:
    cluster, backups = _source(mode)
    sync = clock.now() - dt.timedelta(hours=6)
    plan = plan_recovery(cluster, backups, media_sync=sync, name="immich-db-restored")
    m = plan.manifest
    validate(m)
    spec = m["spec"]
    assert m["metadata"] == {
        "name": "immich-db-restored",
        "namespace": DB_NS,
        "labels": {"app.kubernetes.io/managed-by": "immich-backup"},
        "annotations": {
            "immich-backup/restored-from": f"{DB_NS}/{DB_CLUSTER}",
            "immich-backup/recovery-target": plan.target.describe(),
        },
    }
    assert spec["imageName"] == cluster.image
    assert spec["postgresql"]["shared_preload_libraries"] == ["vchord.so"]
    assert spec["postgresql"]["parameters"] == {"max_connections": "200"}
    assert spec["storage"] == {"size": "10Gi", "storageClass": "longhorn"}
    assert spec["instances"] == 2
    recovery = spec["bootstrap"]["recovery"]
    assert recovery == {"source": "origin", "recoveryTarget": {"targetTime": plan.target.describe()}}
    assert plan.target.describe().endswith("Z")  # an explicit zone, always
    assert plan.target.time == sync  # the default: the start of the latest media sync
    [origin] = spec["externalClusters"]
    if mode == "plugin":
        assert origin == {
            "name": "origin",
            "plugin": {
                "name": "barman-cloud.cloudnative-pg.io",
                "parameters": {"barmanObjectName": "immich-db-store", "serverName": "immich-db-2026"},
            },
        }
        assert spec["plugins"] == [
            {
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": "immich-db-store", "serverName": "immich-db-restored"},
            }
        ]
        assert "backup" not in spec
    else:
        assert origin["barmanObjectStore"]["serverName"] == "immich-db-2026"
        assert origin["barmanObjectStore"]["destinationPath"] == "s3://immich-offsite/immich/postgres"
        assert spec["backup"]["barmanObjectStore"]["serverName"] == "immich-db-restored"
        assert spec["backup"]["retentionPolicy"] == "30d"
        assert "plugins" not in spec
    assert plan.warnings == [f"target defaults to the start of the latest media sync, {plan.target.describe()}"]


def test_restore_to_a_backup_and_target_checks() -> None:
    cluster, backups = _source("plugin")
    plan = plan_recovery(cluster, backups, backup_name="daily-1", media_sync=clock.now())
    validate(plan.manifest)
    assert plan.manifest["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {
        "backupID": backups[1].backup_id,
        "targetImmediate": True,
    }
    first = cluster.window.first_point
    assert first is not None
    with pytest.raises(RecoveryError, match="is before the recovery window, which starts at"):
        plan_recovery(cluster, backups, target_time=first - dt.timedelta(minutes=1))
    with pytest.raises(RecoveryError, match="is in the future"):
        plan_recovery(cluster, backups, target_time=clock.now() + dt.timedelta(hours=1))
    with pytest.raises(RecoveryError, match="not found"):
        plan_recovery(cluster, backups, backup_name="nope")
    with pytest.raises(RecoveryError, match="needs a new name"):
        plan_recovery(cluster, backups, media_sync=clock.now(), name=DB_CLUSTER)
    with pytest.raises(RecoveryError, match="no successful media sync on record"):
        plan_recovery(cluster, backups)
    later = plan_recovery(
        cluster,
        backups,
        target_time=clock.now() - dt.timedelta(minutes=5),
        media_sync=clock.now() - dt.timedelta(hours=2),
    )
    assert any("after the start of the latest media sync" in w for w in later.warnings)


def test_db_backup_manifest_validates(make_cluster: MakeCluster) -> None:
    for mode in ("plugin", "in-tree"):
        cluster: Cluster = make_cluster(World(cnpg=mode))
        assert cluster.run("db", "backup").code == 0
        validate(cluster.requests("POST", "/backups")[-1].data)


def test_plugin_db_restore_preview_yaml_and_apply(make_cluster: MakeCluster) -> None:
    cluster: Cluster = make_cluster()
    assert cluster.run("sync", "--wait").code == 0  # a real media sync: its start is the default target
    sync_started = cluster.run("offsite", "--from-report", "-o", "json").json()["reports"]["latest_ok"]["started"]
    preview = cluster.run("db", "restore")
    assert preview.code == 0, preview.err
    assert f"target          {sync_started}" in preview.out
    assert "# preview — rerun with --apply" in preview.out
    as_yaml = cluster.run("db", "restore", "--name", "immich-db-r1", "-o", "yaml")
    manifest = yaml.safe_load(as_yaml.out)
    validate(manifest)
    assert manifest["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == sync_started
    assert "target defaults to the start of the latest media sync" in as_yaml.err
    late = cluster.run("db", "restore", "--target-time", clock.iso(clock.now()) or "", "-o", "yaml")
    assert "the database may reference photos that the offsite media copy does not have" in late.err
    zoneless = cluster.run("db", "restore", "--target-time", "2026-11-27T02:00:00")
    assert zoneless.code == 2 and "explicit zone" in zoneless.err
    refused = cluster.run("db", "restore", "--apply", "--read-only")
    assert refused.code == 2 and "read-only mode: refusing to create clusters.postgresql.cnpg.io" in refused.err
    applied = cluster.run("db", "restore", "--name", "immich-db-r1", "--apply")
    assert applied.code == 0, applied.err
    created = cluster.get("postgresql.cnpg.io/v1/clusters", DB_NS, "immich-db-r1")
    assert created is not None and created["spec"]["bootstrap"]["recovery"]["source"] == "origin"
    # the source cluster was only read
    assert not [
        r for r in cluster.requests() if r.method.value in ("PATCH", "PUT", "DELETE") and "/clusters" in str(r.url)
    ]
    again = cluster.run("db", "restore", "--name", "immich-db-r1", "--apply")
    assert again.code == 2 and "409" in again.err


def test_media_restore_job_shape(make_cluster: MakeCluster) -> None:
    cluster: Cluster = make_cluster()
    cluster.jobs.target = None  # only the Job object matters here
    result = cluster.run(
        "media", "restore", "--pvc", "immich-library-new", "--force", "--apply", "--allow-running-server", "-o", "json"
    )
    assert result.code == 0, result.err
    job = cluster.requests("POST", "/jobs")[-1].data
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "immich-media-restore"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/immich-offsite-backup/immich-sync:0.1.0"  # the CronJob's image
    assert container["args"] == ["restore", "--to", "/target", "--log-format", "json", "--force"]
    # the restorer's keys as files of a read-only volume, never the writer's and never in the environment;
    # no ServiceAccount token: the pod never calls the Kubernetes API
    assert mounted_secret(pod) == "immich-offsite-restorer"
    assert "envFrom" not in container and credentials_in_env(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert container["volumeMounts"] == [
        {"name": "target", "mountPath": "/target"},  # read-write
        {"name": "credentials", "mountPath": SECRETS_DIR, "readOnly": True},
    ]
    assert pod["volumes"] == [
        {"name": "target", "persistentVolumeClaim": {"claimName": "immich-library-new"}},
        {"name": "credentials", "secret": {"secretName": "immich-offsite-restorer", "defaultMode": 0o400}},
    ]
    # the sandbox's CronJob sets no securityContext: the image's user (65532) still reads the 0400 files
    assert pod["securityContext"] == {"fsGroup": 65532, "fsGroupChangePolicy": "OnRootMismatch"}
    assert pod["restartPolicy"] == "Never"
    jobs = cluster.run("jobs", "-o", "json").json()["jobs"]
    assert jobs[0]["name"] == result.json()["name"]  # restore Jobs show in the same history, logs and all
    denied = cluster.run("media", "restore", "--apply", "--read-only")
    assert denied.code == 2 and "read-only mode: refusing to create jobs.batch" in denied.err


def test_media_restore_wait_runs_the_real_restore(make_cluster: MakeCluster, sample: SampleLibrary) -> None:
    cluster: Cluster = make_cluster()
    assert cluster.run("sync", "--wait").code == 0
    target = cluster.jobs.target.restore_root  # the volume the emulated Job mounts at /target
    result = cluster.run("media", "restore", "--apply", "--allow-running-server", "--wait")
    assert result.code == 0, result.out + result.err
    # the engine ran with no key in its environment: only the restorer Secret, mounted as files
    run = cluster.jobs.runs[-1]
    assert run.args[:2] == ["restore", "--to"]
    assert not [name for name in run.env if name.startswith("AWS_")], run.env
    assert run.secrets == {SECRETS_DIR: "immich-offsite-restorer"}
    assert run.env["IMMICH_SYNC_SECRETS_DIR"] != SECRETS_DIR  # the kubelet's mount, as a local directory
    assert "Generate Thumbnails" in result.out and "Transcode Videos" in result.out
    assert result.out.strip().splitlines()[-2].endswith("succeeded")
    for rel in sample.files:
        if rel.split("/")[0] in ("upload", "library", "profile"):
            assert (target / rel).read_bytes() == (sample.root / rel).read_bytes(), rel
    assert all((target / f / ".immich").is_file() for f in ("thumbs", "encoded-video", "backups"))
    # a volume that already holds files needs --force
    again = cluster.run("media", "restore", "--apply", "--allow-running-server", "--wait")
    assert again.code == 2
    assert "--force" in again.out
