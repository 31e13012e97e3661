"""How a run talks to people and to log collectors.

On a terminal: a live progress display. Otherwise: one line per event, as text or JSON
(`--log-format json` for the CronJob, so log pipelines can parse it). Nothing printed here ever
contains credentials: events carry keys, sizes and S3 error codes only.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

import humanize

from sync_engine.models import Outcome, PlanItem, ScanProblem, UploadResult
from sync_engine.scan import printable


def size(n: int) -> str:
    return humanize.naturalsize(n, binary=True, format="%.1f")


class LineLog:
    """One line per event: `text` for people reading `kubectl logs`, `json` for log pipelines."""

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
            line = json.dumps(record, ensure_ascii=False, default=str)
        else:
            line = f"{now:%Y-%m-%dT%H:%M:%SZ} {level.upper():5} {message}"
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
        elif result.outcome is Outcome.DEFERRED:
            self.emit("info", "deferred", f"deferred {rel}: modified within the settle window", path=rel)
        elif result.outcome is Outcome.FAILED:
            self.emit("error", "failed", f"failed {rel}: {result.error}", path=rel, error=result.error)
        else:
            self.emit("warning", result.outcome.value, f"{result.outcome.value} {rel}: {result.error}", path=rel)


class ProgressDisplay:
    """A live display for interactive runs; warnings still print above it as lines."""

    def __init__(self, log: LineLog) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.log = log
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.scan = self.progress.add_task("scan", total=None, files="0 files", completed=0)
        self.upload = self.progress.add_task("upload", total=0, files="0 files", completed=0)
        self._lock = threading.Lock()
        self._scanned = 0
        self._queued = 0
        self._done = 0
        self.log.stream = self.console.file

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def folder_started(self, folder: str) -> None:
        self.progress.update(self.scan, description=f"scan {folder}/")

    def planned(self, item: PlanItem) -> None:
        with self._lock:
            self._scanned += 1
            if item.uploads:
                self._queued += 1
                self.progress.update(self.upload, total=(self.progress.tasks[1].total or 0) + item.local.size)
            self.progress.update(self.scan, files=f"{self._scanned:,} files", advance=item.local.size)

    def problem(self, problem: ScanProblem) -> None:
        self.log.problem(problem)

    def finished(self, result: UploadResult) -> None:
        with self._lock:
            self._done += 1
            self.progress.update(
                self.upload, advance=result.item.local.size, files=f"{self._done:,}/{self._queued:,} files"
            )
        if result.outcome not in (Outcome.UPLOADED, Outcome.SAME_CONTENT):
            self.log.finished(result)
