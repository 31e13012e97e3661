"""A viewer that cannot download the photos, end to end: the plugin against kmock's Kubernetes emulator and
a moto S3 that enforces the shipped IAM policies (tests/strict_iam.py, s3:prefix conditions included).

A real backup of the sample library is made with the media writer's keys (deploy/iam/media-writer.json).
Then the cluster holds only the viewer's Secret (deploy/iam/viewer.json): `status`, `offsite` and
`inventory` answer from it, and what needs the restorer's reach (`db catalog`, verify) says that the
restorer's Secret is missing instead of trying the viewer's keys. With the restorer's Secret added, those
work with it while the reads stay with the viewer's, and `media restore` starts its Job with the
restorer's Secret. Verify's result tells the two identities apart by itself: only the restorer's keys
can list versions, so only with them does it know that the bucket keeps them.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.controllers import JobController
from immich_tui.demo.emulator import EmulatorServer
from immich_tui.demo.fixtures import World, seed
from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import bucket_policy
from immich_tui.services.offsite import Offsite, OffsiteUnavailable, resolve_reader
from immich_tui.services.status import Services, Target
from tests.cluster import Cluster
from tests.strict_iam import StrictIamS3

NS = "immich"
BUCKET = "immich-offsite-viewer"
IAM = Path(__file__).resolve().parent.parent / "deploy" / "iam"
VIEWER, RESTORER = "immich-offsite-viewer", "immich-offsite-restorer"
WAL = "immich/postgres/immich-db/wals/0000000100000000/000000010000000000000001.gz"
NO_RESTORER = (
    "no S3 read credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY with BUCKET_NAME, "
    f"MEDIA_PREFIX and AWS_REGION, or create the restorer Secret (Secret {NS}/{RESTORER} does not exist)"
)


@dataclass
class Bucket:
    server: StrictIamS3
    keys: dict[str, tuple[str, str]]

    def secret_data(self, who: str) -> dict[str, str]:
        """What `kubectl immich-backup setup` puts into that identity's Secret, pointed at the local server."""
        key_id, secret = self.keys[who]
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "BUCKET_NAME": BUCKET,
            "MEDIA_PREFIX": "immich/media/",
            "AWS_ENDPOINT_URL_S3": self.server.endpoint,
        }


@pytest.fixture(scope="module")
def backed_up(sample_template: SampleLibrary) -> Iterator[Bucket]:
    """A versioned bucket holding a nightly run of the sample library, written with the writer's policy, and
    a WAL segment of the database archive; then every request is checked against its identity's policy."""
    with StrictIamS3() as server:
        admin = server.client()
        admin.create_bucket(Bucket=BUCKET)
        admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        admin.put_object(Bucket=BUCKET, Key=WAL, Body=b"wal")
        keys = {
            who: server.iam_user(who, (IAM / f"{who}.json").read_text().replace("BUCKET_NAME", BUCKET))
            for who in ("media-writer", "viewer", "restorer")
        }
        keys["admin"] = server.iam_user("admin", bucket_policy(BUCKET, ["s3:*"]))
        server.enforce_iam()
        bucket = Bucket(server, keys)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMMICH_SYNC_"))}
        env.update(bucket.secret_data("media-writer"))
        env.update(
            {
                "LIBRARY_ROOT": str(sample_template.root),
                "IMMICH_SYNC_SETTLE_SECONDS": "0",
                "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            }
        )
        run = [sys.executable, "-m", "sync_engine", "backup", "--log-format", "json", "--no-progress"]
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield bucket


@pytest.fixture
def cluster(
    backed_up: Bucket, sample_template: SampleLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """The seeded cluster with the viewer's Secret and no restorer's; the operator's shell has no AWS keys."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    server = EmulatorServer().start()
    jobs = JobController(server, None)  # Jobs are created, never run: what they would read is their envFrom
    try:
        seed(server, World(library=sample_template.root))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        secrets = tuple(backed_up.keys[who][1] for who in backed_up.keys)
        found = Cluster(server, kubeconfig, {"PATH": os.environ.get("PATH", "")}, jobs, secrets=secrets)
        put_secret(found, VIEWER, backed_up.secret_data("viewer"))
        yield found
    finally:
        jobs.join()
        server.stop()


def put_secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": NS}}
    cluster.server.put("v1/secrets", {**secret, "data": encoded})


@contextmanager
def services(cluster: Cluster) -> Iterator[Services]:
    """What the plugin and the TUI build for this cluster, closed afterwards."""
    tools = Services(Target(kubeconfig=str(cluster.kubeconfig)), cluster.env)
    try:
        yield tools
    finally:
        tools.close()


def delete_secret(cluster: Cluster, name: str) -> None:
    """Through the API server, as `kubectl delete secret` would."""
    with services(cluster) as tools:
        tools.kube.core.delete_namespaced_secret(name, NS)


def test_status_offsite_and_inventory_answer_with_only_the_viewer_secret(cluster: Cluster) -> None:
    status = cluster.run("status", "-o", "json")
    assert status.code == 0, status.out + status.err
    offsite = status.json()["offsite"]
    assert offsite["error"] == ""
    assert offsite["value"]["source"] == f"Secret {NS}/{VIEWER}"
    assert offsite["value"]["requests"] == {"ListObjectsV2": 1, "GetObject": 1}  # the report prefix, one report
    assert sum(f["objects"] for f in offsite["value"]["folders"]) == 203
    table = cluster.run("status")
    assert table.code == 0 and f"(read via Secret {NS}/{VIEWER})" in table.out
    fast = cluster.run("offsite", "--from-report", "-o", "json")
    assert fast.code == 0, fast.err
    assert fast.json()["source"] == f"Secret {NS}/{VIEWER}" and fast.json()["basis"].startswith("run report ")
    # the exact per-folder totals list the media prefix: names and sizes, which viewer.json allows
    listed = cluster.run("offsite")
    assert listed.code == 0, listed.err
    assert f"read via Secret {NS}/{VIEWER}" in listed.out
    assert "library         103       41.2 MiB   STANDARD 103" in listed.out
    inventory = cluster.run("inventory", "--from-report")
    assert inventory.code == 0, inventory.err
    assert "note:" not in inventory.err
    # the restorer's and the writer's Secrets were never asked for
    assert not cluster.requests("GET", f"/secrets/{RESTORER}")
    assert not cluster.requests("GET", "/secrets/immich-offsite-writer")


def test_what_needs_the_restorer_never_falls_back_to_the_viewer(cluster: Cluster, backed_up: Bucket) -> None:
    catalog = ("db", "catalog", "--destination-path", f"s3://{BUCKET}/immich/postgres", "--server-name", "immich-db")
    refused = cluster.run(*catalog)
    assert refused.code == 2
    assert refused.err == f"kubectl immich-backup: error: {NO_RESTORER}\n"
    with services(cluster) as tools, pytest.raises(OffsiteUnavailable) as unavailable:
        tools.offsite().verify()
    assert str(unavailable.value) == NO_RESTORER
    put_secret(cluster, RESTORER, backed_up.secret_data("restorer"))
    found = cluster.run(*catalog, "-o", "json")
    assert found.code == 0, found.err
    assert found.json()["wal"]["count"] == 1  # the database archive, which only the restorer may list
    with services(cluster) as tools:
        offsite = tools.offsite()
        result = offsite.verify()
        assert offsite.reader.source == f"Secret {NS}/{VIEWER}"  # while the reads stay with the viewer's
    assert result.ok, result.problems
    assert result.verified == 203
    assert result.versioned is True  # listed with s3:ListBucketVersions: the restorer's keys, not the viewer's
    assert cluster.run("offsite", "--from-report", "-o", "json").json()["source"] == f"Secret {NS}/{VIEWER}"


def test_the_viewer_keys_would_leave_verify_half_blind(cluster: Cluster) -> None:
    """Why verify is the restorer's: with the viewer's keys it cannot list versions, so it could see no
    overwrite or delete of a photo."""
    with services(cluster) as tools:
        reader = resolve_reader(tools.kube, NS, cluster.env)
    assert reader.source == f"Secret {NS}/{VIEWER}"
    result = Offsite(reader).verify()
    assert result.versioned is None
    assert any("version" in note for note in result.notes), result.notes


def test_media_restore_starts_its_job_with_the_restorer_secret(cluster: Cluster, backed_up: Bucket) -> None:
    put_secret(cluster, RESTORER, backed_up.secret_data("restorer"))
    result = cluster.run("media", "restore", "--apply", "--allow-running-server", "-o", "json")
    assert result.code == 0, result.err
    job = cluster.get("batch/v1/jobs", NS, result.json()["name"])
    assert job is not None
    assert secrets_referenced(job["spec"]["template"]["spec"]) == {RESTORER}
    assert VIEWER not in yaml.safe_dump(job)


def secrets_referenced(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod spec hands its containers, however: envFrom, secretKeyRef, a secret volume or a
    projected volume's source."""
    names: set[str] = set()
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in (e.get("valueFrom") or {})
        }
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def test_without_a_viewer_secret_the_restorer_reads_and_says_so(cluster: Cluster, backed_up: Bucket) -> None:
    """A cluster set up before the viewer existed: the restorer's Secret serves the reads, and the output
    names it."""
    delete_secret(cluster, VIEWER)
    put_secret(cluster, RESTORER, backed_up.secret_data("restorer"))
    result = cluster.run("offsite", "--from-report")
    assert result.code == 0, result.err
    assert f"read via Secret {NS}/{RESTORER}" in result.out
    delete_secret(cluster, RESTORER)
    missing = cluster.run("offsite", "--from-report")
    assert missing.code == 2
    assert missing.err.strip().endswith(
        f"or create the viewer or the restorer Secret (Secret {NS}/{VIEWER} does not exist; Secret {NS}/{RESTORER} "
        "does not exist)"
    )


def test_a_broken_viewer_secret_is_named_not_passed_over(cluster: Cluster, backed_up: Bucket) -> None:
    """Keys missing from the viewer's Secret are a mistake to fix, not a reason to read with broader keys."""
    put_secret(cluster, RESTORER, backed_up.secret_data("restorer"))
    data = backed_up.secret_data("viewer")
    del data["AWS_SECRET_ACCESS_KEY"]
    put_secret(cluster, VIEWER, data)
    result = cluster.run("offsite", "--from-report")
    assert result.code == 2
    assert result.err.strip().endswith(f"(Secret {NS}/{VIEWER} lacks AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    assert not cluster.requests("GET", f"/secrets/{RESTORER}")
