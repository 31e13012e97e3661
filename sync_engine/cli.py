"""`immich-sync`: backup, plan, inventory, verify and restore, for the CronJob and for people.

This module is the command line only: the flags of every setting come from the table in `settings.py`,
the work from the engine's modules, and every error that stops a command is an `EngineError` carrying
its exit code (documented in the README, defined in `errors.py`): 0 success, 1 partial (some files not
backed up or verify found differences; restore: some files failed or conflict with local ones),
2 configuration error (nothing was changed), 3 aborted (S3 unreachable or the run was interrupted;
in-flight uploads were aborted), 4 restore done except archived objects S3 is still restoring (run it
again later), 130 interrupted before any work.

Credentials from a secrets directory (`--secrets-dir`, a mounted Secret) go to the store as explicit
credentials, which botocore and the direct signer both use: they are never copied into `os.environ`,
where every child process and any later environment dump would carry them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sync_engine import __version__
from sync_engine.backup import run
from sync_engine.config import (
    SyncSettings,
    library_root,
    parse_folders,
    restore_settings,
    secret_files,
    sync_settings,
)
from sync_engine.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_PENDING, EngineError
from sync_engine.inventory import inventory
from sync_engine.models import FolderStats, Outcome, UploadResult
from sync_engine.output import LineLog, ProgressDisplay, RestoreLog, RestoreProgress, live_or_lines
from sync_engine.report import RunReport, utc_iso
from sync_engine.scan import printable
from sync_engine.settings import (
    BACKUP,
    CREDENTIAL_VARIABLES,
    INVENTORY,
    PLAN,
    RESTORE,
    SETTING,
    VERIFY,
    SecretFiles,
    add_flags,
)
from sync_engine.store import ObjectStore, StaticCredentials, key_problem
from sync_engine.text import dumps, printable_lines, size, table

if TYPE_CHECKING:  # restore and verify are imported by their commands: a nightly backup loads neither
    from sync_engine.restore import RestoreReport, RestoreStats

PROG = "immich-sync"


def _output_flag(parser: argparse.ArgumentParser, what: str = "result format") -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help=what)


def _log_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("log")
    group.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    group.add_argument("--no-progress", action="store_true", help="line logs even on a terminal")
    group.add_argument("-q", "--quiet", action="store_true", help="log problems and the summary only")


def _command(sub: Any, name: str, help_text: str, *, logs: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    """One subcommand: its output flag, the flags of every setting it takes, and the log flags."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, **kwargs)
    _output_flag(parser, "summary format" if name == RESTORE else "result format")
    add_flags(parser, name)
    if logs:
        _log_flags(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Append-only, verified backup of an Immich library to S3.",
        epilog="Settings: a flag, else its variable, else a file of that name in IMMICH_SYNC_SECRETS_DIR "
        "(--secrets-dir: a Secret mounted as a volume, credentials included), else the default. "
        f"Exit codes: 0 ok, 1 partial, 2 configuration error, 3 aborted, {EXIT_PENDING} restore waiting "
        "for archived objects.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(sub, BACKUP, "upload what is new or changed (the CronJob's command)")
    plan = _command(sub, PLAN, "dry run: what backup would upload and why")
    plan.add_argument(
        "--files", action="store_true", help="also list every file that would be uploaded, with its reason"
    )
    _command(sub, INVENTORY, "local library statistics per folder", logs=False)
    _command(sub, VERIFY, "compare S3 with the recorded manifests (needs read access)")
    _command(
        sub,
        RESTORE,
        "download the media back into a directory, verified and resumable (disaster recovery)",
        description="Download every object of the selected Immich folders into PATH (key minus MEDIA_PREFIX), "
        "verify each against the backup's manifests, and rename it into place. Run it with the restorer's "
        "read-only credentials (s3:GetObject, s3:ListBucket, s3:RestoreObject). Re-running finishes an "
        "interrupted restore; archived objects (GLACIER, DEEP_ARCHIVE) are requested from S3 and downloaded "
        "by a later run.",
        epilog=f"Exit codes: 0 done, 1 some files failed or conflict with local files, 2 configuration error "
        f"(nothing written), 3 aborted (run it again to finish), {EXIT_PENDING} done except archived objects "
        "S3 is still restoring (run it again later).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Kubernetes stops a pod with SIGTERM: treat it like Ctrl-C so in-flight uploads are aborted.
    previous = signal.signal(signal.SIGTERM, _sigterm)
    fmt = getattr(args, "log_format", "text")
    try:
        if args.command == INVENTORY:
            return _inventory(args)
        if args.command == RESTORE:
            return _restore(args)
        files = secret_files(args, os.environ)
        settings = sync_settings(args, os.environ, files)
        store = ObjectStore(settings.s3, credentials=file_credentials(files, os.environ))
        if args.command == VERIFY:
            store.check_access(settings.report_prefix)
            return _verify(args, settings, store)
        return _backup(args, settings, store, dry_run=args.command == PLAN)
    except EngineError as exc:
        return _fail(exc.describe(), exc.exit_code, fmt)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED, fmt)
    finally:
        signal.signal(signal.SIGTERM, previous)


def file_credentials(files: SecretFiles, env: Mapping[str, str]) -> StaticCredentials | None:
    """The secrets directory's keys, or None for botocore's own chain.

    The environment's keys come first, as they do in botocore's chain, so a person running the engine by
    hand with AWS_ACCESS_KEY_ID set gets those; the directory's come before the rest of the chain (profiles,
    web identity, instance metadata). Each key must be printable ASCII without spaces (the same check as
    for the environment's, `store.key_problem`), and a pair is complete or refused: half a pair is a
    Secret missing a key, never a reason to fall through to some other identity."""
    if files.directory is None or any(env.get(name, "").strip() for name in CREDENTIAL_VARIABLES[:2]):
        return None
    access_key, secret_key, token = (files.get(name) for name in CREDENTIAL_VARIABLES)
    if not access_key and not secret_key:
        return None
    error = SETTING["secrets_dir"].error
    if not access_key or not secret_key:
        key_id, secret = CREDENTIAL_VARIABLES[:2]
        present, missing = (key_id, secret) if access_key else (secret, key_id)
        raise error(f"{files.directory} holds {present} but not {missing}")
    for name in CREDENTIAL_VARIABLES:
        problem = key_problem(files.get(name))
        if problem:
            raise error(f"{files.path(name)} {problem}: S3 keys are printable ASCII, without spaces")
    return StaticCredentials(access_key, secret_key, token or None)


def _sigterm(signum: int, frame: object) -> None:
    # First signal: stop and clean up. Later ones must not interrupt the clean-up itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _fail(message: str, code: int, log_format: str = "text") -> int:
    """One line on stderr; a JSON record when the run logs JSON, so log pipelines see it too."""
    if log_format == "json":
        LineLog("json").emit("error", "error", f"{PROG}: error: {message}", exit_code=code)
    else:
        print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    return code


class _PlanFiles(LineLog):
    """Lists what a plan would upload, once its outcome is known (a file whose bytes turn out to be the
    stored object's is not listed): streamed as text lines, or kept for the JSON document."""

    def __init__(self, log: LineLog, as_json: bool) -> None:
        super().__init__(log.fmt, log.stream, quiet=log.quiet)
        self.as_json = as_json
        self.files: list[dict[str, Any]] = []

    def finished(self, result: UploadResult) -> None:
        if result.outcome is not Outcome.WOULD_UPLOAD:
            super().finished(result)
            return
        item = result.item
        rel = printable(item.local.rel)
        with self._lock:
            if self.as_json:
                self.files.append({"path": rel, "key": item.key, "size": result.size, "reason": item.reason.value})
            else:
                print(f"{item.reason.value:<13} {size(result.size):>10}  {rel}", flush=True)


def _interactive(args: argparse.Namespace) -> bool:
    """A person watches: stderr is a terminal and nobody asked for lines."""
    return sys.stderr.isatty() and not args.no_progress and args.log_format == "text"


def _backup(args: argparse.Namespace, settings: SyncSettings, store: ObjectStore, *, dry_run: bool) -> int:
    log = LineLog(args.log_format, quiet=args.quiet)
    lister = _PlanFiles(log, args.output == "json") if dry_run and args.files else None
    interactive = _interactive(args) and not lister
    display = functools.partial(ProgressDisplay.open, dry_run=dry_run)
    with live_or_lines(display, log, lister or log, interactive=interactive) as observer:
        report = run(settings, store, dry_run=dry_run, observer=observer)
    if args.output == "json":
        document = report.to_json()
        if lister is not None:
            document["files"] = lister.files
        print(dumps(document, indent=2))
    else:
        print(printable_lines(_report_text(report, settings)))
    if report.status == "aborted":
        _fail(f"run aborted: {report.error}", report.exit_code, args.log_format)
    elif report.status == "refused":
        _fail(report.error, report.exit_code, args.log_format)
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


def _report_text(report: RunReport, settings: SyncSettings) -> str:
    upload_word = "to upload" if report.dry_run else "uploaded"
    head = [["folder", "files", "size", upload_word, "bytes", "unchanged", "deferred", "changing", "failed"]]
    rows = [_row(f"{name}/", st, report.dry_run) for name, st in report.per_folder.items()]
    rows.append(_row("total", report.totals, report.dry_run))
    t = report.totals
    verb = "plan" if report.dry_run else "backup"
    lines = [
        f"{verb} {report.status} in {report.duration_seconds:.1f}s — "
        f"{t.uploaded:,} files {upload_word} ({size(t.uploaded_bytes)}), {t.unchanged:,} unchanged"
        + (f" ({t.same_content:,} checked by ETag: same content, not uploaded)" if t.same_content else "")
        + f", {t.deferred:,} deferred, {t.failed:,} failed"
        + (f", {t.kept:,} kept (not overwritten)" if t.kept else ""),
        "",
        table(head + rows, gap=2, numbers_right=True),
    ]
    mass = report.mass_change
    if mass.get("tripped"):
        lines += ["", f"SUSPICIOUS MASS CHANGE: {report.error}"]
    if report.overwrites:
        did = "would overwrite" if report.dry_run else "overwrote"
        lines += ["", f"{did} {len(report.overwrites):,} changed files (bucket versioning {report.versioning})"]
    if report.versioning_note:
        lines += [f"note: versioning: {report.versioning_note}"]
    if report.dry_run and t.by_reason:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(t.by_reason.items()))
        lines += ["", f"reasons: {reasons}"]
    lines += _problem_lines(report.problems, report.problems_truncated, "see the run report for the full list")
    orphans = report.orphan_uploads
    if orphans.get("aborted"):
        lines += ["", f"aborted {orphans['aborted']:,} unfinished multipart uploads left by a killed run"]
    lines += [f"note: {line}" for line in (orphans.get("note"), report.files_cache_note) if line]
    if report.report_key:
        lines += ["", f"report: s3://{report.bucket}/{report.report_key}"]
    elif report.error:
        lines += ["", f"note: {report.error}"]
    return "\n".join(lines)


def _inventory(args: argparse.Namespace) -> int:
    root = library_root(args, os.environ)
    rows = inventory(root, parse_folders(args.include, args.only))
    if args.output == "json":
        json.dump({"library_root": str(root), "folders": [asdict(r) for r in rows]}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    cells = [["folder", "files", "size", "newest", "backup", "marker"]]
    for r in rows:
        newest = utc_iso(r.newest_mtime) if r.newest_mtime else "-"
        status = "backed up" if r.backed_up else "skipped"
        marker = "ok" if r.marker else ("missing" if r.exists else "-")
        cells.append([f"{r.folder}/", f"{r.files:,}", size(r.bytes), newest, status, marker])
    print(f"library {root}\n")
    print(table(cells, gap=2, numbers_right=True))
    return EXIT_OK


def _verify(args: argparse.Namespace, settings: SyncSettings, store: ObjectStore) -> int:
    from sync_engine.verify import verify

    result = verify(settings, store)
    if args.output == "json":
        data: dict[str, Any] = asdict(result)
        data["ok"] = result.ok
        print(dumps(data, indent=2))
    else:
        verdict = "ok" if result.ok else "MISMATCH"
        runs = f"{result.reports} run{'' if result.reports == 1 else 's'}"
        print(
            f"verify {verdict}: {result.verified:,} of {result.recorded:,} recorded objects match "
            f"(manifests of {runs}); {result.missing:,} missing, {result.size_mismatch:,} size "
            f"and {result.etag_mismatch:,} ETag mismatches; {result.unrecorded:,} objects not in any manifest"
            + (f"; {result.unreadable_manifests:,} manifests unreadable" if result.unreadable_manifests else "")
            + (f"; {result.bad_manifest_lines:,} manifest lines unreadable" if result.bad_manifest_lines else "")
            + (f"; {result.unconfirmed:,} uploads S3 did not confirm" if result.unconfirmed else "")
            + (f"; {result.not_comparable:,} SSE-KMS objects checked by size only" if result.not_comparable else "")
            + (f"; {result.tampering()}" if result.tampering() else "")
            + (f" (as of {result.as_of})" if result.as_of else "")
        )
        for note in result.notes:
            print(f"note: {printable(note)}")
        for p in result.problems:
            line = f" line {p['line']}" if "line" in p else ""
            detail = f": {printable(str(p['detail']))}" if p.get("detail") else ""
            print(f"  {p['kind']:<14} {printable(p['key'])}{line}{detail}")
    return EXIT_OK if result.ok else EXIT_PARTIAL


def _restore(args: argparse.Namespace) -> int:
    from sync_engine.restore import run_restore

    files = secret_files(args, os.environ)
    settings = restore_settings(args, os.environ, files)
    store = ObjectStore(settings.s3, credentials=file_credentials(files, os.environ))
    log = LineLog(args.log_format, quiet=args.quiet)
    with live_or_lines(RestoreProgress.open, log, RestoreLog(log), interactive=_interactive(args)) as observer:
        report = run_restore(settings, store, observer=observer)
    if args.output == "json":
        print(dumps(report.to_json(), indent=2))
    else:
        print(printable_lines(_restore_text(report)))
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
        f"from s3://{report.bucket}/{report.media_prefix} into {report.target}"
        + (f", as it was at {report.as_of}" if report.as_of else ""),
        "",
        table(head + rows, gap=2, numbers_right=True),
    ]
    if report.records_note:
        lines += ["", f"note: {report.records_note}"]
    lines += [f"note: {note}" for note in report.notes]
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
