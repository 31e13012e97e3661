"""What `kubectl describe` (and k9s) shows for one object: its YAML, its conditions and its recent Events.

A Job that never got a pod has no log to read: the only explanation (quota, FailedCreate, admission,
image pull) is in Events, some on the Job and some on its pods, so a Job's description gathers both.

Everything read is untrusted: an object that is not a mapping is an error naming it, a malformed
condition or Event is skipped with a warning, Event lists are bounded, and the YAML is capped. Secrets
are refused outright, `metadata.managedFields` and kubectl's last-applied copy (which may quote a whole
manifest, Secrets included) are dropped, and env values whose names look like credentials are masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from immich_tui.services import clock
from immich_tui.services.errors import InvalidData, ServiceError
from immich_tui.services.kube import Access, ClusterError, Kube
from immich_tui.services.status import Services

CNPG_GROUP, CNPG_VERSION = "postgresql.cnpg.io", "v1"
MAX_EVENTS = 200  # read per object; a crash-looping pod's Events are aggregated by the API server anyway
EVENTS_SHOWN = 50  # the newest, as kubectl describe shows a handful
MAX_PODS = 20  # a Job's pods whose Events are read (backoffLimit keeps this small)
MAX_YAML = 256 * 1024  # characters of YAML shown; the rest is cut with a warning
MAX_TEXT = 1000  # characters of one condition or Event message
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SECRETISH = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^KEY$|APIKEY)", re.IGNORECASE)
MASK = "<masked>"


@dataclass(frozen=True)
class ObjectRef:
    kind: str  # Job, Pod, CronJob, Backup or Cluster (CNPG postgresql.cnpg.io/v1)
    name: str
    namespace: str


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: str = ""  # RFC 3339 as the API gave it, "" when absent


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    count: int = 1
    last_seen: str = ""  # RFC 3339
    involved: str = ""  # Kind/name: a Job's description also carries its pods' Events


@dataclass
class Description:
    ref: ObjectRef
    yaml: str
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # newest first
    warnings: list[str] = field(default_factory=list)
    created: str = ""  # metadata.creationTimestamp


@dataclass(frozen=True)
class _Kind:
    """How one kind is read: its RBAC name, and the client call that gets one object."""

    resource: str
    group: str
    get: Callable[[Kube, ObjectRef], Any]


def _custom(plural: str) -> Callable[[Kube, ObjectRef], Any]:
    def get(kube: Kube, ref: ObjectRef) -> Any:
        return kube.call(
            Access("get", plural, ref.namespace, CNPG_GROUP, name=ref.name),
            kube.custom.get_namespaced_custom_object,
            CNPG_GROUP,
            CNPG_VERSION,
            ref.namespace,
            plural,
            ref.name,
        )

    return get


KINDS: dict[str, _Kind] = {
    "Job": _Kind(
        "jobs",
        "batch",
        lambda k, r: k.call(
            Access("get", "jobs", r.namespace, "batch", name=r.name), k.batch.read_namespaced_job, r.name, r.namespace
        ),
    ),
    "Pod": _Kind(
        "pods",
        "",
        lambda k, r: k.call(
            Access("get", "pods", r.namespace, name=r.name), k.core.read_namespaced_pod, r.name, r.namespace
        ),
    ),
    "CronJob": _Kind(
        "cronjobs",
        "batch",
        lambda k, r: k.call(
            Access("get", "cronjobs", r.namespace, "batch", name=r.name),
            k.batch.read_namespaced_cron_job,
            r.name,
            r.namespace,
        ),
    ),
    "Backup": _Kind("backups", CNPG_GROUP, _custom("backups")),
    "Cluster": _Kind("clusters", CNPG_GROUP, _custom("clusters")),
}


def _text(value: object, limit: int = MAX_TEXT) -> str:
    """One line of untrusted text: control characters and newlines become spaces, and it is capped."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as an operator reads it: no managedFields, no last-applied copy, credential-like env masked."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        out["metadata"] = meta
    return _mask_env(out)


def _mask_env(value: Any) -> Any:
    """Every `env: [{name, value}]` list anywhere (pods, Job and CronJob templates, CNPG's env)."""
    if isinstance(value, dict):
        masked = {}
        for key, item in value.items():
            if key == "env" and isinstance(item, list):
                masked[key] = [_mask_var(v) for v in item]
            else:
                masked[key] = _mask_env(item)
        return masked
    if isinstance(value, list):
        return [_mask_env(v) for v in value]
    return value


def _mask_var(var: Any) -> Any:
    if isinstance(var, dict) and isinstance(var.get("name"), str) and "value" in var and SECRETISH.search(var["name"]):
        return {**var, "value": MASK}
    return var


def conditions(obj: dict[str, Any], warnings: list[str]) -> list[Condition]:
    status = obj.get("status")
    raw = status.get("conditions") if isinstance(status, dict) else None
    if raw is None:
        return []
    if not isinstance(raw, list):
        warnings.append("status.conditions is not a list: conditions not shown")
        return []
    found = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            warnings.append(f"status.conditions[{i}] is not a condition: skipped")
            continue
        found.append(
            Condition(
                _text(item["type"], 100),
                _text(item.get("status"), 20),
                _text(item.get("reason"), 200),
                _text(item.get("message")),
                _text(item.get("lastTransitionTime"), 40),
            )
        )
    return found


def _event_time(raw: dict[str, Any]) -> str:
    """Events carry their time in one of four places, depending on who wrote them and the API version."""
    series = raw.get("series")
    candidates = [
        series.get("lastObservedTime") if isinstance(series, dict) else None,
        raw.get("lastTimestamp"),
        raw.get("eventTime"),
        raw.get("firstTimestamp"),
        (raw.get("metadata") or {}).get("creationTimestamp") if isinstance(raw.get("metadata"), dict) else None,
    ]
    return next((str(c) for c in candidates if isinstance(c, str) and clock.parse(c)), "")


def _event(raw: Any, involved: str) -> Event | None:
    if not isinstance(raw, dict):
        return None
    series = raw.get("series")
    count = series.get("count") if isinstance(series, dict) and series.get("count") else raw.get("count")
    return Event(
        _text(raw.get("type") or "Normal", 20),
        _text(raw.get("reason"), 200),
        _text(raw.get("message") or raw.get("note")),
        _count(count),
        _event_time(raw),
        involved,
    )


def events_for(kube: Kube, kind: str, name: str, namespace: str) -> list[Event]:
    """The Events about one object, as `kubectl describe` selects them (by involvedObject)."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    found = []
    for raw in kube.list(
        Access("list", "events", namespace),
        kube.core.list_namespaced_event,
        namespace,
        field_selector=selector,
        max_items=MAX_EVENTS,
    ):
        item = _event(raw, f"{kind}/{name}")
        if item is not None:
            found.append(item)
    return found


def job_pods(kube: Kube, job: str, namespace: str) -> list[str]:
    """A Job's pods by the label the Job controller sets on each (`job-name`, also on older clusters)."""
    names = []
    for raw in kube.list(
        Access("list", "pods", namespace),
        kube.core.list_namespaced_pod,
        namespace,
        label_selector=f"job-name={job}",
        max_items=MAX_PODS,
    ):
        name = (raw.get("metadata") or {}).get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            names.append(name)
    return names


def _sort_key(event: Event) -> float:
    parsed = clock.parse(event.last_seen)
    return parsed.timestamp() if parsed else float("-inf")


def describe(services: Services, ref: ObjectRef) -> Description:
    """One object, described; a ServiceError (one line) when it cannot be read at all. What only adds
    context (Events, a Job's pods) fails on its own: a warning, and the rest is still shown."""
    if ref.kind == "Secret":
        raise ServiceError("describe never shows a Secret: its values are secret")
    kind = KINDS.get(ref.kind)
    if kind is None:
        raise ServiceError(f"cannot describe kind {_text(ref.kind, 60)} (can: {', '.join(KINDS)})")
    kube = services.kube
    obj = kind.get(kube, ref)
    if not isinstance(obj, dict):
        raise InvalidData(f"{ref.kind} {ref.name} in namespace {ref.namespace} is not an object")
    warnings: list[str] = []
    text = yaml.safe_dump(clean(obj), sort_keys=False, allow_unicode=True, width=1000)
    if len(text) > MAX_YAML:
        text = text[:MAX_YAML] + "\n…\n"
        warnings.append(f"the YAML is longer than {MAX_YAML:,} characters: cut")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    created = meta.get("creationTimestamp")
    found = Description(ref, text, conditions(obj, warnings), warnings=warnings)
    found.created = created if isinstance(created, str) and clock.parse(created) else ""
    events: list[Event] = []
    try:
        events += events_for(kube, ref.kind, ref.name, ref.namespace)
        if ref.kind == "Job":
            pods = job_pods(kube, ref.name, ref.namespace)
            for pod in pods:
                events += events_for(kube, "Pod", pod, ref.namespace)
            if not pods and not _finished(obj):
                why = sorted({e.reason for e in events if e.type == "Warning" and e.reason})
                warnings.append(
                    "no pod exists for this Job: "
                    + (f"its Events say why ({', '.join(why)})" if why else "no Event says why yet")
                )
    except ClusterError as exc:
        warnings.append(f"events: {exc}")
    events.sort(key=_sort_key, reverse=True)
    found.events = events[:EVENTS_SHOWN]
    return found


def _finished(job: dict[str, Any]) -> bool:
    """A finished Job's pods may be gone (TTL): that is no mystery to explain."""
    status = job.get("status") if isinstance(job.get("status"), dict) else {}
    raw = status.get("conditions")
    return isinstance(raw, list) and any(
        isinstance(c, dict) and c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in raw
    )
