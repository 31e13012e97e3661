"""deploy/: every kustomization renders with the pinned kubectl, every object validates (Kubernetes 1.37
schemas via kubernetes-validate, CNPG kinds via their CRDs), the CronJob is secure by default, and its
exact command and environment back up the sample library under the IAM writer policy shipped here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from immich_tui.services.cnpg import schedule_warning
from immich_tui.services.offsite import ARCHIVER_SECRET, WRITER_SECRET
from tests.crd_schema import CNPG_GROUPS, validate
from tests.strict_iam import writer_and_admin

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBECTL = Path(sys.executable).parent / "kubectl"
K8S_VERSION = "1.37.0"
KUSTOMIZATIONS = [
    "base",
    "overlays/default",
    "overlays/sharded",
    "overlays/restore",
    "overlays/drill",
    "overlays/cnpg-plugin-example",
    "overlays/cnpg-in-tree-example",
    "rbac/operator",
    "rbac/operator-exec",
    "rbac/read-only",
    "admission",
]
# What kustomize renders without a namespace, as the API server keeps them: cluster-scoped.
CLUSTER_SCOPED = ("Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def render(path: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(KUBECTL), "kustomize", str(DEPLOY / path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_every_object_validates(path: str) -> None:
    objs = render(path)
    assert objs
    for obj in objs:
        if obj["apiVersion"].split("/")[0] in CNPG_GROUPS:
            validate(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"].get("namespace") or obj["kind"] in CLUSTER_SCOPED, f"{obj['kind']} has no namespace"


def test_the_validator_is_not_a_formality() -> None:
    cronjob = find(render("overlays/default"), "CronJob")
    cronjob["spec"]["startingDeadlineSeconds"] = "an hour"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    cronjob = find(render("overlays/default"), "CronJob")
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["envFromm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", ["overlays/default", "overlays/sharded"])
def test_cronjob_policy(overlay: str) -> None:
    objs = render(overlay)
    cronjob = find(objs, "CronJob", "immich-media-offsite-sync")
    spec = cronjob["spec"]
    assert cronjob["metadata"]["namespace"] == "immich"
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("30 2 * * *", "Etc/UTC", "Forbid")
    assert spec["startingDeadlineSeconds"] > 0 and spec["successfulJobsHistoryLimit"] and spec["failedJobsHistoryLimit"]
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    pod = _pod(cronjob)
    [container] = pod["containers"]
    # the library: read-only, both on the volume and on the mount
    assert {"name": "library", "persistentVolumeClaim": {"claimName": "immich-library", "readOnly": True}} in pod[
        "volumes"
    ]
    assert {"name": "library", "mountPath": "/library", "readOnly": True} in container["volumeMounts"]
    # secure by default
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sa = find(objs, "ServiceAccount", pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    # pinned by release tag and digest, never :latest (deploy/README.md, The image)
    image = container["image"]
    assert re.fullmatch(r"ghcr\.io/immich-offsite-backup/immich-sync:\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
    # no connection into the pod, and out only to DNS and S3: the NetworkPolicy selects it (rules: below)
    policy = find(objs, "NetworkPolicy", "immich-offsite-backup")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in policy["spec"]
    [selector] = policy["spec"]["podSelector"]["matchExpressions"]
    assert selector["key"] == "app.kubernetes.io/name" and selector["operator"] == "In"
    pod_labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] in selector["values"]
    assert "immich-media-restore" in selector["values"]  # the restores `kubectl immich-backup media restore` starts
    # the Secret setup creates, as files; JSON logs, resources, and the ReadWriteOnce affinity to the Immich server
    assert mounted_secret(pod) == WRITER_SECRET
    assert container["args"][:3] == ["backup", "--log-format", "json"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "server"}


# The pods' environment holds no credential: the Secret is a read-only volume the engine reads -----------
SECRETS_DIR = "/var/run/secrets/immich-offsite"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def credentials_in_env(pod: dict[str, Any]) -> list[str]:
    """Every way the pod's containers get a Secret or a key through their environment: envFrom a Secret,
    a secretKeyRef, or a credential variable set to a literal value."""
    found: list[str] = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        found += [f"{c['name']}: envFrom {e['secretRef']['name']}" for e in c.get("envFrom", []) if "secretRef" in e]
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}):
                found.append(f"{c['name']}: {e['name']} from Secret {e['valueFrom']['secretKeyRef']['name']}")
            elif e["name"] in CREDENTIAL_VARIABLES:
                found.append(f"{c['name']}: {e['name']} set in the spec")
    return found


def mounted_secret(pod: dict[str, Any]) -> str:
    """The one Secret the pod's container reads its keys from: a secret volume, files mode 0400, mounted
    read-only where IMMICH_SYNC_SECRETS_DIR points; the pod's fsGroup makes the files group-readable by the
    non-root user, and no ServiceAccount token is mounted beside them. Returns the Secret's name."""
    [container] = pod["containers"]
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o400, volume
    assert set(volume["secret"]) == {"secretName", "defaultMode"}  # every key, none optional
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": SECRETS_DIR, "readOnly": True}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["IMMICH_SYNC_SECRETS_DIR"] == SECRETS_DIR
    assert pod["securityContext"]["fsGroup"] > 0  # files root:fsGroup, mode 0440 once the kubelet adds g+r
    assert pod["automountServiceAccountToken"] is False
    assert credentials_in_env(pod) == []
    return str(volume["secret"]["secretName"])


WORKLOADS = [("overlays/default", "CronJob"), ("overlays/sharded", "CronJob"), ("overlays/restore", "Job")]


def _pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    return _pod(obj) if obj["kind"] == "CronJob" else obj["spec"]["template"]["spec"]


@pytest.mark.parametrize(("path", "kind"), WORKLOADS)
def test_no_credential_reaches_a_pod_through_its_environment(path: str, kind: str) -> None:
    pod = _pod_of(find(render(path), kind))
    assert credentials_in_env(pod) == []
    assert mounted_secret(pod) == (WRITER_SECRET if kind == "CronJob" else "immich-offsite-restorer")
    # the non-root user reads the 0400 files through the group the kubelet gives them; the library, mounted
    # read-only, is never re-owned (kubelet skips read-only volumes), and a volume whose root already has the
    # group is not walked again
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == security["runAsGroup"] == 65532
    assert (security["fsGroup"], security["fsGroupChangePolicy"]) == (65532, "OnRootMismatch")


def test_the_credential_check_is_not_a_formality() -> None:
    pod = _pod_of(find(render("overlays/default"), "CronJob"))
    container = pod["containers"][0]
    container["envFrom"] = [{"secretRef": {"name": WRITER_SECRET}}]
    container["env"].append({"name": "K", "valueFrom": {"secretKeyRef": {"name": "x", "key": "AWS_SECRET_ACCESS_KEY"}}})
    container["env"].append({"name": "AWS_ACCESS_KEY_ID", "value": "AKIA"})
    assert credentials_in_env(pod) == [
        f"sync: envFrom {WRITER_SECRET}",
        "sync: K from Secret x",
        "sync: AWS_ACCESS_KEY_ID set in the spec",
    ]


# Network: nothing in, and out only to DNS and the S3 endpoint ---------------------------------------------
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
S3_RULE = {"ports": [{"protocol": "TCP", "port": 443}]}  # no `to`: any address


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("base", "immich-offsite-backup"),
        ("overlays/default", "immich-offsite-backup"),
        ("overlays/sharded", "immich-offsite-backup"),
        ("overlays/restore", "immich-media-restore"),
    ],
)
def test_the_network_policies_allow_dns_and_s3_out_and_nothing_in(path: str, name: str) -> None:
    objs = render(path)
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["name"] == name
    spec = dict(policy["spec"])
    selector = spec.pop("podSelector")
    assert spec == {"policyTypes": ["Ingress", "Egress"], "egress": [DNS_RULE, S3_RULE]}  # no ingress rule at all
    workload = next(o for o in objs if o["kind"] in ("CronJob", "Job"))
    labels = (workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"])[
        "template"
    ]["metadata"]["labels"]
    if "matchLabels" in selector:
        assert selector == {"matchLabels": {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}}
    else:
        [expression] = selector["matchExpressions"]
        assert expression["values"] == ["immich-media-offsite-sync", "immich-media-restore"]
        assert labels["app.kubernetes.io/name"] in expression["values"]


def _readme_egress_patch() -> str:
    docs = (DEPLOY / "README.md").read_text()
    [block] = re.findall(r"```yaml\n(patches:\n  - target: \{kind: NetworkPolicy\}\n.*?)```", docs, re.DOTALL)
    return block


def test_the_readme_s_endpoint_patch_narrows_egress_to_an_in_cluster_or_lan_endpoint(tmp_path: Path) -> None:
    """deploy/README.md's patch, in a kustomization of one's own over overlays/default and overlays/restore:
    both NetworkPolicies then allow S3 traffic only to the endpoint's namespace (or CIDR) and port, DNS as before."""
    patch = yaml.safe_load(_readme_egress_patch())
    for overlay in ("overlays/default", "overlays/restore"):
        own = tmp_path / overlay.replace("/", "-")
        own.mkdir()
        resources = [os.path.relpath(DEPLOY / overlay, own)]
        (own / "kustomization.yaml").write_text(yaml.safe_dump({"resources": resources, **patch}))
        done = subprocess.run([str(KUBECTL), "kustomize", str(own)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        [policy] = [o for o in yaml.safe_load_all(done.stdout) if o and o["kind"] == "NetworkPolicy"]
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
        dns, s3 = policy["spec"]["egress"]
        assert dns == DNS_RULE
        assert s3["ports"] == [{"protocol": "TCP", "port": 9000}]
        assert s3["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}]
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in policy["spec"]
    # its commented alternative, a NAS on the LAN by address, is a valid rule too
    lan = yaml.safe_load(re.search(r"# (- ipBlock: \{cidr: [^}]+\})", _readme_egress_patch()).group(1))  # type: ignore[union-attr]
    policy = find(render("overlays/default"), "NetworkPolicy")
    policy["spec"]["egress"][1]["to"] = lan
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_setup_creates_the_secrets_the_manifests_reference() -> None:
    from immich_tui.services.setup import build_secrets, load_config, read_env_file

    config = load_config(read_env_file(ROOT / ".env.example"))
    made = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in build_secrets(config, "immich", "postgresql")}
    cronjob = find(render("overlays/default"), "CronJob")
    writer = mounted_secret(_pod(cronjob))
    assert ("immich", writer) in made
    restore = find(render("overlays/restore"), "Job")
    reader = mounted_secret(restore["spec"]["template"]["spec"])
    assert ("immich", reader) in made and reader != writer
    assert ("postgresql", writer) not in made  # the media writer's keys stay in the Immich namespace
    for path in ("overlays/cnpg-plugin-example", "overlays/cnpg-in-tree-example"):
        objs = render(path)
        store = find(objs, "ObjectStore") if "plugin" in path else find(objs, "Cluster")
        spec = store["spec"]["configuration"] if "plugin" in path else store["spec"]["backup"]["barmanObjectStore"]
        names = {ref["name"] for ref in spec["s3Credentials"].values()}
        assert names == {ARCHIVER_SECRET} and ("postgresql", ARCHIVER_SECRET) in made  # CNPG's own, in its namespace
        assert writer not in yaml.safe_dump(objs)
    # the Secrets the RBAC Roles let people read are ones setup makes: the viewer's for the read-only Role
    for path, wanted in (
        ("rbac/read-only", {"immich-offsite-viewer"}),
        ("rbac/operator", {reader, "immich-offsite-viewer"}),
    ):
        readable = {
            (role["metadata"]["namespace"], name)
            for role in render(path)
            if role["kind"] == "Role"
            for rule in role["rules"]
            if "secrets" in rule["resources"]
            for name in rule["resourceNames"]
        }
        assert readable == {("immich", name) for name in wanted} and readable <= made, path


def test_sharded_overlay_is_an_indexed_job() -> None:
    cronjob = find(render("overlays/sharded"), "CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 4, 4)
    args = _pod(cronjob)["containers"][0]["args"]
    assert args[-2:] == ["--shard", "$(JOB_COMPLETION_INDEX)/4"]


def test_restore_overlay_mounts_the_volume_read_write_with_reader_keys() -> None:
    objs = render("overlays/restore")
    job = find(objs, "Job", "immich-media-restore")
    policy = find(objs, "NetworkPolicy", "immich-media-restore")  # its own: the base may not be applied
    assert policy["spec"] == {
        "podSelector": {"matchLabels": job["spec"]["template"]["metadata"]["labels"]},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [DNS_RULE, S3_RULE],
    }
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:3] == ["restore", "--to", "/target"]
    assert {"name": "target", "mountPath": "/target"} in container["volumeMounts"]
    assert {"name": "target", "persistentVolumeClaim": {"claimName": "immich-library"}} in pod["volumes"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("mode", ["plugin", "in-tree"])
def test_cnpg_components(mode: str) -> None:
    objs = render(f"overlays/cnpg-{mode}-example")
    sched = find(objs, "ScheduledBackup")
    assert schedule_warning(sched["spec"]["schedule"]) == ""  # six fields, seconds first
    sec, minute, hour = (int(x) for x in sched["spec"]["schedule"].split()[:3])
    assert (hour, minute, sec) < (2, 30, 0)  # the database is backed up before the media sync starts
    cluster = find(objs, "Cluster", "immich-db")
    assert cluster["spec"]["imageName"].startswith("ghcr.io/tensorchord/")  # the example's own spec survives
    if mode == "plugin":
        store = find(objs, "ObjectStore")
        assert cluster["spec"]["plugins"][0]["parameters"]["barmanObjectName"] == store["metadata"]["name"]
        assert sched["spec"]["method"] == "plugin"
        destination = store["spec"]["configuration"]["destinationPath"]
    else:
        assert sched["spec"]["method"] == "barmanObjectStore"
        destination = cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"]
    prefix = destination.split("/", 3)[3]
    policy = json.loads((DEPLOY / "iam/cnpg-writer.json").read_text())
    assert any(f"/{prefix}/*" in str(s["Resource"]) for s in policy["Statement"])


def _actions(policy: str) -> set[str]:
    doc = json.loads((DEPLOY / "iam" / policy).read_text())
    out: set[str] = set()
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        out |= {actions} if isinstance(actions, str) else set(actions)
    return out


def test_iam_policies_are_least_privilege() -> None:
    assert _actions("media-writer.json") == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
        "s3:GetObject",
        "s3:GetBucketVersioning",  # reads the bucket's protection on the bucket ARN; nothing that changes it
        "s3:GetBucketObjectLockConfiguration",
    }
    doc = json.loads((DEPLOY / "iam/media-writer.json").read_text())
    [get] = [s for s in doc["Statement"] if s["Action"] == "s3:GetObject"]
    assert get["Resource"] == "arn:aws:s3:::BUCKET_NAME/immich/sync-reports/*"  # its files cache, never media
    [protection] = [s for s in doc["Statement"] if "s3:GetBucketVersioning" in s["Action"]]
    assert protection["Resource"] == "arn:aws:s3:::BUCKET_NAME"
    assert _actions("restorer.json") == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:RestoreObject",
    }
    # the viewer: list the run reports and the media's names and sizes, read the run reports, nothing else
    assert _actions("viewer.json") == {"s3:ListBucket", "s3:GetObject"}
    doc = json.loads((DEPLOY / "iam/viewer.json").read_text())
    [listing] = [s for s in doc["Statement"] if s["Action"] == "s3:ListBucket"]
    assert listing["Resource"] == "arn:aws:s3:::BUCKET_NAME"
    assert listing["Condition"] == {"StringEquals": {"s3:prefix": ["immich/sync-reports/", "immich/media/"]}}
    [get] = [s for s in doc["Statement"] if s["Action"] == "s3:GetObject"]
    assert get["Resource"] == "arn:aws:s3:::BUCKET_NAME/immich/sync-reports/*"  # never a photo, never the archive
    assert _actions("cnpg-writer.json") == {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",  # its retention policy deletes old backups
        "s3:AbortMultipartUpload",
    }
    doc = json.loads((DEPLOY / "iam/cnpg-writer.json").read_text())
    archive = "arn:aws:s3:::BUCKET_NAME/immich/postgres/*"
    assert {s["Resource"] for s in doc["Statement"] if "s3:PutObject" in s["Action"]} == {archive}
    # ListBucket: for the archive's prefix, or with no s3:prefix at all (barman-cloud's HeadBucket)
    assert [(s["Action"], s["Condition"]) for s in doc["Statement"] if "s3:ListBucket" in s["Action"]] == [
        (
            ["s3:ListBucket", "s3:GetBucketLocation"],
            {"StringLike": {"s3:prefix": ["immich/postgres/", "immich/postgres/*"]}},
        ),
        ("s3:ListBucket", {"Null": {"s3:prefix": "true"}}),
    ]
    writer = (DEPLOY / "iam/media-writer.json").read_text()
    assert "immich/postgres" not in writer and '*"' not in writer.replace('/*"', "")
    archiver = (DEPLOY / "iam/cnpg-writer.json").read_text()
    assert "immich/media" not in archiver and "sync-reports" not in archiver
    # nothing can undo versioning
    for policy in ("media-writer.json", "cnpg-writer.json", "restorer.json", "viewer.json"):
        assert not {a for a in _actions(policy) if "Version" in a and not a.startswith(("s3:Get", "s3:List"))}
        assert not {"s3:PutLifecycleConfiguration", "s3:BypassGovernanceRetention"} & _actions(policy)


def test_lifecycle_file_is_valid_s3_and_matches_the_docs(s3: LocalS3, bucket: str) -> None:
    """deploy/s3/lifecycle.json as the aws CLI sends it: accepted by S3 and read back unchanged; the
    days deploy/README.md documents are the file's."""
    lifecycle = json.loads((DEPLOY / "s3/lifecycle.json").read_text())
    client = s3.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=lifecycle)
    assert client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == lifecycle["Rules"]
    assert all(r["Status"] == "Enabled" and r["Filter"] == {"Prefix": ""} for r in lifecycle["Rules"])
    [noncurrent] = [
        r["NoncurrentVersionExpiration"]["NoncurrentDays"]
        for r in lifecycle["Rules"]
        if "NoncurrentVersionExpiration" in r
    ]
    [abort] = [
        r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        for r in lifecycle["Rules"]
        if "AbortIncompleteMultipartUpload" in r
    ]
    assert abort == 1  # the sync relies on it as the backstop for unfinished uploads
    docs = (DEPLOY / "README.md").read_text()
    assert re.findall(r"noncurrent versions expire after \*\*(\d+) days\*\*", docs) == [str(noncurrent)]
    assert re.findall(r"noncurrent versions kept (\d+) days", docs) == [str(noncurrent)]
    assert re.findall(r"aborted \*\*(\d+) day\*\* after", docs) == [str(abort)]
    assert "--lifecycle-configuration file://deploy/s3/lifecycle.json" in docs
    assert "--versioning-configuration Status=Enabled" in docs
    # the Object Lock example's retention stays within the noncurrent days, or it would be paid for beyond them
    [retention] = re.findall(r'"DefaultRetention": \{"Mode": "GOVERNANCE", "Days": (\d+)\}', docs)
    assert int(retention) <= noncurrent


def test_argocd_application_and_alerts() -> None:
    app = yaml.safe_load((DEPLOY / "argocd/application.yaml").read_text())
    assert (DEPLOY.parent / app["spec"]["source"]["path"]).is_dir()
    assert app["spec"]["destination"]["namespace"] == "immich"
    rules = yaml.safe_load((DEPLOY / "monitoring/prometheusrule.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {"ImmichMediaSyncStale", "ImmichDatabaseBackupStale"} <= set(alerts)
    assert 'cronjob="immich-media-offsite-sync"' in alerts["ImmichMediaSyncStale"]["expr"]
    assert "36 * 3600" in alerts["ImmichMediaSyncStale"]["expr"]
    assert "36 * 3600" in alerts["ImmichDatabaseBackupStale"]["expr"]  # the same rule as `status`


# The CronJob, for real --------------------------------------------------------------------------
BUCKET = "immich-offsite-deploy"


@pytest.fixture(scope="module")
def iam_s3() -> Any:
    with writer_and_admin(BUCKET) as served:  # the writer policy's s3:prefix conditions enforced too
        yield served


def _writer_secret(server: Any, writer: tuple[str, str]) -> dict[str, str]:
    """The keys `kubectl immich-backup setup` puts into immich-offsite-writer, with the optional endpoint
    pointing the run at the local server instead of AWS."""
    return {
        "AWS_ACCESS_KEY_ID": writer[0],
        "AWS_SECRET_ACCESS_KEY": writer[1],
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": BUCKET,
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": server.endpoint,
    }


def _secret_volumes(pod: dict[str, Any], secret: dict[str, str], root: Path) -> dict[str, Path]:
    """Each secret volume of the pod as the kubelet lays it out (a file per key behind `..data`, the volume's
    defaultMode), by the path the container mounts it at."""
    mounts = {m["name"]: m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    out: dict[str, Path] = {}
    for volume in pod.get("volumes", []):
        if "secret" not in volume:
            continue
        folder = root / volume["name"]
        data = folder / "..2026_11_27_02_30_00.000000001"
        data.mkdir(parents=True)
        for key, value in secret.items():
            (data / key).write_text(value)
            (data / key).chmod(volume["secret"].get("defaultMode", 0o644))
            (folder / key).symlink_to(f"..data/{key}")
        (folder / "..data").symlink_to(data.name)
        out[mounts[volume["name"]]] = folder
    return out


def _run_container(  # type: ignore[no-untyped-def]
    pod: dict[str, Any], secret: dict[str, str], volumes: dict[str, Path], extra: dict[str, str], root: Path
):
    """The pod's container as the kubelet would run it: its args and environment, its Secret volume as files,
    its other volumes mapped to local paths; nothing from AWS in the environment (HOME moved: no ~/.aws)."""
    [container] = pod["containers"]
    volumes = {**volumes, **_secret_volumes(pod, secret, root / "secrets")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMMICH_SYNC_"))}
    env["HOME"] = str(root)
    for item in container.get("env", []):
        value = item["value"]
        env[item["name"]] = str(volumes.get(value, value))
    env.update(extra)
    assert not [name for name in env if name.startswith("AWS_")], "a credential in the pod's environment"
    args = [str(volumes.get(a, a)) for a in container["args"]]
    for name, value in env.items():
        args = [a.replace(f"$({name})", value) for a in args]
    return subprocess.run([sys.executable, "-m", "sync_engine", *args], env=env, capture_output=True, text=True)


def test_the_bandwidth_example_in_the_default_overlay_reaches_the_engine(
    iam_s3, sample: SampleLibrary, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The commented patch in overlays/default, uncommented as its comment says, renders, validates and
    sets the limit the run reports."""
    server, writer, admin = iam_s3
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    kustomization = copy / "overlays/default/kustomization.yaml"
    text = kustomization.read_text()
    head, example = text.split("# To cap the upload bandwidth", 1)
    body = [line[2:] for line in example.splitlines()[1:] if line.startswith("# ")]
    kustomization.write_text(head + "\n".join(body) + "\n")
    done = subprocess.run([str(KUBECTL), "kustomize", str(kustomization.parent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cronjob = find([d for d in yaml.safe_load_all(done.stdout) if d], "CronJob")
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    [container] = _pod(cronjob)["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["IMMICH_SYNC_BWLIMIT"] == "08:00,2M 18:00,512k 23:30,off"
    assert env["TZ"] == cronjob["spec"]["timeZone"] == "Etc/UTC"
    extra = {"IMMICH_SYNC_SETTLE_SECONDS": "0"}
    ran = _run_container(_pod(cronjob), _writer_secret(server, writer), {"/library": sample.root}, extra, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    client = server.client(key_id=admin[0], secret=admin[1])
    [key] = [
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="immich/sync-reports/")
        for o in p.get("Contents", [])
        if o["Key"].endswith("-ok-full.json")
    ]
    report = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert report["bwlimit"] == "timetable 08:00,2M 18:00,512k 23:30,off"


def test_the_cronjob_backs_up_the_library_under_the_writer_policy(  # type: ignore[no-untyped-def]
    iam_s3, sample: SampleLibrary, tmp_path: Path
) -> None:
    """The CronJob's exact pod: its keys only in the mounted Secret's files, under an S3 that checks every
    request's signature and the writer policy."""
    server, writer, admin = iam_s3
    cronjob = find(render("overlays/default"), "CronJob")
    secret, extra = _writer_secret(server, writer), {"IMMICH_SYNC_SETTLE_SECONDS": "0"}
    done = _run_container(_pod(cronjob), secret, {"/library": sample.root}, extra, tmp_path / "default")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    assert lines, "the CronJob logs JSON lines"
    client = server.client(key_id=admin[0], secret=admin[1])
    keys = [
        o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in p.get("Contents", [])
    ]
    media = [k for k in keys if k.startswith("immich/media/")]
    assert len(media) == 203
    assert any(k.startswith("immich/sync-reports/") and k.endswith("-ok-full.json") for k in keys)
    # the sharded overlay's pods, index 0..3, together cover the same library and upload nothing twice
    sharded = _pod(find(render("overlays/sharded"), "CronJob"))
    for index in range(4):
        volumes, index_env = {"/library": sample.root}, {**extra, "JOB_COMPLETION_INDEX": str(index)}
        shard = _run_container(sharded, secret, volumes, index_env, tmp_path / f"shard-{index}")
        assert shard.returncode == 0, shard.stdout + shard.stderr
    after = [
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="immich/media/")
        for o in p.get("Contents", [])
    ]
    assert sorted(after) == sorted(media)
