"""`kubectl immich-backup` (the executable `kubectl-immich_backup`).

Flags may come before or after the subcommand, as with kubectl. Exit codes: 0 success (for
`status`: healthy), 1 degraded/stale or a waited-for run that failed, 2 an error (cluster,
RBAC, configuration), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from immich_tui.plugin import output as out
from immich_tui.plugin.setup_cmd import add_setup_parser, run_setup
from immich_tui.services import clock
from immich_tui.services.cnpg import CnpgMissing
from immich_tui.services.health import STALE_AFTER_HOURS
from immich_tui.services.kube import ClusterError
from immich_tui.services.library import LibraryInventory
from immich_tui.services.media import DEFAULT_CRONJOB, JobHistory
from immich_tui.services.offsite import OffsiteState, OffsiteUnavailable
from immich_tui.services.recovery import RecoveryError, parse_target_time, plan_recovery
from immich_tui.services.status import Services, StatusReport, Target

PROG = "kubectl immich-backup"
FAILED = 1
ERROR = 2

GLOBAL_DEFAULTS: dict[str, Any] = {
    "kubeconfig": None,
    "context": None,
    "namespace": "immich",
    "db_namespace": "postgresql",
    "db_cluster": "immich-db",
    "cronjob": DEFAULT_CRONJOB,
    "output": "table",
    "read_only": False,
    "stale_after": STALE_AFTER_HOURS,
    "s3_profile": None,
}


def _global_flags(*, output: bool = True) -> argparse.ArgumentParser:
    """Parsed both before and after the subcommand; SUPPRESS keeps a later default from erasing an earlier value."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("cluster and output")
    g.add_argument("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    g.add_argument("--context", help="kubeconfig context to use")
    g.add_argument("-n", "--namespace", help="Immich namespace (default: immich)")
    g.add_argument("--db-namespace", help="namespace of the CNPG cluster (default: postgresql)")
    g.add_argument("--db-cluster", help="name of the CNPG cluster (default: immich-db)")
    g.add_argument("--cronjob", help=f"media sync CronJob (default: {DEFAULT_CRONJOB})")
    if output:  # the TUI has no output format
        g.add_argument("-o", "--output", choices=("table", "json", "yaml"), help="output format (default: table)")
    g.add_argument("--read-only", action="store_true", help="refuse every change to the cluster")
    g.add_argument("--stale-after", type=float, metavar="HOURS", help="a backup older than this is stale (36)")
    g.add_argument("--s3-profile", help="AWS profile with read access to the bucket (default: $AWS_PROFILE)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_flags()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Is Immich backed up offsite, and since when? Inspect and act on the media sync and the "
        "CloudNativePG database backups.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_)

    add("status", "health verdict: media sync age, DB backup age, WAL archiving (exit 0 healthy, 1 degraded, 2 error)")
    jobs = add("jobs", "the media sync CronJob and its Jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="Jobs shown (default 20)")
    logs = add("logs", "log of a sync Job's pod (default: the newest Job)")
    logs.add_argument("job", nargs="?", help="Job name")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines until the pod ends")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines")
    sync = add("sync", "start the media sync now (a Job from the CronJob, as `kubectl create job --from`)")
    sync.add_argument("--wait", action="store_true", help="follow its log and exit with the Job's result")
    add("suspend", "suspend the media sync CronJob")
    add("resume", "resume the media sync CronJob")
    inv = add("inventory", "the library on the PVC per folder (live through the Immich server pod, else last report)")
    inv.add_argument("--from-report", action="store_true", help="do not exec; use the last successful run report")
    off = add("offsite", "what is in the bucket per folder, and the recent sync runs")
    off.add_argument("--from-report", action="store_true", help="totals from the last run report, without listing")
    off.add_argument("--runs", type=int, default=10, help="run reports shown (default 10)")
    tui = add("tui", "open the terminal UI on the same cluster (as `immich-tui`)")
    tui.add_argument("--demo", action="store_true", help="run on the embedded sandbox instead of a cluster")
    db = add("db", "the CloudNativePG database backups")
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    dbsub.add_parser("status", parents=[common], help="cluster, archiving and recovery window")
    dbsub.add_parser("backups", parents=[common], help="Backups newest first, and ScheduledBackups")
    dbb = dbsub.add_parser("backup", parents=[common], help="take a base backup now, with the cluster's method")
    dbb.add_argument("--wait", action="store_true", help="wait until the Backup completes or fails")
    dbr = dbsub.add_parser(
        "restore",
        parents=[common],
        help="plan a point-in-time recovery into a NEW cluster (preview; --apply creates it)",
        description="Generate a new CNPG Cluster that recovers from the object store. The existing cluster is "
        "never modified. Default target: the start of the latest successful media sync.",
    )
    which = dbr.add_mutually_exclusive_group()
    which.add_argument("--backup", metavar="NAME", help="recover to the end of this completed Backup")
    which.add_argument("--target-time", metavar="RFC3339", help="recover to this time (explicit zone required)")
    dbr.add_argument("--name", help="name of the new cluster (default: <cluster>-restore-<time>)")
    dbr.add_argument("--apply", action="store_true", help="create the new Cluster now")
    dbc = dbsub.add_parser(
        "catalog",
        parents=[common],
        help="base backups and WAL range read straight from the object store (works without the cluster)",
    )
    dbc.add_argument("--destination-path", metavar="S3URL", help="barman destinationPath (default: the cluster's)")
    dbc.add_argument("--server-name", help="barman serverName (default: the cluster's)")
    media = add("media", "restore the media library from the bucket")
    msub = media.add_subparsers(dest="media_command", metavar="MEDIA_COMMAND", required=True)
    mr = msub.add_parser(
        "restore",
        parents=[common],
        help="run `immich-sync restore` in a Job that mounts the library PVC read-write",
        description="Create a Job that restores the media into a PVC with the restorer's read-only credentials. "
        "Stop Immich first (scale the server to 0) so nothing writes to the volume meanwhile.",
    )
    mr.add_argument("--pvc", default="immich-library", help="target PersistentVolumeClaim (default immich-library)")
    mr.add_argument("--force", action="store_true", help="restore into a volume that already holds files")
    mr.add_argument("--only", metavar="F[,F]", help="only these folders (default: every folder in the bucket)")
    mr.add_argument("--wait", action="store_true", help="follow the Job's log and exit with its result")
    add_setup_parser(sub, common)
    return parser


def target_from_args(args: argparse.Namespace) -> Target:
    """The cluster target the global flags name, for the plugin and the TUI alike."""
    return Target(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        db_namespace=args.db_namespace,
        db_cluster=args.db_cluster,
        cronjob=args.cronjob,
        read_only=args.read_only,
        stale_after_hours=args.stale_after,
        s3_profile=args.s3_profile,
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    for name, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


class Cli:
    def __init__(self, args: argparse.Namespace, services: Services, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.services = services
        self.stdout = stdout
        self.stderr = stderr

    def emit(self, data: Any, text: str) -> None:
        print(text if self.args.output == "table" else out.dump(data, self.args.output), file=self.stdout)

    def say(self, text: str) -> None:
        """Progress for people; kept off stdout when it carries JSON/YAML."""
        print(text, file=self.stdout if self.args.output == "table" else self.stderr, flush=True)

    # status --------------------------------------------------------------------------------------
    def status(self) -> int:
        report = self.services.status()
        self.emit(report, render_status(report, self.services.target))
        return report.verdict.exit_code

    # media ---------------------------------------------------------------------------------------
    def jobs(self) -> int:
        history = self.services.media.history(limit=self.args.limit)
        self.emit(history, render_jobs(history))
        return 0

    def logs(self) -> int:
        media = self.services.media
        job, pod = media.newest_job_pod(self.args.job)
        self.stderr.write(f"# job/{job} pod/{pod}\n")
        stream = media.logs(pod, follow=self.args.follow, tail=self.args.tail)
        for line in stream:
            print(line, file=self.stdout, flush=self.args.follow)
        return 0

    def sync(self) -> int:
        media = self.services.media
        job = media.trigger()
        if not self.args.wait:
            self.emit(job, f"job/{job.name} created")
            return 0
        self.say(f"job/{job.name} created; waiting for its pod")
        pod = media.wait_for_pod(job.name)
        if pod is not None:
            name = pod["metadata"]["name"]
            self.say(f"# pod/{name}")
            for line in media.logs(name, follow=True, tail=None):
                self.say(line)
        final = media.wait_for_job(job.name)
        if self.args.output != "table":
            print(out.dump(final, self.args.output), file=self.stdout)
        else:
            extra = f": {final.exit_reason}" if final.exit_reason else ""
            self.say(f"job/{final.name} {final.status}{extra}")
        if final.status == "succeeded":
            return 0
        return final.exit_code if final.exit_code and final.exit_code < 126 else FAILED

    def suspend(self) -> int:
        info = self.services.media.set_suspended(True)
        self.emit(info, f"cronjob/{info.name} suspended")
        return 0

    def resume(self) -> int:
        info = self.services.media.set_suspended(False)
        self.emit(info, f"cronjob/{info.name} resumed; next run {out.when(info.next_run)}")
        return 0

    # library and bucket --------------------------------------------------------------------------
    def inventory(self) -> int:
        last_ok = None
        try:
            last_ok = self.services.offsite().reports(limit=1).latest_ok
        except (OffsiteUnavailable, ClusterError) as exc:
            self.stderr.write(f"note: no run reports ({exc}); pending cannot be computed\n")
        inventory = self.services.library.inventory(last_ok, live=not self.args.from_report)
        self.emit(inventory, render_inventory(inventory))
        return 0 if inventory.source != "none" else FAILED

    def offsite(self) -> int:
        state = self.services.offsite().state(listing=not self.args.from_report, report_limit=self.args.runs)
        self.emit(state, render_offsite(state))
        return 0

    def _latest_media_sync(self) -> Any:
        try:
            latest = self.services.offsite().reports(limit=1).latest_ok
        except (OffsiteUnavailable, ClusterError) as exc:
            self.stderr.write(f"note: the latest media sync is unknown ({exc})\n")
            return None
        return latest.started if latest else None

    def db_restore(self) -> int:
        database = self.services.database
        state = database.state()  # the plugin's ObjectStore holds the recovery window
        cluster = state.cluster
        backups = database.backups(limit=10_000)[0] if self.args.backup else state.backups
        target = parse_target_time(self.args.target_time) if self.args.target_time else None
        plan = plan_recovery(
            cluster,
            backups,
            backup_name=self.args.backup,
            target_time=target,
            name=self.args.name,
            media_sync=self._latest_media_sync(),
        )
        for warning in plan.warnings:
            self.stderr.write(f"warning: {warning}\n")
        manifest_yaml = yaml.safe_dump(plan.manifest, sort_keys=False)
        if self.args.output == "yaml" and not self.args.apply:
            self.stdout.write(manifest_yaml)
            return 0
        if self.args.output == "json":
            print(out.dump(plan, "json"), file=self.stdout)
        else:
            window = out.when(plan.window_start)
            print(
                f"Recovery of cluster/{plan.source} into a NEW cluster/{plan.name} in {plan.namespace}\n"
                f"  target          {plan.target.describe()}\n"
                f"  recovery window {window} → now\n"
                f"  latest media    {out.when(plan.media_sync)}\n"
                f"  archives as     serverName {plan.server_name} (the source's archive is only read)\n",
                file=self.stdout,
            )
            if not self.args.apply:
                print(
                    "# preview — rerun with --apply to create it, or -o yaml > cluster.yaml for GitOps",
                    file=self.stdout,
                )
                self.stdout.write(manifest_yaml)
        if self.args.apply:
            self.services.database.create_cluster(plan.manifest)
            self.say(
                f"cluster/{plan.name} created; watch it with `kubectl -n {plan.namespace} get cluster {plan.name} -w`."
                f" Once healthy, point Immich at it (DB_HOSTNAME={plan.name}-rw.{plan.namespace}.svc)."
            )
        return 0

    def db_catalog(self) -> int:
        from immich_tui.services.barman import CatalogError, read_catalog

        destination, server = self.args.destination_path, self.args.server_name
        if not destination or not server:
            try:
                cluster = self.services.database.cluster()
            except ClusterError as exc:
                raise ClusterError(
                    f"{exc}; pass --destination-path and --server-name to read the bucket alone"
                ) from None
            server = server or cluster.server_name
            if cluster.method == "plugin":
                destination = destination or self.services.database.object_store(cluster.object_store).destination_path
            else:
                destination = destination or cluster.object_store
        store = self.services.offsite().store_for(destination)
        try:
            catalog = read_catalog(store, destination, server)
        except CatalogError as exc:
            raise OffsiteUnavailable(str(exc)) from None
        self.emit(catalog, render_catalog(catalog))
        return 0

    def media(self) -> int:
        media = self.services.media
        job = media.start_restore(self.args.pvc, force=self.args.force, only=self.args.only)
        if not self.args.wait:
            self.emit(job, f"job/{job.name} created: restoring the media into pvc/{self.args.pvc}\n" + AFTER_RESTORE)
            return 0
        self.say(f"job/{job.name} created; waiting for its pod")
        pod = media.wait_for_pod(job.name)
        if pod is not None:
            for line in media.logs(pod["metadata"]["name"], follow=True, tail=None):
                self.say(line)
        final = media.wait_for_job(job.name)
        extra = f": {final.exit_reason}" if final.exit_reason else ""
        self.say(f"job/{final.name} {final.status}{extra}")
        if final.status == "succeeded":
            self.say(AFTER_RESTORE)
            return 0
        return final.exit_code if final.exit_code and final.exit_code < 126 else FAILED

    def setup(self) -> int:
        return run_setup(self.args, self.services, self.stdout, self.stderr)

    def tui(self) -> int:
        from immich_tui.cli import run_tui

        return run_tui(self.args)

    # database ------------------------------------------------------------------------------------
    def db(self) -> int:
        command = self.args.db_command
        if command == "catalog":  # reads the bucket alone: it must work when the cluster is gone
            return self.db_catalog()
        database = self.services.database
        if command == "status":
            state = database.state()
            self.emit(state, render_db_status(state))
            return 0
        if command == "backups":
            state = database.state()
            self.emit(
                {"backups": state.backups, "total": state.total_backups, "scheduled": state.schedules},
                render_db_backups(state),
            )
            return 0
        if command == "restore":
            return self.db_restore()
        backup = database.backup_now()
        if not self.args.wait:
            self.emit(backup, f"backup/{backup.name} created (method {backup.method})")
            return 0
        self.say(f"backup/{backup.name} created (method {backup.method}); waiting")
        final = database.wait_backup(backup.name)
        extra = f": {final.error}" if final.error else ""
        self.emit(final, f"backup/{final.name} {final.phase}{extra}")
        return 0 if final.phase == "completed" else FAILED


# Renderers (tables for people) ---------------------------------------------------------------------
def _mark(state: str) -> str:
    return state.upper()


def render_status(report: StatusReport, target: Target) -> str:
    v = report.verdict
    lines = [
        f"Context {report.context or '-'}   namespace {report.namespace}   "
        f"database {target.db_namespace}/{target.db_cluster}",
        f"Verdict: {_mark(v.state)} (stale after {v.stale_after_hours:g}h)",
        "",
        out.table(
            ["CHECK", "STATE", "AGE", "DETAIL"],
            [[c.name, c.state, out.duration(c.age_seconds), c.detail] for c in v.checks],
        ),
    ]
    hints = [f"  {c.name}: {c.hint}" for c in v.checks if c.hint and c.state != "ok"]
    lines.append("")
    history: JobHistory | None = report.media.value
    if history is not None:
        cj = history.cronjob
        state = "SUSPENDED" if cj.suspended else f"next run {out.when(cj.next_run)}"
        lines.append(f'Media sync  cronjob/{cj.name} "{cj.schedule}" ({cj.timezone}), {state}')
        if history.jobs:
            j = history.jobs[0]
            reason = f" — {j.exit_reason}" if j.exit_reason else ""
            lines.append(f"            latest job/{j.name} {j.status}, started {out.when(j.started)}{reason}")
        if cj.schedule_error:
            lines.append(f"            warning: {cj.schedule_error}")
    else:
        lines.append(f"Media sync  {report.media.error}")
    offsite: OffsiteState | None = report.offsite.value
    if offsite is not None:
        last = offsite.reports.latest_ok
        if last is not None:
            lines.append(
                f"Offsite     {offsite.total_objects} objects, {out.size(offsite.total_bytes)} in s3://{offsite.bucket}/"
                f"{offsite.media_prefix} as of run {out.when(last.finished)} (read via {offsite.source})"
            )
        else:
            lines.append(f"Offsite     no successful run report yet in s3://{offsite.bucket} (via {offsite.source})")
    else:
        lines.append(f"Offsite     {report.offsite.error}")
    db = report.database.value
    if db is not None:
        c = db.cluster
        window = c.window.first_point
        lines.append(
            f"Database    cluster/{c.name} {c.phase}, {c.ready_instances}/{c.instances} ready, archiving via "
            f"{_method(c.method)}; recoverable from {out.when(window)} to now"
        )
        lines += [f"            warning: scheduledbackup/{s.name}: {s.warning}" for s in db.schedules if s.warning]
    else:
        lines.append(f"Database    {report.database.error}")
    if hints:
        lines += ["", "What to do:", *hints]
    return "\n".join(lines)


def _method(method: str) -> str:
    return {"plugin": "Barman Cloud Plugin", "barmanObjectStore": "in-tree barmanObjectStore"}.get(method, method)


def render_jobs(history: JobHistory) -> str:
    cj = history.cronjob
    head = [
        f'cronjob/{cj.name}  schedule "{cj.schedule}" ({cj.timezone})  suspended: {"yes" if cj.suspended else "no"}',
        f"last schedule {out.when(cj.last_schedule)}   last success {out.when(cj.last_success)}   "
        f"next run {out.when(cj.next_run)}",
    ]
    if cj.schedule_error:
        head.append(f"warning: {cj.schedule_error}")
    rows = [
        [
            j.name + (" (manual)" if j.manual else ""),
            j.status,
            out.when(j.started),
            out.duration(j.duration_seconds),
            j.pod,
            j.exit_reason,
        ]
        for j in history.jobs
    ]
    shown = f"{len(history.jobs)} of {history.total} jobs" + (
        f" ({', '.join(f'{n} {s}' for s, n in sorted(history.counts.items()))})" if history.counts else ""
    )
    body = out.table(["JOB", "STATUS", "STARTED", "DURATION", "POD", "REASON"], rows) if rows else "no jobs yet"
    return "\n".join([*head, "", body, "", shown])


def render_inventory(inv: LibraryInventory) -> str:
    if inv.source == "none":
        return f"library inventory unavailable: {inv.detail}"
    source = (
        f"live count through {inv.detail} at {out.when(inv.taken_at)}"
        if inv.source == "live"
        else f"last successful run report {inv.detail} ({out.when(inv.taken_at)}); live count unavailable: "
        f"{inv.fallback_reason}"
    )
    pending_label = "PENDING" if inv.source == "live" else "NOT STORED"
    rows = [
        [
            f.name,
            f.files if f.exists else "missing",
            out.size(f.bytes),
            out.when(f.newest) if f.newest else "-",
            "-" if not f.backed_up else f"{f.pending} ({out.size(f.pending_bytes)})" if f.pending else "0",
            "yes" if f.backed_up else "skipped",
            "yes" if f.marker else "MISSING",
        ]
        for f in inv.folders
    ]
    return "\n".join(
        [
            f"Source: {source}",
            "",
            out.table(["FOLDER", "FILES", "SIZE", "NEWEST", pending_label, "BACKED UP", ".immich"], rows),
            "",
            f"{inv.total_files} files, {out.size(inv.total_bytes)}",
        ]
    )


def render_offsite(state: OffsiteState) -> str:
    rows = [
        [
            f.folder,
            f.objects,
            out.size(f.bytes),
            ", ".join(f"{k} {v}" for k, v in sorted(f.storage_classes.items())) or "-",
            out.when(f.newest),
        ]
        for f in state.folders
    ]
    runs = [
        [
            clock.iso(r.started),
            r.status,
            r.listing,
            f"{r.uploaded} ({out.size(r.uploaded_bytes)})",
            r.files,
            r.deferred + r.failed + r.unstable,
            out.duration(r.duration_seconds),
        ]
        for r in state.reports.runs
    ]
    lines = [
        f"s3://{state.bucket}/{state.media_prefix}   read via {state.source}   totals from {state.basis}",
        "",
        out.table(["FOLDER", "OBJECTS", "SIZE", "STORAGE", "NEWEST"], rows) if rows else "no objects",
        "",
        f"{state.total_objects} objects, {out.size(state.total_bytes)}",
        "",
        f"Recent runs ({len(state.reports.runs)} of {state.reports.total} reports):",
        out.table(["STARTED", "STATUS", "LISTING", "UPLOADED", "FILES", "NOT STORED", "DURATION"], runs)
        if runs
        else "no run reports yet",
    ]
    return "\n".join(lines)


def render_db_status(state: Any) -> str:
    c = state.cluster
    lines = [
        f"cluster/{c.name} in {c.namespace}: {c.phase}, {c.ready_instances}/{c.instances} instances ready",
        f"image                {c.image or '-'}",
        f"archiving            {_method(c.method)}"
        + (
            f" (ObjectStore {c.object_store})"
            if c.method == "plugin"
            else f" ({c.object_store})"
            if c.object_store
            else ""
        ),
        f"server name          {c.server_name}",
    ]
    for cond in (c.continuous_archiving, c.last_backup_succeeded):
        detail = f" — {cond.message or cond.reason}" if (cond.message or cond.reason) else ""
        lines.append(f"{cond.type:<21}{cond.status}{detail}")
    lines.append(f"recovery window  {out.when(c.window.first_point)} → now")
    lines.append(f"last backup      {out.when(state.last_backup)}")
    if c.window.last_failure:
        lines.append(f"last failure     {out.when(c.window.last_failure)}")
    if state.object_store is not None:
        os_ = state.object_store
        lines.append(
            f"object store     {os_.name}: {os_.destination_path}"
            + (f" ({os_.endpoint_url})" if os_.endpoint_url else "")
        )
        for server, w in sorted(os_.windows.items()):
            lines.append(
                f"  serverRecoveryWindow[{server}]  first {out.when(w.first_point)}, "
                f"last success {out.when(w.last_success)}"
            )
    lines += [f"warning: scheduledbackup/{s.name}: {s.warning}" for s in state.schedules if s.warning]
    return "\n".join(lines)


AFTER_RESTORE = (
    "After the media restore, before starting Immich: restore the database to a time no later than the latest "
    "media sync (`kubectl immich-backup db restore`), then in Immich → Administration → Jobs run "
    '"Generate Thumbnails" (All) and "Transcode Videos" (All) — thumbs/ and encoded-video/ are not backed up.'
)


def render_catalog(catalog: Any) -> str:
    rows = [
        [
            b.backup_id,
            b.status,
            out.when(b.begin_time),
            out.when(b.end_time),
            b.begin_wal,
            b.end_wal,
            b.timeline,
            out.size(b.size),
        ]
        for b in reversed(catalog.backups)
    ]
    wal = catalog.wal
    return "\n".join(
        [
            f"{catalog.destination_path} · serverName {catalog.server_name}",
            "",
            out.table(["BACKUP ID", "STATUS", "BEGIN", "END", "BEGIN WAL", "END WAL", "TL", "SIZE"], rows)
            if rows
            else "no base backups",
            "",
            f"WAL archive: {wal.count} files, {wal.first or '-'} → {wal.last or '-'} (timelines "
            f"{', '.join(map(str, wal.timelines)) or '-'})",
            f"recoverable from {out.when(catalog.first_recoverability_point)} (end of the oldest DONE backup)",
        ]
    )


def render_db_backups(state: Any) -> str:
    rows = [
        [
            b.name,
            b.phase,
            b.method,
            out.when(b.started),
            out.duration((b.stopped - b.started).total_seconds() if b.started and b.stopped else None),
            b.backup_id,
            b.error,
        ]
        for b in state.backups
    ]
    sched = [
        [
            s.name,
            s.schedule,
            s.method,
            "yes" if s.suspended else "no",
            out.when(s.last_schedule),
            out.when(s.next_schedule),
            s.warning,
        ]
        for s in state.schedules
    ]
    return "\n".join(
        [
            out.table(["BACKUP", "PHASE", "METHOD", "STARTED", "DURATION", "BACKUP ID", "ERROR"], rows)
            if rows
            else "no backups",
            f"{len(state.backups)} of {state.total_backups} backups",
            "",
            out.table(["SCHEDULEDBACKUP", "SCHEDULE", "METHOD", "SUSPENDED", "LAST", "NEXT", "WARNING"], sched)
            if sched
            else "no scheduled backups",
        ]
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are reported once, as our own error line
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else ERROR
    services = Services(target_from_args(args), env)
    cli = Cli(args, services, stdout, stderr)
    command = args.command
    try:
        return int(getattr(cli, command)())
    except CnpgMissing as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return ERROR
    except (ClusterError, OffsiteUnavailable, RecoveryError) as exc:
        print(f"{PROG}: error: {exc}", file=stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        services.close()
