"""What every tab of the TUI shares: loading on a thread worker, one load at a time, errors in place.

A pane is handed the `Services` it reads from and knows nothing of the app around it: what only the
app can do (read the verdict again) it asks for with a message, and app-wide state (the latest status
report) is pushed down to it. So the panes can be built and tested alone, and no pane imports the app.

A pane's `fetch()` runs on a worker thread and talks to the services only; `show()` runs on the UI
thread with the result. A failed fetch leaves the last good data on screen under a one-line banner,
so an RBAC denial or an unreachable cluster degrades the pane instead of the app.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from rich.errors import MarkupError
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from immich_tui.services.describe import ObjectRef
from immich_tui.services.status import Services
from immich_tui.widgets.logview import compile_filter
from sync_engine.text import one_line

NARROW = 100  # below this many columns panes stack what sits side by side (the Jobs and their log)
_NUMBER = re.compile(r"^\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([KMGTP]i?B|B)?\b")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50}


def sort_key(value: object) -> tuple[int, float, str]:
    """How a cell sorts: numbers and sizes by value (`1,204` after `98`, `2 MiB` after `900 KiB`), the rest
    (names, `2026-11-27 02:30` times) as the text a reader sees, markup removed, case ignored."""
    try:
        plain = value.plain if isinstance(value, Text) else Text.from_markup(str(value)).plain
    except MarkupError:
        plain = str(value)
    number = _NUMBER.match(plain)
    if number is not None:
        amount = float(number.group(1).replace(",", "")) * _UNITS.get(number.group(2) or "B", 1)
        return 0, amount, plain.lower()
    return 1, 0.0, plain.lower()


class Pane(Vertical):
    """Base of the Overview, Library, Offsite, Jobs and Database tabs."""

    title = ""
    help_keys: ClassVar[tuple[tuple[str, str], ...]] = ()  # this tab's own keys, for `?`
    poll_seconds = 30.0  # how stale the data may get while the tab is visible
    placeholder = ""  # id of the line that says "loading…" until the first data arrives

    class StatusWanted(Message):
        """Read the verdict again now: the app owns the one status poll, shared by the chips and Overview."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("S", "sort", "Sort")]

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self._worker: Worker[Any] | None = None
        self.loaded_at: float | None = None
        self.error = ""
        self.filter = ""
        self.filter_problem = ""  # why the filter is matched as plain text, when it is
        self._pattern: re.Pattern[str] | None = None
        self._sorts: dict[str, tuple[str, bool]] = {}  # table id -> (column label, descending)

    def banner(self) -> Static:
        return Static("", classes="pane-error", id=f"{self.id}-error")

    @property
    def loading_now(self) -> bool:
        return self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def load(self) -> None:
        """Start a fetch unless one is already running: polls never overlap."""
        if self.loading_now:
            return
        self._worker = self.run_worker(self.fetch, thread=True, group=f"load-{self.id}", exit_on_error=False)

    def due(self) -> bool:
        return self.loaded_at is None or time.monotonic() - self.loaded_at >= self.poll_seconds

    def fetch(self) -> Any:  # runs on a worker thread
        raise NotImplementedError

    def show(self, data: Any) -> None:  # runs on the UI thread
        raise NotImplementedError

    def show_error(self, message: str) -> None:
        self.error = message
        banner = self.query_one(f"#{self.id}-error", Static)
        banner.update(f"⚠ {message}")
        banner.display = True
        if self.placeholder and self.loaded_at is not None and not self.has_data:
            self.query_one(f"#{self.placeholder}", Static).update(" Nothing to show yet: r retries.")

    @property
    def has_data(self) -> bool:
        return False

    def clear_error(self) -> None:
        self.error = ""
        self.query_one(f"#{self.id}-error", Static).display = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state == WorkerState.SUCCESS:
            self.loaded_at = time.monotonic()
            self.clear_error()
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.loaded_at = time.monotonic()
            self.show_error(one_line(event.worker.error or "failed"))

    def focus_main(self) -> None:
        """Put the cursor in the pane's first table, so its keys and arrows work right away."""
        for widget in self.query("DataTable"):
            widget.focus()
            return

    def selected_ref(self) -> ObjectRef | None:
        """The Kubernetes object under the cursor, for `d` (describe); None where a tab has none."""
        return None

    # Filtering (`/`): the focused widget's rows. Panes filter their tables; the Jobs pane's log filters
    # itself when it is the focused widget.
    def apply_filter(self, text: str, target: Widget | None = None) -> None:
        self.filter = text
        self._pattern, self.filter_problem = compile_filter(text)
        self.render_tables()

    def matches(self, *cells: object) -> bool:
        """Whether a row passes the filter: any of its cells (the data, not the markup shown) matches."""
        if self._pattern is None:
            return True
        return any(self._pattern.search(str(cell)) for cell in cells)

    def render_tables(self) -> None:
        """Fill the tables from the data held (after a load, a filter or a drill-down)."""

    # Sorting (`S` cycles the column of the focused table, a click on a header sorts by it) --------
    def _sort_table(self) -> DataTable[Any] | None:
        focused = self.screen.focused
        if isinstance(focused, DataTable) and focused in self.query(DataTable):
            return focused
        return next(iter(self.query(DataTable)), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`S` only where there is a table to sort (not on the Overview)."""
        if action == "sort":
            return bool(self.query(DataTable))
        return True

    def action_sort(self) -> None:
        table = self._sort_table()
        if table is None or table.id is None or not table.ordered_columns:
            return
        labels = [c.label.plain for c in table.ordered_columns]
        label, descending = self._sorts.get(table.id, ("", True))
        # each press: the next column ascending; a column sorted ascending is sorted descending first
        if label in labels and not descending:
            self._sorts[table.id] = (label, True)
        else:
            index = (labels.index(label) + 1) % len(labels) if label in labels else 0
            self._sorts[table.id] = (labels[index], False)
        self.resort(table)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        table, label = event.data_table, event.label.plain
        if table.id is None:
            return
        current = self._sorts.get(table.id)
        self._sorts[table.id] = (label, not current[1] if current and current[0] == label else False)
        self.resort(table)

    def resort(self, table: DataTable[Any]) -> None:
        """Apply the table's chosen sort again (rows are refilled on every load) and name it in its border."""
        base = str(table.border_title or "").split(" · sorted by ")[0]
        sort = self._sorts.get(table.id or "")
        columns = {c.label.plain: c.key for c in table.ordered_columns}
        if sort is None or sort[0] not in columns:
            table.border_title = base or None
            return
        label, descending = sort
        table.sort(columns[label], key=sort_key, reverse=descending)
        table.border_title = f"{base} · sorted by {label} {'▼' if descending else '▲'}"
