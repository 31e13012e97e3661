"""The Overview tab and the always-visible verdict chips: the verdict, explained, with what to do."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Sparkline, Static

from immich_tui.services import clock
from immich_tui.services.health import Check, Verdict
from immich_tui.services.media import JobHistory
from immich_tui.services.offsite import OffsiteState
from immich_tui.services.status import StatusReport
from immich_tui.widgets.pane import Pane
from sync_engine.text import size

STYLE = {"ok": "green", "stale": "red", "failing": "red", "unknown": "yellow", "error": "red"}
VERDICT_STYLE = {"healthy": "bold green", "degraded": "bold yellow", "error": "bold red"}


def check_style(check: Check, threshold_seconds: float) -> str:
    """Green fresh, yellow when three quarters of the way to stale, red stale or failing."""
    if check.state == "ok" and check.age_seconds is not None and check.age_seconds > 0.75 * threshold_seconds:
        return "yellow"
    return STYLE.get(check.state, "yellow")


def chips(verdict: Verdict | None, error: str = "") -> Text:
    text = Text()
    if verdict is None:
        return text.append("● " + (error or "loading…"), style="red" if error else "dim")
    threshold = verdict.stale_after_hours * 3600
    labels = {"media": "MEDIA", "database": "DB", "wal": "WAL"}
    for check in verdict.checks:
        value = clock.short(check.age_seconds) if check.age_seconds is not None and check.name != "wal" else check.state
        text.append("● ", style=check_style(check, threshold))
        text.append(f"{labels[check.name]} {value}  ", style="bold")
    return text


def when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "never"


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
        done = [j.started for j in history.jobs if j.status == "succeeded" and j.started]
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
        latest = history.jobs[0] if history.jobs else None
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
    # Attention
    notes = attention(report)
    out.append("\n\n Attention\n", style="bold")
    if not notes:
        out.append("   nothing: every check is green\n", style="green")
    for style, line in notes:
        out.append(f"   {'✖' if style == 'red' else '⚠'} ", style=style)
        out.append(f"{line}\n")
    return out


def attention(report: StatusReport) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    for check in report.verdict.checks:
        if check.state != "ok":
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


class OverviewPane(Pane):
    title = "Overview"

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("loading…", id="overview-body")
        yield Static(" Recent runs — bytes uploaded per night, oldest → newest", id="overview-runs-title")
        yield Sparkline([], id="overview-sparkline")

    def load(self) -> None:
        """The app fetches the status once, for the verdict chips and this pane, and pushes it to `show`."""
        self.post_message(self.StatusWanted())

    def show(self, data: Any) -> None:
        report: StatusReport = data
        self.clear_error()
        self.query_one("#overview-body", Static).update(render(report))
        offsite: OffsiteState | None = report.offsite.value
        runs = list(reversed(offsite.reports.runs)) if offsite else []
        self.query_one("#overview-sparkline", Sparkline).data = [float(r.uploaded_bytes) for r in runs] or [0.0]
