"""deploy/admission: the ValidatingAdmissionPolicies that keep the media writer's Secret to the sync
CronJob's own Jobs and Pods, validated against the Kubernetes 1.37 schemas and evaluated with a CEL
implementation (cel-python) against the Jobs the tools really create, over HTTP, with exactly the
operator's Role: the plugin's `sync` Job and the media restore Job are admitted; forged Jobs and Pods that
reach for the writer's keys, and any change to the CronJob but spec.suspend by an operator, are denied."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from immich_tui.demo.emulator import CORE_RESOURCES, EmulatorServer
from immich_tui.services.media import DEFAULT_CRONJOB, MediaBackup
from immich_tui.services.offsite import WRITER_SECRET
from tests.rbac_eval import MASTERS, AuthorizedKube, Rbac, Subject
from tests.test_deploy import K8S_VERSION, find, mounted_secret, render
from tests.vap import Admission, Denial, Request

NS = "immich"
CRONJOB_UID = "0b6f7f4e-2d61-4c1e-9a55-3f0d4c1a7e21"
OPERATOR = Subject("alice", ("immich-backup-operators", "system:authenticated"))
ADMIN = Subject("kubernetes-admin", (MASTERS, "system:authenticated"))
JOB_CONTROLLER = Subject("system:serviceaccount:kube-system:job-controller", ("system:serviceaccounts",))
CRONJOB_CONTROLLER = Subject("system:serviceaccount:kube-system:cronjob-controller", ("system:serviceaccounts",))
REPLICASET_CONTROLLER = Subject("system:serviceaccount:kube-system:replicaset-controller", ("system:serviceaccounts",))
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"

# the policies by what they decide
JOBS = "immich-offsite-writer-jobs"
TEMPLATE = "immich-offsite-sync-job-template"
PODS = "immich-offsite-writer-pods"
SUSPEND = "immich-offsite-sync-suspend-only"


def served_cronjob(overlay: str = "overlays/default") -> dict[str, Any]:
    """The CronJob as the API server holds it once applied: the rendered manifest with a uid."""
    cronjob = find(render(overlay), "CronJob", DEFAULT_CRONJOB)
    cronjob["metadata"]["uid"] = CRONJOB_UID
    return cronjob


def admission(cronjob: dict[str, Any] | None) -> Admission:
    return Admission(
        render("admission"),
        rbac=Rbac(render("rbac/operator")),
        objects=[cronjob] if cronjob is not None else [],
        namespaces={NS: {"kubernetes.io/metadata.name": NS}, "default": {"kubernetes.io/metadata.name": "default"}},
    )


def create(kind_plural: str, obj: dict[str, Any], who: Subject) -> Request:
    return Request("CREATE", kind_plural, obj, who)


def denied_by(denials: list[Denial]) -> set[str]:
    return {d.policy for d in denials}


# What the tools create, for real: the plugin's services over HTTP to an emulated API server ------------
class Created:
    """The bodies the tools POSTed, in order, as the emulated API server received them."""

    def __init__(self, server: EmulatorServer, kubeconfig: Path) -> None:
        self.server = server
        self.kubeconfig = kubeconfig
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def media(self, who: Subject = OPERATOR) -> MediaBackup:
        return MediaBackup(AuthorizedKube(str(self.kubeconfig), Rbac(render("rbac/operator")), who), NS)

    def last(self, plural: str) -> dict[str, Any]:
        return copy.deepcopy(next(body for kind, body in reversed(self.bodies) if kind == plural))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Created]]:
    servers: list[EmulatorServer] = []

    def start(cronjob: dict[str, Any]) -> Created:
        server = EmulatorServer().start()
        servers.append(server)
        server.emulator.serve(CORE_RESOURCES)
        server.put("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        server.put("batch/v1/cronjobs", copy.deepcopy(cronjob))
        kubeconfig = tmp_path / f"kubeconfig-{len(servers)}"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        created = Created(server, kubeconfig)
        server.emulator.on_create.append(lambda plural, body: created.bodies.append((plural, copy.deepcopy(body))))
        return created

    yield start
    for server in servers:
        server.stop()


def job_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The Pod the Job controller creates for `job`: its template, owned by the Job."""
    template = job["spec"]["template"]
    name = job["metadata"]["name"]
    labels = {**(template.get("metadata", {}).get("labels") or {}), "batch.kubernetes.io/job-name": name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x7k2q",
            "namespace": NS,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"].get("uid", "5d0c8f0a-1b7e-4f4e-8a51-0d6e2c9b3f10"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
    }


# Schemas -------------------------------------------------------------------------------------------
def test_policies_validate_against_the_kubernetes_schemas() -> None:
    objs = render("admission")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == sorted(
        [
            (kind, name)
            for name in (JOBS, TEMPLATE, PODS, SUSPEND)
            for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        ]
    )
    for obj in objs:
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"  # GA since Kubernetes 1.30
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            assert obj["spec"]["policyName"] == obj["metadata"]["name"] and obj["spec"]["validationActions"] == ["Deny"]
            assert obj["spec"]["matchResources"]["namespaceSelector"] == {
                "matchLabels": {"kubernetes.io/metadata.name": NS}
            }
        else:
            assert obj["spec"]["failurePolicy"] == "Fail"  # a policy that cannot be evaluated denies
            for validation in obj["spec"]["validations"]:  # the API server refuses a message with a line break
                assert "\n" not in validation["message"] and validation["reason"] == "Forbidden"
    # not a formality: a misspelt field and a wrong type are refused
    policy = copy.deepcopy(find(objs, "ValidatingAdmissionPolicy", JOBS))
    policy["spec"]["validations"][0]["expresion"] = policy["spec"]["validations"][0].pop("expression")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    binding = copy.deepcopy(find(objs, "ValidatingAdmissionPolicyBinding", TEMPLATE))
    binding["spec"]["paramRef"]["parameterNotFoundAction"] = ["Deny"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(binding, K8S_VERSION, strict=True)


def test_every_expression_compiles_in_cel() -> None:
    assert admission(served_cronjob()).compile_all() == 24  # 7 + 2 + 7 + 8, the four policies


def test_policies_name_what_the_project_names() -> None:
    objs = render("admission")
    text = yaml.safe_dump(objs)
    assert f"'{WRITER_SECRET}'" in text and WRITER_SECRET == "immich-offsite-writer"
    assert DEFAULT_CRONJOB == "immich-media-offsite-sync"
    binding = find(objs, "ValidatingAdmissionPolicyBinding", TEMPLATE)
    assert binding["spec"]["paramRef"] == {
        "name": DEFAULT_CRONJOB,
        "namespace": NS,
        "parameterNotFoundAction": "Deny",
    }
    # the label that sends a Job on to the template check is one every shipped CronJob gives its Jobs
    selector = binding["spec"]["matchResources"]["objectSelector"]["matchLabels"]
    for overlay in ("overlays/default", "overlays/sharded"):
        cronjob = find(render(overlay), "CronJob", DEFAULT_CRONJOB)
        assert selector.items() <= cronjob["spec"]["jobTemplate"]["metadata"]["labels"].items()
        # the CronJob mounts the writer's Secret as a volume: a reference the policies see like envFrom
        assert mounted_secret(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]) == WRITER_SECRET
    # the Job and Pod policies recognise the Secret by one and the same expression
    variables = {
        name: {v["name"]: v["expression"] for v in find(objs, "ValidatingAdmissionPolicy", name)["spec"]["variables"]}
        for name in (JOBS, PODS)
    }
    assert variables[JOBS]["usesWriter"] == variables[PODS]["usesWriter"]
    assert variables[JOBS]["secret"] == variables[PODS]["secret"] == f"'{WRITER_SECRET}'"


def test_suspend_only_guards_every_cronjob_spec_field_but_suspend() -> None:
    """One validation per CronJobSpec property of the 1.37 schema: a field a later version adds fails here."""
    schema = json.loads((SCHEMAS / "cronjobspec-batch-v1.json").read_text())
    policy = find(render("admission"), "ValidatingAdmissionPolicy", SUSPEND)
    guarded = set()
    for validation in policy["spec"]["validations"]:
        fields = set(re.findall(r"object\.spec\.(\w+)", validation["expression"]))
        assert len(fields) == 1 and f"spec.{next(iter(fields))} did" in validation["message"]
        guarded |= fields
    assert guarded == set(schema["properties"]) - {"suspend"}


# Jobs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", ["overlays/default", "overlays/sharded"])
def test_the_job_the_plugin_creates_is_admitted_and_so_are_its_pods(
    cluster: Callable[[dict[str, Any]], Created], overlay: str
) -> None:
    cronjob = served_cronjob(overlay)
    created = cluster(cronjob)
    info = created.media().trigger()  # `kubectl immich-backup sync`, with only the operator Role
    job = created.last("jobs")
    assert job["metadata"]["name"] == info.name
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["uid"] == CRONJOB_UID
    policies = admission(cronjob)
    assert policies.review(create("jobs", job, OPERATOR)) == []
    assert policies.review(create("pods", job_pod(job), JOB_CONTROLLER)) == []
    # the same Job as the CronJob controller makes it each night
    nightly = copy.deepcopy(job)
    del nightly["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"]
    nightly["metadata"]["name"] = f"{DEFAULT_CRONJOB}-29412150"
    assert policies.review(create("jobs", nightly, CRONJOB_CONTROLLER)) == []


def test_the_media_restore_job_is_admitted_with_or_without_the_cronjob(
    cluster: Callable[[dict[str, Any]], Created],
) -> None:
    cronjob = served_cronjob()
    created = cluster(cronjob)
    created.media().start_restore("immich-library")  # `kubectl immich-backup media restore`
    job = created.last("jobs")
    assert mounted_secret(job["spec"]["template"]["spec"]) == "immich-offsite-restorer"
    shipped = find(render("overlays/restore"), "Job")  # `kubectl create -k deploy/overlays/restore`
    for policies in (admission(cronjob), admission(None)):
        assert policies.review(create("jobs", job, OPERATOR)) == []
        assert policies.review(create("jobs", shipped, OPERATOR)) == []
        assert policies.review(create("pods", job_pod(job), JOB_CONTROLLER)) == []


def test_a_sync_job_without_its_cronjob_is_denied(cluster: Callable[[dict[str, Any]], Created]) -> None:
    cronjob = served_cronjob()
    created = cluster(cronjob)
    created.media().trigger()
    job = created.last("jobs")
    assert denied_by(admission(None).review(create("jobs", job, OPERATOR))) == {TEMPLATE}


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def _other_command(job: dict[str, Any]) -> None:
    _container(job)["command"] = ["sh", "-c", "env"]


def _other_args(job: dict[str, Any]) -> None:
    _container(job)["args"] = ["--version"]


def _other_image(job: dict[str, Any]) -> None:
    _container(job)["image"] = "busybox:1.37"


def _not_owned(job: dict[str, Any]) -> None:
    del job["metadata"]["ownerReferences"]


def _not_owned_nor_labelled(job: dict[str, Any]) -> None:
    del job["metadata"]["ownerReferences"]
    del job["metadata"]["labels"]


def _not_labelled(job: dict[str, Any]) -> None:
    del job["metadata"]["labels"]


def _owned_by_an_older_cronjob(job: dict[str, Any]) -> None:
    job["metadata"]["ownerReferences"][0]["uid"] = "7e57d00d-0000-4000-8000-000000000000"


def _owned_by_another_cronjob(job: dict[str, Any]) -> None:
    job["metadata"]["ownerReferences"][0]["name"] = "my-backup"
    del job["metadata"]["labels"]


def _extra_container(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    spec["containers"].append({"name": "side", "image": "busybox:1.37", "command": ["sh", "-c", "env"]})


def _extra_init_container(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "first", "image": "busybox:1.37", "command": ["env"]}]


def _debug_job(secret_source: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """A Job of one's own, not the CronJob's, that reaches the Secret through `secret_source`."""

    def forge(job: dict[str, Any]) -> None:
        job["metadata"] = {"name": "debug", "namespace": NS}
        job["spec"] = {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "debug", "image": "busybox:1.37", "command": ["sh", "-c", "env; ls -R /s"]}
                    ],
                }
            }
        }
        secret_source(job)

    return forge


def _env_from(job: dict[str, Any]) -> None:
    _container(job)["envFrom"] = [{"prefix": "X_", "secretRef": {"name": WRITER_SECRET}}]


def _secret_key_ref(job: dict[str, Any]) -> None:
    _container(job)["env"] = [
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": WRITER_SECRET, "key": "AWS_SECRET_ACCESS_KEY"}}}
    ]


def _secret_volume(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": WRITER_SECRET}}]
    _container(job)["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]


def _projected_volume(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["volumes"] = [
        {"name": "s", "projected": {"sources": [{"configMap": {"name": "x"}}, {"secret": {"name": WRITER_SECRET}}]}}
    ]
    _container(job)["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]


def _init_container_env_from(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["initContainers"] = [
        {
            "name": "first",
            "image": "busybox:1.37",
            "command": ["env"],
            "envFrom": [{"secretRef": {"name": WRITER_SECRET}}],
        }
    ]


FORGED_JOBS: dict[str, tuple[Callable[[dict[str, Any]], None], set[str]]] = {
    # the CronJob's own Job, owned and labelled, running something else
    "different-command": (_other_command, {TEMPLATE}),
    "different-args": (_other_args, {TEMPLATE}),
    "different-image": (_other_image, {TEMPLATE}),
    "extra-container": (_extra_container, {TEMPLATE}),
    "extra-init-container": (_extra_init_container, {TEMPLATE}),
    # the writer Secret without the CronJob as controller, or without its label
    "no-owner-reference": (_not_owned, {JOBS, TEMPLATE}),
    "no-owner-no-label": (_not_owned_nor_labelled, {JOBS}),
    "no-label": (_not_labelled, {JOBS}),
    "owner-uid-of-an-older-cronjob": (_owned_by_an_older_cronjob, {TEMPLATE}),
    "owned-by-another-cronjob": (_owned_by_another_cronjob, {JOBS}),
    # a Job of one's own, through every door to the Secret
    "own-job-env-from": (_debug_job(_env_from), {JOBS}),
    "own-job-secret-key-ref": (_debug_job(_secret_key_ref), {JOBS}),
    "own-job-secret-volume": (_debug_job(_secret_volume), {JOBS}),
    "own-job-projected-volume": (_debug_job(_projected_volume), {JOBS}),
    "own-job-init-container": (_debug_job(_init_container_env_from), {JOBS}),
}


@pytest.mark.parametrize("forgery", sorted(FORGED_JOBS))
def test_forged_jobs_are_denied(cluster: Callable[[dict[str, Any]], Created], forgery: str) -> None:
    cronjob = served_cronjob()
    created = cluster(cronjob)
    created.media().trigger()
    job = created.last("jobs")
    forge, expected = FORGED_JOBS[forgery]
    forge(job)
    policies = admission(cronjob)
    denials = policies.review(create("jobs", job, OPERATOR))
    assert denied_by(denials) == expected, denials
    # a cluster administrator is held to the same rule
    assert denied_by(policies.review(create("jobs", job, ADMIN))) == expected


def test_jobs_that_leave_the_writer_secret_alone_are_not_touched() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "debug", "namespace": NS}, "spec": {}}
    _debug_job(lambda j: None)(job)
    policies = admission(served_cronjob())
    assert policies.review(create("jobs", job, OPERATOR)) == []
    # another namespace is not the policies' business
    _debug_job(_env_from)(job)
    job["metadata"]["namespace"] = "default"
    assert policies.review(create("jobs", job, OPERATOR)) == []


# Pods ----------------------------------------------------------------------------------------------
def _sync_pod() -> dict[str, Any]:
    cronjob = served_cronjob()
    job = MediaBackup(None, NS).manual_job(cronjob, f"{DEFAULT_CRONJOB}-manual-a1b2c")  # type: ignore[arg-type]
    return job_pod(job)


def _server_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "immich-server-6d8f9c7b5-q2x7k",
            "namespace": NS,
            "labels": {"app.kubernetes.io/name": "server"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "immich-server-6d8f9c7b5",
                    "uid": "u",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "immich-server",
                    "image": "ghcr.io/immich-app/immich-server:v2.3.1",
                    "envFrom": [{"secretRef": {"name": "immich-db-credentials"}}],
                }
            ]
        },
    }


def _bare(pod: dict[str, Any]) -> dict[str, Any]:
    del pod["metadata"]["ownerReferences"]
    return pod


def _with_writer(pod: dict[str, Any]) -> dict[str, Any]:
    pod["spec"]["containers"][0]["envFrom"].append({"secretRef": {"name": WRITER_SECRET}})
    return pod


def test_pods_with_the_writer_secret_come_only_from_the_job_controller() -> None:
    policies = admission(served_cronjob())
    # the sync Job's pod, from the Job controller: admitted; the same spec as a bare Pod: denied
    assert policies.review(create("pods", _sync_pod(), JOB_CONTROLLER)) == []
    assert denied_by(policies.review(create("pods", _bare(_sync_pod()), OPERATOR))) == {PODS}
    assert denied_by(policies.review(create("pods", _bare(_sync_pod()), ADMIN))) == {PODS}
    assert denied_by(policies.review(create("pods", _sync_pod(), OPERATOR))) == {PODS}  # an owner claimed
    # a Deployment's pod with the Secret: its ReplicaSet controller is not the Job controller
    assert denied_by(policies.review(create("pods", _with_writer(_server_pod()), REPLICASET_CONTROLLER))) == {PODS}
    # the Job controller, for a pod no Job controls (a controller identity cannot be used for a bare Pod)
    assert denied_by(policies.review(create("pods", _bare(_sync_pod()), JOB_CONTROLLER))) == {PODS}
    # Immich itself, its own Secrets: not the policies' business
    assert policies.review(create("pods", _server_pod(), REPLICASET_CONTROLLER)) == []


def _update(old: dict[str, Any], change: Callable[[dict[str, Any]], None], subresource: str = "") -> Request:
    new = copy.deepcopy(old)
    change(new)
    return Request("UPDATE", "pods", new, OPERATOR, old_object=old, subresource=subresource)


def _debug_container(pod: dict[str, Any], **extra: Any) -> None:
    pod["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox:1.37", "targetContainerName": "sync", **extra}
    ]


def test_a_pod_with_the_writer_secret_cannot_be_changed_into_something_else() -> None:
    policies = admission(served_cronjob())
    sync = _sync_pod()
    # labels, annotations, finalizers (what controllers change): admitted
    assert policies.review(_update(sync, lambda p: p["metadata"]["labels"].update({"x": "y"}))) == []
    assert policies.review(_update(sync, lambda p: p["metadata"].update({"finalizers": []}))) == []
    # a new image for the running sync: denied
    new_image = _update(sync, lambda p: p["spec"]["containers"][0].update({"image": "busybox:1.37"}))
    assert denied_by(policies.review(new_image)) == {PODS}
    # `kubectl debug --target=sync` (an ephemeral container beside the keys): denied
    debug = _update(sync, _debug_container, "ephemeralcontainers")
    assert denied_by(policies.review(debug)) == {PODS}
    # an ephemeral container that brings the Secret into another pod: denied; one that does not: admitted
    server = _server_pod()
    assert policies.review(_update(server, _debug_container, "ephemeralcontainers")) == []
    bring = _update(
        server, lambda p: _debug_container(p, envFrom=[{"secretRef": {"name": WRITER_SECRET}}]), "ephemeralcontainers"
    )
    assert denied_by(policies.review(bring)) == {PODS}


# The CronJob ---------------------------------------------------------------------------------------
def test_an_operator_may_only_suspend_and_resume_the_cronjob(cluster: Callable[[dict[str, Any]], Created]) -> None:
    cronjob = served_cronjob()
    created = cluster(cronjob)
    policies = admission(cronjob)
    before = created.server.get("batch/v1/cronjobs", NS, DEFAULT_CRONJOB)
    assert before is not None
    created.media().set_suspended(True)  # the plugin's merge patch of spec.suspend, with the operator Role
    after = created.server.get("batch/v1/cronjobs", NS, DEFAULT_CRONJOB)
    assert after is not None and after["spec"]["suspend"] is True
    suspend = Request("UPDATE", "cronjobs", after, OPERATOR, old_object=before)
    assert policies.review(suspend) == []
    assert policies.review(Request("UPDATE", "cronjobs", before, OPERATOR, old_object=after)) == []  # resume

    def change(edit: Callable[[dict[str, Any]], None], who: Subject = OPERATOR) -> list[Denial]:
        new = copy.deepcopy(before)
        edit(new)
        return policies.review(Request("UPDATE", "cronjobs", new, who, old_object=before))

    def new_args(c: dict[str, Any]) -> None:
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] = ["sh", "-c", "env"]

    assert [d.message for d in change(new_args)] == [
        "without update on CronJob immich-media-offsite-sync only its spec.suspend may change; spec.jobTemplate did"
    ]
    assert denied_by(change(lambda c: c["spec"].update({"schedule": "* * * * *"}))) == {SUSPEND}
    assert denied_by(change(lambda c: c["spec"].pop("startingDeadlineSeconds"))) == {SUSPEND}
    assert denied_by(change(lambda c: c["spec"].update({"timeZone": "Europe/Berlin"}))) == {SUSPEND}
    assert change(lambda c: c["metadata"].setdefault("annotations", {}).update({"note": "x"})) == []
    # whoever RBAC lets update the CronJob installs and changes it: a cluster administrator
    assert change(new_args, ADMIN) == []


def test_the_suspend_only_rule_follows_rbac_update_not_a_list_of_names() -> None:
    """A namespace admin bound to a Role with `update` is not restricted; the operator Role has no update."""
    cronjob = served_cronjob()
    maintainer = Subject("bob", ("immich-maintainers", "system:authenticated"))
    extra = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "cronjob-maintainer", "namespace": NS},
            "rules": [{"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "update", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "cronjob-maintainer", "namespace": NS},
            "subjects": [{"kind": "Group", "name": "immich-maintainers", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "Role", "name": "cronjob-maintainer", "apiGroup": "rbac.authorization.k8s.io"},
        },
    ]
    policies = Admission(
        render("admission"),
        rbac=Rbac(render("rbac/operator") + extra),
        objects=[cronjob],
        namespaces={NS: {"kubernetes.io/metadata.name": NS}},
    )
    new = copy.deepcopy(cronjob)
    new["spec"]["schedule"] = "0 4 * * *"
    assert policies.review(Request("UPDATE", "cronjobs", new, maintainer, old_object=cronjob)) == []
    assert denied_by(policies.review(Request("UPDATE", "cronjobs", new, OPERATOR, old_object=cronjob))) == {SUSPEND}
