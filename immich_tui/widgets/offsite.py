"""The Offsite tab: what the bucket holds per folder, the history of sync runs, and verify on demand.

Folder totals come from the latest successful run report (two requests, however big the bucket);
`l` lists the bucket for exact counts and storage classes, `v` runs the engine's verify. Both run on
worker threads and show progress in the status line; the tables never hold more than a few dozen rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Sparkline, Static
from textual.worker import Worker, WorkerState

from immich_tui.services import clock
from immich_tui.services.offsite import FolderObjects, OffsiteState, VerifyResult
from immich_tui.services.status import Services
from immich_tui.widgets.pane import Pane
from sync_engine.text import one_line, size

RUNS_SHOWN = 30


class OffsitePane(Pane):
    title = "Offsite"
    placeholder = "offsite-source"
    poll_seconds = 60.0

    BINDINGS = [
        Binding("l", "list_bucket", "List bucket"),
        Binding("v", "verify", "Verify"),
    ]
    help_keys = (("l", "list the bucket (exact counts)"), ("v", "verify against the run manifests"))

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(services, **kwargs)
        self.state: OffsiteState | None = None
        self.listed: list[FolderObjects] | None = None
        self._side_worker: Worker[Any] | None = None

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("reading run reports…", id="offsite-source")
        folders: DataTable[str] = DataTable(id="offsite-folders", cursor_type="row")
        folders.add_columns("Folder", "Objects", "Size", "Storage class", "Newest")
        folders.border_title = "Folders in the bucket"
        yield folders
        yield Static(" Bytes uploaded per run, oldest → newest", id="offsite-spark-title")
        yield Sparkline([], id="offsite-sparkline")
        runs: DataTable[str] = DataTable(id="offsite-runs", cursor_type="row", zebra_stripes=True)
        runs.add_columns("Started (UTC)", "Status", "Listing", "Uploaded", "Files", "Not stored", "Took")
        runs.border_title = "Sync runs"
        yield runs
        yield Static("", id="offsite-task")

    @property
    def has_data(self) -> bool:
        return self.state is not None

    def fetch(self) -> OffsiteState:
        return self.services.offsite().state(listing=False, report_limit=RUNS_SHOWN)

    def show(self, data: Any) -> None:
        self.state = data
        self.render_tables()

    def render_tables(self) -> None:
        state = self.state
        if state is None:
            return
        latest = state.reports.latest_ok
        if self.listed is not None:
            basis = "totals from a bucket listing"
        elif latest is not None and latest.started:
            basis = f"totals as of the run of {latest.started:%Y-%m-%d %H:%M} UTC (l lists the bucket)"
        else:
            basis = state.basis
        self.query_one("#offsite-source", Static).update(
            f" s3://{state.bucket}/{state.media_prefix} · via {state.source}\n {basis} · v verifies"
        )
        folders = self.query_one("#offsite-folders", DataTable)
        folders.clear()
        rows = self.listed if self.listed is not None else state.folders
        for f in rows:
            if not self.matches(f.folder):
                continue
            classes = ", ".join(f"{k} {v:,}" for k, v in sorted(f.storage_classes.items())) or "-"
            newest = f"{f.newest:%Y-%m-%d %H:%M}" if f.newest else "-"
            folders.add_row(f.folder, f"{f.objects:,}", size(f.bytes), classes, newest, key=f.folder)
        runs = self.query_one("#offsite-runs", DataTable)
        runs.clear()
        for r in state.reports.runs:
            if not self.matches(r.status, r.listing, r.key, f"{r.started:%Y-%m-%d %H:%M}" if r.started else ""):
                continue
            style = {"ok": "green", "partial": "yellow"}.get(r.status, "red")
            runs.add_row(
                f"{r.started:%Y-%m-%d %H:%M}" if r.started else "-",
                f"[{style}]{r.status}[/]",
                r.listing,
                f"{r.uploaded:,} ({size(r.uploaded_bytes)})",
                f"{r.files:,}",
                f"{r.deferred + r.failed + r.unstable:,}",
                clock.short(r.duration_seconds),
                key=r.key,
            )
        self.resort(folders)
        self.resort(runs)
        spark = [float(r.uploaded_bytes) for r in reversed(state.reports.runs)]
        self.query_one("#offsite-sparkline", Sparkline).data = spark or [0.0]

    # Actions on demand -------------------------------------------------------------------------
    def _start(self, label: str, fn: Callable[[], Any]) -> None:
        if self._side_worker is not None and self._side_worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            self.notify("still busy with the previous request", severity="warning")
            return
        self.query_one("#offsite-task", Static).update(f" {label}…")
        self._side_worker = self.run_worker(fn, thread=True, group="offsite-task", name=label, exit_on_error=False)

    def action_list_bucket(self) -> None:
        self._start("listing the bucket", lambda: self.services.offsite().folders_from_listing())

    def action_verify(self) -> None:
        self._start("verifying the bucket against the run manifests", lambda: self.services.offsite().verify())

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._side_worker:
            super().on_worker_state_changed(event)
            return
        line = self.query_one("#offsite-task", Static)
        if event.state == WorkerState.ERROR:
            line.update(f" [red]{event.worker.name} failed: {one_line(event.worker.error or RuntimeError())}[/]")
        elif event.state == WorkerState.SUCCESS:
            result = event.worker.result
            if isinstance(result, list):
                self.listed = result
                total = sum(f.objects for f in result)
                line.update(f" bucket listed: {total:,} objects, {size(sum(f.bytes for f in result))}")
                self.render_tables()
            else:
                verdict = "[green]verify ok[/]" if result.ok else "[red]verify found problems[/]"
                line.update(
                    f" {verdict}: {result.verified:,} of {result.recorded:,} recorded objects match; "
                    f"missing {result.missing}, size differs {result.size_mismatch}, "
                    f"ETag differs {result.etag_mismatch}, unrecorded {result.unrecorded:,} "
                    f"({result.reports} reports)" + _verify_extras(result)
                )


def _verify_extras(result: VerifyResult) -> str:
    """The problems a verify can have beyond differences, named only when there are some."""
    extras = [
        (result.unreadable_manifests, "manifests unreadable"),
        (result.bad_manifest_lines, "manifest lines unreadable"),
        (result.unconfirmed, "uploads S3 did not confirm"),
        (result.not_comparable, "SSE-KMS objects checked by size only"),
    ]
    return "".join(f"; {count:,} {what}" for count, what in extras if count)
