"""`kubectl immich-backup` (the executable `kubectl-immich_backup`): its parser and its commands.

Flags may come before or after the subcommand, as with kubectl. Exit codes: 0 success (for
`status`: healthy), 1 degraded/stale or a waited-for run that failed, 2 an error (cluster,
RBAC, configuration, a flag, data that does not fit its schema), 130 interrupted. Every error is one
line on stderr: a mistyped flag too (no usage dump), so a script's log says what to fix. What the
commands print for people is in `render`; the global flags it shares with `immich-tui` are in
`immich_tui.flags`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

import yaml

from immich_tui.flags import global_flags, target_from_args, with_defaults
from immich_tui.plugin import PROG
from immich_tui.plugin import output as out
from immich_tui.plugin.render import (
    AFTER_MEDIA_RESTORE,
    render_catalog,
    render_db_backups,
    render_db_status,
    render_inventory,
    render_jobs,
    render_offsite,
    render_status,
)
from immich_tui.plugin.setup_cmd import add_setup_parser, run_setup
from immich_tui.services.barman import CatalogError, parse_destination, read_catalog
from immich_tui.services.cnpg import CnpgMissing
from immich_tui.services.errors import InvalidData, ServiceError
from immich_tui.services.kube import ClusterError
from immich_tui.services.pointintime import SyncPoint
from immich_tui.services.recovery import parse_target_time, plan_recovery, rfc3339
from immich_tui.services.status import Services

FAILED = 1
ERROR = 2


class UsageError(Exception):
    """A command line argparse refuses; the message is argparse's own line (`argument --x: …`)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals raised instead of printed with the usage: `main` prints one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    common = global_flags()
    parser = _Parser(
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
    recovery = dbsub.add_parser(
        "restore",
        parents=[common],
        help="plan a point-in-time recovery into a NEW cluster (preview; --apply creates it)",
        description="Generate a new CNPG Cluster that recovers from the object store. The existing cluster is "
        "never modified. Default target: the start of the latest successful media sync.",
    )
    which = recovery.add_mutually_exclusive_group()
    which.add_argument("--backup", metavar="NAME", help="recover to the end of this completed Backup")
    which.add_argument("--target-time", metavar="RFC3339", help="recover to this time (explicit zone required)")
    which.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="one point in time for the database and the media: the database to where the media as of this "
        "time meet it (the start of the newest media sync finished by then); refused when they cannot meet",
    )
    recovery.add_argument("--name", help="name of the new cluster (default: <cluster>-restore-<time>)")
    recovery.add_argument("--apply", action="store_true", help="create the new Cluster now")
    dbc = dbsub.add_parser(
        "catalog",
        parents=[common],
        help="base backups and WAL range read straight from the object store (works without the cluster)",
    )
    dbc.add_argument("--destination-path", metavar="S3URL", help="barman destinationPath (default: the cluster's)")
    dbc.add_argument("--server-name", help="barman serverName (default: the cluster's)")
    media = add("media", "restore the media library from the bucket")
    msub = media.add_subparsers(dest="media_command", metavar="MEDIA_COMMAND", required=True)
    media_restore = msub.add_parser(
        "restore",
        parents=[common],
        help="run `immich-sync restore` in a Job that mounts the library PVC read-write",
        description="Create a Job that restores the media into a PVC with the restorer's read-only credentials. "
        "Stop Immich first (scale the server to 0) so nothing writes to the volume meanwhile.",
    )
    media_restore.add_argument(
        "--pvc", default="immich-library", help="target PersistentVolumeClaim (default immich-library)"
    )
    media_restore.add_argument("--force", action="store_true", help="restore into a volume that already holds files")
    media_restore.add_argument(
        "--only", metavar="F[,F]", help="only these folders (default: every folder in the bucket)"
    )
    media_restore.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="restore every file as it was at this time (explicit zone required): the newest version written by "
        "then, checked against the manifests of then (after tampering: a time before it)",
    )
    media_restore.add_argument("--wait", action="store_true", help="follow the Job's log and exit with its result")
    add_setup_parser(sub, common)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with every global flag it leaves out at its default."""
    return with_defaults(build_parser().parse_args(list(argv)))


class Cli:
    """One method per command (`db` and `media` dispatch their subcommands); each returns the exit code."""

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
    def warn_reports(self, problem: str) -> None:
        """A run report that is not one was passed over for an older one: said, so it is never silent."""
        if problem:
            self.stderr.write(f"warning: {problem}; an older report was used\n")

    def inventory(self) -> int:
        last_ok = None
        try:
            reports = self.services.offsite().reports(limit=1)
            last_ok = reports.latest_ok
            self.warn_reports(reports.problem())
        except ServiceError as exc:
            self.stderr.write(f"note: no run reports ({exc}); pending cannot be computed\n")
        inventory = self.services.library.inventory(last_ok, live=not self.args.from_report)
        self.emit(inventory, render_inventory(inventory))
        return 0 if inventory.source != "none" else FAILED

    def offsite(self) -> int:
        state = self.services.offsite().state(listing=not self.args.from_report, report_limit=self.args.runs)
        self.emit(state, render_offsite(state))
        problem = state.reports.problem()
        if problem:  # shown above as far as it could be read; the runs table lacks it
            print(f"{PROG}: error: {problem}", file=self.stderr)
            return ERROR
        return 0

    def _latest_media_sync(self) -> dt.datetime | None:
        """Where the database recovery defaults to: the start of the latest successful media sync."""
        try:
            reports = self.services.offsite().reports(limit=1)
        except ServiceError as exc:
            self.stderr.write(f"note: the latest media sync is unknown ({exc})\n")
            return None
        self.warn_reports(reports.problem())
        latest = reports.latest_ok
        return latest.started if latest else None

    def _media_syncs(self, at: dt.datetime) -> tuple[list[SyncPoint] | None, dt.datetime | None]:
        """The successful media syncs listed back from `at`: what the media as of `at` hold."""
        try:
            return self.services.offsite().sync_points(before=at)
        except ServiceError as exc:
            self.stderr.write(f"note: the media sync history is unknown ({exc})\n")
            return None, None

    def db_recovery(self) -> int:
        """`db restore`: plan the database's point-in-time recovery into a new Cluster, and create it with --apply."""
        database = self.services.database
        state = database.state()  # the plugin's ObjectStore holds the recovery window
        cluster = state.cluster
        backups = database.backups(limit=10_000)[0] if self.args.backup else state.backups
        target = parse_target_time(self.args.target_time) if self.args.target_time else None
        as_of = parse_target_time(self.args.as_of, "--as-of") if self.args.as_of else None
        backup = next((b for b in backups if b.name == self.args.backup), None) if self.args.backup else None
        at = as_of or target or (backup.stopped if backup else None)
        syncs, since = self._media_syncs(at) if at is not None else (None, None)
        plan = plan_recovery(
            cluster,
            backups,
            backup_name=self.args.backup,
            target_time=target,
            name=self.args.name,
            media_sync=self._latest_media_sync(),
            as_of=as_of,
            syncs=syncs,
            syncs_since=since,
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
            media = ""
            if plan.media is not None:
                media = f"  media           {plan.media.media_line()}\n"
            if plan.as_of is not None:
                media += f"  then            kubectl immich-backup media restore --as-of {rfc3339(plan.as_of)} --wait\n"
            print(
                f"Recovery of cluster/{plan.source} into a NEW cluster/{plan.name} in {plan.namespace}\n"
                + (f"  point in time   {rfc3339(plan.as_of)}, for the database and the media\n" if plan.as_of else "")
                + f"  target          {plan.target.describe()}\n"
                f"  recovery window {window} → now\n"
                f"  latest media    {out.when(plan.media_sync)}\n"
                f"{media}"
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
        """`db catalog`: the Barman Cloud archive read from the bucket, so it works when the cluster is gone."""
        destination, server = self.args.destination_path, self.args.server_name
        if server is not None and (not server.strip() or "/" in server):
            raise CatalogError(f"--server-name must be a single folder name, got {server[:80]!r}")
        source = "--destination-path"
        if destination:
            _check_destination(destination, source)
        if not destination or not server:
            try:
                cluster = self.services.database.cluster()
            except (ClusterError, InvalidData) as exc:
                raise ClusterError(
                    f"{exc}; pass --destination-path and --server-name to read the bucket alone"
                ) from None
            server = server or cluster.server_name
            if not destination and cluster.method == "plugin":
                destination = self.services.database.object_store(cluster.object_store).destination_path
                source = f"ObjectStore {cluster.namespace}/{cluster.object_store} spec.configuration.destinationPath"
                _check_destination(destination, source)
            elif not destination:
                destination = cluster.object_store
                where = "spec.backup.barmanObjectStore.destinationPath"
                source = f"CNPG Cluster {cluster.namespace}/{cluster.name} {where}"
                _check_destination(destination, source)
        store = self.services.offsite().store_for(destination)
        catalog = read_catalog(store, destination, server)
        self.emit(catalog, render_catalog(catalog))
        return 0

    def media(self) -> int:
        """`media restore`: a Job in the cluster that runs the engine's `immich-sync restore` into the PVC."""
        media = self.services.media
        as_of = parse_target_time(self.args.as_of, "--as-of") if self.args.as_of else None
        job = media.start_restore(self.args.pvc, force=self.args.force, only=self.args.only, as_of=as_of)
        if not self.args.wait:
            self.emit(
                job, f"job/{job.name} created: restoring the media into pvc/{self.args.pvc}\n" + AFTER_MEDIA_RESTORE
            )
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
            self.say(AFTER_MEDIA_RESTORE)
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
            return self.db_recovery()
        backup = database.backup_now()
        if not self.args.wait:
            self.emit(backup, f"backup/{backup.name} created (method {backup.method})")
            return 0
        self.say(f"backup/{backup.name} created (method {backup.method}); waiting")
        final = database.wait_backup(backup.name)
        extra = f": {final.error}" if final.error else ""
        self.emit(final, f"backup/{final.name} {final.phase}{extra}")
        return 0 if final.phase == "completed" else FAILED


def _check_destination(destination: str, source: str) -> None:
    """A barman destinationPath, named by where it came from (the flag, the Cluster, its ObjectStore)."""
    try:
        parse_destination(destination)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """The `kubectl-immich_backup` console script: run one command and return its exit code.

    Every operator-side failure is a `ServiceError`: one line on stderr, and the exit code it carries.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are reported once, as our own error line
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc} (see {PROG} --help)", file=stderr)
        return ERROR
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else ERROR
    services = Services(target_from_args(args), env)
    cli = Cli(args, services, stdout, stderr)
    command = args.command
    try:
        return int(getattr(cli, command)())
    except ServiceError as exc:
        # A missing CNPG is a fact about the cluster rather than a failed request: it reads without "error:".
        label = "" if isinstance(exc, CnpgMissing) else "error: "
        print(f"{PROG}: {label}{exc}", file=stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        services.close()


if __name__ == "__main__":
    raise SystemExit(main())
