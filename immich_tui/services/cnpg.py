"""The CloudNativePG side: the Immich database Cluster, its Backups, ScheduledBackups and ObjectStore.

A cluster archives either through the in-tree `spec.backup.barmanObjectStore` (deprecated since
CNPG 1.26) or through the Barman Cloud Plugin (`spec.plugins[]` naming an `ObjectStore`). Both are
detected; the recovery window comes from the Cluster status or from the ObjectStore's
`serverRecoveryWindow[<serverName>]` respectively.

Every object is read through `schema.View`: a Cluster whose `spec.instances` is `three` is an
`InvalidObject` naming the Cluster and the field, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services import clock
from immich_tui.services.kube import Access, Forbidden, Kube, NotFound
from immich_tui.services.schema import InvalidObject, View

GROUP, VERSION = "postgresql.cnpg.io", "v1"
PLUGIN_GROUP = "barmancloud.cnpg.io"
PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"
BACKUPS_SHOWN = 50
RECOVERIES_SCANNED = 200  # Clusters listed in the namespace to find recoveries; a namespace holds a few
RESTORED_FROM = "immich-backup/restored-from"
RECOVERY_TARGET = "immich-backup/recovery-target"


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
class DbRecovery:
    """A Cluster that recovers (or recovered) from this cluster's archive: a restore to watch."""

    name: str
    namespace: str
    phase: str
    instances: int
    ready_instances: int
    target: str  # what it recovers to, as the wizard recorded it; "" when made elsewhere
    created: dt.datetime | None


@dataclass
class DbState:
    cluster: DbCluster
    backups: list[DbBackup]
    total_backups: int
    schedules: list[DbSchedule]
    object_store: DbObjectStore | None
    last_backup: dt.datetime | None  # newest completed base backup, from whichever source knows
    recoveries: list[DbRecovery] = field(default_factory=list)
    recoveries_problem: str = ""  # why recoveries could not be listed, when they could not


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


def _condition(status: View, kind: str) -> Condition:
    for cond in status.maps("conditions"):
        if cond.text("type") == kind:
            return Condition(
                kind,
                cond.text("status", "Unknown"),
                cond.text("reason"),
                cond.text("message"),
                cond.time("lastTransitionTime"),
            )
    return Condition(kind, "missing")


def _plugin(spec: View) -> View | None:
    for plugin in spec.maps("plugins"):
        if plugin.text("name") == PLUGIN_NAME and plugin.flag("enabled", True):
            return plugin
    return None


def archive_method(spec: dict[str, Any] | View) -> str:
    spec = spec if isinstance(spec, View) else View("a Cluster spec", spec)
    if _plugin(spec) is not None:
        return "plugin"
    backup = spec.map("backup")
    if backup.map("barmanObjectStore").data:
        return "barmanObjectStore"
    if backup.map("volumeSnapshot").data:
        return "volumeSnapshot"
    return "none"


def _cluster(obj: object) -> DbCluster:
    cluster = View.of("CNPG Cluster", obj)
    meta, spec, status = cluster.map("metadata"), cluster.map("spec"), cluster.map("status")
    method = archive_method(spec)
    store, server = "", meta.text("name")
    plugin = _plugin(spec)
    if plugin is not None:
        params = plugin.map("parameters")
        store = params.text("barmanObjectName")
        server = params.text("serverName") or server
    elif method == "barmanObjectStore":
        barman = spec.map("backup").map("barmanObjectStore")
        store = barman.text("destinationPath")
        server = barman.text("serverName") or server
    # what a recovery copies from the source (see recovery.recovery_manifest) is checked here, up front
    for key in ("postgresql", "storage", "walStorage", "resources", "affinity", "imageCatalogRef"):
        spec.map(key)
    initdb = spec.map("bootstrap").map("initdb")
    for key in ("database", "owner"):
        initdb.text(key)
    initdb.map("secret")
    return DbCluster(
        name=meta.text("name"),
        namespace=meta.text("namespace"),
        phase=status.text("phase", "unknown"),
        instances=spec.count("instances"),
        ready_instances=status.count("readyInstances"),
        image=status.text("image") or spec.text("imageName"),
        method=method,
        object_store=store,
        server_name=server,
        continuous_archiving=_condition(status, "ContinuousArchiving"),
        last_backup_succeeded=_condition(status, "LastBackupSucceeded"),
        window=RecoveryWindow(
            status.time("firstRecoverabilityPoint"),
            status.time("lastSuccessfulBackup"),
            status.time("lastFailedBackup"),
        ),
        raw=dict(cluster.data),
    )


def _cluster_of(obj: View) -> str:
    """The cluster a Backup or ScheduledBackup belongs to (`spec.cluster.name`)."""
    return obj.map("spec").map("cluster").text("name")


def _backup(obj: object) -> DbBackup:
    backup = obj if isinstance(obj, View) else View.of("CNPG Backup", obj)
    meta, spec, status = backup.map("metadata"), backup.map("spec"), backup.map("status")
    online = status.raw("online")
    return DbBackup(
        name=meta.text("name"),
        phase=status.text("phase") or "new",
        method=spec.text("method") or status.text("method") or "barmanObjectStore",
        started=status.time("startedAt"),
        stopped=status.time("stoppedAt"),
        backup_id=status.text("backupId"),
        error=status.text("error"),
        online=status.flag("online") if online is not None else None,
        created=meta.time("creationTimestamp"),
    )


def _schedule(obj: object) -> DbSchedule:
    schedule = obj if isinstance(obj, View) else View.of("CNPG ScheduledBackup", obj)
    meta, spec, status = schedule.map("metadata"), schedule.map("spec"), schedule.map("status")
    return DbSchedule(
        name=meta.text("name"),
        schedule=spec.text("schedule"),
        suspended=spec.flag("suspend"),
        immediate=spec.flag("immediate"),
        method=spec.text("method") or "barmanObjectStore",
        last_schedule=status.time("lastScheduleTime"),
        next_schedule=status.time("nextScheduleTime"),
        warning=schedule_warning(spec.text("schedule")),
    )


def _recovers_from(obj: View, source: DbCluster) -> bool:
    """Whether a Cluster bootstraps from `source`'s archive: the wizard's annotation names it, or (a
    recovery written by hand) its recovery source is an external cluster with the same server name."""
    meta, spec = obj.map("metadata"), obj.map("spec")
    if meta.text("name") == source.name:
        return False
    if meta.map("annotations").text(RESTORED_FROM) == f"{source.namespace}/{source.name}":
        return True
    origin = spec.map("bootstrap").map("recovery").text("source")
    if not origin:
        return False
    for external in spec.maps("externalClusters"):
        if external.text("name") != origin:
            continue
        barman = external.map("barmanObjectStore")
        server = external.map("plugin").map("parameters").text("serverName") or barman.text("serverName")
        store = external.map("plugin").map("parameters").text("barmanObjectName") or barman.text("destinationPath")
        return server == source.server_name and (not store or store == source.object_store)
    return False


def _recovery(obj: View) -> DbRecovery:
    meta, spec, status = obj.map("metadata"), obj.map("spec"), obj.map("status")
    return DbRecovery(
        name=meta.text("name"),
        namespace=meta.text("namespace"),
        phase=status.text("phase") or "pending",
        instances=spec.count("instances"),
        ready_instances=status.count("readyInstances"),
        target=meta.map("annotations").text(RECOVERY_TARGET),
        created=meta.time("creationTimestamp"),
    )


def _object_store(obj: object) -> DbObjectStore:
    store = View.of("ObjectStore", obj)
    config = store.map("spec").map("configuration")
    recovery = store.map("status").map("serverRecoveryWindow")
    windows = {}
    for server in recovery.data:
        window = recovery.map(str(server))
        windows[str(server)] = RecoveryWindow(
            window.time("firstRecoverabilityPoint"),
            window.time("lastSuccessfulBackupTime"),
            window.time("lastFailedBackupTime"),
        )
    return DbObjectStore(
        store.map("metadata").text("name"),
        config.text("destinationPath"),
        config.text("endpointURL"),
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
            for item in (
                View.of("CNPG Backup", raw, namespace=self.namespace)
                for raw in self.kube.list(
                    self._custom("list", "backups"),
                    self.kube.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    "backups",
                )
            )
            if _cluster_of(item) == self.name
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
        views = (View.of("CNPG ScheduledBackup", i, namespace=self.namespace) for i in items)
        return [_schedule(i) for i in views if _cluster_of(i) == self.name]

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

    def recoveries(self, source: DbCluster) -> list[DbRecovery]:
        """Clusters in the namespace that recover from `source`'s archive, newest first: after Apply in
        the recovery wizard, this is where the new cluster's progress is watched."""
        items = self.kube.list(
            self._custom("list", "clusters"),
            self.kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "clusters",
            max_items=RECOVERIES_SCANNED,
        )
        found = []
        for raw in items:
            try:  # someone else's malformed Cluster in the namespace is not this cluster's problem
                view = View.of("CNPG Cluster", raw, namespace=self.namespace)
                if _recovers_from(view, source):
                    found.append(_recovery(view))
            except InvalidObject:
                continue
        return sorted(found, key=lambda r: (clock.iso(r.created) or "", r.name), reverse=True)

    def state(self, *, recoveries: bool = False) -> DbState:
        """The cluster, its Backups, schedules and window; with `recoveries`, also the Clusters recovering
        from its archive (one more list, which only the Database tab shows: `status` does not pay for it)."""
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
        state = DbState(cluster, backups, total, self.schedules(), store, max(candidates) if candidates else None)
        if not recoveries:
            return state
        try:
            state.recoveries = self.recoveries(cluster)
        except Forbidden as exc:  # a viewer may read its cluster by name without listing every Cluster
            state.recoveries_problem = str(exc)
        return state

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
