"""The Jobs tab: the sync CronJob, its Job history, and the selected Job's pod log following live."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from immich_tui.services import clock
from immich_tui.services.describe import ObjectRef
from immich_tui.services.media import JobHistory, JobInfo
from immich_tui.services.status import Services
from immich_tui.widgets.logview import LogView
from immich_tui.widgets.pane import NARROW, Pane
from sync_engine.text import one_line

JOBS_SHOWN = 50
LOG_TAIL = 2_000
STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow", "pending": "yellow"}
LEFT_SHARE = 0.6  # side by side, the Jobs take what their columns need, at most this share of the width
NAME_CELLS = 22  # a longer Job name (a restore's) is elided in the table; the line under it has it whole
REASON_CELLS = 16


def short_name(name: str, prefix: str) -> str:
    """`…-29929110` for `immich-media-offsite-sync-29929110`: the CronJob's name is on the line above."""
    return f"…-{name.removeprefix(prefix)}" if name.startswith(prefix) else name


def elide(text: str, cells: int) -> str:
    """At most `cells` characters, the cut marked: so one long value cannot push the other columns away."""
    return text if len(text) <= cells else text[: cells - 1] + "…"


class JobsPane(Pane):
    title = "Jobs"
    placeholder = "jobs-cronjob"
    poll_seconds = 10.0
    help_keys = (("↑↓", "pick a Job: its log follows"),)

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(services, **kwargs)
        self.history: JobHistory | None = None
        self.selected: str | None = None  # Job name whose log is shown
        self.follow_job: str | None = None  # a Job just triggered: select it once it shows up
        self._opening: Worker[Any] | None = None
        self._waiting_for_pod = False  # the selected Job runs but its pod is not listed yet

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("reading the CronJob…", id="jobs-cronjob")
        with Horizontal(id="jobs-split"):
            with Vertical(id="jobs-left"):
                table: DataTable[str] = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
                table.add_columns("Job", "Result", "Started (UTC)", "Took", "Reason")
                table.border_title = "Jobs"
                yield table
                yield Static("", id="jobs-detail")
            with Vertical(id="jobs-log-box"):
                yield Static("select a Job to see its log", id="jobs-log-status")
                log = LogView(id="jobs-log")
                log.border_title = "Log"
                yield log

    def due(self) -> bool:
        """Every few seconds while a Job is starting, so its log opens as soon as its pod exists."""
        starting = self.follow_job is not None or self._log_status_is_waiting()
        if starting and self.loaded_at is not None and time.monotonic() - self.loaded_at >= 2.0:
            return True
        return super().due()

    @property
    def has_data(self) -> bool:
        return self.history is not None

    def fetch(self) -> JobHistory:
        return self.services.media.history(limit=JOBS_SHOWN)

    def show(self, data: Any) -> None:
        self.history = data
        self.render_tables()

    def render_tables(self) -> None:
        data = self.history
        if data is None:
            return
        cj = data.cronjob
        nxt = "suspended" if cj.suspended else f"next run {clock.ago(cj.next_run)}" if cj.next_run else "no next run"
        state = "[yellow]SUSPENDED[/]" if cj.suspended else "[green]active[/]"
        warning = f"  [red]{cj.schedule_error}[/]" if cj.schedule_error else ""
        self.query_one("#jobs-cronjob", Static).update(
            f" cronjob/{cj.name}  [b]{cj.schedule}[/] ({cj.timezone})  {state}  {nxt}  "
            f"· {len(data.jobs)} of {data.total} jobs{warning}"
        )
        table = self.query_one("#jobs-table", DataTable)
        cursor = table.cursor_row
        current = self._highlighted()
        table.clear()
        shown = [j for j in data.jobs if self.matches(j.name, j.status, j.exit_reason or "")]
        for job in shown:
            table.add_row(*self._row(job, f"{cj.name}-"), key=job.name)
        self.resort(table)
        self.call_after_refresh(self._fit_table)
        if self.follow_job and any(j.name == self.follow_job for j in shown):
            table.move_cursor(row=table.get_row_index(self.follow_job))
            self.follow_job = None
        elif current is not None and any(j.name == current for j in shown):
            table.move_cursor(row=table.get_row_index(current))
        elif shown:
            table.move_cursor(row=min(cursor, len(shown) - 1))
        self._select_current()

    @staticmethod
    def _row(job: JobInfo, prefix: str) -> tuple[str | Text, ...]:
        style = STATUS_STYLE.get(job.status, "white")
        started = f"{job.started:%m-%d %H:%M}" if job.started else "-"
        took = clock.short(job.duration_seconds) if job.duration_seconds is not None else "-"
        name = elide(short_name(job.name, prefix), NAME_CELLS) + (" ✋" if job.manual else "")
        reason = elide(job.exit_reason or "", REASON_CELLS)
        return Text(name), Text(job.status, style=style), started, took, Text(reason)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_table)

    def _fit_table(self) -> None:
        """Side by side, the Jobs get the width their columns need (every column readable, the reason too)
        and the log the rest; stacked (a narrow terminal, `.-narrow` in the CSS) each gets the full width."""
        left, table = self.query_one("#jobs-left"), self.query_one("#jobs-table", DataTable)
        if self.size.width < NARROW:
            left.styles.width = None
            return
        gutter = table.styles.gutter.width + table.styles.scrollbar_size_vertical
        needed = sum(c.get_render_width(table) for c in table.ordered_columns) + gutter
        left.styles.width = max(24, min(needed, int(self.size.width * LEFT_SHARE)))

    def _highlighted(self) -> str | None:
        table = self.query_one("#jobs-table", DataTable)
        if table.row_count == 0:
            return None
        value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(value) if value is not None else None

    def selected_ref(self) -> ObjectRef | None:
        name = self._highlighted()
        return ObjectRef("Job", name, self.services.target.namespace) if name else None

    def _show_detail(self, job: JobInfo | None) -> None:
        """The highlighted Job whole: its full name and reason, which the table's columns elide."""
        detail = self.query_one("#jobs-detail", Static)
        if job is None:
            detail.update("")
            return
        line = Text(f"job/{job.name} · ")
        line.append(job.status, style=STATUS_STYLE.get(job.status, "white"))
        if job.exit_reason:
            line.append(f" · {job.exit_reason}", style="red" if job.status == "failed" else "")
        detail.update(line)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._select_current()

    def _select_current(self) -> None:
        table = self.query_one("#jobs-table", DataTable)
        if self.history is None or table.row_count == 0:
            self._show_detail(None)
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        job = next((j for j in self.history.jobs if j.name == name), None)
        self._show_detail(job)
        if job is None:
            return
        if name == self.selected and not (job.pod and self._log_status_is_waiting()):
            return
        self.selected = name
        status = self.query_one("#jobs-log-status", Static)
        log = self.query_one(LogView)
        log.detach()
        log.clear()
        self._waiting_for_pod = not job.pod and job.status in ("pending", "running")
        if not job.pod:
            status.update(" no pod: not started yet, or removed after the Job's TTL")
            return
        status.update(f" pod/{job.pod} · opening log…")
        pod = job.pod
        self._opening = self.run_worker(
            lambda: self.services.media.logs(pod, follow=True, tail=LOG_TAIL),
            thread=True,
            group="jobs-log-open",
            name=pod,
            exit_on_error=False,
        )

    def _log_status_is_waiting(self) -> bool:
        return self.selected is not None and self._waiting_for_pod

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._opening:
            super().on_worker_state_changed(event)
            return
        status = self.query_one("#jobs-log-status", Static)
        if event.state == WorkerState.SUCCESS:
            self.query_one(LogView).attach(event.worker.result)
            status.update(f" pod/{event.worker.name} · following")
        elif event.state == WorkerState.ERROR:
            status.update(f" [red]pod/{event.worker.name}: {one_line(event.worker.error or RuntimeError())}[/]")

    def on_log_view_ended(self, event: LogView.Ended) -> None:
        status = self.query_one("#jobs-log-status", Static)
        status.update(f" pod/{self._pod_name()} · log ended")
        self.load()  # the Job's result is in by now

    def on_log_view_failed(self, event: LogView.Failed) -> None:
        self.query_one("#jobs-log-status", Static).update(f" [red]log: {event.message}[/]")

    def _pod_name(self) -> str:
        job = next((j for j in (self.history.jobs if self.history else []) if j.name == self.selected), None)
        return job.pod if job else "?"

    def show_job(self, name: str) -> None:
        """After a trigger: reload and select the new Job as soon as it is listed."""
        self.follow_job = name
        self.load()

    def apply_filter(self, text: str, target: Widget | None = None) -> None:
        """The log when it is the widget filtered, else the Jobs table."""
        if isinstance(target, LogView):
            target.set_filter(text)
            self.filter_problem = target.filter_problem
            return
        super().apply_filter(text, target)
