"""deploy/overlays/drill and deploy/iam/drill.json: the monthly restore drill as shipped.

The overlay renders with the pinned kubectl, every object validates against the Kubernetes schemas, checkov
passes it but for the two waivers its CronJob names, the CronJob runs the plugin's `drill` with arguments the
plugin's own parser accepts and the drill Secret mounted as files, the Roles are exactly the listed minimum,
and the drill's IAM policy is the restorer's reads plus a PUT under the drill reports only. That the Roles
are also enough is proven by tests/test_drill_e2e.py, which runs the drill through them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import kubernetes_validate

from immich_tui.plugin.cli import parse
from immich_tui.services.drill import drill_report_key
from immich_tui.services.drill_run import DRILL_SECRET, drill_reader
from immich_tui.services.status import Services, Target
from tests.test_deploy import DEPLOY, K8S_VERSION, find, render
from tests.test_deploy_checks import WAIVED, checkov, rendered

OVERLAY = "overlays/drill"
CRONJOB = "immich-restore-drill"
SECRETS_MOUNT = "/var/run/secrets/immich-offsite"
TOOLS_DOCKERFILE = DEPLOY / "image" / "tools.Dockerfile"
CHECKOV_WAIVERS = {"CKV_K8S_11", "CKV_K8S_38"}


def _pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objs, "CronJob", CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _rules(
    objs: list[dict[str, Any]], namespace: str
) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == namespace)
    return sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])))
        for r in role["rules"]
        if not r.get("resourceNames")
    )


def test_the_overlay_renders_and_every_object_validates() -> None:
    objs = render(OVERLAY)
    kinds = sorted(f"{o['kind']}/{o['metadata']['namespace']}" for o in objs)
    assert kinds == [
        "CronJob/immich",
        "NetworkPolicy/immich",
        "NetworkPolicy/postgresql",
        "Role/immich",
        "Role/postgresql",
        "RoleBinding/immich",
        "RoleBinding/postgresql",
        "ServiceAccount/immich",
    ]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_cronjob_runs_the_drill_monthly_with_the_drill_secret_as_files() -> None:
    objs = render(OVERLAY)
    cronjob = find(objs, "CronJob", CRONJOB)
    assert cronjob["spec"]["schedule"] == "0 4 1 * *"
    assert cronjob["spec"]["timeZone"] == "Etc/UTC"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod(objs)
    [container] = pod["containers"]
    # the tools image's entrypoint is the plugin (deploy/image/tools.Dockerfile): the pod passes arguments only
    assert "command" not in container and container["image"].startswith("ghcr.io/immich-offsite-backup/immich-backup:")
    entrypoint = [line for line in TOOLS_DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert entrypoint == ['ENTRYPOINT ["/usr/bin/python3", "-m", "immich_tui.plugin"]']
    args = parse(container["args"])  # the plugin's own parser accepts them, as the pod's executable will
    assert (args.command, args.sample, args.keep, args.target_time) == ("drill", 100, False, None)
    assert (args.namespace, args.db_namespace, args.db_cluster) == ("immich", "postgresql", "immich-db")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == DRILL_SECRET
    assert mounts["credentials"] == {"name": "credentials", "mountPath": SECRETS_MOUNT, "readOnly": True}
    env = {e["name"]: e for e in container["env"]}
    assert env["IMMICH_SYNC_SECRETS_DIR"] == {"name": "IMMICH_SYNC_SECRETS_DIR", "value": SECRETS_MOUNT}
    assert all("valueFrom" not in e for e in container["env"]) and "envFrom" not in container
    assert mounts["scratch"]["mountPath"] == args.scratch_dir and "emptyDir" in volumes["scratch"]
    assert pod["serviceAccountName"] == CRONJOB
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"].startswith("ghcr.io/immich-offsite-backup/immich-backup:0.1.0@sha256:")


def test_the_roles_are_the_listed_minimum() -> None:
    objs = render(OVERLAY)
    assert _rules(objs, "postgresql") == sorted(
        [
            (("postgresql.cnpg.io",), ("clusters",), ("create", "delete", "get", "list")),
            (("postgresql.cnpg.io",), ("backups", "scheduledbackups"), ("list",)),
            (("barmancloud.cnpg.io",), ("objectstores",), ("get",)),
            (("batch",), ("jobs",), ("create", "delete", "get", "list")),
            (("",), ("pods",), ("get", "list")),
            (("",), ("pods/log",), ("get",)),
            (("",), ("persistentvolumeclaims",), ("delete", "list")),
        ]
    )
    assert _rules(objs, "immich") == sorted(
        [(("batch",), ("cronjobs", "jobs"), ("get", "list")), (("",), ("pods",), ("get", "list"))]
    )
    for role in (o for o in objs if o["kind"] == "Role"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"] and "*" not in rule["verbs"] + rule["resources"]
            assert not {"patch", "update"} & set(rule["verbs"]), rule  # no existing object is ever changed
    for binding in (o for o in objs if o["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CRONJOB, "namespace": "immich"}]


def test_checkov_passes_the_overlay_but_its_two_waivers(tmp_path: Path) -> None:
    verdict = checkov(rendered(OVERLAY), tmp_path / "checkov")
    assert [(r["check_id"], r["resource"]) for r in verdict.failed] == []
    assert verdict.ids(verdict.skipped) == {f"CronJob.immich.{CRONJOB}": CHECKOV_WAIVERS}
    for result in verdict.skipped:
        assert len(result["check_result"]["suppress_comment"]) > 40, result
    assert "CKV_K8S_11" in WAIVED


def _actions(doc: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            out.setdefault(action, set()).add(statement["Resource"])
    return out


def test_the_drill_policy_is_the_restorer_s_reads_and_a_put_of_its_report() -> None:
    doc = json.loads((DEPLOY / "iam/drill.json").read_text())
    assert _actions(doc) == {
        "s3:ListBucket": {"arn:aws:s3:::BUCKET_NAME"},
        "s3:ListBucketVersions": {"arn:aws:s3:::BUCKET_NAME"},
        "s3:GetObject": {"arn:aws:s3:::BUCKET_NAME/immich/*"},
        "s3:GetObjectVersion": {"arn:aws:s3:::BUCKET_NAME/immich/*"},
        "s3:PutObject": {"arn:aws:s3:::BUCKET_NAME/immich/sync-reports/drills/*"},
    }
    restorer = _actions(json.loads((DEPLOY / "iam/restorer.json").read_text()))
    reads = {a for a in restorer if a.startswith(("s3:Get", "s3:List"))}
    assert reads == {a for a in _actions(doc) if a != "s3:PutObject"}
    key = drill_report_key("immich/sync-reports/", dt.datetime(2026, 12, 1, 4, 0, tzinfo=dt.UTC))
    assert key.startswith("immich/sync-reports/drills/") and key.endswith(".json")


def test_the_drill_reads_its_keys_from_the_mounted_secret_files(tmp_path: Path) -> None:
    """What the CronJob's pod does: IMMICH_SYNC_SECRETS_DIR names the mounted Secret; no key in its env."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    values = {
        "AWS_ACCESS_KEY_ID": "AKIADRILLFILES",
        "AWS_SECRET_ACCESS_KEY": "drill-files-secret",
        "AWS_REGION": "eu-central-1",
        "BUCKET_NAME": "immich-offsite",
        "MEDIA_PREFIX": "immich/media/",
    }
    for name, value in values.items():
        (secrets / name).write_text(value + "\n")
    env = {"IMMICH_SYNC_SECRETS_DIR": str(secrets), "AWS_CONFIG_FILE": "/nonexistent"}
    reader = drill_reader(Services(Target(kubeconfig=str(tmp_path / "none")), env))
    assert reader.source == f"secrets directory {secrets}"
    assert (reader.settings.bucket, reader.media_prefix, reader.report_prefix) == (
        "immich-offsite",
        "immich/media/",
        "immich/sync-reports/",
    )
    assert reader.credentials is not None and reader.credentials.access_key == "AKIADRILLFILES"
