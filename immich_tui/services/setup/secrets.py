"""The offsite Secrets in the cluster: built from the configuration, compared, cleared, then written.

One Secret per identity, each only where its reader runs: `immich-offsite-writer` (the media writer's
keys) in the Immich namespace for the nightly sync; `immich-offsite-cnpg` (the archiver's keys) in the
database namespace, where CNPG's `s3Credentials` reference it; `immich-offsite-restorer` (read-only keys
for the media restore Job, verify and the database catalog) and, when its keys are given,
`immich-offsite-viewer` (the run reports only, for status and the offsite totals: what the read-only RBAC
Role hands out) in the Immich namespace. A Secret is written only when
what it holds differs, nothing is ever deleted, and every write goes through `Kube.write` (read-only mode,
then RBAC) after a preflight has cleared all of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services.kube import Access, ClusterError, Forbidden, Kube, NotFound, ReadOnly
from immich_tui.services.offsite import ARCHIVER_SECRET, RESTORER_SECRET, VIEWER_SECRET, WRITER_SECRET
from immich_tui.services.setup.config import ENDPOINT_KEY, OffsiteConfig
from immich_tui.services.setup.errors import SetupError

LABELS = {"app.kubernetes.io/managed-by": "immich-backup", "app.kubernetes.io/part-of": "immich-offsite-backup"}
# The Secret keys setup owns. Other keys someone added by hand are left as they are.
MANAGED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "BUCKET_NAME", "MEDIA_PREFIX")
MERGE_PATCH = "application/merge-patch+json"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def build_secrets(config: OffsiteConfig, namespace: str, db_namespace: str) -> list[dict[str, Any]]:
    """The writer in the Immich namespace, the archiver in the database namespace (without a media
    prefix: CNPG reads only keys and region), the restorer and the viewer in the Immich namespace when
    their keys were given (the viewer with the media prefix, from which the tools find the run reports).
    The writer's keys never go to the database namespace."""
    wanted = [
        (WRITER_SECRET, namespace, config.secret_data(config.writer)),
        (ARCHIVER_SECRET, db_namespace, config.secret_data(config.archiver, media=False)),
    ]
    if config.restorer is not None:
        wanted.append((RESTORER_SECRET, namespace, config.secret_data(config.restorer)))
    if config.viewer is not None:
        wanted.append((VIEWER_SECRET, namespace, config.secret_data(config.viewer)))
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": dict(LABELS)},
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in data.items()},
        }
        for name, ns, data in wanted
    ]


def stale_writer_warning(kube: Kube, namespace: str, db_namespace: str) -> str | None:
    """An earlier setup put the media writer's keys into the database namespace too; setup deletes
    nothing, so it says how to remove that copy once CNPG reads its own Secret."""
    if db_namespace == namespace:
        return None
    try:
        kube.call(
            Access("get", "secrets", db_namespace, name=WRITER_SECRET),
            kube.core.read_namespaced_secret,
            WRITER_SECRET,
            db_namespace,
        )
    except ClusterError:  # absent (the usual case), or not readable: nothing to say
        return None
    return (
        f"Secret {db_namespace}/{WRITER_SECRET} is left from an earlier setup, which put the media writer's keys "
        f"there: once the CNPG Cluster or ObjectStore reads {ARCHIVER_SECRET} (deploy/components), delete it with "
        f"kubectl -n {db_namespace} delete secret {WRITER_SECRET}, and detach cnpg-writer.json from the "
        "writer's IAM user"
    )


def redacted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest safe to print: each value replaced by its length."""
    copy = json.loads(json.dumps(manifest))
    copy["data"] = {k: f"<redacted: {len(base64.b64decode(v))} chars>" for k, v in manifest.get("data", {}).items()}
    return copy


@dataclass(frozen=True)
class SecretChange:
    """What setup did, or in a dry run would do, to one Secret; `keys` names what differs, never a value."""

    name: str
    namespace: str
    action: str  # created | updated | unchanged
    keys: tuple[str, ...] = ()


@dataclass
class SecretPlan:
    """One Secret's planned write: the full manifest to create, or the merge patch of what differs."""

    manifest: dict[str, Any] = field(repr=False)
    change: SecretChange
    patch: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def access(self) -> Access:
        c = self.change
        if c.action == "created":
            return Access("create", "secrets", c.namespace)
        return Access("patch", "secrets", c.namespace, name=c.name)


def _decoded(data: Mapping[str, str] | None) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            out[key] = None  # unreadable: differs from anything setup would write
    return out


class SecretSetup:
    """Plan (reads only), preflight (read-only mode and RBAC for every planned write), apply."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _require_namespace(self, namespace: str) -> None:
        try:
            self.kube.call(Access("get", "namespaces", "", name=namespace), self.kube.core.read_namespace, namespace)
        except NotFound:
            raise SetupError(
                f"namespace {namespace} does not exist (create it, or choose another with -n/--db-namespace)"
            ) from None
        except Forbidden:
            return  # may not read namespaces; a missing one would still stop the first write

    def plan(self, manifests: list[dict[str, Any]]) -> list[SecretPlan]:
        plans: list[SecretPlan] = []
        for namespace in dict.fromkeys(m["metadata"]["namespace"] for m in manifests):
            self._require_namespace(namespace)
        for manifest in manifests:
            name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
            try:
                existing = self.kube.call(
                    Access("get", "secrets", namespace, name=name),
                    self.kube.core.read_namespaced_secret,
                    name,
                    namespace,
                )
            except NotFound:
                plans.append(SecretPlan(manifest, SecretChange(name, namespace, "created", tuple(manifest["data"]))))
                continue
            plans.append(self._compare(manifest, existing))
        return plans

    @staticmethod
    def _compare(manifest: dict[str, Any], existing: dict[str, Any]) -> SecretPlan:
        """Only the keys setup owns are compared; a managed key the `.env` no longer sets (the endpoint)
        is removed so the sync never talks to a store the operator has left."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        kind = existing.get("type") or "Opaque"
        if kind != "Opaque":
            raise SetupError(f"Secret {namespace}/{name} exists with type {kind}; setup only manages Opaque Secrets")
        current = _decoded(existing.get("data"))
        wanted = {k: base64.b64decode(v) for k, v in manifest["data"].items()}
        differing = [
            k
            for k in (*MANAGED_KEYS, ENDPOINT_KEY)
            if (k in wanted or k in current) and wanted.get(k) != current.get(k)
        ]
        meta = existing.get("metadata") or {}
        labels = meta.get("labels") or {}
        relabel = any(labels.get(k) != v for k, v in LABELS.items())
        if not differing and not relabel:
            return SecretPlan(manifest, SecretChange(name, namespace, "unchanged"))
        patch_meta: dict[str, Any] = {"labels": dict(LABELS)}
        if meta.get("resourceVersion"):
            patch_meta["resourceVersion"] = meta["resourceVersion"]  # a concurrent edit fails instead of being lost
        patch = {"metadata": patch_meta, "data": {k: manifest["data"].get(k) for k in differing}}
        keys = tuple(differing) + (("labels",) if relabel else ())
        return SecretPlan(manifest, SecretChange(name, namespace, "updated", keys), patch)

    def preflight(self, plans: list[SecretPlan]) -> None:
        """Every planned write is allowed, or none is made: the Secrets are never left half set up."""
        writes = [p for p in plans if p.change.action != "unchanged"]
        if writes and self.kube.read_only:
            raise ReadOnly(f"read-only mode: refusing to {writes[0].access}")
        for plan in writes:
            ok, reason = self.kube.allowed(plan.access)
            if not ok:
                raise Forbidden(f"RBAC denies {plan.access}" + (f": {reason}" if reason else ""))

    def apply(self, plans: list[SecretPlan]) -> list[SecretChange]:
        """The planned writes in order. Should one fail midway (the cluster went away), the message says
        which were made; running setup again finishes the rest, as every write is idempotent."""
        done: list[str] = []
        for plan in plans:
            c = plan.change
            try:
                if c.action == "created":
                    self.kube.write(plan.access, self.kube.core.create_namespaced_secret, c.namespace, plan.manifest)
                elif c.action == "updated":
                    self.kube.write(
                        plan.access,
                        self.kube.core.patch_namespaced_secret,
                        c.name,
                        c.namespace,
                        plan.patch,
                        _content_type=MERGE_PATCH,  # the client would label a dict body as a JSON Patch
                    )
                else:
                    continue
            except ClusterError as exc:
                if not done:
                    raise
                raise type(exc)(f"{exc} (already {'; '.join(done)}: run setup again to finish)") from None
            done.append(f"{c.action} {c.namespace}/{c.name}")
        return [p.change for p in plans]
