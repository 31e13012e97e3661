"""The sandbox's seed data: the objects of a simulated Immich cluster and the bucket's report history.

The namespace, the sync CronJob with its Job history, the Immich server pod over the sample library, a
CNPG cluster with Backups and a ScheduledBackup, and a fortnight of nightly run reports shaped like the
Jobs, and the Barman Cloud archive those Backups wrote. Pure data: the controllers that make the world
move live in `controllers.py`.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immich_tui.demo.emulator import (
    CNPG_RESOURCES,
    CORE_RESOURCES,
    PLUGIN_RESOURCES,
    EmulatorServer,
    ExecMount,
    PodLog,
)
from immich_tui.services import clock
from sync_engine.models import FolderStats
from sync_engine.report import RunReport

NS, DB_NS = "immich", "postgresql"
CRONJOB = "immich-media-offsite-sync"
DB_CLUSTER = "immich-db"
IMAGE = "ghcr.io/immich-offsite-backup/immich-sync:0.1.0"
DB_IMAGE = "ghcr.io/tensorchord/cloudnative-vectorchord:16.9-0.4.3"
JOB_LABELS = {"app.kubernetes.io/name": CRONJOB, "app.kubernetes.io/part-of": "immich-offsite-backup"}
SERVER_POD = "immich-server-6d8f9c7b5-q2x7k"
BUCKET = "immich-offsite"
MEDIA_PREFIX = "immich/media/"
REPORT_PREFIX = "immich/sync-reports/"
CRONJOB_ROOT = "/library"
# Where CNPG archives the database (the ObjectStore's or the Cluster's barmanObjectStore) and under which name.
DB_DESTINATION = "s3://immich-offsite/immich/postgres"
DB_SERVER = "immich-db-2026"
DB_SYSTEM_ID = "7441253190462722073"
WAL_SEGMENTS_PER_BACKUP = 3  # a backup's first and last segment, and one archived before the next backup


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cronjob(schedule: str = "30 2 * * *", *, suspended: bool = False, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or clock.now()
    last = now.replace(hour=2, minute=30, second=0, microsecond=0)
    if last > now:
        last -= dt.timedelta(days=1)
    container = {
        "name": "sync",
        "image": IMAGE,
        "args": ["backup", "--log-format", "json"],
        "envFrom": [{"secretRef": {"name": "immich-offsite-writer"}}],
        "volumeMounts": [{"name": "library", "mountPath": "/library", "readOnly": True}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": CRONJOB, "namespace": NS, "labels": dict(JOB_LABELS)},
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "suspend": suspended,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": dict(JOB_LABELS)},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": 21600,
                    "template": {
                        "metadata": {"labels": dict(JOB_LABELS)},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [container],
                            "volumes": [
                                {
                                    "name": "library",
                                    "persistentVolumeClaim": {"claimName": "immich-library", "readOnly": True},
                                }
                            ],
                        },
                    },
                },
            },
        },
        "status": {"lastScheduleTime": iso(last), "lastSuccessfulTime": iso(last + dt.timedelta(minutes=4))},
    }


def job(name: str, cj_uid: str, start: dt.datetime, state: str, *, seconds: int = 240) -> dict[str, Any]:
    end = start + dt.timedelta(seconds=seconds)
    status: dict[str, Any] = {"startTime": iso(start)}
    if state == "succeeded":
        status.update(
            completionTime=iso(end),
            succeeded=1,
            conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": iso(end)}],
        )
    elif state == "failed":
        status.update(
            failed=2,
            conditions=[
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": iso(end),
                }
            ],
        )
    else:
        status.update(active=1)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": dict(JOB_LABELS),
            "creationTimestamp": iso(start),
            "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": iso(start)},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": CRONJOB,
                    "uid": cj_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"backoffLimit": 1, "template": {"spec": {"containers": [{"name": "sync", "image": IMAGE}]}}},
        "status": status,
    }


def job_pod(job_name: str, start: dt.datetime, state: str, *, exit_code: int = 0) -> dict[str, Any]:
    phase = {"succeeded": "Succeeded", "failed": "Failed"}.get(state, "Running")
    if state == "running":
        container_state: dict[str, Any] = {"running": {"startedAt": iso(start)}}
    else:
        container_state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": iso(start),
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name}-{zlib.crc32(job_name.encode()) % 10**5:05d}",
            "namespace": NS,
            "creationTimestamp": iso(start),
            "labels": {**JOB_LABELS, "job-name": job_name, "batch.kubernetes.io/job-name": job_name},
        },
        "spec": {"containers": [{"name": "sync", "image": IMAGE}]},
        "status": {
            "phase": phase,
            "startTime": iso(start),
            "containerStatuses": [{"name": "sync", "state": container_state, "ready": state == "running"}],
        },
    }


def server_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": SERVER_POD,
            "namespace": NS,
            "labels": {"app.kubernetes.io/name": "server", "app.kubernetes.io/instance": "immich"},
        },
        "spec": {
            "containers": [
                {
                    "name": "immich-server",
                    "image": "ghcr.io/immich-app/immich-server:v2.3.1",
                    "volumeMounts": [{"name": "library", "mountPath": "/usr/src/app/upload"}],
                }
            ]
        },
        "status": {"phase": "Running"},
    }


def db_cluster(
    mode: str,
    now: dt.datetime,
    *,
    archiving: bool = True,
    last_backup_ok: bool = True,
    last_backup: dt.datetime | None = None,
) -> dict[str, Any]:
    last_backup = last_backup or now - dt.timedelta(hours=4)
    spec: dict[str, Any] = {
        "instances": 2,
        "imageName": DB_IMAGE,
        "postgresql": {"shared_preload_libraries": ["vchord.so"], "parameters": {"max_connections": "200"}},
        "storage": {"size": "10Gi", "storageClass": "longhorn"},
    }
    status: dict[str, Any] = {
        "phase": "Cluster in healthy state",
        "readyInstances": 2,
        "instances": 2,
        "image": DB_IMAGE,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ClusterIsReady", "lastTransitionTime": iso(now)},
            {
                "type": "ContinuousArchiving",
                "status": "True" if archiving else "False",
                "reason": "ContinuousArchivingSuccess" if archiving else "ContinuousArchivingFailing",
                "message": "" if archiving else "unexpected failure invoking barman-cloud-wal-archive: exit status 4",
                "lastTransitionTime": iso(now - dt.timedelta(days=3 if archiving else 0, hours=5)),
            },
            {
                "type": "LastBackupSucceeded",
                "status": "True" if last_backup_ok else "False",
                "reason": "LastBackupSucceeded" if last_backup_ok else "LastBackupFailed",
                "lastTransitionTime": iso(now - dt.timedelta(hours=4)),
            },
        ],
    }
    if mode == "plugin":
        spec["plugins"] = [
            {
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": "immich-db-store", "serverName": DB_SERVER},
            }
        ]
    else:
        spec["backup"] = {
            "retentionPolicy": "30d",
            "barmanObjectStore": {
                "destinationPath": DB_DESTINATION,
                "serverName": DB_SERVER,
                "s3Credentials": {
                    "accessKeyId": {"name": "immich-offsite-cnpg", "key": "AWS_ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": "immich-offsite-cnpg", "key": "AWS_SECRET_ACCESS_KEY"},
                },
                "wal": {"compression": "gzip"},
            },
        }
        status["firstRecoverabilityPoint"] = iso(first_recoverability_point(now))
        status["lastSuccessfulBackup"] = iso(last_backup)
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": DB_CLUSTER, "namespace": DB_NS},
        "spec": spec,
        "status": status,
    }


def object_store(now: dt.datetime, last_backup: dt.datetime | None = None) -> dict[str, Any]:
    last_backup = last_backup or now - dt.timedelta(hours=4)
    return {
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": {"name": "immich-db-store", "namespace": DB_NS},
        "spec": {
            "retentionPolicy": "30d",
            "configuration": {
                "destinationPath": DB_DESTINATION,
                "s3Credentials": {
                    "accessKeyId": {"name": "immich-offsite-cnpg", "key": "AWS_ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": "immich-offsite-cnpg", "key": "AWS_SECRET_ACCESS_KEY"},
                },
                "wal": {"compression": "gzip"},
            },
        },
        "status": {
            "serverRecoveryWindow": {
                DB_SERVER: {
                    "firstRecoverabilityPoint": iso(first_recoverability_point(now)),
                    "lastSuccessfulBackupTime": iso(last_backup),
                }
            }
        },
    }


def first_recoverability_point(now: dt.datetime) -> dt.datetime:
    """The end of the oldest base backup the archive keeps (a 30-day retention policy)."""
    return now - dt.timedelta(days=30, hours=2)


def backup_base(now: dt.datetime) -> dt.datetime:
    """When the newest nightly database backup started: 02:00 UTC, the ScheduledBackup's `0 0 2 * * *`."""
    base = now.replace(hour=2, minute=0, second=0, microsecond=0)
    return base - dt.timedelta(days=1) if base > now else base


@dataclass(frozen=True)
class ArchivedBackup:
    """One base backup as both CNPG's Backup status and barman's backup.info describe it."""

    start: dt.datetime
    segment: int  # the first WAL segment's number on timeline 1 (16 MiB segments)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=3)

    @property
    def backup_id(self) -> str:
        return self.start.strftime("%Y%m%dT%H%M%S")

    @property
    def begin_wal(self) -> str:
        return wal_name(self.segment)

    @property
    def end_wal(self) -> str:
        return wal_name(self.segment + 1)

    def history_file(self) -> bytes:
        """The backup history file PostgreSQL archives beside the WAL when a backup ends."""
        return (
            f"START WAL LOCATION: {self.begin_lsn} (file {self.begin_wal})\n"
            f"STOP WAL LOCATION: {self.end_lsn} (file {self.end_wal})\n"
            f"START TIME: {self.start:%Y-%m-%d %H:%M:%S} UTC\nSTOP TIME: {self.end:%Y-%m-%d %H:%M:%S} UTC\n"
        ).encode()

    @property
    def begin_lsn(self) -> str:
        return f"{self.segment >> 8:X}/{(self.segment & 0xFF) << 24 | 0x28:X}"

    @property
    def end_lsn(self) -> str:
        return f"{(self.segment + 1) >> 8:X}/{((self.segment + 1) & 0xFF) << 24 | 0x100:X}"


def wal_name(segment: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{segment >> 8:08X}{segment & 0xFF:08X}"


def archived_backups(now: dt.datetime) -> list[ArchivedBackup]:
    """Every base backup in the sandbox's archive, oldest first: the nightly ones back to the retention window
    (the cluster keeps Backup objects only for the newest of them) and the oldest, which ends at the recovery
    window's first point."""
    base = backup_base(now)
    oldest = first_recoverability_point(now) - dt.timedelta(minutes=3)
    starts = [oldest, *sorted(start for day in range(30) if (start := base - dt.timedelta(days=day)) > oldest)]
    return [ArchivedBackup(start, 2 + WAL_SEGMENTS_PER_BACKUP * n) for n, start in enumerate(starts)]


def backup_info(backup: ArchivedBackup) -> bytes:
    """backup.info as barman-cloud-backup writes it: sorted `key=value` lines, `None` for what is unset."""
    fields = {
        "backup_id": backup.backup_id,
        "backup_name": "None",
        "begin_offset": "40",
        "begin_time": str(backup.start),
        "begin_wal": backup.begin_wal,
        "begin_xlog": backup.begin_lsn,
        "compression": "None",
        "end_offset": "256",
        "end_time": str(backup.end),
        "end_wal": backup.end_wal,
        "end_xlog": backup.end_lsn,
        "error": "None",
        "mode": "concurrent",
        "pgdata": "/var/lib/postgresql/data/pgdata",
        "server_name": "cloud",
        "size": str(38_000_000 + backup.segment * 40_000),
        "status": "DONE",
        "systemid": DB_SYSTEM_ID,
        "timeline": "1",
        "version": "160009",
        "xlog_segment_size": "16777216",
    }
    return "".join(f"{key}={value}\n" for key, value in sorted(fields.items())).encode()


def barman_archive(now: dt.datetime) -> dict[str, bytes]:
    """The objects CNPG's barman-cloud wrote to the bucket: base backups and the continuous WAL archive (gzip, as
    the store's `wal.compression` says), so `db catalog` reads the same history `db backups` shows. WAL bodies
    are small stand-ins: the catalog only lists them."""
    prefix = f"{DB_DESTINATION.removeprefix('s3://').partition('/')[2]}/{DB_SERVER}"
    backups = archived_backups(now)
    objects: dict[str, bytes] = {}
    for backup in backups:
        objects[f"{prefix}/base/{backup.backup_id}/backup.info"] = backup_info(backup)
        label = f"{backup.begin_wal}.00000028.backup"
        objects[f"{prefix}/wals/{label[:16]}/{label}.gz"] = gzip.compress(backup.history_file(), mtime=0)
    last = backups[-1].segment + WAL_SEGMENTS_PER_BACKUP
    for segment in range(backups[0].segment, last + 1):
        name = wal_name(segment)
        objects[f"{prefix}/wals/{name[:16]}/{name}.gz"] = gzip.compress(name.encode(), mtime=0)
    return objects


def db_backup(name: str, mode: str, start: dt.datetime, phase: str = "completed") -> dict[str, Any]:
    spec: dict[str, Any] = {"cluster": {"name": DB_CLUSTER}}
    if mode == "plugin":
        spec.update(method="plugin", pluginConfiguration={"name": "barman-cloud.cloudnative-pg.io"})
    else:
        spec["method"] = "barmanObjectStore"
    archived = next((b for b in archived_backups(clock.now()) if b.start == start), None)
    status: dict[str, Any] = {
        "phase": phase,
        "startedAt": iso(start),
        "method": spec["method"],
        "serverName": DB_SERVER,
        "destinationPath": DB_DESTINATION,
        "backupId": start.strftime("%Y%m%dT%H%M%S"),
    }
    if archived is not None and phase == "completed":  # the archive's backup.info says the same
        status.update(
            beginWal=archived.begin_wal,
            endWal=archived.end_wal,
            beginLSN=archived.begin_lsn,
            endLSN=archived.end_lsn,
        )
    if phase in ("completed", "failed"):
        status["stoppedAt"] = iso(start + dt.timedelta(minutes=3))
    if phase == "failed":
        status["error"] = "can't execute backup: exit status 4 (no write access to the object store)"
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": DB_NS,
            "creationTimestamp": iso(start),
            "labels": {"cnpg.io/cluster": DB_CLUSTER},
        },
        "spec": spec,
        "status": status,
    }


def scheduled_backup(mode: str, schedule: str = "0 0 2 * * *") -> dict[str, Any]:
    spec: dict[str, Any] = {"schedule": schedule, "cluster": {"name": DB_CLUSTER}, "backupOwnerReference": "self"}
    if mode == "plugin":
        spec.update(method="plugin", pluginConfiguration={"name": "barman-cloud.cloudnative-pg.io"})
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ScheduledBackup",
        "metadata": {"name": "immich-db-daily", "namespace": DB_NS},
        "spec": spec,
        "status": {"lastScheduleTime": iso(clock.now().replace(hour=2, minute=0, second=0))},
    }


@dataclass
class World:
    """Knobs for one seeded cluster; the defaults are a healthy plugin-based installation."""

    cnpg: str | None = "plugin"  # plugin | in-tree | None (CNPG not installed)
    jobs: int = 14
    job_pods: int = 3  # the newest Jobs keep their pods (TTL removes older ones)
    failed_job_days: tuple[int, ...] = (9,)  # days ago with a failed run
    backups: int = 14
    other_pods: int = 0
    schedule_5_field: bool = False
    archiving: bool = True
    suspended: bool = False
    library: Path | None = None
    restorer: dict[str, str] | None = None  # the Secret's keys (reader credentials, bucket, prefix)


def seed(server: EmulatorServer, world: World) -> None:
    em = server.emulator
    em.serve(CORE_RESOURCES)
    if world.cnpg:
        em.serve(CNPG_RESOURCES)
    if world.cnpg == "plugin":
        em.serve(PLUGIN_RESOURCES)
    now = clock.now()
    for ns in (NS, DB_NS):
        server.put("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cj = cronjob(suspended=world.suspended, now=now)
    last = clock.parse(cj["status"]["lastScheduleTime"]) or now
    good_day = next((d for d in range(world.jobs) if d not in world.failed_job_days), None)
    if good_day is None:
        del cj["status"]["lastSuccessfulTime"]
    else:  # the controller records the last Job that succeeded, not the last one that ran
        cj["status"]["lastSuccessfulTime"] = iso(last - dt.timedelta(days=good_day) + dt.timedelta(minutes=4))
    server.put("batch/v1/cronjobs", cj)
    uid = cj["metadata"]["uid"]
    for day in range(world.jobs):
        start = last - dt.timedelta(days=day)
        state = "failed" if day in world.failed_job_days else "succeeded"
        name = f"{CRONJOB}-{int(start.timestamp()) // 60}"
        server.put("batch/v1/jobs", job(name, uid, start, state, seconds=180 + (day * 37) % 120))
        if day < world.job_pods:
            pod = job_pod(name, start, state, exit_code=3 if state == "failed" else 0)
            server.put("v1/pods", pod)
            em.pod_logs[(NS, pod["metadata"]["name"])] = PodLog(lines=_old_log(start, state), finished=True)
    server.put("v1/pods", server_pod())
    if world.library is not None:
        em.exec_mounts[(NS, SERVER_POD)] = ExecMount("/usr/src/app/upload", str(world.library))
    for i in range(world.other_pods):
        server.put(
            "v1/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"worker-{i:05d}",
                    "namespace": NS,
                    "labels": {"app.kubernetes.io/name": "machine-learning"},
                },
                "status": {"phase": "Running"},
            },
        )
    if world.restorer is not None:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in world.restorer.items()}
        server.put(
            "v1/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": "immich-offsite-restorer", "namespace": NS},
                "data": data,
            },
        )
    if world.cnpg:
        mode = world.cnpg
        base = backup_base(now)
        finished = base + dt.timedelta(minutes=3)  # the newest Backup's stoppedAt
        cluster = db_cluster(mode, now, archiving=world.archiving, last_backup=finished)
        server.put("postgresql.cnpg.io/v1/clusters", cluster)
        if mode == "plugin":
            server.put("barmancloud.cnpg.io/v1/objectstores", object_store(now, finished))
        for day in range(world.backups):
            start = base - dt.timedelta(days=day)
            name = f"immich-db-daily-{start:%Y%m%d%H%M%S}"
            server.put("postgresql.cnpg.io/v1/backups", db_backup(name, mode, start))
        sched = "30 2 * * *" if world.schedule_5_field else "0 0 2 * * *"
        server.put("postgresql.cnpg.io/v1/scheduledbackups", scheduled_backup(mode, sched))


def _old_log(start: dt.datetime, state: str) -> list[str]:
    t = iso(start)
    lines = [
        f'{{"time": "{t}", "level": "info", "event": "start", "command": "backup", '
        '"folders": "upload,library,profile"}}',
        f'{{"time": "{t}", "level": "info", "event": "listing", "listing": "incremental", "units_trusted": 41}}',
    ]
    if state == "failed":
        lines.append(
            f'{{"time": "{t}", "level": "error", "event": "aborted", '
            f'"error": "S3 unreachable after 8 consecutive failures"}}'
        )
    else:
        lines.append(f'{{"time": "{t}", "level": "info", "event": "done", "status": "ok", "uploaded": 12}}')
    return lines


def history_reports(nights: int, failed_nights: tuple[int, ...], now: dt.datetime) -> list[RunReport]:
    """Nightly reports shaped like the seeded Jobs: 02:30 UTC, a few MB a night, one failed night."""
    last = now.replace(hour=2, minute=30, second=0, microsecond=0)
    if last > now:
        last -= dt.timedelta(days=1)
    reports = []
    for night in range(nights):
        start = last - dt.timedelta(days=night)
        seed_n = (night * 7919) % 97
        uploaded = 1 + seed_n % 6  # a few photos a night, on the scale of the sample library
        photo_bytes = uploaded * (180_000 + 2_500 * seed_n)
        failed = night in failed_nights
        age = night // 2  # the library grew by about one photo every other night
        library = FolderStats(files=103 - age, bytes=43_100_000 - 150_000 * age)
        library.uploaded, library.uploaded_bytes = (0, 0) if failed else (uploaded, photo_bytes)
        library.unchanged = library.files - library.uploaded
        upload = FolderStats(files=97 - age, bytes=4_580_000 - 50_000 * age)
        upload.uploaded = 0 if failed else 1 + seed_n % 2
        upload.uploaded_bytes = upload.uploaded * 50_000
        upload.unchanged = upload.files - upload.uploaded
        profile = FolderStats(files=3, bytes=80_000, unchanged=3, unchanged_bytes=80_000)
        per_folder = {"upload": upload, "library": library, "profile": profile}
        totals = FolderStats()
        for stats in per_folder.values():
            totals.add(stats)
        seconds = 1.5 + seed_n * 0.05
        reports.append(
            RunReport(
                run_id=uuid.UUID(int=night + 1).hex[:8],
                engine_version="0.1.0",
                command="backup",
                started_at=clock.iso(start) or "",
                finished_at=clock.iso(start + dt.timedelta(seconds=seconds)) or "",
                duration_seconds=seconds,
                bucket=BUCKET,
                media_prefix=MEDIA_PREFIX,
                library_root=CRONJOB_ROOT,
                folders=["upload", "library", "profile"],
                status="aborted" if failed else "ok",
                exit_code=3 if failed else 0,
                totals=totals,
                per_folder=per_folder,
                listing="full" if night % 7 == 0 else "incremental",
                error="S3 unreachable after 8 consecutive failures" if failed else "",
            )
        )
    return reports
