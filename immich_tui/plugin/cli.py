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
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml

from immich_tui.flags import bounded, global_flags, target_from_args, with_defaults
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
from immich_tui.services.drill import DrillReport
from immich_tui.services.drill_run import DEFAULT_SAMPLE, DEFAULT_TIMEOUT_MINUTES, DrillRunner
from immich_tui.services.errors import InvalidData, ServiceError
from immich_tui.services.kube import ClusterError
from immich_tui.services.media import JobInfo
from immich_tui.services.pointintime import SyncPoint
from immich_tui.services.recovery import parse_target_time, plan_recovery, rfc3339
from immich_tui.services.status import Services
from immich_tui.services.workload import (
    DEFAULT_SERVER_DEPLOYMENT,
    DEFAULT_SERVER_SELECTOR,
    ServerWorkload,
    refuse_while_running,
    running_server,
)
from sync_engine import __version__

FAILED = 1
ERROR = 2
JOB_LOOKUP = 200  # Jobs searched for a name suffix (`logs 29934870`); the TTL keeps far fewer
BACKUP_DONE = ("completed", "failed", "walArchivingFailing")
BACKUP_POLL = 1.0  # seconds between reads of a Backup while `db backup --wait` waits
MAX_SAMPLE = 1_000_000  # `drill --sample`: more than any library a drill should download


class Progress:
    """`--wait`'s account on stderr: a line whenever the phase changes, and a last one with the result,
    each with the time waited so far, so a terminal or a CI log shows the wait is alive and where it is."""

    def __init__(self, stream: TextIO, what: str) -> None:
        self.stream = stream
        self.what = what
        self.started = time.monotonic()
        self.last: str | None = None

    def _elapsed(self) -> str:
        return out.human_duration(time.monotonic() - self.started)

    def phase(self, phase: str) -> None:
        if phase != self.last:
            self.last = phase
            print(f"waiting for {self.what}: {phase}, {self._elapsed()}", file=self.stream, flush=True)

    def done(self, phase: str) -> None:
        print(f"{self.what}: {phase} after {self._elapsed()}", file=self.stream, flush=True)


class UsageError(Exception):
    """A command line argparse refuses; the message is argparse's own line (`argument --x: …`)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals raised instead of printed with the usage: `main` prints one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _ExamplesFormatter(argparse.HelpFormatter):
    """Descriptions wrap as usual; the examples epilog (the only text with line breaks) keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


OPTIONS_HINT = f"Use `{PROG} options` for a list of global command-line options (applies to all commands)."


def package_version() -> str:
    """The installed distribution's version: what `--version` says and bug reports quote. The tools image
    copies the packages without installing the distribution: there the release's own version answers."""
    try:
        return metadata.version("immich-offsite-backup")
    except metadata.PackageNotFoundError:  # the tools image, or a source tree that was never installed
        return __version__


def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines) + f"\n\n{OPTIONS_HINT}"


def build_parser() -> argparse.ArgumentParser:
    hidden = global_flags(hidden=True)  # accepted everywhere, listed only by `options`
    raw = _ExamplesFormatter
    parser = _Parser(
        prog=PROG,
        parents=[hidden],
        formatter_class=raw,
        description="Is Immich backed up offsite, and since when? Inspect and act on the media sync and the "
        "CloudNativePG database backups.",
        epilog=_examples(
            f"{PROG} status                   # health verdict; exit 0 healthy, 1 degraded, 2 error",
            f"{PROG} jobs                     # the media sync CronJob and its Jobs",
            f"{PROG} sync --wait              # run the media sync now and follow it",
            f"{PROG} db restore               # preview a point-in-time recovery (--apply creates it)",
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, *examples: str, description: str = "") -> argparse.ArgumentParser:
        return add_sub(sub, name, help_, *examples, description=description)

    def add_sub(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_: str,
        *examples: str,
        description: str = "",
    ) -> argparse.ArgumentParser:
        return group.add_parser(
            name,
            parents=[hidden],
            help=help_,
            description=description or help_,
            epilog=_examples(*(f"{PROG} {e}" for e in examples)),
            formatter_class=raw,
        )

    add(
        "status",
        "health verdict: media sync age, DB backup age, WAL archiving (exit 0 healthy, 1 degraded, 2 error)",
        "status",
        "status -o json | jq .verdict.state",
    )
    jobs = add(
        "jobs", "the media sync CronJob and its Jobs, newest first", "jobs", "jobs -o wide --limit 50", "jobs -o name"
    )
    jobs.add_argument("--limit", type=int, default=20, help="Jobs shown (default 20)")
    logs = add(
        "logs",
        "log of a sync Job's pod (default: the newest Job)",
        "logs",
        "logs 29934870            # the Job whose name ends in -29934870",
        "logs -f --tail 20",
    )
    logs.add_argument("job", nargs="?", help="Job name, or the unique end of one (the number after the last dash)")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines until the pod ends")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines")
    sync = add(
        "sync",
        "start the media sync now (a Job from the CronJob, as `kubectl create job --from`)",
        "sync",
        "sync --wait",
        "sync -o name",
    )
    sync.add_argument(
        "--wait", action="store_true", help="follow its log, report its phase on stderr, exit with the Job's result"
    )
    add("suspend", "suspend the media sync CronJob (nothing to do when it is suspended already)", "suspend")
    add("resume", "resume the media sync CronJob (nothing to do when it already runs)", "resume", "resume -o json")
    inv = add(
        "inventory",
        "the library on the PVC per folder (live through the Immich server pod, else last report)",
        "inventory",
        "inventory --from-report",
    )
    inv.add_argument("--from-report", action="store_true", help="do not exec; use the last successful run report")
    off = add(
        "offsite",
        "what is in the bucket per folder, and the recent sync runs",
        "offsite",
        "offsite --from-report --runs 30",
        "offsite -o wide",
    )
    off.add_argument("--from-report", action="store_true", help="totals from the last run report, without listing")
    off.add_argument("--runs", type=int, default=10, help="run reports shown (default 10)")
    tui = add("tui", "open the terminal UI on the same cluster (as `immich-tui`)", "tui", "tui --read-only")
    tui.add_argument("--demo", action="store_true", help="run on the embedded sandbox instead of a cluster")
    add(
        "options",
        "the global command-line options, accepted by every command (before or after it)",
        "options",
        "jobs -n photos --context homelab",
    )
    db = add("db", "the CloudNativePG database backups", "db status", "db backups", "db backup --wait", "db restore")
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    add_sub(dbsub, "status", "cluster, archiving and recovery window", "db status", "db status -o yaml")
    add_sub(dbsub, "backups", "Backups newest first, and ScheduledBackups", "db backups", "db backups -o name")
    dbb = add_sub(
        dbsub,
        "backup",
        "take a base backup now, with the cluster's method",
        "db backup",
        "db backup --wait",
    )
    dbb.add_argument("--wait", action="store_true", help="wait until the Backup completes or fails (phase on stderr)")
    recovery = add_sub(
        dbsub,
        "restore",
        "plan a point-in-time recovery into a NEW cluster (preview; --apply creates it)",
        "db restore",
        "db restore --as-of 2026-11-27T12:00:00Z",
        "db restore --backup immich-db-daily-20261127020000 -o yaml > cluster.yaml",
        "db restore --name immich-db-r1 --apply",
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
    dbc = add_sub(
        dbsub,
        "catalog",
        "base backups and WAL range read straight from the object store (works without the cluster)",
        "db catalog",
        "db catalog --destination-path s3://immich-offsite/immich/postgres --server-name immich-db-2026",
    )
    dbc.add_argument("--destination-path", metavar="S3URL", help="barman destinationPath (default: the cluster's)")
    dbc.add_argument("--server-name", help="barman serverName (default: the cluster's)")
    media = add("media", "restore the media library from the bucket", "media restore", "media restore --apply --wait")
    msub = media.add_subparsers(dest="media_command", metavar="MEDIA_COMMAND", required=True)
    media_restore = add_sub(
        msub,
        "restore",
        "preview, then with --apply run `immich-sync restore` in a Job that mounts the library PVC read-write",
        "media restore                                  # preview: nothing is created",
        "media restore --apply --wait",
        "media restore --as-of 2026-11-27T12:00:00Z --apply --wait",
        "media restore --pvc immich-library-new --force --apply",
        description="Preview the Job that restores the media into a PVC with the restorer's read-only credentials; "
        "--apply creates it. Stop Immich first: --apply refuses while the Immich server runs "
        f"(kubectl -n immich scale deployment/{DEFAULT_SERVER_DEPLOYMENT} --replicas=0).",
    )
    media_restore.add_argument(
        "--pvc", default="immich-library", help="target PersistentVolumeClaim (default immich-library)"
    )
    media_restore.add_argument(
        "--force",
        action="store_true",
        help="restore into a volume that already holds files (an unfinished restore of the same bucket resumes "
        "without it); does not override the running-server check",
    )
    media_restore.add_argument(
        "--only", metavar="F[,F]", help="only these folders (default: every folder in the bucket)"
    )
    media_restore.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="restore every file as it was at this time (explicit zone required): the newest version written by "
        "then, checked against the manifests of then (after tampering: a time before it)",
    )
    media_restore.add_argument("--apply", action="store_true", help="create the restore Job (default: preview only)")
    media_restore.add_argument(
        "--wait", action="store_true", help="with --apply: follow the Job's log and exit with its result"
    )
    media_restore.add_argument(
        "--allow-running-server",
        action="store_true",
        help="create the Job even though the Immich server runs (it may write to the volume meanwhile)",
    )
    media_restore.add_argument(
        "--server-selector",
        metavar="LABELS",
        default=DEFAULT_SERVER_SELECTOR,
        help=f"labels of the Immich server pods (default {DEFAULT_SERVER_SELECTOR})",
    )
    drill = add(
        "drill",
        "restore drill: recover the database into a scratch cluster, check every asset's original offsite, "
        "restore and verify a media sample, report RPO/RTO (exit 0 only when all of it holds)",
        "drill",
        "drill --sample 500 --target-time 2026-11-27T02:00:00Z",
        "drill --keep -o json > drill.json",
        description="Recover the database from its archive into a scratch CNPG Cluster (deleted afterwards unless "
        "--keep), read its Immich asset table read-only in a Job, check that every asset's original is offsite as "
        "of the recovery point, restore a random media sample (plus every object newer than the last drill) "
        "with the drill's keys and verify it, and write a drill report to the bucket. Exit 0: all of it held; "
        "1: something failed (the summary says what); 2: it could not run.",
    )
    drill.add_argument(
        "--sample",
        type=_count,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"media objects restored (default {DEFAULT_SAMPLE})",
    )
    drill.add_argument(
        "--target-time", metavar="RFC3339", help="recover the database to this time (default: the latest point)"
    )
    drill.add_argument("--keep", action="store_true", help="keep the scratch cluster, its PVCs and the probe Jobs")
    drill.add_argument(
        "--timeout",
        type=_minutes,
        default=DEFAULT_TIMEOUT_MINUTES,
        metavar="MIN",
        help=f"minutes to wait for the scratch cluster and the probe (default {DEFAULT_TIMEOUT_MINUTES:g})",
    )
    drill.add_argument(
        "--scratch-dir", metavar="DIR", help="where the media sample is restored (default: a temporary directory)"
    )
    add_setup_parser(sub, hidden)
    return parser


def _count(text: str) -> int:
    """`--sample`: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if value < 0 or value > MAX_SAMPLE:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SAMPLE:,}, got {text[:40]!r}")
    return value


def _minutes(text: str) -> float:
    """`--timeout`: minutes above 0 and at most a day."""
    return bounded(text, "minutes", 24 * 60, "1440")


def options_help() -> str:
    """`options`: the global flags, listed once here instead of in every command's help (as `kubectl options`)."""
    listing = _Parser(prog=PROG, parents=[global_flags()], add_help=False, usage=argparse.SUPPRESS)
    listing.description = "The following options can be passed to any command, before or after it:"
    return listing.format_help().rstrip("\n")


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

    @property
    def view(self) -> out.View:
        return out.View(wide=self.args.output == "wide", headers=not self.args.no_headers)

    @property
    def for_people(self) -> bool:
        return self.args.output in out.TABLE_FORMATS

    def emit(self, data: Any, text: str, names: list[str] | None = None) -> None:
        """One result in the chosen format; `names` are its `kind.group/name` lines for `-o name`."""
        if self.args.output == "name":
            if names is None:
                raise ServiceError(f"-o name does not apply to `{self._command()}`: use -o json, yaml, table or wide")
            text = "\n".join(names)
        elif not self.for_people:
            text = out.dump(data, self.args.output)
        if text:
            print(text, file=self.stdout)

    def _command(self) -> str:
        parts = [self.args.command, getattr(self.args, "db_command", None), getattr(self.args, "media_command", None)]
        return " ".join(p for p in parts if p)

    def say(self, text: str) -> None:
        """Progress for people; kept off stdout when it carries JSON/YAML or names."""
        print(text, file=self.stdout if self.for_people else self.stderr, flush=True)

    # status --------------------------------------------------------------------------------------
    def status(self) -> int:
        report = self.services.status()
        self.emit(report, render_status(report, self.services.target, self.view))
        return report.verdict.exit_code

    # media ---------------------------------------------------------------------------------------
    def jobs(self) -> int:
        history = self.services.media.history(limit=self.args.limit)
        self.emit(history, render_jobs(history, self.view), [f"job.batch/{j.name}" for j in history.jobs])
        return 0

    def _job_named(self, given: str) -> str:
        """`logs 29934870`: a Job's full name, or the unique end of one after a dash, as the numbered
        suffix of a scheduled Job reads in `jobs`. A Job outside the history is still found by its full name."""
        names = [j.name for j in self.services.media.history(limit=JOB_LOOKUP).jobs]
        if given in names:
            return given
        matches = [n for n in names if n.endswith(f"-{given}")]
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
            raise ServiceError(f"job {given!r} is ambiguous: it ends {len(matches)} Job names ({shown})")
        return matches[0] if matches else given

    def logs(self) -> int:
        media = self.services.media
        job, pod = media.newest_job_pod(self._job_named(self.args.job) if self.args.job else None)
        self.stderr.write(f"# job/{job} pod/{pod}\n")
        stream = media.logs(pod, follow=self.args.follow, tail=self.args.tail)
        for line in stream:
            print(line, file=self.stdout, flush=self.args.follow)
        return 0

    def sync(self) -> int:
        media = self.services.media
        job = media.trigger()
        if not self.args.wait:
            self.emit(job, f"job/{job.name} created", [f"job.batch/{job.name}"])
            return 0
        self.say(f"job/{job.name} created; waiting for its pod")
        final = self._follow_job(job.name, pod_line=True)
        if not self.for_people:
            self.emit(final, "", [f"job.batch/{final.name}"])
        else:
            extra = f": {final.exit_reason}" if final.exit_reason else ""
            self.say(f"job/{final.name} {final.status}{extra}")
        if final.status == "succeeded":
            return 0
        return final.exit_code if final.exit_code and final.exit_code < 126 else FAILED

    def _follow_job(self, name: str, *, pod_line: bool = False) -> JobInfo:
        """Wait for a Job: its phase on stderr as it changes, its pod's log as it runs, its final state."""
        media = self.services.media
        progress = Progress(self.stderr, f"job/{name}")
        progress.phase("Pending")
        pod = media.wait_for_pod(name)
        if pod is not None:
            pod_name = pod["metadata"]["name"]
            progress.phase(str((pod.get("status") or {}).get("phase") or "Running"))
            if pod_line:
                self.say(f"# pod/{pod_name}")
            for line in media.logs(pod_name, follow=True, tail=None):
                self.say(line)
        final = media.wait_for_job(name)
        progress.done(final.status.capitalize())
        return final

    def suspend(self) -> int:
        return self._set_suspended(True)

    def resume(self) -> int:
        return self._set_suspended(False)

    def _set_suspended(self, suspended: bool) -> int:
        """Suspend or resume; a CronJob already in that state is said to be so and left unpatched, so a
        script may run either at any time and the CronJob's resourceVersion only moves on a real change."""
        media = self.services.media
        info = media.cronjob()
        if info.suspended == suspended:
            text = (
                f"cronjob/{info.name} is already suspended; nothing to do"
                if suspended
                else f"cronjob/{info.name} already runs (not suspended); next run {out.when(info.next_run)}"
            )
        else:
            info = media.set_suspended(suspended)
            text = (
                f"cronjob/{info.name} suspended"
                if suspended
                else f"cronjob/{info.name} resumed; next run {out.when(info.next_run)}"
            )
        self.emit(info, text, [f"cronjob.batch/{info.name}"])
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
        self.emit(inventory, render_inventory(inventory, self.view))
        return 0 if inventory.source != "none" else FAILED

    def offsite(self) -> int:
        state = self.services.offsite().state(listing=not self.args.from_report, report_limit=self.args.runs)
        self.emit(state, render_offsite(state, self.view))
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
        if self.args.output == "name":
            if self.args.apply:
                self.services.database.create_cluster(plan.manifest)
            print(f"cluster.postgresql.cnpg.io/{plan.name}", file=self.stdout)
            return 0
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
                then = f"{PROG} media restore --as-of {rfc3339(plan.as_of)} --apply --wait"
                media += f"  then            {then}\n"
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
        self.emit(catalog, render_catalog(catalog, self.view))
        return 0

    def media(self) -> int:
        """`media restore`: preview the Job that runs the engine's `immich-sync restore` into the PVC; with
        --apply create it, once the Immich server is down (or --allow-running-server says to anyway)."""
        media = self.services.media
        as_of = parse_target_time(self.args.as_of, "--as-of") if self.args.as_of else None
        if self.args.wait and not self.args.apply:
            raise ServiceError("--wait needs --apply: without it `media restore` only previews and creates nothing")
        if not self.args.apply:
            return self._media_preview(as_of)
        if not self.services.target.read_only:  # read-only refuses the create itself, before any check
            self._check_server_stopped()
        job = media.start_restore(self.args.pvc, force=self.args.force, only=self.args.only, as_of=as_of)
        names = [f"job.batch/{job.name}"]
        if not self.args.wait:
            self.emit(
                job,
                f"job/{job.name} created: restoring the media into pvc/{self.args.pvc}\n" + AFTER_MEDIA_RESTORE,
                names,
            )
            return 0
        self.say(f"job/{job.name} created; waiting for its pod")
        final = self._follow_job(job.name)
        extra = f": {final.exit_reason}" if final.exit_reason else ""
        self.say(f"job/{final.name} {final.status}{extra}")
        if final.status == "succeeded":
            self.say(AFTER_MEDIA_RESTORE)
            return 0
        return final.exit_code if final.exit_code and final.exit_code < 126 else FAILED

    def _server(self) -> ServerWorkload:
        return ServerWorkload(namespace=self.services.target.namespace, selector=self.args.server_selector)

    def _check_server_stopped(self) -> None:
        running = refuse_while_running(
            self.services.kube,
            self._server(),
            allow=self.args.allow_running_server,
            override="pass --allow-running-server",
        )
        if running is not None:
            self.stderr.write(f"warning: the Immich server is running ({running.describe()}); restoring anyway\n")

    def _media_preview(self, as_of: dt.datetime | None) -> int:
        """What `media restore --apply` would do, read-only: the Job it would create, where from, into what."""
        media = self.services.media
        body = media.restore_job(self.args.pvc, force=self.args.force, only=self.args.only, as_of=as_of)
        name = body["metadata"]["name"]
        if self.args.output in ("json", "yaml"):
            print(out.dump(body, self.args.output), file=self.stdout)
            return 0
        if self.args.output == "name":
            print(f"job.batch/{name}", file=self.stdout)
            return 0
        try:
            reader = self.services.restorer_reader()
            source = f"s3://{reader.settings.bucket}/{reader.media_prefix} (restorer credentials: {reader.source})"
        except ServiceError as exc:
            source = f"unknown: {exc}"
        try:
            running = running_server(self.services.kube, self._server())
            server = (
                "stopped"
                if running is None
                else f"RUNNING: {running.describe()}\n{'':18}stop it first: {running.scale_down}"
            )
        except ServiceError as exc:
            server = f"unknown: {exc}"
        image = body["spec"]["template"]["spec"]["containers"][0]["image"]
        existing = (
            "allowed (--force): the restore writes into a volume that already holds files"
            if self.args.force
            else "the restore stops if the volume already holds files (--force to restore into it anyway)"
        )
        namespace = self.services.target.namespace
        lines = [
            f"Media restore into pvc/{self.args.pvc} in {namespace}",
            f"  from            {source}",
            f"  as of           {rfc3339(as_of) if as_of else 'now: the newest version of every file'}",
            f"  folders         {self.args.only or 'every folder in the bucket'}",
            f"  existing files  {existing}",
            f"  immich server   {server}",
            f"  job             job/{name} (image {image})",
            "# preview — rerun with --apply to create the Job (--apply --wait to follow it); nothing was created",
        ]
        print("\n".join(lines), file=self.stdout)
        return 0

    def drill(self) -> int:
        """`drill`: steps on stderr as they happen; the summary (or `-o json|yaml` the report) on stdout."""
        if self.args.output == "name":
            raise ServiceError("-o name does not apply to `drill`: use -o json, yaml, table or wide")
        target = parse_target_time(self.args.target_time) if self.args.target_time else None
        scratch = self.args.scratch_dir
        temporary = scratch is None
        folder = tempfile.mkdtemp(prefix="immich-drill-") if temporary else scratch
        try:
            runner = DrillRunner(
                self.services,
                sample=self.args.sample,
                target_time=target,
                keep=self.args.keep,
                timeout=self.args.timeout * 60,
                rng=random.Random(),
                scratch_dir=Path(folder),
                progress=lambda line: print(f"drill: {line}", file=self.stderr, flush=True),
            )
            report = runner.run()
        finally:
            if temporary:
                shutil.rmtree(folder, ignore_errors=True)
        if self.for_people:
            print(render_drill(report, runner.key), file=self.stdout)
        else:
            print(out.dump(report.to_json(), self.args.output), file=self.stdout)
        return 0 if report.outcome == "ok" and runner.key else FAILED

    def setup(self) -> int:
        return run_setup(self.args, self.services, self.stdout, self.stderr)

    def tui(self) -> int:
        try:
            from immich_tui.cli import run_tui
        except ImportError:  # the tools image carries the plugin's commands, not the Textual app
            raise ServiceError(
                "tui: the terminal UI is not installed here; run it where immich-offsite-backup is installed"
            ) from None

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
                render_db_backups(state, self.view),
                [f"backup.postgresql.cnpg.io/{b.name}" for b in state.backups]
                + [f"scheduledbackup.postgresql.cnpg.io/{s.name}" for s in state.schedules],
            )
            return 0
        if command == "restore":
            return self.db_recovery()
        backup = database.backup_now()
        names = [f"backup.postgresql.cnpg.io/{backup.name}"]
        if not self.args.wait:
            self.emit(backup, f"backup/{backup.name} created (method {backup.method})", names)
            return 0
        self.say(f"backup/{backup.name} created (method {backup.method}); waiting")
        progress = Progress(self.stderr, f"backup/{backup.name}")
        final = backup
        while True:
            progress.phase(final.phase or "pending")
            if final.phase in BACKUP_DONE:
                break
            time.sleep(BACKUP_POLL)
            final = database.wait_backup(backup.name, timeout=0)  # one read: the phases are reported here
        progress.done(final.phase)
        extra = f": {final.error}" if final.error else ""
        self.emit(final, f"backup/{final.name} {final.phase}{extra}", names)
        return 0 if final.phase == "completed" else FAILED


def _seconds(value: float | None) -> str:
    return out.human_duration(value) if value is not None else "unknown"


def _gib(value: int | None) -> str:
    return f"{value / 1024**3:.2f} GiB" if value is not None else "unknown size"


def render_drill(report: DrillReport, key: str) -> str:
    """The drill's summary: what came back, how far behind (RPO) and how fast (RTO), and what is missing."""
    verdict = {"ok": "PASSED", "failed": "FAILED", "error": "ERROR"}.get(report.outcome, report.outcome.upper())
    point = rfc3339(report.recovery_point) or "not reached"
    lines = [
        f"Restore drill of {report.source_cluster}: {verdict}",
        f"  scratch cluster  {report.cluster}" + (" (kept)" if report.kept else " (deleted)"),
        f"  recovery point   {point}"
        + (f" ({report.recovery_point_basis})" if report.recovery_point_basis and report.recovery_point else ""),
        f"  media as of      {rfc3339(report.media_as_of) or 'not reached'}"
        + (" (the newest offsite copy)" if report.media_as_of and not report.target else ""),
        f"  RPO              database {_seconds(report.rpo_db_seconds)}, media {_seconds(report.rpo_media_seconds)}"
        + (f" (last media sync started {rfc3339(report.last_sync_start)})" if report.last_sync_start else ""),
        f"  RTO              database queryable after {_seconds(report.db_ready_seconds)}",
    ]
    if report.media_seconds_per_gib is not None:
        whole = _seconds(report.rto_media_seconds_estimate)
        lines.append(
            f"  media            {report.media_seconds_per_gib:.1f} s/GiB restored; the whole library "
            f"({_gib(report.library_bytes)}) ≈ {whole}"
        )
    if report.probe_assets is not None:
        version = f", Immich {report.immich_version}" if report.immich_version else ""
        lines.append(f"  assets           {report.probe_assets} (layout {report.probe_layout}{version})")
    check = report.cross_check
    if check is not None:
        lines.append(f"  missing offsite  {check.missing}" + _examples_line(check.missing_examples))
        lines.append(f"  not yet offsite  {check.not_yet_offsite}" + _examples_line(check.not_yet_offsite_examples))
        if check.not_yet_offsite:
            lines.append(
                "                   in the database, not yet offsite: created after the start of the last media "
                "sync; to restore a consistent pair, pick a --target-time before the last media sync"
            )
        lines.append(f"  orphans          {check.orphans}" + _examples_line(check.orphan_examples))
        if check.external:
            lines.append(f"  external         {check.external} (external libraries are not backed up)")
    sample = report.sample
    if sample is not None:
        lines.append(
            f"  sample           {sample.verified} of {sample.requested} verified, {len(sample.failed)} failed"
            + _examples_line(sample.failed)
        )
    for problem in report.problems:
        lines.append(f"  problem          {problem}")
    lines.append(f"  report           {key or 'NOT WRITTEN'}")
    return "\n".join(lines)


def _examples_line(examples: list[str]) -> str:
    if not examples:
        return ""
    shown = ", ".join(examples[:5])
    return f": {shown}" + (" …" if len(examples) > 5 else "")


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
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if isinstance(exc.code, int) else ERROR
    if args.command is None:  # a bare `kubectl immich-backup`: what it can do, as kubectl's plugins answer
        print(build_parser().format_help().rstrip("\n"), file=stdout)
        return 0
    if args.command == "options":
        print(options_help(), file=stdout)
        return 0
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
