"""Whether the Immich server is running: a media restore must not write into a volume Immich is using.

Immich's Helm chart labels the server pod `app.kubernetes.io/name=server` and
`app.kubernetes.io/instance=immich`; plain manifests usually name the Deployment `immich-server`. Either
one running means files may change under the restore, and Immich would see a half-restored library.
Both are settings (`ServerWorkload`), because a chart installed under another release name labels it
differently.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from immich_tui.services.errors import ServiceError
from immich_tui.services.kube import Access, Kube, NotFound
from immich_tui.services.schema import View

DEFAULT_SERVER_SELECTOR = "app.kubernetes.io/name=server,app.kubernetes.io/instance=immich"
DEFAULT_SERVER_DEPLOYMENT = "immich-server"


@dataclass(frozen=True)
class ServerWorkload:
    """Where the Immich server is looked for: running pods matching `selector`, and the Deployment `deployment`."""

    namespace: str = "immich"
    selector: str = DEFAULT_SERVER_SELECTOR
    deployment: str = DEFAULT_SERVER_DEPLOYMENT


@dataclass
class RunningServer:
    """What was found running: the pods by name, and the Deployment to scale down (with its replicas)."""

    namespace: str
    pods: list[str]
    deployment: str
    replicas: int | None  # None when no such Deployment was found (the pods alone tell it runs)

    def describe(self) -> str:
        parts = []
        if self.replicas:
            parts.append(f"deployment/{self.deployment} has {self.replicas} replica{'s' * (self.replicas != 1)}")
        if self.pods:
            parts.append(f"pod{'s' * (len(self.pods) > 1)} {', '.join(self.pods[:3])} running")
        return "; ".join(parts)

    @property
    def scale_down(self) -> str:
        return f"kubectl -n {self.namespace} scale deployment/{self.deployment} --replicas=0"


def running_server(kube: Kube, workload: ServerWorkload) -> RunningServer | None:
    """The Immich server if any part of it runs (a Running pod, or a Deployment asking for replicas), else None.

    Two scoped requests: pods by label and phase, and the one Deployment by name. A cluster that does not
    serve `apps/v1` or has no such Deployment simply has none."""
    ns = workload.namespace
    pods = [
        View.of("Pod", item, namespace=ns).map("metadata").text("name")
        for item in kube.list(
            Access("list", "pods", ns),
            kube.core.list_namespaced_pod,
            ns,
            label_selector=workload.selector,
            field_selector="status.phase=Running",
            max_items=20,
        )
    ]
    replicas: int | None = None
    apps = client.AppsV1Api(kube.api)
    try:
        raw = kube.call(
            Access("get", "deployments", ns, "apps", name=workload.deployment),
            apps.read_namespaced_deployment,
            workload.deployment,
            ns,
        )
    except NotFound:
        raw = None
    if raw is not None:
        deployment = View.of("Deployment", raw, namespace=ns)
        wanted = deployment.map("spec").integer("replicas")
        ready = deployment.map("status").count("readyReplicas")
        replicas = max(1 if wanted is None else wanted, ready)  # an unset replicas means 1
    if not pods and not replicas:
        return None
    return RunningServer(ns, sorted(pods), workload.deployment, replicas)


class ServerRunning(ServiceError):
    """A media restore refused because the Immich server runs; the message names it and how to stop it."""


def refuse_while_running(kube: Kube, workload: ServerWorkload, *, allow: bool, override: str) -> RunningServer | None:
    """The one rule for the plugin and the TUI: Immich writes to the library while it runs (uploads,
    thumbnails), so a restore beneath it mixes the two and Immich serves a half-restored library. Refused
    unless `allow`; `override` names how to allow it where the refusal is read (a flag, a checkbox).
    Returns what runs when allowed anyway, for a warning."""
    running = running_server(kube, workload)
    if running is None or allow:
        return running
    raise ServerRunning(
        f"the Immich server is running in {running.namespace} ({running.describe()}): stop it first with "
        f"`{running.scale_down}`, or {override}"
    )
