"""deploy/rbac: the operator Role is the least the tools need (no exec, the CronJob by name, no Secret but
the restorer's and the viewer's), the viewer Role reads only the viewer's Secret (keys that cannot download
a photo), exec is a separate opt-in, the admission policies come with the operator Role, and the tools'
real code paths work with exactly these Roles against an emulated API server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.emulator import EmulatorServer
from immich_tui.demo.fixtures import DB_CLUSTER, World, seed
from immich_tui.services.cnpg import Database
from immich_tui.services.kube import Forbidden
from immich_tui.services.library import Library
from immich_tui.services.media import DEFAULT_CRONJOB, RESTORER_SECRET, MediaBackup
from immich_tui.services.offsite import (
    ARCHIVER_SECRET,
    RESTORE_SECRETS,
    VIEWER_SECRET,
    WRITER_SECRET,
    OffsiteUnavailable,
    read_secret,
    resolve_reader,
)
from tests.rbac_eval import AuthorizedKube, Rbac, Subject
from tests.test_deploy import DEPLOY, find, render

NS, DB_NS = "immich", "postgresql"
OPERATOR = Subject("alice", ("immich-backup-operators", "system:authenticated"))
VIEWER = Subject("grafana", ("immich-backup-viewers", "system:authenticated"))


def _rules(path: str, namespace: str, name: str) -> list[dict[str, Any]]:
    role = next(
        o
        for o in render(path)
        if o["kind"] == "Role" and o["metadata"]["name"] == name and o["metadata"]["namespace"] == namespace
    )
    return role["rules"]


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(group, resource, verb, resourceNames) for every combination a rule grants."""
    return {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_operator_role_has_no_exec() -> None:
    rules = _rules("rbac/operator", NS, "immich-backup-operator")
    assert not [g for g in _grants(rules) if g[1].startswith("pods/") and g[1] != "pods/log"]
    rbac = Rbac(render("rbac/operator"))
    for verb in ("get", "create"):
        assert not rbac.allows(OPERATOR, verb, "pods", NS, subresource="exec", name="immich-server-0")


def test_the_operator_role_is_exactly_what_the_tools_use() -> None:
    sync = (DEFAULT_CRONJOB,)
    assert _grants(_rules("rbac/operator", NS, "immich-backup-operator")) == {
        ("batch", "cronjobs", "get", sync),
        ("batch", "cronjobs", "patch", sync),  # suspend / resume; the admission policy keeps it to spec.suspend
        ("batch", "jobs", "get", ()),
        ("batch", "jobs", "list", ()),
        ("batch", "jobs", "watch", ()),
        ("batch", "jobs", "create", ()),
        ("", "pods", "get", ()),
        ("", "pods", "list", ()),
        ("", "pods", "watch", ()),
        ("", "pods/log", "get", ()),
        ("", "secrets", "get", (RESTORER_SECRET, VIEWER_SECRET)),  # restores and verify; status and totals
    }
    db = _grants(_rules("rbac/operator", DB_NS, "immich-backup-operator"))
    assert {verb for _, _, verb, _ in db} == {"get", "list", "watch", "create"}
    assert {(g, r) for g, r, verb, _ in db if verb == "create"} == {
        ("postgresql.cnpg.io", "backups"),
        ("postgresql.cnpg.io", "clusters"),
    }
    assert "secrets" not in {r for _, r, _, _ in db}


def test_what_the_operator_cannot_do() -> None:
    rbac = Rbac(render("rbac/operator"))
    cannot = [
        ("get", "secrets", NS, "", "", WRITER_SECRET),
        ("list", "secrets", NS, "", "", ""),
        ("get", "secrets", DB_NS, "", "", ARCHIVER_SECRET),
        ("create", "pods", NS, "", "", ""),
        ("update", "pods", NS, "", "", "immich-server-0"),
        ("patch", "pods", NS, "ephemeralcontainers", "", "immich-server-0"),
        ("create", "pods", NS, "attach", "", "immich-server-0"),
        ("create", "pods", NS, "portforward", "", "immich-server-0"),
        ("list", "cronjobs", NS, "", "batch", ""),
        ("update", "cronjobs", NS, "", "batch", DEFAULT_CRONJOB),
        ("patch", "cronjobs", NS, "", "batch", "another-cronjob"),
        ("create", "cronjobs", NS, "", "batch", ""),
        ("delete", "cronjobs", NS, "", "batch", DEFAULT_CRONJOB),
        ("delete", "jobs", NS, "", "batch", "any"),
        ("patch", "jobs", NS, "", "batch", "any"),
        ("create", "deployments", NS, "", "apps", ""),
        ("patch", "clusters", DB_NS, "", "postgresql.cnpg.io", "immich-db"),
        ("delete", "clusters", DB_NS, "", "postgresql.cnpg.io", "immich-db"),
        ("delete", "backups", DB_NS, "", "postgresql.cnpg.io", "any"),
        ("create", "jobs", "default", "", "batch", ""),
    ]
    for verb, resource, namespace, sub, group, name in cannot:
        assert not rbac.allows(OPERATOR, verb, resource, namespace, group, sub, name), (verb, resource, sub, name)


def test_exec_is_a_separate_opt_in_that_grants_nothing_else() -> None:
    objs = render("rbac/operator-exec")
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in objs) == [("Role", NS), ("RoleBinding", NS)]
    rules = find(objs, "Role")["rules"]
    # get: the tools' exec is a WebSocket GET; create: kubectl's POST, and every upgrade since Kubernetes 1.35
    assert _grants(rules) == {("", "pods/exec", "get", ()), ("", "pods/exec", "create", ())}
    binding = find(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == find(objs, "Role")["metadata"]["name"]
    assert {s["name"] for s in binding["subjects"]} == {"immich-backup-operators"}
    rbac = Rbac(render("rbac/operator") + objs)
    assert rbac.allows(OPERATOR, "create", "pods", NS, subresource="exec", name="immich-server-0")
    assert not rbac.allows(OPERATOR, "create", "pods", DB_NS, subresource="exec", name="immich-db-1")


def test_the_operator_kustomization_brings_the_admission_policies() -> None:
    kinds = [o["kind"] for o in render("rbac/operator")]
    assert kinds.count("ValidatingAdmissionPolicy") == 4 and kinds.count("ValidatingAdmissionPolicyBinding") == 4
    assert not [o for o in render("rbac/read-only") if o["kind"].startswith("ValidatingAdmission")]
    kustomization = yaml.safe_load((DEPLOY / "rbac/operator/kustomization.yaml").read_text())
    assert "../../admission" in kustomization["resources"]


def test_the_viewer_role_writes_nothing() -> None:
    for namespace in (NS, DB_NS):
        verbs = {verb for _, _, verb, _ in _grants(_rules("rbac/read-only", namespace, "immich-backup-viewer"))}
        assert verbs <= {"get", "list", "watch"}
    rbac = Rbac(render("rbac/read-only"))
    assert not rbac.allows(VIEWER, "get", "secrets", NS, name=WRITER_SECRET)
    assert not rbac.allows(VIEWER, "create", "pods", NS, subresource="exec", name="immich-server-0")


def test_the_viewer_role_reads_only_the_viewer_secret() -> None:
    """The viewer's keys (deploy/iam/viewer.json) read the run reports and cannot download a photo or the
    database archive; the restorer's can, so the viewer Role never reads them."""
    secrets = {g for g in _grants(_rules("rbac/read-only", NS, "immich-backup-viewer")) if g[1] == "secrets"}
    assert secrets == {("", "secrets", "get", (VIEWER_SECRET,))}
    assert not [g for g in _grants(_rules("rbac/read-only", DB_NS, "immich-backup-viewer")) if g[1] == "secrets"]
    rbac = Rbac(render("rbac/read-only"))
    assert rbac.allows(VIEWER, "get", "secrets", NS, name=VIEWER_SECRET)
    for namespace, name in ((NS, RESTORER_SECRET), (NS, WRITER_SECRET), (DB_NS, ARCHIVER_SECRET)):
        assert not rbac.allows(VIEWER, "get", "secrets", namespace, name=name), name
    assert not rbac.allows(VIEWER, "list", "secrets", NS)


# The tools, for real, with exactly these Roles -----------------------------------------------------
READER_KEYS = {"AWS_SECRET_ACCESS_KEY": "r", "AWS_REGION": "us-east-1", "BUCKET_NAME": "immich-b", "MEDIA_PREFIX": "m/"}


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[str]:
    server = EmulatorServer().start()
    try:
        world = World()
        world.restorer = {"AWS_ACCESS_KEY_ID": "AKIAREADER", **READER_KEYS}
        seed(server, world)
        viewer = {"AWS_ACCESS_KEY_ID": "AKIAVIEWER", **READER_KEYS}
        server.put(
            "v1/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": VIEWER_SECRET, "namespace": NS},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in viewer.items()},
            },
        )
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        yield str(kubeconfig)
    finally:
        server.stop()


def _operate(kube: AuthorizedKube) -> Library:
    """Every operator action of the plugin and the TUI but exec: read, trigger, suspend, resume, restore,
    logs, DB backup, DB recovery cluster."""
    media = MediaBackup(kube, NS)
    history = media.history()
    media.job(history.jobs[0].name)
    _, pod = media.newest_job_pod(None)
    media.logs(pod).close()
    media.trigger()
    media.set_suspended(True)
    media.set_suspended(False)
    media.start_restore("immich-library")
    read_secret(kube, NS, RESTORER_SECRET)
    read_secret(kube, NS, VIEWER_SECRET)
    db = Database(kube, DB_NS, DB_CLUSTER)
    db.state()
    db.backup_now()
    db.create_cluster(
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "immich-db-restore", "namespace": DB_NS},
            "spec": {"instances": 1},
        }
    )
    return Library(kube, NS)


def test_the_tools_work_with_exactly_the_operator_role(seeded: str) -> None:
    kube = AuthorizedKube(seeded, Rbac(render("rbac/operator")), OPERATOR)
    library = _operate(kube)
    assert kube.denied == []
    server = library.server_pod()
    assert server is not None and not library.exec_allowed(server)  # the last report is shown instead
    used = {(a.verb, a.resource, a.subresource) for a in kube.accesses}
    assert {("create", "jobs", ""), ("patch", "cronjobs", ""), ("get", "pods", "log")} <= used
    assert {("create", "backups", ""), ("create", "clusters", ""), ("get", "secrets", "")} <= used


def test_the_exec_opt_in_lets_the_live_inventory_run(seeded: str) -> None:
    kube = AuthorizedKube(seeded, Rbac(render("rbac/operator") + render("rbac/operator-exec")), OPERATOR)
    library = Library(kube, NS)
    server = library.server_pod()
    assert server is not None and library.exec_allowed(server)


def test_the_viewer_reads_and_is_refused_every_write(seeded: str) -> None:
    kube = AuthorizedKube(seeded, Rbac(render("rbac/read-only")), VIEWER)
    media = MediaBackup(kube, NS)
    media.history()
    Database(kube, DB_NS, DB_CLUSTER).state()
    assert kube.denied == []
    for action in (media.trigger, lambda: media.set_suspended(True), lambda: media.start_restore("immich-library")):
        with pytest.raises(Forbidden):
            action()


def test_the_viewer_reads_s3_with_the_viewer_secret_and_never_reaches_the_restorers(seeded: str) -> None:
    """status, offsite and inventory resolve the viewer's keys; verify and the database catalog ask for the
    restorer's, which the viewer Role may not read: a one-line refusal naming the Secret, not a fallback."""
    kube = AuthorizedKube(seeded, Rbac(render("rbac/read-only")), VIEWER)
    reader = resolve_reader(kube, NS, {})
    assert reader.source == f"Secret {NS}/{VIEWER_SECRET}"
    assert reader.credentials is not None and reader.credentials.access_key == "AKIAVIEWER"
    with pytest.raises(OffsiteUnavailable) as refused:
        resolve_reader(kube, NS, {}, secrets=RESTORE_SECRETS)
    assert str(refused.value).endswith(f"or create the restorer Secret (RBAC denies get secrets in namespace {NS})")
    assert [(a.verb, a.resource, a.name) for a in kube.denied] == [("get", "secrets", RESTORER_SECRET)]


def test_the_operator_reads_s3_with_the_viewer_secret_and_restores_with_the_restorers(seeded: str) -> None:
    kube = AuthorizedKube(seeded, Rbac(render("rbac/operator")), OPERATOR)
    assert resolve_reader(kube, NS, {}).source == f"Secret {NS}/{VIEWER_SECRET}"
    restorer = resolve_reader(kube, NS, {}, secrets=RESTORE_SECRETS)
    assert restorer.source == f"Secret {NS}/{RESTORER_SECRET}"
    assert restorer.credentials is not None and restorer.credentials.access_key == "AKIAREADER"
    assert kube.denied == []
