"""Database point-in-time recovery, planned: a *new* CNPG Cluster that bootstraps from the object store.

The source cluster is never touched. The new one copies what Immich needs from it (image — a
VectorChord/pgvector build —, `postgresql.parameters` and `shared_preload_libraries`, storage size and
class, resources), recovers from the source's archive (in-tree `barmanObjectStore` or the Barman Cloud
Plugin's `ObjectStore`, whichever the source uses) and archives under a serverName of its own, so it
cannot fail with "Expected empty archive" or write into the source's history.

The default target is the start of the latest successful media sync: a database from later than
that would reference photos the offsite copy may not have.

With `as_of` the database and the media come back as of one point in time (after tampering or
ransomware, a time before it): the media as of that time, the database to the start of the newest media
sync finished by then, where the two meet (`pointintime.align`); a time where they cannot meet is refused
with the reason. With an explicit target time or Backup, the plan says what the media as of that time
would lack.

This is the database's recovery (`kubectl immich-backup db restore`, the TUI's recovery wizard). The
media are restored by the engine, `sync_engine/restore.py` (`immich-sync restore`, run in the cluster
by `MediaBackup.start_restore`); the TUI's dialogs for both are in `widgets/restore_dialogs.py`.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services import clock
from immich_tui.services.cnpg import GROUP, PLUGIN_NAME, VERSION, DbBackup, DbCluster
from immich_tui.services.errors import ServiceError
from immich_tui.services.pointintime import PointInTime, SyncPoint, align

MANAGED_BY = {"app.kubernetes.io/managed-by": "immich-backup"}
ORIGIN = "origin"  # the externalClusters entry that points at the source's archive


class RecoveryError(ServiceError):
    """A database recovery that must not be planned as asked; the message says why and what to do."""


@dataclass
class RecoveryTarget:
    """The point the new cluster replays to: a time, or the end of one completed Backup."""

    kind: str  # time | backup
    time: dt.datetime | None = None
    backup: DbBackup | None = None

    def describe(self) -> str:
        if self.kind == "backup" and self.backup is not None:
            when = clock.iso(self.backup.stopped) or "?"
            return f"the end of Backup {self.backup.name} (backupID {self.backup.backup_id}, {when})"
        return rfc3339(self.time)


@dataclass
class RecoveryPlan:
    """A checked database recovery: the new Cluster's manifest, what it recovers to, and what to be wary of."""

    source: str
    namespace: str
    name: str
    server_name: str
    target: RecoveryTarget
    window_start: dt.datetime | None
    media_sync: dt.datetime | None
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    media: PointInTime | None = None  # the media as of the target's time, when the syncs were listed
    as_of: dt.datetime | None = None  # one point in time for both: restore the media `--as-of` this


def rfc3339(value: dt.datetime | None) -> str:
    """Always with an explicit zone: CNPG reads a zoneless time as UTC, a person may not."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value else ""


# No backup of this project's can be older: a time before it is a typo, and years near 1 or 9999 cannot
# even be moved between zones or have a day added without leaving the calendar a datetime can hold.
EARLIEST_TARGET = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST_TARGET = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def parse_target_time(text: str, flag: str = "--target-time") -> dt.datetime:
    value = clock.parse(text)
    has_zone = text.strip().upper().endswith("Z") or "+" in text[10:] or "-" in text[10:]
    shown = repr(text if len(text) <= 60 else text[:60] + "…")
    if value is None or not has_zone:
        raise RecoveryError(
            f"{flag} {shown} must be RFC 3339 with an explicit zone, e.g. 2026-11-27T02:30:00Z or "
            "2026-11-27T03:30:00+01:00"
        )
    if not EARLIEST_TARGET <= value < LATEST_TARGET:
        earliest = EARLIEST_TARGET.strftime("%Y-%m-%d")
        raise RecoveryError(f"{flag} {shown} is not a time any backup can have: it must lie between {earliest} and now")
    return value


# CNPG's admission webhook refuses a Cluster whose name is not a DNS-1035 label (it names Services, which
# take no dots) or is longer than 50 characters (it derives Pod, Job and PVC names from it).
MAX_CLUSTER_NAME = 50
_CLUSTER_NAME = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")


def check_cluster_name(name: str) -> None:
    """Refuse what CNPG would refuse, before the name reaches the API server or names a file: a name such
    as `../escaped` would otherwise write the wizard's YAML outside the directory. The name is quoted (it
    is the operator's own, never a secret), escaped and shortened so the message stays one line."""
    shown = repr(name if len(name) <= 60 else name[:60] + "…")
    if len(name) > MAX_CLUSTER_NAME:
        raise RecoveryError(
            f"{shown} is not a valid name for the new cluster: CNPG allows at most {MAX_CLUSTER_NAME} characters "
            f"(it has {len(name)})"
        )
    if not _CLUSTER_NAME.fullmatch(name):
        raise RecoveryError(
            f"{shown} is not a valid name for the new cluster: CNPG needs a lowercase letter first, then lowercase "
            "letters, digits and '-', ending with a letter or digit (a DNS label, e.g. immich-db-restore)"
        )


def default_name(source: str, now: dt.datetime) -> str:
    """`<source>-restore-<minute>`, the source cut so the whole stays within CNPG's limit."""
    suffix = f"-restore-{now:%Y%m%d%H%M}"
    return source[: MAX_CLUSTER_NAME - len(suffix)].rstrip("-") + suffix


def _copy(spec: dict[str, Any], key: str) -> Any:
    return copy.deepcopy(spec[key]) if spec.get(key) not in (None, {}, []) else None


def recovery_manifest(
    cluster: DbCluster, name: str, target: RecoveryTarget, namespace: str | None = None
) -> dict[str, Any]:
    """The new Cluster, ready to apply. Only fields the CNPG CRD defines; validated in the tests."""
    src = cluster.raw.get("spec", {})
    spec: dict[str, Any] = {"instances": cluster.instances or 1}
    if src.get("imageCatalogRef"):
        spec["imageCatalogRef"] = copy.deepcopy(src["imageCatalogRef"])
    elif cluster.image:
        spec["imageName"] = cluster.image
    for key in ("postgresql", "storage", "walStorage", "resources", "affinity", "enableSuperuserAccess"):
        value = _copy(src, key)
        if value is not None:
            spec[key] = value
    recovery: dict[str, Any] = {"source": ORIGIN}
    initdb = (src.get("bootstrap") or {}).get("initdb") or {}
    for key in ("database", "owner", "secret"):
        if initdb.get(key):
            recovery[key] = copy.deepcopy(initdb[key])
    if target.kind == "backup" and target.backup is not None:
        recovery["recoveryTarget"] = {"backupID": target.backup.backup_id, "targetImmediate": True}
    elif target.time is not None:
        recovery["recoveryTarget"] = {"targetTime": rfc3339(target.time)}
    spec["bootstrap"] = {"recovery": recovery}
    server = name
    if cluster.method == "plugin":
        params = {"barmanObjectName": cluster.object_store, "serverName": cluster.server_name}
        spec["externalClusters"] = [{"name": ORIGIN, "plugin": {"name": PLUGIN_NAME, "parameters": params}}]
        own = {"barmanObjectName": cluster.object_store, "serverName": server}
        spec["plugins"] = [{"name": PLUGIN_NAME, "isWALArchiver": True, "parameters": own}]
    elif cluster.method == "barmanObjectStore":
        store = copy.deepcopy(src["backup"]["barmanObjectStore"])
        origin = dict(store, serverName=cluster.server_name)
        spec["externalClusters"] = [{"name": ORIGIN, "barmanObjectStore": origin}]
        backup = copy.deepcopy(src["backup"])
        backup["barmanObjectStore"] = dict(store, serverName=server)
        spec["backup"] = backup
    else:
        raise RecoveryError(f"Cluster {cluster.name} has no object store to recover from (method {cluster.method})")
    annotations = {
        "immich-backup/restored-from": f"{cluster.namespace}/{cluster.name}",
        "immich-backup/recovery-target": target.describe(),
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": namespace or cluster.namespace,
            "labels": dict(MANAGED_BY),
            "annotations": annotations,
        },
        "spec": spec,
    }


def plan_recovery(
    cluster: DbCluster,
    backups: list[DbBackup],
    *,
    backup_name: str | None = None,
    target_time: dt.datetime | None = None,
    name: str | None = None,
    media_sync: dt.datetime | None = None,
    now: dt.datetime | None = None,
    as_of: dt.datetime | None = None,
    syncs: list[SyncPoint] | None = None,
    syncs_since: dt.datetime | None = None,
) -> RecoveryPlan:
    """Check the target against the recovery window and the media copy, then build the manifest.

    `syncs` (the successful media syncs listed since `syncs_since`) let the plan say what the media as of
    the target hold; `as_of` picks the target itself: where the database meets the media as of then."""
    now = now or clock.now()
    if name is not None:
        check_cluster_name(name)
    if sum(bool(x) for x in (backup_name, target_time, as_of)) > 1:
        raise RecoveryError("choose one of --backup, --target-time and --as-of")
    warnings: list[str] = []
    first = cluster.window.first_point
    media: PointInTime | None = None
    if as_of is not None:
        if syncs is None:
            raise RecoveryError("--as-of needs the media sync history, which could not be read")
        media = align(as_of, syncs, db_first=first, now=now, listed_since=syncs_since)
        if media.db_target is None:
            raise RecoveryError(
                f"no point as of {rfc3339(as_of)} has both the database and the media: {media.problems[0]}"
            )
        target = RecoveryTarget("time", media.db_target)
        warnings.append(
            f"the database recovers to {rfc3339(media.db_target)}, the start of the newest media sync finished by "
            f"{rfc3339(as_of)}, so the media as of {rfc3339(as_of)} hold every photo it references; database "
            f"changes after {rfc3339(media.db_target)} are not recovered"
        )
    elif backup_name:
        backup = next((b for b in backups if b.name == backup_name), None)
        if backup is None:
            raise RecoveryError(f"Backup {backup_name} of cluster {cluster.name} not found (see `db backups`)")
        if backup.phase != "completed" or not backup.backup_id:
            raise RecoveryError(f"Backup {backup_name} is {backup.phase}: only a completed backup can be restored")
        target = RecoveryTarget("backup", backup.stopped, backup)
    else:
        when = target_time or media_sync
        if when is None:
            raise RecoveryError(
                "no target: there is no successful media sync on record to default to; "
                "pass --target-time (RFC 3339 with a zone) or --backup NAME"
            )
        if target_time is None:
            warnings.append(f"target defaults to the start of the latest media sync, {rfc3339(when)}")
        target = RecoveryTarget("time", when)
    when = target.time
    if when is not None:
        if first is None:
            raise RecoveryError(f"Cluster {cluster.name} has no recoverability point yet (no completed base backup)")
        if when < first:
            raise RecoveryError(
                f"target {rfc3339(when)} is before the recovery window, which starts at {rfc3339(first)}"
            )
        if when > now:
            raise RecoveryError(f"target {rfc3339(when)} is in the future (now is {rfc3339(now)})")
        if syncs is not None and (target_time or backup_name):
            media = align(when, syncs, db_first=first, now=now, listed_since=syncs_since)
            gap = media.gap(when) if media.sync is not None else media.problems[0]
            if gap:
                warnings.append(f"restored as of the same time, {gap}")
        if media_sync is not None and when > media_sync:
            warnings.append(
                f"target {rfc3339(when)} is after the start of the latest media sync ({rfc3339(media_sync)}): "
                "the database may reference photos that the offsite media copy does not have"
            )
    elif media_sync is None:
        warnings.append("no successful media sync on record: check the media copy before relying on this database")
    name = name or default_name(cluster.name, now)
    check_cluster_name(name)  # the default too: the source's name is read from the API
    if name == cluster.name:
        raise RecoveryError("the restored cluster needs a new name: recovery never overwrites the existing cluster")
    manifest = recovery_manifest(cluster, name, target)
    return RecoveryPlan(
        cluster.name, cluster.namespace, name, name, target, first, media_sync, manifest, warnings, media, as_of
    )
