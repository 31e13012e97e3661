"""The restore drill against the cluster: a scratch CNPG Cluster recovered from the archive, a read-only
probe of it, a media sample restored with the drill's keys, and the report that says whether they match.

The scratch Cluster is planned by the same generator as `db restore` (`recovery.plan_recovery`), so it
can never be the source nor archive into its history; it is labelled as a drill so that a leftover is found
(`kubectl -n postgresql get clusters -l immich-backup/drill`). It does not archive at all: a drill that
wrote WAL into the bucket would grow the archive by one server folder a month for nothing.

Whatever happens after the Cluster is created, the Cluster, its PVCs and the probe Jobs are deleted (unless
`keep`) and a report is written: a drill that failed half-way is exactly what the report must say. A
problem found before anything is created (no credentials, no CNPG, read-only mode) raises instead, as an
error of the configuration.

Recovery point. With a target time it is that time. Without one the scratch Cluster replays the whole
archive, and CNPG reports no time for where replay ended (PostgreSQL's last replayed commit time is gone
once CNPG restarts the promoted instance). Replay ends in the archive's last WAL segment, so the time S3
stored that segment, listed once the Cluster is ready, bounds it from above: the error on the RPO is at
most the archive's segment switch interval (CNPG's archive_timeout, 5 minutes by default). When the
archive cannot be listed the Cluster's readiness is the (looser) bound, and said so. No asset can be
newer than the recovery point: if one is, the clocks disagree and its creation is taken instead.

The pure parts (cross-check, sample, report) are `services.drill`; the Immich schema probe is
`services.immich_schema`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from immich_tui.services import clock as clocks
from immich_tui.services.barman import read_wal_range
from immich_tui.services.cnpg import GROUP, VERSION, DbCluster
from immich_tui.services.drill import (
    CrossCheck,
    DrillReport,
    LatestDrill,
    SampleResult,
    cross_check,
    latest_drill,
    offsite_keys_as_of,
    sample_media,
    write_drill_report,
)
from immich_tui.services.errors import ServiceError
from immich_tui.services.immich_schema import (
    PAGE_BYTES,
    PAGE_ROWS,
    PageKey,
    ProbeCollector,
    ProbeResult,
    parse_probe_page,
    probe_env,
    probe_script,
)
from immich_tui.services.kube import Access, Kube, NotFound
from immich_tui.services.media import MediaBackup
from immich_tui.services.offsite import RESTORER_SECRET, Offsite, OffsiteUnavailable, Reader, resolve_reader
from immich_tui.services.recovery import MAX_CLUSTER_NAME, check_cluster_name, plan_recovery, rfc3339
from immich_tui.services.status import Services
from sync_engine.config import secret_files
from sync_engine.errors import ConfigError, StoreError

DRILL_SECRET = "immich-offsite-drill"  # the restorer's read actions plus PutObject on the drill reports
DRILL_SECRETS = (DRILL_SECRET, RESTORER_SECRET)  # an operator's drill falls back to the restorer's keys
DRILL_LABEL = "immich-backup/drill"  # on the scratch Cluster and the probe Jobs: how a leftover is found
DRILL_OF = "immich-backup/drill-of"  # namespace/name of the cluster the drill recovers
READY_PHASE = "Cluster in healthy state"
DEFAULT_SAMPLE = 100
DEFAULT_TIMEOUT_MINUTES = 30.0
PROBE_SUFFIX = "-probe"
PROBE_CONTAINER = "probe"
PROBE_USER = 26  # the postgres user of CNPG's operand images
MAX_PAGE_LOG = 2 * PAGE_BYTES + 1024 * 1024  # a page's rows, its header and end line, and psql's notices
MAX_PROBE_PAGES = 10_000  # 200 million assets at the default page: beyond it the pages are not ending
POLL_SECONDS = 2.0
GIB = 1024**3


class DrillError(ServiceError):
    """A drill that cannot start as asked; the message says why."""


def drill_name(source: str, now: dt.datetime) -> str:
    """`<source>-drill-<UTC minute>`, the source cut so the whole stays within CNPG's limit."""
    suffix = f"-drill-{now.astimezone(dt.UTC):%Y%m%d%H%M}"
    return source[: MAX_CLUSTER_NAME - len(suffix)].rstrip("-") + suffix


def drill_reader(services: Services) -> Reader:
    """The drill's S3 access: in the CronJob, the drill Secret's files (IMMICH_SYNC_SECRETS_DIR, as the
    engine reads them, so no key is in the pod's environment); for an operator, the same as every reader
    (profile, environment), then the drill Secret, else the restorer's. The restorer reads everything but
    cannot write the report; the drill then reports that one failure."""
    env = services.env
    if env.get("IMMICH_SYNC_SECRETS_DIR"):
        try:
            files = secret_files(None, env)
        except ConfigError as exc:
            raise DrillError(str(exc)) from None
        merged = {**env, **files.values}
        reader = resolve_reader(None, services.target.namespace, merged, profile=services.target.s3_profile)
        return dataclasses.replace(reader, source=f"secrets directory {files.directory}")
    try:
        kube: Kube | None = services.kube
    except ServiceError:
        kube = None
    return resolve_reader(
        kube, services.target.namespace, env, profile=services.target.s3_profile, secrets=DRILL_SECRETS
    )


def scratch_manifest(manifest: dict[str, Any], source: DbCluster, latest: bool) -> dict[str, Any]:
    """The planned recovery, made a scratch copy: one instance, labelled as a drill, archiving nothing, and
    with no recovery target when the latest point is asked for (a target time past the archive's end makes
    PostgreSQL refuse to start, "recovery ended before configured recovery target was reached")."""
    body = copy.deepcopy(manifest)
    meta = body["metadata"]
    meta.setdefault("labels", {})[DRILL_LABEL] = "true"
    meta.setdefault("annotations", {})[DRILL_OF] = f"{source.namespace}/{source.name}"
    spec = body["spec"]
    spec["instances"] = 1
    spec.pop("plugins", None)
    spec.pop("backup", None)
    if latest:
        spec["bootstrap"]["recovery"].pop("recoveryTarget", None)
        meta["annotations"]["immich-backup/recovery-target"] = "the end of the archive (latest)"
    return body


def probe_job(cluster: dict[str, Any], name: str, page: dict[str, str] | None = None) -> dict[str, Any]:
    """The read-only probe, in the scratch Cluster's namespace and image (which has psql): libpq settings
    from the application Secret CNPG keeps for the recovered database owner, never the superuser's; `page`
    is the probe's page request (`immich_schema.probe_env`)."""
    meta, spec = cluster["metadata"], cluster["spec"]
    recovery = spec["bootstrap"]["recovery"]
    secret = (recovery.get("secret") or {}).get("name") or f"{meta['name']}-app"

    def key(variable: str, item: str) -> dict[str, Any]:
        return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": item}}}

    env: list[dict[str, Any]] = [
        {"name": "PGHOST", "value": f"{meta['name']}-rw"},
        {"name": "PGPORT", "value": "5432"},
        {"name": "PGSSLMODE", "value": "require"},
        key("PGUSER", "username"),
        key("PGPASSWORD", "password"),
        {"name": "PGDATABASE", "value": recovery["database"]}
        if recovery.get("database")
        else key("PGDATABASE", "dbname"),
        {"name": "PGOPTIONS", "value": "-c default_transaction_read_only=on"},
        {"name": "HOME", "value": "/tmp"},
        *({"name": key, "value": value} for key, value in (page or probe_env(None)).items()),
    ]
    labels = {DRILL_LABEL: "true", "app.kubernetes.io/name": "immich-restore-drill-probe"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(labels)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 1800,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": PROBE_USER,
                        "runAsGroup": PROBE_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": PROBE_CONTAINER,
                            "image": spec.get("imageName") or "",
                            "command": ["sh", "-c", probe_script()],
                            "env": env,
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                            "securityContext": {
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
                },
            },
        },
    }


class DrillRunner:
    """Steps 1-7 of the drill (see the module's docstring); `progress` gets one line per step."""

    def __init__(
        self,
        services: Services,
        *,
        sample: int = DEFAULT_SAMPLE,
        target_time: dt.datetime | None = None,
        keep: bool = False,
        timeout: float = DEFAULT_TIMEOUT_MINUTES * 60,
        clock: Callable[[], dt.datetime] = clocks.now,
        rng: random.Random | None = None,
        scratch_dir: Path,
        progress: Callable[[str], None] | None = None,
        poll: float = POLL_SECONDS,
        page_rows: int = PAGE_ROWS,
        page_bytes: int = PAGE_BYTES,
    ) -> None:
        if sample < 0:
            raise DrillError(f"--sample must be 0 or more, got {sample}")
        self.services = services
        self.sample = sample
        self.target_time = target_time
        self.keep = keep
        self.timeout = timeout
        self.clock = clock
        self.rng = rng or random.Random()
        self.scratch_dir = scratch_dir
        self.progress = progress or (lambda line: None)
        self.poll = poll
        self.page_rows = page_rows
        self.page_bytes = page_bytes
        self.probe_jobs: list[str] = []  # created, to be deleted with the scratch cluster
        self.key = ""  # where the report was written, once it was

    # The steps ------------------------------------------------------------------------------------
    def run(self) -> DrillReport:
        started = self.clock()
        if self.services.target.read_only:
            raise DrillError(
                "read-only mode: the drill creates a scratch Cluster and a Job; run it without --read-only"
            )
        reader = drill_reader(self.services)
        store = reader.store()
        database = self.services.database
        state = database.state()
        source = state.cluster
        last_sync_start, library_bytes = self._latest_sync(reader)
        try:
            previous = latest_drill(store, reader.report_prefix, started)
        except StoreError as exc:
            raise DrillError(f"the previous drill reports cannot be listed: {exc}") from None
        name = drill_name(source.name, started)
        check_cluster_name(name)
        plan = plan_recovery(
            source,
            state.backups,
            target_time=self.target_time or started,
            name=name,
            media_sync=last_sync_start,
            now=started,
        )
        body = scratch_manifest(plan.manifest, source, latest=self.target_time is None)
        report = DrillReport(
            started=started,
            finished=None,
            cluster=name,
            source_cluster=f"{source.namespace}/{source.name}",
            target=self.target_time,
        )
        self.progress(
            f"recovering cluster/{source.name} into scratch cluster/{name} in {plan.namespace} "
            f"({'to ' + rfc3339(self.target_time) if self.target_time else 'to the latest point'})"
        )
        database.create_cluster(body)
        probe_name = f"{name}{PROBE_SUFFIX}"
        try:
            self._drill(report, source, body, probe_name, reader, last_sync_start, library_bytes, previous)
        except (ServiceError, StoreError) as exc:
            report.outcome = "error"
            report.problems.append(str(exc))
        finally:
            report.kept = self.keep
            if self.keep:
                jobs = ", ".join(f"job/{job}" for job in self.probe_jobs) or "no probe job"
                self.progress(f"kept cluster/{name} and {jobs} (--keep): delete them when done")
            else:
                problem = self._clean_up(plan.namespace, name)
                if problem:
                    report.problems.append(problem)
            report.finished = self.clock()
        try:
            self.key = write_drill_report(store, reader.report_prefix, report)
            self.progress(f"report written to s3://{reader.settings.bucket}/{self.key}")
        except (ServiceError, StoreError) as exc:
            report.problems.append(f"the drill report could not be written: {exc}")
            if report.outcome == "ok":
                report.outcome = "error"
        return report

    def _latest_sync(self, reader: Reader) -> tuple[dt.datetime | None, int | None]:
        """The start of the newest believed successful media sync and the library bytes it counted."""
        try:
            reports = Offsite(reader).reports(limit=1)
        except OffsiteUnavailable as exc:
            self.progress(f"note: the latest media sync is unknown ({exc})")
            return None, None
        latest = reports.latest_ok
        return (latest.started, latest.bytes) if latest is not None else (None, None)

    def _sync_start_by(self, reader: Reader, point: dt.datetime, latest: dt.datetime | None) -> dt.datetime | None:
        """The start of the newest successful media sync that had finished (its report stored) by `point`:
        the media copy the database is checked against."""
        try:
            points, _ = Offsite(reader).sync_points(before=point)
        except OffsiteUnavailable as exc:
            self.progress(f"note: the media syncs before the recovery point are unknown ({exc})")
            return latest
        done = [p.started for p in points if p.stored <= point]
        return max(done) if done else None

    def _drill(
        self,
        report: DrillReport,
        source: DbCluster,
        body: dict[str, Any],
        probe_name: str,
        reader: Reader,
        last_sync_start: dt.datetime | None,
        library_bytes: int | None,
        previous: LatestDrill | None,
    ) -> None:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        created = self.clock()
        cluster = self._wait_ready(namespace, name)
        ready = self.clock()
        report.db_ready_seconds = (ready - created).total_seconds()
        report.rto_db_seconds = report.db_ready_seconds
        self.progress(f"cluster/{name} is ready after {clocks.short(report.db_ready_seconds)}; probing the database")
        probe = self._probe(namespace, cluster or body, probe_name)
        report.recovery_point, report.recovery_point_basis = self._recovery_point(reader, source, ready, probe)
        report.probe_layout = probe.layout
        report.probe_assets = probe.assets
        report.immich_version = probe.immich_version
        self.progress(f"the database holds {probe.assets} assets (Immich layout {probe.layout}); checking the media")
        store = reader.store()
        # The media a restore would pair with this database: as of the target, or for the latest point the
        # newest copy, as it is offsite once the database is back (a restore now restores both the newest).
        report.media_as_of = self.target_time or ready
        last_sync_start = self._sync_start_by(reader, report.media_as_of, last_sync_start)
        report.last_sync_start = last_sync_start
        keys = offsite_keys_as_of(store, reader.media_prefix, report.media_as_of)
        check = cross_check(probe, keys, reader.media_prefix, last_sync_start)
        report.cross_check = check
        newer_than = previous.report.started if previous is not None and previous.report is not None else None
        self.progress(f"restoring a sample of {self.sample} objects (and every one newer than the last drill)")
        sample = sample_media(
            reader,
            reader.media_prefix,
            self.scratch_dir,
            sample=self.sample,
            newer_than=newer_than,
            as_of=self.target_time,
            rng=self.rng,
        )
        report.sample = sample
        now = self.clock()
        report.rpo_db_seconds = (now - report.recovery_point).total_seconds()
        report.rpo_media_seconds = (now - last_sync_start).total_seconds() if last_sync_start else None
        if sample.bytes > 0:
            report.media_seconds_per_gib = sample.seconds / (sample.bytes / GIB)
        report.library_bytes = library_bytes
        if report.media_seconds_per_gib is not None and library_bytes is not None:
            report.rto_media_seconds_estimate = library_bytes / GIB * report.media_seconds_per_gib
        report.problems.extend(_problems(check, sample))
        report.outcome = "failed" if report.problems else "ok"

    def _recovery_point(
        self, reader: Reader, source: DbCluster, ready: dt.datetime, probe: ProbeResult
    ) -> tuple[dt.datetime, str]:
        """The recovery point and what it rests on (see the module's docstring)."""
        if self.target_time is not None:
            return self.target_time, "the target time asked for"
        try:
            database = self.services.database
            destination = (
                database.object_store(source.object_store).destination_path
                if source.method == "plugin"
                else source.object_store
            )
            store = Offsite(reader).store_for(destination)
            wal = read_wal_range(store, destination, source.server_name, stored_by=ready)
            problem = "it held no WAL segment when the scratch cluster was ready" if wal.last_stored is None else ""
        except (ServiceError, StoreError) as exc:
            wal, problem = None, str(exc)
        if wal is not None and wal.last_stored is not None:
            point = wal.last_stored
            basis = f"latest point: at most when the archive stored its last WAL segment {wal.last}"
        else:
            point = ready
            basis = f"latest point: at most the scratch cluster's readiness (the archive's end is unknown: {problem})"
            self.progress(f"note: {basis}")
        newest = max((row.created for row in probe.rows if row.created is not None), default=None)
        if newest is not None and newest > point:
            point = min(newest, ready)
            basis += "; raised to the newest asset's creation, which is later (the clocks disagree)"
        return point, basis

    def _wait_ready(self, namespace: str, name: str) -> dict[str, Any]:
        """Until CNPG calls the Cluster healthy with an instance ready, or the timeout; the phase is reported
        as it changes, as `db backup --wait` does."""
        kube = self.services.kube
        deadline = time.monotonic() + self.timeout
        last = None
        while True:
            raw = kube.call(
                Access("get", "clusters", namespace, GROUP, name=name),
                kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "clusters",
                name,
            )
            status = raw.get("status") if isinstance(raw, dict) else None
            status = status if isinstance(status, dict) else {}
            phase = status.get("phase") if isinstance(status.get("phase"), str) else ""
            ready = status.get("readyInstances")
            if phase != last:
                self.progress(f"waiting for cluster/{name}: {phase or 'no phase yet'}")
                last = phase
            if phase == READY_PHASE and isinstance(ready, int) and not isinstance(ready, bool) and ready >= 1:
                return raw
            if time.monotonic() > deadline:
                raise DrillError(
                    f"cluster/{name} was not ready within {clocks.short(self.timeout)} "
                    f"(phase {phase or 'none'}): the database did not come back"
                )
            time.sleep(self.poll)

    def _probe(self, namespace: str, cluster: dict[str, Any], name: str) -> ProbeResult:
        """The asset table a page per Job (`<name>`, `<name>-2`, …) until the pages hold every counted row."""
        collector = ProbeCollector()
        while not collector.done:
            if collector.pages >= MAX_PROBE_PAGES:
                raise DrillError(f"the database probe did not end after {MAX_PROBE_PAGES} pages")
            job = name if not collector.pages else f"{name}-{collector.pages + 1}"
            collector.add(parse_probe_page(self._probe_page(namespace, cluster, job, collector.next_after)))
            if not collector.done:
                total = collector.first.total if collector.first else 0
                self.progress(f"probed {collector.seen:,} of {total:,} assets; reading the next page")
        return collector.result()

    def _probe_page(self, namespace: str, cluster: dict[str, Any], name: str, after: PageKey | None) -> str:
        kube = self.services.kube
        body = probe_job(cluster, name, probe_env(after, self.page_rows, self.page_bytes))
        kube.write(Access("create", "jobs", namespace, "batch"), kube.batch.create_namespaced_job, namespace, body)
        self.probe_jobs.append(name)
        jobs = MediaBackup(kube, namespace)
        deadline = time.monotonic() + self.timeout
        while True:
            info = jobs.job(name)
            if info.status in ("succeeded", "failed"):
                break
            if time.monotonic() > deadline:
                raise DrillError(f"job/{name} did not finish within {clocks.short(self.timeout)}")
            time.sleep(self.poll)
        if not info.pod:
            raise DrillError(f"job/{name} {info.status} without a pod to read")
        lines: list[str] = []
        size = 0
        stream = jobs.logs(info.pod, tail=None)
        try:
            for line in stream:
                size += len(line) + 1
                if size > MAX_PAGE_LOG:
                    raise DrillError(f"the log of job/{name} is larger than {MAX_PAGE_LOG // 1024**2} MiB")
                lines.append(line)
        finally:
            stream.close()
        if info.status != "succeeded":
            tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())[:300]
            reason = info.exit_reason or "failed"
            raise DrillError(f"the database probe job/{name} failed ({reason})" + (f": {tail}" if tail else ""))
        return "\n".join(lines) + "\n"

    def _clean_up(self, namespace: str, name: str) -> str:
        """Delete the probe Jobs (with their pods), the scratch Cluster and its PVCs; what could not be deleted is
        returned as one line, so the report names the leftover instead of the drill stopping."""
        kube = self.services.kube
        failed: list[str] = []

        def delete(what: str, access: Access, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
            try:
                kube.write(access, fn, *args, **kwargs)
            except NotFound:
                pass
            except ServiceError as exc:
                failed.append(f"{what} ({exc})")

        for job in self.probe_jobs:
            delete(
                f"job/{job}",
                Access("delete", "jobs", namespace, "batch", name=job),
                kube.batch.delete_namespaced_job,
                job,
                namespace,
                propagation_policy="Background",
            )
        delete(
            f"cluster/{name}",
            Access("delete", "clusters", namespace, GROUP, name=name),
            kube.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "clusters",
            name,
        )
        try:
            claims = [
                item["metadata"]["name"]
                for item in kube.list(
                    Access("list", "persistentvolumeclaims", namespace),
                    kube.core.list_namespaced_persistent_volume_claim,
                    namespace,
                    label_selector=f"cnpg.io/cluster={name}",
                )
            ]
        except ServiceError as exc:
            claims = []
            failed.append(f"the PVCs of cluster/{name} ({exc})")
        for claim in claims:
            delete(
                f"pvc/{claim}",
                Access("delete", "persistentvolumeclaims", namespace, name=claim),
                kube.core.delete_namespaced_persistent_volume_claim,
                claim,
                namespace,
            )
        if failed:
            return f"left behind in {namespace}, delete by hand: " + ", ".join(failed)
        self.progress(f"deleted cluster/{name}, its {len(claims)} PVC(s) and {len(self.probe_jobs)} probe job(s)")
        return ""


def _problems(check: CrossCheck, sample: SampleResult) -> list[str]:
    """What makes the drill fail: an asset without its original offsite, a sampled object that did not verify."""
    problems = []
    if check.missing:
        shown = ", ".join(check.missing_examples[:5])
        problems.append(f"{check.missing} asset(s) have no original offsite: {shown}")
    if sample.failed:
        problems.append(f"{len(sample.failed)} sampled object(s) did not verify: {', '.join(sample.failed[:5])}")
    return problems
