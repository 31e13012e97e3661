"""The Library tab: the PVC per Immich folder, live through the server pod or from the last run report."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from immich_tui.services import clock
from immich_tui.services.errors import ServiceError
from immich_tui.services.library import FolderCount, FolderInfo, LibraryInventory
from immich_tui.services.status import Services
from immich_tui.widgets.pane import Pane
from sync_engine.text import size

COLUMNS = ("Folder", "Files", "Size", "Newest file", "Pending", "Backed up", ".immich")


def _newest(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


class LibraryPane(Pane):
    title = "Library"
    placeholder = "library-source"
    poll_seconds = 300.0  # a live count walks the whole PVC; every five minutes is plenty

    BINDINGS = [
        Binding("enter", "drill", "Open folder", show=False),
        Binding("backspace,escape", "up", "Back", show=False),
    ]
    help_keys = (("enter", "open a folder"), ("backspace", "back up a level"))

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(services, **kwargs)
        self.inventory: LibraryInventory | None = None
        self.folder: FolderInfo | None = None  # drilled into

    def compose(self) -> ComposeResult:
        yield self.banner()
        yield Static("counting…", id="library-source")
        table: DataTable[str] = DataTable(id="library-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        table.border_title = "Folders"
        yield table
        yield Static("", id="library-total")

    @property
    def has_data(self) -> bool:
        return self.inventory is not None

    def fetch(self) -> LibraryInventory:
        last_ok = None
        with contextlib.suppress(ServiceError):  # no reader or no reports: the live count works, pending is unknown
            last_ok = self.services.offsite().reports(limit=1).latest_ok
        return self.services.library.inventory(last_ok)

    def show(self, data: Any) -> None:
        self.inventory = data
        self.render_tables()

    def render_tables(self) -> None:
        inv = self.inventory
        table = self.query_one("#library-table", DataTable)
        # columns anew: auto widths only ever grow, and a drill-down's longer names must widen the first one
        table.clear(columns=True)
        table.add_columns(*COLUMNS)
        source = self.query_one("#library-source", Static)
        if inv is None:
            return
        if inv.source == "none":
            source.update(f"[yellow]No inventory: {inv.detail}[/]")
            return
        age = clock.ago(inv.taken_at)
        if inv.source == "live":
            source.update(f" Source: live count through {inv.detail}, {age}")
        else:
            source.update(f" Source: last run report ({age}); live count unavailable: {inv.fallback_reason}")
        rows: list[FolderCount] = list(self.folder.children) if self.folder else list(inv.folders)
        rows = [r for r in rows if self.matches(r.name)]
        for row in rows:
            top = self.folder or row
            backed_up = getattr(top, "backed_up", False)
            marker = getattr(row, "marker", None)
            exists = getattr(row, "exists", True)
            pending = "-" if not backed_up else f"{row.pending} ({size(row.pending_bytes)})" if row.pending else "0"
            label = row.name + "/" if not self.folder else row.name
            if self.folder and row.name == self.folder.name:
                label = "(top level)"  # the .immich marker and files directly in the folder
            table.add_row(
                label,
                f"{row.files:,}" if exists else "missing",
                size(row.bytes),
                _newest(row.newest),
                pending,
                "yes" if backed_up else "skipped",
                "" if marker is None else ("yes" if marker else "MISSING"),
                key=row.name,
            )
        self.resort(table)
        shown = self.folder.name + "/ — backspace to go up" if self.folder else "enter on a folder to open it"
        self.query_one("#library-total", Static).update(
            f" {inv.total_files:,} files, {size(inv.total_bytes)} in the library · {shown}"
        )

    def action_drill(self) -> None:
        if self.inventory is None or self.folder is not None:
            return
        table = self.query_one("#library-table", DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.folder = next((f for f in self.inventory.folders if f.name == key), None)
        self.render_tables()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_drill()

    def action_up(self) -> None:
        if self.folder is not None:
            self.folder = None
            self.render_tables()
