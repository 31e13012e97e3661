"""`immich-sync`: backup, plan, inventory, verify and restore, for the CronJob and for people.

Exit codes (documented in the README): 0 success, 1 partial (some files not backed up or verify
found differences; restore: some files failed or conflict with local ones), 2 configuration error
(nothing was changed), 3 aborted (S3 unreachable or the run was interrupted; in-flight uploads were
aborted), 4 restore done except archived objects S3 is still restoring (run it again later),
130 interrupted before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sync_engine import __version__
from sync_engine.backup import EXIT_ABORTED, EXIT_CONFIG, EXIT_OK, EXIT_PARTIAL, run
from sync_engine.config import IMMICH_FOLDERS, ConfigError, SyncSettings, parse_folders, sync_settings
from sync_engine.inventory import inventory
from sync_engine.models import FolderStats, PlanItem, RemoteObject
from sync_engine.output import LineLog, ProgressDisplay, size
from sync_engine.report import RunReport, utc_iso
from sync_engine.restore import (
    DEFAULT_RESTORE_DAYS,
    EXIT_PENDING,
    RESTORE_TIERS,
    Fate,
    FileResult,
    RestoreReport,
    RestoreStats,
    restore_settings,
    run_restore,
)
from sync_engine.scan import printable
from sync_engine.store import ObjectStore, StoreError
from sync_engine.verify import verify

PROG = "immich-sync"


def _common(parser: argparse.ArgumentParser, *, s3: bool = True) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="result format")
    parser.add_argument("--library-root", metavar="PATH", help="library root (env LIBRARY_ROOT, default /library)")
    sel = parser.add_argument_group("folders")
    sel.add_argument(
        "--include",
        metavar="F[,F]",
        help="also back up these opt-in folders: thumbs, encoded-video, backups",
    )
    sel.add_argument("--only", metavar="F[,F]", help=f"back up exactly these folders ({', '.join(IMMICH_FOLDERS)})")
    if not s3:
        return
    _s3_flags(parser)
    run_g = parser.add_argument_group("run")
    run_g.add_argument("--workers", type=int, help="concurrent uploads (env IMMICH_SYNC_WORKERS, default 16)")
    run_g.add_argument("--part-size-mib", type=int, help="multipart part size (default 16)")
    run_g.add_argument(
        "--multipart-threshold-mib", type=int, help="files this large or larger go multipart (default 64)"
    )
    run_g.add_argument(
        "--memory-mib", type=int, help="cap on file data held in memory by all workers together (default 256)"
    )
    run_g.add_argument(
        "--settle-seconds",
        type=float,
        help="defer files modified this recently (env IMMICH_SYNC_SETTLE_SECONDS, default 60)",
    )
    run_g.add_argument(
        "--full-listing-days",
        type=float,
        help="list every directory in S3 at least this often; between such runs, directories unchanged "
        "since the last successful run are not listed (0: always list; default 7)",
    )
    run_g.add_argument("--storage-class", help="S3 storage class for new objects (default: the bucket's)")
    run_g.add_argument("--shard", metavar="I/N", help="only this slice of the key space (Indexed Jobs)")
    _log_flags(run_g)


def _s3_flags(parser: argparse.ArgumentParser, report_help: str = "where run reports go (env REPORT_PREFIX)") -> None:
    s3g = parser.add_argument_group("S3")
    s3g.add_argument("--bucket", help="bucket (env BUCKET_NAME)")
    s3g.add_argument("--prefix", help="media key prefix (env MEDIA_PREFIX), e.g. immich/media/")
    s3g.add_argument("--region", help="region (env AWS_REGION)")
    s3g.add_argument("--endpoint-url", help="S3-compatible endpoint (env AWS_ENDPOINT_URL_S3)")
    s3g.add_argument("--path-style", action="store_true", help="path-style addressing (MinIO, Ceph, …)")
    s3g.add_argument(
        "--checksum-mode",
        choices=("when_required", "when_supported"),
        help="botocore request checksums; when_required (default) sends only Content-MD5, which every "
        "S3-compatible server accepts",
    )
    s3g.add_argument("--report-prefix", help=report_help)
    s3g.add_argument("--max-attempts", type=int, help="attempts per S3 request, with backoff (default 6)")


def _log_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    group.add_argument("--no-progress", action="store_true", help="line logs even on a terminal")
    group.add_argument("-q", "--quiet", action="store_true", help="log problems and the summary only")


def _restore_parser(sub: Any) -> None:
    restore = sub.add_parser(
        "restore",
        help="download the media back into a directory, verified and resumable (disaster recovery)",
        description="Download every object of the selected Immich folders into PATH (key minus MEDIA_PREFIX), "
        "verify each against the backup's manifests, and rename it into place. Run it with the restorer's "
        "read-only credentials (s3:GetObject, s3:ListBucket, s3:RestoreObject). Re-running finishes an "
        "interrupted restore; archived objects (GLACIER, DEEP_ARCHIVE) are requested from S3 and downloaded "
        "by a later run.",
        epilog=f"Exit codes: 0 done, 1 some files failed or conflict with local files, 2 configuration error "
        f"(nothing written), 3 aborted (run it again to finish), {EXIT_PENDING} done except archived objects "
        "S3 is still restoring (run it again later).",
    )
    restore.add_argument("--to", metavar="PATH", required=True, help="directory to restore into (created if missing)")
    restore.add_argument("-o", "--output", choices=("text", "json"), default="text", help="summary format")
    sel = restore.add_argument_group("folders (default: all six)")
    sel.add_argument("--only", metavar="F[,F]", help=f"restore exactly these folders ({', '.join(IMMICH_FOLDERS)})")
    sel.add_argument("--include", metavar="F[,F]", help="add these folders to --only")
    sel.add_argument("--exclude", metavar="F[,F]", help="leave these folders out, e.g. thumbs,encoded-video")
    _s3_flags(restore, report_help="where the run reports and their manifests are (env REPORT_PREFIX)")
    run_g = restore.add_argument_group("run")
    run_g.add_argument("--workers", type=int, help="concurrent downloads (env IMMICH_SYNC_WORKERS, default 16)")
    run_g.add_argument(
        "--overwrite", action="store_true", help="replace local files that differ from the backup (default: keep)"
    )
    run_g.add_argument(
        "--force",
        action="store_true",
        help="restore into a directory that is not empty and holds no unfinished restore",
    )
    run_g.add_argument(
        "--restore-days",
        type=int,
        help=f"days a copy restored from GLACIER/DEEP_ARCHIVE stays readable "
        f"(env IMMICH_SYNC_RESTORE_DAYS, default {DEFAULT_RESTORE_DAYS})",
    )
    run_g.add_argument(
        "--restore-tier",
        choices=RESTORE_TIERS,
        help="retrieval tier for archived objects (env IMMICH_SYNC_RESTORE_TIER, default Standard; "
        "DEEP_ARCHIVE has no Expedited and uses Standard)",
    )
    _log_flags(run_g)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Append-only, verified backup of an Immich library to S3.",
        epilog=f"Exit codes: 0 ok, 1 partial, 2 configuration error, 3 aborted, {EXIT_PENDING} restore waiting "
        "for archived objects.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _common(sub.add_parser("backup", help="upload what is new or changed (the CronJob's command)"))
    plan = sub.add_parser("plan", help="dry run: what backup would upload and why")
    _common(plan)
    plan.add_argument(
        "--files", action="store_true", help="also list every file that would be uploaded, with its reason"
    )
    _common(sub.add_parser("inventory", help="local library statistics per folder"), s3=False)
    _common(sub.add_parser("verify", help="compare S3 with the recorded manifests (needs read access)"))
    _restore_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Kubernetes stops a pod with SIGTERM: treat it like Ctrl-C so in-flight uploads are aborted.
    previous = signal.signal(signal.SIGTERM, _sigterm)
    fmt = getattr(args, "log_format", "text")
    try:
        if args.command == "inventory":
            return _inventory(args)
        if args.command == "restore":
            return _restore(args)
        settings = sync_settings(args)
        store = ObjectStore(settings.s3)
        if args.command == "verify":
            store.check_access(settings.report_prefix)
            return _verify(args, settings, store)
        return _backup(args, settings, store, dry_run=args.command == "plan")
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG, fmt)
    except StoreError as exc:
        return _fail(str(exc), EXIT_ABORTED if exc.transport else EXIT_CONFIG, fmt)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, fmt)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm(signum: int, frame: object) -> None:
    # First signal: stop and clean up. Later ones must not interrupt the clean-up itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _fail(message: str, code: int, log_format: str = "text") -> int:
    """One line on stderr; a JSON record when the run logs JSON, so log pipelines see it too."""
    if log_format == "json":
        LineLog("json").emit("error", "error", f"{PROG}: error: {message}", exit_code=code)
    else:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


class _PlanFiles(LineLog):
    """Lists what a plan would upload: streamed as text lines, or kept for the JSON document."""

    def __init__(self, log: LineLog, as_json: bool) -> None:
        super().__init__(log.fmt, log.stream, quiet=log.quiet)
        self.as_json = as_json
        self.files: list[dict[str, Any]] = []

    def planned(self, item: PlanItem) -> None:
        if not item.uploads:
            return
        rel = printable(item.local.rel)
        if self.as_json:
            self.files.append({"path": rel, "key": item.key, "size": item.local.size, "reason": item.reason.value})
        else:
            print(f"{item.reason.value:<13} {size(item.local.size):>10}  {rel}", flush=True)


def _backup(args: argparse.Namespace, settings: SyncSettings, store: ObjectStore, *, dry_run: bool) -> int:
    log = LineLog(args.log_format, quiet=args.quiet)
    lister = _PlanFiles(log, args.output == "json") if dry_run and args.files else None
    interactive = sys.stderr.isatty() and not args.no_progress and args.log_format == "text" and not lister
    if interactive:
        with ProgressDisplay(log) as display:
            report = run(settings, store, dry_run=dry_run, observer=display)
    else:
        report = run(settings, store, dry_run=dry_run, observer=lister or log)
    if args.output == "json":
        document = report.to_json()
        if lister is not None:
            document["files"] = lister.files
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(_report_text(report, settings))
    if report.status == "aborted":
        _fail(f"run aborted: {report.error}", report.exit_code, args.log_format)
    return report.exit_code


def _row(name: str, st: FolderStats, dry_run: bool) -> list[str]:
    return [
        name,
        f"{st.files:,}",
        size(st.bytes),
        f"{st.uploaded:,}",
        size(st.uploaded_bytes),
        f"{st.unchanged:,}",
        f"{st.deferred:,}",
        f"{st.unstable + st.vanished:,}",
        f"{st.failed + st.skipped:,}",
    ]


def _problem_lines(problems: list[dict[str, str]], truncated: int, more: str) -> list[str]:
    """The first 50 problems of a summary, and where to find the rest."""
    if not problems:
        return []
    lines = ["", f"problems ({len(problems) + truncated:,}):"]
    lines += [f"  {p['kind']:<13} {p['path']}: {p['detail']}" for p in problems[:50]]
    if len(problems) > 50 or truncated:
        lines.append(f"  … {more}")
    return lines


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _report_text(report: RunReport, settings: SyncSettings) -> str:
    upload_word = "to upload" if report.dry_run else "uploaded"
    head = [["folder", "files", "size", upload_word, "bytes", "unchanged", "deferred", "changing", "failed"]]
    rows = [_row(f"{name}/", st, report.dry_run) for name, st in report.per_folder.items()]
    rows.append(_row("total", report.totals, report.dry_run))
    t = report.totals
    verb = "plan" if report.dry_run else "backup"
    lines = [
        f"{verb} {report.status} in {report.duration_seconds:.1f}s — "
        f"{t.uploaded:,} files {upload_word} ({size(t.uploaded_bytes)}), {t.unchanged:,} unchanged, "
        f"{t.deferred:,} deferred, {t.failed:,} failed",
        "",
        _table(head + rows),
    ]
    if report.dry_run and t.by_reason:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(t.by_reason.items()))
        lines += ["", f"reasons: {reasons}"]
    lines += _problem_lines(report.problems, report.problems_truncated, "see the run report for the full list")
    if report.report_key:
        lines += ["", f"report: s3://{report.bucket}/{report.report_key}"]
    elif report.error:
        lines += ["", f"note: {report.error}"]
    return "\n".join(lines)


def _inventory(args: argparse.Namespace) -> int:
    root_text = args.library_root or os.environ.get("LIBRARY_ROOT") or "/library"
    from pathlib import Path

    root = Path(root_text)
    if not root.is_dir():
        raise ConfigError(f"LIBRARY_ROOT {root} {'is not a directory' if root.exists() else 'does not exist'}")
    rows = inventory(root, parse_folders(args.include, args.only))
    if args.output == "json":
        json.dump({"library_root": str(root), "folders": [asdict(r) for r in rows]}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    table = [["folder", "files", "size", "newest", "backup", "marker"]]
    for r in rows:
        newest = utc_iso(r.newest_mtime) if r.newest_mtime else "-"
        status = "backed up" if r.backed_up else "skipped"
        marker = "ok" if r.marker else ("missing" if r.exists else "-")
        table.append([f"{r.folder}/", f"{r.files:,}", size(r.bytes), newest, status, marker])
    print(f"library {root}\n")
    print(_table(table))
    return EXIT_OK


def _verify(args: argparse.Namespace, settings: SyncSettings, store: ObjectStore) -> int:
    result = verify(settings, store)
    if args.output == "json":
        data: dict[str, Any] = asdict(result)
        data["ok"] = result.ok
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        verdict = "ok" if result.ok else "MISMATCH"
        runs = f"{result.reports} run{'' if result.reports == 1 else 's'}"
        print(
            f"verify {verdict}: {result.verified:,} of {result.recorded:,} recorded objects match "
            f"(manifests of {runs}); {result.missing:,} missing, {result.size_mismatch:,} size "
            f"and {result.etag_mismatch:,} ETag mismatches; {result.unrecorded:,} objects not in any manifest"
        )
        for p in result.problems:
            print(f"  {p['kind']:<14} {p['key']}")
    return EXIT_OK if result.ok else EXIT_PARTIAL


class _RestoreLog:
    """One line per file that needs attention (and per download unless quiet), for logs and pipes."""

    def __init__(self, log: LineLog) -> None:
        self.log = log

    def listed(self, obj: RemoteObject) -> None:
        pass

    def finished(self, result: FileResult) -> None:
        path = result.path
        if result.fate is Fate.DOWNLOADED:
            if not self.log.quiet:
                self.log.emit(
                    "info", "downloaded", f"restored {path} ({size(result.size)})", path=path, size=result.size
                )
        elif result.fate is Fate.PENDING:
            what = "restore requested" if result.pending_state == "requested" else "restore in progress"
            self.log.emit(
                "info",
                "pending",
                f"pending {path}: {result.storage_class}, {what} ({result.estimate})",
                path=path,
                storage_class=result.storage_class,
                state=result.pending_state,
            )
        elif result.fate is Fate.CONFLICT:
            self.log.emit("warning", "conflict", f"conflict {path}: {result.detail}", path=path, detail=result.detail)
        elif result.fate is Fate.FAILED:
            self.log.emit("error", "failed", f"failed {path}: {result.detail}", path=path, error=result.detail)


class _RestoreProgress(_RestoreLog):
    """A live bar on a terminal: bytes handled against bytes listed so far; problems print above it."""

    def __init__(self, log: LineLog) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        super().__init__(log)
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]restore"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(binary_units=True),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("restore", total=0, files="0 files")
        self._lock = threading.Lock()
        self._listed = 0
        self._done = 0
        self.log.stream = self.console.file

    def __enter__(self) -> _RestoreProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def listed(self, obj: RemoteObject) -> None:
        with self._lock:
            self._listed += 1
            total = (self.progress.tasks[0].total or 0) + obj.size
            self.progress.update(self.task, total=total, files=f"{self._done:,}/{self._listed:,} files")

    def finished(self, result: FileResult) -> None:
        with self._lock:
            self._done += 1
            self.progress.update(self.task, advance=result.size, files=f"{self._done:,}/{self._listed:,} files")
        if result.fate in (Fate.CONFLICT, Fate.FAILED, Fate.PENDING):
            super().finished(result)


def _restore(args: argparse.Namespace) -> int:
    settings = restore_settings(args)
    store = ObjectStore(settings.s3)
    log = LineLog(args.log_format, quiet=args.quiet)
    if sys.stderr.isatty() and not args.no_progress and args.log_format == "text":
        with _RestoreProgress(log) as display:
            report = run_restore(settings, store, observer=display)
    else:
        report = run_restore(settings, store, observer=_RestoreLog(log))
    if args.output == "json":
        json.dump(report.to_json(), sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(_restore_text(report))
    if report.status == "aborted":
        _fail(f"restore aborted: {report.error}", report.exit_code, args.log_format)
    return report.exit_code


def _restore_row(name: str, st: RestoreStats) -> list[str]:
    return [
        name,
        f"{st.objects:,}",
        size(st.bytes),
        f"{st.downloaded:,}",
        size(st.downloaded_bytes),
        f"{st.already_there:,}",
        f"{st.conflicts:,}",
        f"{st.failed:,}",
        f"{st.pending:,}",
    ]


def _restore_text(report: RestoreReport) -> str:
    t = report.totals
    head = [["folder", "objects", "size", "downloaded", "bytes", "already there", "conflicts", "failed", "pending"]]
    rows = [_restore_row(f"{name}/", st) for name, st in report.per_folder.items()]
    rows.append(_restore_row("total", t))
    lines = [
        f"restore {report.status} in {report.duration_seconds:.1f}s — {t.downloaded:,} files downloaded "
        f"({size(t.downloaded_bytes)}), {t.already_there:,} already there ({size(t.already_there_bytes)}), "
        f"{t.conflicts:,} conflicts, {t.failed:,} failed, {t.pending:,} pending",
        f"from s3://{report.bucket}/{report.media_prefix} into {report.target}",
        "",
        _table(head + rows),
    ]
    if report.records_note:
        lines += ["", f"note: {report.records_note}"]
    if report.pending:
        lines += ["", f"pending archived objects ({t.pending:,}, {size(t.pending_bytes)}):"]
        lines += [f"  {p['storage_class']:<13} {p['state']:<12} {p['path']}" for p in report.pending[:50]]
        if len(report.pending) > 50 or report.pending_truncated:
            lines.append("  … -o json lists the first 1,000")
    lines += _problem_lines(report.problems, report.problems_truncated, "-o json lists the first 1,000")
    if report.markers_created:
        lines += ["", ".immich markers created in " + ", ".join(f"{f}/" for f in report.markers_created)]
    lines += ["", "next steps:"]
    lines += [f"  {n}. {step}" for n, step in enumerate(report.next_steps, start=1)]
    return "\n".join(lines)
