"""How a run talks to people and to log collectors.

On a terminal: a live progress display, when the display library (rich) is installed; the CronJob
image does not install it, and there (or with `--no-progress`) a terminal gets the line log too.
Otherwise: one line per event, as text or JSON (`--log-format json` for the CronJob, so log pipelines
can parse it). Nothing printed here ever contains credentials: events carry keys, sizes and S3 error
codes only. Nor does it carry a raw control character from a file name: text lines show them escaped
(`text.printable`), JSON lines as `\\u` escapes that decode to the exact name (`text.dumps`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self, TextIO, TypeVar

from sync_engine.models import Fate, FileResult, Outcome, PlanItem, RemoteObject, ScanProblem, UploadResult
from sync_engine.text import dumps, printable, size


class LineLog:
    """One line per event (of a backup or plan): `text` for people reading `kubectl logs`, `json` for log pipelines."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def emit(self, level: str, event: str, message: str, **fields: Any) -> None:
        now = datetime.now(UTC)
        if self.fmt == "json":
            record = {"time": now.isoformat(timespec="milliseconds"), "level": level, "event": event}
            record.update(fields)
            record["msg"] = message
            line = dumps(record, default=str)
        else:
            # A message quotes paths and S3's errors, which quote keys: whatever a name holds, the
            # terminal shows it instead of acting on it.
            line = f"{now:%Y-%m-%dT%H:%M:%SZ} {level.upper():5} {printable(message)}"
        with self._lock:
            print(line, file=self.stream, flush=True)

    # Observer ------------------------------------------------------------------------------------
    def folder_started(self, folder: str) -> None:
        pass  # per-folder results are in the summary; a line here would precede setup errors

    def planned(self, item: PlanItem) -> None:
        pass

    def problem(self, problem: ScanProblem) -> None:
        path = printable(problem.rel)
        self.emit("warning", problem.kind.value, f"skipped {path}: {problem.detail}", path=path)

    def finished(self, result: UploadResult) -> None:
        rel = printable(result.item.local.rel)
        if result.outcome is Outcome.UPLOADED:
            if not self.quiet:
                self.emit(
                    "info",
                    "uploaded",
                    f"uploaded {rel} ({size(result.size)}, {result.item.reason.value})",
                    key=result.item.key,
                    size=result.size,
                    reason=result.item.reason.value,
                    etag=result.etag,
                )
        elif result.outcome is Outcome.SAME_CONTENT:
            if not self.quiet:
                self.emit("info", "same-content", f"unchanged {rel} (content matches the stored ETag)", path=rel)
        elif result.outcome is Outcome.WOULD_UPLOAD:
            pass  # a plan's upload: its summary counts them, `--files` lists them
        elif result.outcome is Outcome.HELD:
            if not self.quiet:
                self.emit(
                    "info",
                    "held",
                    f"held {rel}: changed content over a stored object, decided once every file is compared",
                    path=rel,
                )
        elif result.outcome is Outcome.DEFERRED:
            self.emit("info", "deferred", f"deferred {rel}: modified within the settle window", path=rel)
        elif result.outcome is Outcome.FAILED:
            self.emit("error", "failed", f"failed {rel}: {result.error}", path=rel, error=result.error)
        else:
            self.emit("warning", result.outcome.value, f"{result.outcome.value} {rel}: {result.error}", path=rel)


class RestoreLog:
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


# -- live displays on a terminal -----------------------------------------------------------------------


def _live_bar(label: str, *, speed: bool, console: Any = None) -> tuple[Any, Any] | None:
    """A console (on stderr unless given) and a progress bar on it: label, bar, file count, bytes
    (speed), elapsed time.

    None when rich is not installed (the CronJob image carries only what the CronJob runs)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
    except ImportError:
        return None
    console = console or Console(stderr=True)
    columns: list[Any] = [TextColumn(label), BarColumn(), TextColumn("{task.fields[files]}")]
    columns += [DownloadColumn(binary_units=True), *([TransferSpeedColumn()] if speed else []), TimeElapsedColumn()]
    return console, Progress(*columns, console=console, transient=False)


class _Live:
    """Starts and stops the bar; problems keep printing above it as lines, through the console."""

    def __init__(self, log: LineLog, console: Any, progress: Any) -> None:
        self.log = log
        self.console = console
        self.progress = progress
        self._lock = threading.Lock()
        self.log.stream = console.file

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


@dataclass
class SendCounts:
    """The backup display's figures, kept apart: what was sent, what a read proved already stored, and
    what was queued but not sent. A file counts once, when its worker is done: at the end `sent` and
    `sent_bytes` are the summary's uploaded files and bytes."""

    sent: int = 0
    sent_bytes: int = 0
    same: int = 0  # read, and proven equal to the object by its ETag: nothing sent
    held: int = 0  # changed content over an object, waiting for the end-of-run overwrite decision
    not_sent: int = 0  # deferred, vanished, unstable or failed
    pending: int = 0  # queued, not done yet
    pending_bytes: int = 0

    def queued(self, item: PlanItem) -> None:
        self.pending += 1
        self.pending_bytes += item.local.size

    def done(self, result: UploadResult) -> None:
        item = result.item
        if item.overwrite:  # the second pass over a held file: it leaves `held` for what happens now
            self.held -= 1
        else:
            self.pending -= 1
            self.pending_bytes -= item.local.size
        outcome = result.outcome
        if outcome in (Outcome.UPLOADED, Outcome.WOULD_UPLOAD):
            self.sent += 1
            self.sent_bytes += result.size
        elif outcome is Outcome.SAME_CONTENT:
            self.same += 1
        elif outcome is Outcome.HELD:
            self.held += 1
        else:
            self.not_sent += 1

    def text(self, verb: str) -> str:
        line = f"{self.sent:,}/{self.sent + self.pending:,} files {verb}, {self.same:,} same content"
        if self.held:
            line += f", {self.held:,} held"
        if self.not_sent:
            line += f", {self.not_sent:,} not sent"
        return line


class ProgressDisplay(_Live):
    """A live display of a backup (or plan): what was scanned, and, apart, what was sent (or would
    be) of what is queued and what turned out to be stored already."""

    @classmethod
    def open(cls, log: LineLog, *, dry_run: bool = False, console: Any = None) -> ProgressDisplay | None:
        bar = _live_bar("[bold]{task.description}", speed=not dry_run, console=console)
        return cls(log, *bar, dry_run=dry_run) if bar else None

    def __init__(self, log: LineLog, console: Any, progress: Any, *, dry_run: bool = False) -> None:
        super().__init__(log, console, progress)
        self.verb = "to upload" if dry_run else "uploaded"
        self.counts = SendCounts()
        self.scan = self.progress.add_task("scan", total=None, files="0 files", completed=0)
        self.upload = self.progress.add_task(
            "to upload" if dry_run else "upload", total=0, files=self.counts.text(self.verb), completed=0
        )
        self._scanned = 0

    def folder_started(self, folder: str) -> None:
        self.progress.update(self.scan, description=f"scan {folder}/")

    def planned(self, item: PlanItem) -> None:
        with self._lock:
            self._scanned += 1
            if item.uploads:
                self.counts.queued(item)
                self._show()
            self.progress.update(self.scan, files=f"{self._scanned:,} files", advance=item.local.size)

    def problem(self, problem: ScanProblem) -> None:
        self.log.problem(problem)

    def finished(self, result: UploadResult) -> None:
        with self._lock:
            self.counts.done(result)
            self._show()
        if result.outcome not in (Outcome.UPLOADED, Outcome.SAME_CONTENT, Outcome.WOULD_UPLOAD, Outcome.HELD):
            self.log.finished(result)

    def _show(self) -> None:
        """Bytes: sent so far of what may still be sent; a file found stored already leaves the total."""
        counts = self.counts
        self.progress.update(
            self.upload,
            completed=counts.sent_bytes,
            total=counts.sent_bytes + counts.pending_bytes,
            files=counts.text(self.verb),
        )


class RestoreProgress(_Live):
    """A live bar of a restore: bytes handled against bytes listed so far; problems print above it."""

    @classmethod
    def open(cls, log: LineLog) -> RestoreProgress | None:
        bar = _live_bar("[bold]restore", speed=False)
        return cls(log, *bar) if bar else None

    def __init__(self, log: LineLog, console: Any, progress: Any) -> None:
        super().__init__(log, console, progress)
        self.lines = RestoreLog(log)
        self.task = self.progress.add_task("restore", total=0, files="0 files")
        self._listed = 0
        self._done = 0

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
            self.lines.finished(result)


Display = TypeVar("Display", bound=_Live)
Lines = TypeVar("Lines")


def live_or_lines(
    open_display: Callable[[LineLog], Display | None], log: LineLog, lines: Lines, *, interactive: bool
) -> AbstractContextManager[Display | Lines]:
    """The live display when the run is interactive and it can be shown; the line observer otherwise."""
    display = open_display(log) if interactive else None
    return display if display is not None else contextlib.nullcontext(lines)
