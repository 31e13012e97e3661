"""The CloudNativePG side: the Immich database Cluster, its Backups, ScheduledBackups and ObjectStore.

A cluster archives either through the in-tree `spec.backup.barmanObjectStore` (deprecated since
CNPG 1.26) or through the Barman Cloud Plugin (`spec.plugins[]` naming an `ObjectStore`). Both are
detected; the recovery window comes from the Cluster status or from the ObjectStore's
`serverRecoveryWindow[<serverName>]` respectively.
"""

from __future__ import annotations

import datetime as dt
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services import clock
from immich_tui.services.kube import Access, Kube, NotFound

GROUP, VERSION = "postgresql.cnpg.io", "v1"
PLUGIN_GROUP = "barmancloud.cnpg.io"
PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"
BACKUPS_SHOWN = 50


class CnpgMissing(NotFound):
    """CNPG (or its Barman Cloud plugin) is not installed in the cluster."""


@dataclass
class Condition:
    type: str
    status: str  # True | False | Unknown | missing
    reason: str = ""
    message: str = ""
    since: dt.datetime | None = None


@dataclass
class RecoveryWindow:
    first_point: dt.datetime | None
    last_success: dt.datetime | None
    last_failure: dt.datetime | None


@dataclass
class DbCluster:
    name: str
    namespace: str
    phase: str
    instances: int
    ready_instances: int
    image: str
    method: str  # plugin | barmanObjectStore | volumeSnapshot | none
    object_store: str  # ObjectStore name (plugin) or destinationPath (in-tree)
    server_name: str
    continuous_archiving: Condition
    last_backup_succeeded: Condition
    window: RecoveryWindow
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class DbBackup:
    name: str
    phase: str
    method: str
    started: dt.datetime | None
    stopped: dt.datetime | None
    backup_id: str
    error: str
    online: bool | None
    created: dt.datetime | None = None


@dataclass
class DbSchedule:
    name: str
    schedule: str
    suspended: bool
    immediate: bool
    method: str
    last_schedule: dt.datetime | None
    next_schedule: dt.datetime | None
    warning: str = ""


@dataclass
class DbObjectStore:
    name: str
    destination_path: str
    endpoint_url: str
    windows: dict[str, RecoveryWindow]


@dataclass
class DbState:
    cluster: DbCluster
    backups: list[DbBackup]
    total_backups: int
    schedules: list[DbSchedule]
    object_store: DbObjectStore | None
    last_backup: dt.datetime | None  # newest completed base backup, from whichever source knows


def schedule_warning(schedule: str) -> str:
    """CNPG schedules have six fields, seconds first; five fields shift every field by one."""
    fields = schedule.split()
    if schedule.startswith("@") or len(fields) == 6:
        return ""
    if len(fields) == 5:
        return (
            f"5-field schedule {schedule!r}: CNPG reads seconds first, so this is not the time you meant; "
            f"use '0 {schedule}'"
        )
    return f"schedule {schedule!r} has {len(fields)} fields; CNPG expects 6 (seconds first)"


def _condition(status: dict[str, Any], kind: str) -> Condition:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return Condition(
                kind,
                str(cond.get("status", "Unknown")),
                cond.get("reason", ""),
                cond.get("message", ""),
                clock.parse(cond.get("lastTransitionTime")),
            )
    return Condition(kind, "missing")


def _plugin(spec: dict[str, Any]) -> dict[str, Any] | None:
    for plugin in spec.get("plugins") or []:
        if plugin.get("name") == PLUGIN_NAME and plugin.get("enabled", True):
            return plugin
    return None


def archive_method(spec: dict[str, Any]) -> str:
    if _plugin(spec):
        return "plugin"
    backup = spec.get("backup") or {}
    if backup.get("barmanObjectStore"):
        return "barmanObjectStore"
    if backup.get("volumeSnapshot"):
        return "volumeSnapshot"
    return "none"


def _cluster(obj: dict[str, Any]) -> DbCluster:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    method = archive_method(spec)
    store, server = "", meta.get("name", "")
    if method == "plugin":
        params = (_plugin(spec) or {}).get("parameters") or {}
        store = params.get("barmanObjectName", "")
        server = params.get("serverName") or server
    elif method == "barmanObjectStore":
        barman = spec["backup"]["barmanObjectStore"]
        store = barman.get("destinationPath", "")
        server = barman.get("serverName") or server
    return DbCluster(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        phase=status.get("phase", "unknown"),
        instances=int(spec.get("instances") or 0),
        ready_instances=int(status.get("readyInstances") or 0),
        image=status.get("image") or spec.get("imageName") or "",
        method=method,
        object_store=store,
        server_name=server,
        continuous_archiving=_condition(status, "ContinuousArchiving"),
        last_backup_succeeded=_condition(status, "LastBackupSucceeded"),
        window=RecoveryWindow(
            clock.parse(status.get("firstRecoverabilityPoint")),
            clock.parse(status.get("lastSuccessfulBackup")),
            clock.parse(status.get("lastFailedBackup")),
        ),
        raw=obj,
    )


def _backup(obj: dict[str, Any]) -> DbBackup:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    return DbBackup(
        name=meta.get("name", ""),
        phase=status.get("phase") or "new",
        method=spec.get("method") or status.get("method") or "barmanObjectStore",
        started=clock.parse(status.get("startedAt")),
        stopped=clock.parse(status.get("stoppedAt")),
        backup_id=status.get("backupId", ""),
        error=status.get("error", ""),
        online=status.get("online"),
        created=clock.parse(meta.get("creationTimestamp")),
    )


def _schedule(obj: dict[str, Any]) -> DbSchedule:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    return DbSchedule(
        name=meta.get("name", ""),
        schedule=spec.get("schedule", ""),
        suspended=bool(spec.get("suspend")),
        immediate=bool(spec.get("immediate")),
        method=spec.get("method") or "barmanObjectStore",
        last_schedule=clock.parse(status.get("lastScheduleTime")),
        next_schedule=clock.parse(status.get("nextScheduleTime")),
        warning=schedule_warning(spec.get("schedule", "")),
    )


def _object_store(obj: dict[str, Any]) -> DbObjectStore:
    config = obj.get("spec", {}).get("configuration") or {}
    windows = {
        server: RecoveryWindow(
            clock.parse(w.get("firstRecoverabilityPoint")),
            clock.parse(w.get("lastSuccessfulBackupTime")),
            clock.parse(w.get("lastFailedBackupTime")),
        )
        for server, w in ((obj.get("status") or {}).get("serverRecoveryWindow") or {}).items()
    }
    return DbObjectStore(
        obj.get("metadata", {}).get("name", ""),
        config.get("destinationPath", ""),
        config.get("endpointURL", ""),
        windows,
    )


class Database:
    """Reads and acts on the Immich CNPG cluster."""

    def __init__(self, kube: Kube, namespace: str = "postgresql", cluster: str = "immich-db") -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = cluster

    def _custom(self, verb: str, plural: str, group: str = GROUP, name: str = "") -> Access:
        return Access(verb, plural, self.namespace, group, name=name)

    def cluster(self) -> DbCluster:
        try:
            raw = self.kube.call(
                self._custom("get", "clusters", name=self.name),
                self.kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                "clusters",
                self.name,
            )
        except NotFound:
            if not self.kube.group_served(GROUP, VERSION):
                raise CnpgMissing("CloudNativePG is not installed (no postgresql.cnpg.io API)") from None
            raise NotFound(f"CNPG Cluster {self.namespace}/{self.name} not found (wrong --db-cluster?)") from None
        return _cluster(raw)

    def backups(self, limit: int = BACKUPS_SHOWN) -> tuple[list[DbBackup], int]:
        """This cluster's Backups, newest first. Hand-made Backups carry no cluster label, so the namespace's
        Backups are listed (paginated) and matched on `spec.cluster.name`."""
        items = [
            item
            for item in self.kube.list(
                self._custom("list", "backups"),
                self.kube.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                "backups",
            )
            if item.get("spec", {}).get("cluster", {}).get("name") == self.name
        ]
        backups = sorted((_backup(i) for i in items), key=_backup_order, reverse=True)
        return backups[:limit], len(backups)

    def schedules(self) -> list[DbSchedule]:
        items = self.kube.list(
            self._custom("list", "scheduledbackups"),
            self.kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "scheduledbackups",
        )
        return [_schedule(i) for i in items if i.get("spec", {}).get("cluster", {}).get("name") == self.name]

    def object_store(self, name: str) -> DbObjectStore:
        try:
            raw = self.kube.call(
                self._custom("get", "objectstores", PLUGIN_GROUP, name),
                self.kube.custom.get_namespaced_custom_object,
                PLUGIN_GROUP,
                VERSION,
                self.namespace,
                "objectstores",
                name,
            )
        except NotFound:
            if not self.kube.group_served(PLUGIN_GROUP, VERSION):
                raise CnpgMissing("the Barman Cloud Plugin is not installed (no barmancloud.cnpg.io API)") from None
            raise NotFound(f"ObjectStore {self.namespace}/{name} named by the cluster does not exist") from None
        return _object_store(raw)

    def state(self) -> DbState:
        cluster = self.cluster()
        backups, total = self.backups()
        store = None
        if cluster.method == "plugin" and cluster.object_store:
            store = self.object_store(cluster.object_store)
            window = store.windows.get(cluster.server_name)
            if window:
                cluster.window = window
        completed = [b.stopped for b in backups if b.phase == "completed" and b.stopped]
        candidates = [t for t in (cluster.window.last_success, *completed[:1]) if t]
        return DbState(cluster, backups, total, self.schedules(), store, max(candidates) if candidates else None)

    # Actions -------------------------------------------------------------------------------------
    def backup_manifest(self, cluster: DbCluster, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"cluster": {"name": cluster.name}}
        if cluster.method == "plugin":
            spec["method"] = "plugin"
            spec["pluginConfiguration"] = {"name": PLUGIN_NAME}
        elif cluster.method in ("barmanObjectStore", "volumeSnapshot"):
            spec["method"] = cluster.method
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"cnpg.io/cluster": cluster.name, "app.kubernetes.io/managed-by": "immich-backup"},
            },
            "spec": spec,
        }

    def backup_now(self) -> DbBackup:
        cluster = self.cluster()
        if cluster.method == "none":
            raise NotFound(f"Cluster {self.namespace}/{self.name} has no backup configuration (no object store)")
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))  # two in one second
        name = f"{cluster.name[:36]}-ondemand-{clock.now():%Y%m%d%H%M%S}-{suffix}"
        body = self.backup_manifest(cluster, name)
        created = self.kube.write(
            self._custom("create", "backups"),
            self.kube.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "backups",
            body,
        )
        return _backup(created)

    def create_cluster(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a new Cluster (a recovery); existing clusters are never patched or replaced."""
        namespace = manifest["metadata"].get("namespace") or self.namespace
        access = Access("create", "clusters", namespace, GROUP)
        return self.kube.write(
            access, self.kube.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "clusters", manifest
        )

    def wait_backup(self, name: str, timeout: float = 6 * 3600.0, poll: float = 2.0) -> DbBackup:
        deadline = time.monotonic() + timeout
        while True:
            raw = self.kube.call(
                self._custom("get", "backups", name=name),
                self.kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                "backups",
                name,
            )
            backup = _backup(raw)
            if backup.phase in ("completed", "failed", "walArchivingFailing") or time.monotonic() > deadline:
                return backup
            time.sleep(poll)


def _backup_order(b: DbBackup) -> tuple[str, str]:
    when = b.started or b.created
    return (clock.iso(when) or "", b.name)
