"""The Overview tab and the always-visible verdict chips: the verdict, explained, with what to do.

Below the verdict, the recent runs: one row per run, newest first, with its date as the axis of a bar
chart of the bytes it uploaded. The bars follow the square root of the bytes, so a quiet night still
shows next to a night that uploaded a whole album, and every bar has its value printed beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Static

from immich_tui.services import clock
from immich_tui.services.drill import LatestDrill
from immich_tui.services.health import Check, Verdict
from immich_tui.services.kube import context_name
from immich_tui.services.media import JobHistory
from immich_tui.services.offsite import OffsiteState, RunSummary
from immich_tui.services.status import StatusReport
from immich_tui.widgets.pane import Pane
from sync_engine.text import one_line, printable, size

STYLE = {"ok": "green", "stale": "red", "failing": "red", "unknown": "yellow", "error": "red"}
VERDICT_STYLE = {"healthy": "bold green", "degraded": "bold yellow", "error": "bold red"}


def check_style(check: Check, threshold_seconds: float) -> str:
    """Green fresh, yellow when three quarters of the way to stale, red stale or failing. The drill has its
    own threshold in days, which its check already applied: its state alone sets its colour."""
    if check.name == "drill":
        return STYLE.get(check.state, "dim")
    if check.state == "ok" and check.age_seconds is not None and check.age_seconds > 0.75 * threshold_seconds:
        return "yellow"
    return STYLE.get(check.state, "yellow")


def chips(verdict: Verdict | None, error: str = "") -> Text:
    text = Text()
    if verdict is None:
        return text.append("● " + (error or "loading…"), style="red" if error else "dim")
    threshold = verdict.stale_after_hours * 3600
    labels = {"media": "MEDIA", "database": "DB", "wal": "WAL", "drill": "DRILL"}
    for check in verdict.checks:
        if check.state == "off":
            continue  # no drill yet: nothing to show, and nothing wrong
        value = clock.short(check.age_seconds) if check.age_seconds is not None and check.name != "wal" else check.state
        text.append("● ", style=check_style(check, threshold))
        text.append(f"{labels[check.name]} {value}  ", style="bold")
    return text


def when(value: Any) -> str:
    return f"{clock.minute(value)} UTC" if value else "never"


def render(report: StatusReport) -> Text:
    """The Overview as one text block: plain functions of the status, so it reads the same in every test."""
    v = report.verdict
    threshold = v.stale_after_hours * 3600
    out = Text()
    headline = {
        "healthy": "Immich is safe offsite.",
        "degraded": "Immich needs attention.",
        "error": "The backup state cannot be read.",
    }[v.state]
    out.append(f" {headline}", style=VERDICT_STYLE[v.state])
    media_check, db_check, wal_check = (v.check(n) for n in ("media", "database", "wal"))
    history: JobHistory | None = report.media.value
    offsite: OffsiteState | None = report.offsite.value
    db = report.database.value
    last_sync = offsite.reports.latest_ok.started if offsite and offsite.reports.latest_ok else None
    if history and history.jobs:
        done = [j.started for j in history.jobs if j.kind == "sync" and j.status == "succeeded" and j.started]
        last_sync = max([t for t in (last_sync, *done[:1]) if t], default=None)
    if wal_check.state == "ok":
        loss_db = "the last WAL archived (continuous)"
    else:
        loss_db = when(db.last_backup) if db and db.last_backup else "an unknown time"
    out.append(
        f"  Worst-case loss if the cluster died now: photos since {when(last_sync)}"
        f" ({clock.short(clock.age_seconds(last_sync) or 0) if last_sync else '-'}), DB since {loss_db}.\n\n"
    )
    # Media
    out.append(" MEDIA  ", style="bold")
    if history is not None:
        cj = history.cronjob
        latest = history.latest_sync  # a media restore is no sync, however recent
        out.append("last sync   ")
        out.append(when(last_sync), style=check_style(media_check, threshold))
        if offsite and offsite.reports.latest_ok:
            run = offsite.reports.latest_ok
            out.append(f"  ✔ {run.uploaded} files, {size(run.uploaded_bytes)} in {clock.short(run.duration_seconds)}")
        nxt = (
            "suspended"
            if cj.suspended
            else f"in {clock.short(-(clock.age_seconds(cj.next_run) or 0))}"
            if cj.next_run
            else "-"
        )
        out.append(f"\n        schedule    {cj.schedule} ({cj.timezone})   next run {nxt}")
        if latest is not None:
            style = {"failed": "red", "succeeded": "green"}.get(latest.status, "yellow")
            out.append("\n        latest job  ")
            out.append(f"{latest.name} {latest.status}", style=style)
            if latest.exit_reason:
                out.append(f" — {latest.exit_reason}", style="red")
    else:
        out.append(report.media.error, style="red")
    out.append("\n        offsite     ")
    if offsite is not None:
        folders = [f for f in offsite.folders if f.objects]
        out.append(f"{offsite.total_objects:,} objects · {size(offsite.total_bytes)} · {len(folders)} folders")
        out.append(f"  in s3://{offsite.bucket}/{offsite.media_prefix}", style="dim")
        out.append(f"\n        read via    {offsite.source}", style="dim")
    else:
        out.append(report.offsite.error, style="yellow")
    # Database
    out.append("\n\n DB     ", style="bold")
    if db is not None:
        c = db.cluster
        out.append("last backup ")
        out.append(when(db.last_backup), style=check_style(db_check, threshold))
        method = {"plugin": "Barman Cloud Plugin", "barmanObjectStore": "in-tree barmanObjectStore"}.get(
            c.method, c.method
        )
        out.append(f"  ({method})")
        first = c.window.first_point
        days = f" ({int((clock.age_seconds(first) or 0) // 86400)} days)" if first else ""
        out.append(f"\n        recovery    {when(first)} → now{days}")
        out.append("\n        archiving   ")
        out.append(wal_check.detail, style=STYLE.get(wal_check.state, "yellow"))
        out.append(f"\n        cluster     {c.name}: {c.phase}, {c.ready_instances}/{c.instances} ready")
        for s in db.schedules:
            out.append(f"\n        schedule    {s.name} {s.schedule}{' (suspended)' if s.suspended else ''}")
    else:
        out.append(report.database.error, style="yellow")
    _drill_block(out, report)
    # Attention
    notes = attention(report)
    out.append("\n\n Attention\n", style="bold")
    if not notes:
        out.append("   nothing: every check is green\n", style="green")
    for style, line in notes:
        out.append(f"   {'✖' if style == 'red' else '⚠'} ", style=style)
        out.append(f"{line}\n")
    return out


def _drill_block(out: Text, report: StatusReport) -> None:
    """ "Last verified restore": the newest drill's date, RPO/RTO and missing originals, once a drill has run."""
    latest: LatestDrill | None = report.drill.value
    if latest is None or latest.report is None:
        return
    r = latest.report
    drill_check = report.verdict.check("drill")

    def span(seconds: float | None) -> str:
        return clock.short(seconds) if seconds is not None else "-"

    out.append("\n\n RESTORE ", style="bold")
    out.append("last verified restore ")
    out.append(when(latest.stored), style=STYLE.get(drill_check.state, "yellow"))
    out.append(f"  {r.outcome}", style="green" if r.outcome == "ok" else "red")
    out.append(
        f"\n        RPO         DB {span(r.rpo_db_seconds)} · media {span(r.rpo_media_seconds)}"
        f"\n        RTO         DB {span(r.rto_db_seconds)} · media ≈ {span(r.rto_media_seconds_estimate)}"
    )
    if r.cross_check is not None:
        c = r.cross_check
        out.append("\n        assets      ")
        out.append(f"{c.missing:,} missing", style="red" if c.missing else "green")
        out.append(f" of {c.assets:,} · {c.not_yet_offsite:,} not yet offsite · {c.orphans:,} orphans")


def attention(report: StatusReport) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    for check in report.verdict.checks:
        if check.state not in ("ok", "off"):
            hint = f" — {check.hint}" if check.hint else ""
            notes.append((STYLE.get(check.state, "yellow"), f"{check.name}: {check.detail}{hint}"))
    db = report.database.value
    if db is not None:
        for s in db.schedules:
            if s.warning:
                notes.append(("red", f"ScheduledBackup {s.name}: {s.warning}"))
    history: JobHistory | None = report.media.value
    if history is not None and history.cronjob.suspended:
        notes.append(("yellow", "the media sync CronJob is suspended: press s to resume"))
    if history is not None and history.cronjob.schedule_error:
        notes.append(("red", f"CronJob schedule: {history.cronjob.schedule_error}"))
    if report.offsite.error:
        notes.append(("yellow", f"offsite: {report.offsite.error}"))
    return notes


# Recent runs ------------------------------------------------------------------------------------
OUTCOME_STYLE = {"ok": "green", "partial": "yellow", "aborted": "red", "suspicious": "bold red", "ignored": "dim"}
EIGHTHS = " ▏▎▍▌▋▊▉"
MIN_BAR = 12  # columns the bar keeps before a column is dropped
MAX_BAR = 80  # wider, the eye no longer compares one bar with the next


def outcome(run: RunSummary) -> str:
    """What the run amounts to: a report not believed or a tripped mass-change guard outranks its status."""
    if run.ignored:
        return "ignored"
    if run.mass_change is not None and run.mass_change.tripped:
        return "suspicious"
    return run.status


@dataclass(frozen=True)
class Column:
    """A fixed-width column of the runs table: fixed, so the rows line up and the bar gets the rest."""

    title: str
    width: int
    cell: Callable[[RunSummary], str]
    right: bool = True


DATE = Column("started (UTC)", 16, lambda r: clock.minute(r.started) or "?", right=False)
OUTCOME = Column("outcome", 10, outcome, right=False)
FILES = Column("files", 7, lambda r: f"{r.uploaded:,}")
DURATION = Column("took", 7, lambda r: clock.short(r.duration_seconds))
LISTING = Column("listing", 11, lambda r: r.listing, right=False)
PENDING = Column("pending", 7, lambda r: f"{r.deferred + r.failed + r.unstable:,}")
UPLOADED = Column("uploaded", 10, lambda r: size(r.uploaded_bytes))
ORDER = (DATE, OUTCOME, FILES, DURATION, LISTING, PENDING, UPLOADED)
# dropped first to last as the pane narrows: the date, outcome and bytes always stay
OPTIONAL = (PENDING, LISTING, DURATION, FILES)


def columns_for(width: int) -> list[Column]:
    """The columns that leave the bar at least MIN_BAR cells at this width, in display order."""
    optional = list(OPTIONAL)
    while True:
        columns = [c for c in ORDER if c not in OPTIONAL or c in optional]
        if not optional or _fixed_width(columns) + MIN_BAR <= width:
            return columns
        optional.pop(0)


def _fixed_width(columns: list[Column]) -> int:
    return 1 + sum(c.width + 2 for c in columns)


def bar(value: int, largest: int, width: int) -> str:
    """A bar of `value` on a square-root scale up to `largest` over `width` cells, in eighths of a cell.
    Anything above zero is at least one eighth: a night that uploaded a few photos is never blank."""
    if value <= 0 or largest <= 0 or width <= 0:
        return ""
    eighths = max(1, round(math.sqrt(value / largest) * width * 8))
    full, part = divmod(min(eighths, width * 8), 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"[:width]


def runs_table(runs: list[RunSummary], width: int) -> Text:
    """The header and one line per run, cropped to `width`: never wrapped, whatever the terminal."""
    columns = columns_for(width)
    bar_width = max(0, min(MAX_BAR, width - _fixed_width(columns)))
    largest = max((r.uploaded_bytes for r in runs), default=0)
    out = Text(no_wrap=True, overflow="crop")
    out.append(" ")
    for c in columns:
        out.append((c.title.rjust(c.width) if c.right else c.title.ljust(c.width)) + "  ", style="bold")
    out.append("bytes uploaded, √ scale"[:bar_width], style="dim")
    for run in runs:
        style = OUTCOME_STYLE.get(outcome(run), "yellow")
        out.append("\n ")
        for c in columns:
            cell = printable(c.cell(run))[: c.width]  # a run report is untrusted input
            cell = cell.rjust(c.width) if c.right else cell.ljust(c.width)
            out.append(cell + "  ", style=style if c is OUTCOME else "")
        drawn = bar(run.uploaded_bytes, largest, bar_width)
        why = run.ignored or run.error  # a night with nothing to draw says why, where its bar would be
        out.append(drawn or _fit(one_line(why), bar_width), style=style if drawn else f"dim {style}")
    return out


class RecentRuns(Widget):
    """The runs table and bar chart, laid out again for whatever width the pane has."""

    DEFAULT_CSS = """
    RecentRuns {
        height: auto;
    }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[RunSummary] = []
        self.empty = ""

    def update(self, runs: list[RunSummary], empty: str = "") -> None:
        self.runs, self.empty = runs, empty
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 + len(self.runs) if self.runs else 1

    def render(self) -> Text:
        if not self.runs:
            return Text(f" {self.empty}", style="dim", no_wrap=True, overflow="ellipsis")
        return runs_table(self.runs, self.size.width)


# Errors ------------------------------------------------------------------------------------------
def what_to_check(message: str, context: str) -> str:
    """The first thing to look at for a status that could not be read at all."""
    ctx = f"context {context!r}" if context else "the current context"
    if "cannot reach the cluster" in message:
        return (
            f"check that the API server of {ctx} is up and reachable from here (VPN, firewall, the server "
            "address in the kubeconfig); r retries"
        )
    if "rejected the credentials" in message:
        return f"check the credentials of {ctx} (an expired token or certificate); r retries"
    if "RBAC denies" in message:
        return "check the operator's RBAC (kubectl auth can-i); r retries"
    if "kubeconfig" in message or "context" in message:
        return "check --kubeconfig, KUBECONFIG and --context"
    return "r retries"


def error_text(message: str, context: str) -> Text:
    out = Text()
    out.append(" The backup state cannot be read.", style=VERDICT_STYLE["error"])
    out.append("\n ✖ ", style="red")
    out.append(message)
    out.append(f" — {what_to_check(message, context)}", style="yellow")
    return out


class OverviewPane(Pane):
    title = "Overview"

    DEFAULT_CSS = """
    OverviewPane {
        overflow-y: auto;
    }
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report: StatusReport | None = None
        self._report_from: Any = None  # the Services the report was read with: another context's is no data

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("loading…", id="overview-body")
        yield Static(" Recent runs, newest first", id="overview-runs-title")
        yield RecentRuns(id="overview-runs")

    def load(self) -> None:
        """The app fetches the status once, for the verdict chips and this pane, and pushes it to `show`."""
        self.post_message(self.StatusWanted())

    @property
    def has_data(self) -> bool:
        return self.report is not None and self._report_from is self.services

    def show(self, data: Any) -> None:
        report: StatusReport = data
        self.report, self._report_from = report, self.services
        self.clear_error()
        self.query_one("#overview-body", Static).update(render(report))
        offsite: OffsiteState | None = report.offsite.value
        if offsite is None:
            empty = f"no run reports: {report.offsite.error or 'the bucket was not read'}"
        else:
            empty = "no run reports in the bucket yet: the first nightly sync writes one"
        self.query_one("#overview-runs", RecentRuns).update(offsite.reports.runs if offsite else [], empty)

    def show_error(self, message: str) -> None:
        """A status that failed as a whole (the cluster cannot be reached, the kubeconfig is unusable): the
        banner says so, and a pane that never had a status says it instead of "loading…", with what to
        check. A pane that had one for this context keeps it under the banner."""
        super().show_error(message)
        if not self.has_data:
            target = self.services.target
            context = context_name(target.kubeconfig, target.context)  # the kubeconfig only: no request
            self.query_one("#overview-body", Static).update(error_text(message, context))
            self.query_one("#overview-runs", RecentRuns).update([], "no run reports: the status was not read")
