"""The Database tab: the CNPG cluster, its recovery window, Backups and ScheduledBackups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from immich_tui.services import clock
from immich_tui.services.cnpg import DbState
from immich_tui.services.describe import ObjectRef
from immich_tui.services.status import Services
from immich_tui.widgets.pane import Pane

PHASE_STYLE = {"completed": "green", "failed": "red", "walArchivingFailing": "red"}
HEALTHY = "Cluster in healthy state"
WINDOW_WIDTH = 48


def window_bar(state: DbState) -> Text:
    """`first point ▕████████▏ now`, one cell per day-ish, the newest base backup marked."""
    c = state.cluster
    first = c.window.first_point
    text = Text(" Recovery window  ")
    if first is None:
        return text.append("no recoverability point yet (no completed base backup)", style="yellow")
    days = max(1.0, (clock.age_seconds(first) or 0) / 86400)
    text.append(f"{first:%Y-%m-%d %H:%M} ")
    text.append("▕" + "█" * WINDOW_WIDTH + "▏", style="green" if c.continuous_archiving.status == "True" else "yellow")
    text.append(f" now ({days:.0f} days)")
    return text


class DatabasePane(Pane):
    title = "Database"
    placeholder = "db-cluster"
    poll_seconds = 30.0

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(services, **kwargs)
        self.state: DbState | None = None
        self.when_loaded: list[Callable[[], None]] = []  # run once the next data is shown (R before a load)

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("reading the CNPG cluster…", id="db-cluster")
        yield Static("", id="db-window")
        recoveries: DataTable[str] = DataTable(id="db-recoveries", cursor_type="row")
        recoveries.add_columns("Recovery cluster", "Phase", "Ready", "Recovers to", "Created (UTC)")
        recoveries.border_title = "Recovery clusters"
        recoveries.display = False
        yield recoveries
        backups: DataTable[str] = DataTable(id="db-backups", cursor_type="row", zebra_stripes=True)
        backups.add_columns("Backup", "Phase", "Method", "Started (UTC)", "Took", "Backup ID", "Error")
        backups.border_title = "Backups"
        yield backups
        schedules: DataTable[str] = DataTable(id="db-schedules", cursor_type="row")
        schedules.add_columns("Name", "Schedule", "Method", "Suspended", "Last", "Warning")
        schedules.border_title = "ScheduledBackups"
        yield schedules

    def focus_main(self) -> None:
        self.query_one("#db-backups", DataTable).focus()

    @property
    def has_data(self) -> bool:
        return self.state is not None

    def fetch(self) -> DbState:
        return self.services.database.state(recoveries=True)

    def show(self, data: Any) -> None:
        self.state = data
        self.render_tables()
        waiting, self.when_loaded = self.when_loaded, []
        for then in waiting:
            then()

    def selected_ref(self) -> ObjectRef | None:
        """The highlighted recovery Cluster or Backup (whichever table has the cursor), else the cluster."""
        if self.state is None:
            return None
        ns = self.state.cluster.namespace or self.services.target.db_namespace
        focused = self.screen.focused
        for table_id, kind in (("db-recoveries", "Cluster"), ("db-backups", "Backup")):
            table = self.query_one(f"#{table_id}", DataTable)
            if focused is table and table.row_count:
                name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
                return ObjectRef(kind, str(name), ns)
        return ObjectRef("Cluster", self.state.cluster.name, ns)

    def render_tables(self) -> None:
        state = self.state
        if state is None:
            return
        c = state.cluster
        method = {
            "plugin": f"Barman Cloud Plugin (ObjectStore {c.object_store})",
            "barmanObjectStore": f"in-tree barmanObjectStore ({c.object_store})",
        }.get(c.method, c.method)
        arch = c.continuous_archiving
        arch_text = (
            "[green]archiving ok[/]"
            if arch.status == "True"
            else f"[red]archiving {arch.status}: {arch.message or arch.reason}[/]"
        )
        self.query_one("#db-cluster", Static).update(
            f" cluster/{c.name} · {c.phase} · {c.ready_instances}/{c.instances} ready · {c.image}\n"
            f" {method} · server {c.server_name} · {arch_text} · last backup {clock.ago(state.last_backup)}"
        )
        self.query_one("#db-window", Static).update(window_bar(state))
        backups = self.query_one("#db-backups", DataTable)
        backups.clear()
        self._render_recoveries(state)
        for b in state.backups:
            if not self.matches(b.name, b.phase, b.backup_id, b.error):
                continue
            took = clock.short((b.stopped - b.started).total_seconds()) if b.started and b.stopped else "-"
            style = PHASE_STYLE.get(b.phase, "yellow")
            backups.add_row(
                b.name,
                f"[{style}]{b.phase}[/]",
                b.method,
                f"{b.started:%Y-%m-%d %H:%M}" if b.started else "-",
                took,
                b.backup_id or "-",
                b.error or "",
                key=b.name,
            )
        schedules = self.query_one("#db-schedules", DataTable)
        schedules.clear()
        for s in state.schedules:
            last = f"{s.last_schedule:%Y-%m-%d %H:%M}" if s.last_schedule else "-"
            warning = f"[red]{s.warning}[/]" if s.warning else ""
            schedules.add_row(s.name, s.schedule, s.method, "yes" if s.suspended else "no", last, warning, key=s.name)
        self.resort(backups)
        self.resort(schedules)

    def _render_recoveries(self, state: DbState) -> None:
        """New clusters recovering from this archive, so a restore's progress is watched where it began."""
        table = self.query_one("#db-recoveries", DataTable)
        table.clear()
        for r in state.recoveries:
            style = "green" if r.phase == HEALTHY else "yellow"
            ready = f"{r.ready_instances}/{r.instances}"
            created = f"{r.created:%Y-%m-%d %H:%M}" if r.created else "-"
            # names and phases come from the API: Text, so a `[` in them is never read as markup
            table.add_row(Text(r.name), Text(r.phase, style=style), ready, Text(r.target or "-"), created, key=r.name)
        table.display = bool(state.recoveries)
        self.resort(table)

    def show_error(self, message: str) -> None:
        super().show_error(message)
        if self.state is None and "not installed" in message:
            self.query_one("#db-cluster", Static).update(
                " Install CloudNativePG, or point --db-namespace / --db-cluster at the Immich database."
            )
