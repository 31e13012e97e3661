"""A k9s-style describe view of one object: header, conditions, recent Events, then the YAML.

The read runs on a thread worker (it is several API calls for a Job and its pods); until it answers the
screen says "reading…", and a failure is one line in place of the content, never a crash. Everything
scrolls as one body, so the same keys move through conditions, Events and YAML at any terminal size.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from immich_tui.services import clock
from immich_tui.services.describe import Condition, Description, Event, ObjectRef, describe
from immich_tui.services.status import Services
from sync_engine.text import one_line

# (label, width); 0 is the message, which takes what is left and wraps. Sized so 80 columns hold them all.
CONDITION_COLUMNS = (("Type", 20), ("Status", 6), ("Reason", 14), ("Message", 0), ("Since", 6))
EVENT_COLUMNS = (("Type", 7), ("Reason", 14), ("Age", 6), ("Count", 5), ("Message", 0))
MIN_MESSAGE = 16  # the message column never gets narrower than this; the body scrolls sideways instead
CHROME = 8  # border, margins and the scrollbar around a table


def age(value: str) -> str:
    """`30h`, `3d12h`: kubectl's AGE column (when the condition last changed, the Event was last seen)."""
    parsed = clock.parse(value)
    return clock.short(max(0.0, clock.age_seconds(parsed) or 0.0)) if parsed else "—"


class DescribeScreen(ModalScreen[None]):
    """`DescribeScreen(services, ref)`: push it; Escape or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("r", "reload", "Reload", show=False),
    ]

    DEFAULT_CSS = """
    DescribeScreen {
        align: center middle;
    }
    DescribeScreen #describe {
        width: 100%;
        height: 100%;
        border: round $accent;
        background: $surface;
    }
    DescribeScreen #describe-title {
        height: auto;
        text-style: bold;
        padding: 0 1;
    }
    DescribeScreen #describe-error {
        height: auto;
        color: $text-error;
        padding: 0 1;
    }
    DescribeScreen #describe-error.-empty, DescribeScreen #describe-warnings.-empty {
        display: none;
    }
    DescribeScreen DataTable.-empty {
        display: none;
    }
    DescribeScreen #describe-warnings {
        height: auto;
        color: $text-warning;
        padding: 0 1;
    }
    DescribeScreen #describe-body {
        height: 1fr;
    }
    DescribeScreen .describe-heading {
        color: $text-muted;
        text-style: bold;
        padding: 1 1 0 1;
    }
    DescribeScreen DataTable {
        height: auto;
        max-height: 2000;  /* the body scrolls, not the tables: never cut one at the screen's height */
        margin: 0 1;
    }
    DescribeScreen #describe-yaml {
        height: auto;
        padding: 0 1;
    }
    DescribeScreen #describe-foot {
        height: 1;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, services: Services, ref: ObjectRef) -> None:
        super().__init__()
        self.services = services
        self.ref = ref
        self.description: Description | None = None
        self.error = ""
        self._worker: Worker[tuple[Description, Text]] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="describe"):
            yield Static(self._title(), id="describe-title", markup=False)
            yield Static("", id="describe-error", markup=False, classes="-empty")
            yield Static("", id="describe-warnings", markup=False, classes="-empty")
            with VerticalScroll(id="describe-body"):
                yield Static("Conditions", id="describe-conditions-title", classes="describe-heading")
                yield self._table("describe-conditions", CONDITION_COLUMNS)
                yield Static("Events", id="describe-events-title", classes="describe-heading")
                yield self._table("describe-events", EVENT_COLUMNS)
                yield Static("YAML", classes="describe-heading")
                yield Static("reading…", id="describe-yaml")
            yield Static("↑↓ PgUp PgDn Home End scroll · r reload · Esc/q close", id="describe-foot")

    def _table(self, id_: str, columns: tuple[tuple[str, int], ...]) -> DataTable[Any]:
        table: DataTable[Any] = DataTable(id=id_, show_cursor=False, zebra_stripes=True)
        table.can_focus = False  # the body scrolls as one; a focused table would take the arrow keys
        return table

    def on_mount(self) -> None:
        self.query_one("#describe-body", VerticalScroll).focus()
        self.action_reload()

    def on_resize(self) -> None:
        if self.description is not None:
            self._fill_tables(self.description)

    def _title(self) -> str:
        age = ""
        if self.description is not None and self.description.created:
            age = f" · age {clock.short(max(0.0, clock.age_seconds(clock.parse(self.description.created)) or 0.0))}"
        return f"{self.ref.kind} {self.ref.name} · namespace {self.ref.namespace}{age}"

    # Loading ---------------------------------------------------------------------------------------
    def action_reload(self) -> None:
        if self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            return
        self._worker = self.run_worker(self._load, thread=True, group="describe", exit_on_error=False)

    def _load(self) -> tuple[Description, Text]:
        """On the worker thread: the API calls, and highlighting up to MAX_YAML characters of YAML."""
        found = describe(self.services, self.ref)
        return found, Syntax(found.yaml, "yaml", theme="ansi_dark", background_color="default").highlight(found.yaml)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state == WorkerState.SUCCESS and event.worker.result is not None:
            self.show(*event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.show_error(one_line(event.worker.error or "failed"))

    def show_error(self, message: str) -> None:
        self.error = message
        line = self.query_one("#describe-error", Static)
        line.update(message)
        line.set_class(not message, "-empty")
        if self.description is None:
            self.query_one("#describe-yaml", Static).update("")

    def show(self, found: Description, highlighted: Text) -> None:
        self.description = found
        self.show_error("")
        self.query_one("#describe-title", Static).update(self._title())
        warnings = self.query_one("#describe-warnings", Static)
        warnings.update("\n".join(f"⚠ {w}" for w in found.warnings))
        warnings.set_class(not found.warnings, "-empty")
        self._fill_tables(found)
        self.query_one("#describe-yaml", Static).update(highlighted)

    # Tables ----------------------------------------------------------------------------------------
    def _widths(self, columns: tuple[tuple[str, int], ...]) -> list[int]:
        """Past 80 columns the reason grows first (CamelCase reasons wrap badly), then the message takes
        the rest; it never gets narrower than MIN_MESSAGE and wraps onto more lines instead."""
        spare = max(0, self.size.width - 80)
        widths = [width + min(10, spare // 2) if label == "Reason" else width for label, width in columns]
        fixed = sum(width + 2 for width in widths if width)  # each column has one cell of padding a side
        message = max(MIN_MESSAGE, self.size.width - fixed - CHROME)
        return [width or message for width in widths]

    def _reset(self, table: DataTable[Any], columns: tuple[tuple[str, int], ...]) -> None:
        table.clear(columns=True)
        for (label, _), width in zip(columns, self._widths(columns), strict=True):
            table.add_column(label, width=width)

    def _fill_tables(self, found: Description) -> None:
        conditions = self.query_one("#describe-conditions", DataTable)
        self._reset(conditions, CONDITION_COLUMNS)
        for c in found.conditions:
            conditions.add_row(*self._condition_cells(c), height=None)
        events = self.query_one("#describe-events", DataTable)
        self._reset(events, EVENT_COLUMNS)
        for e in found.events:
            events.add_row(*self._event_cells(e, found.ref), height=None)
        for table, title, count in (
            (conditions, "Conditions", len(found.conditions)),
            (events, "Events", len(found.events)),
        ):
            table.set_class(not count, "-empty")
            self.query_one(f"#{table.id}-title", Static).update(f"{title} ({count})" if count else f"{title}: none")

    @staticmethod
    def _condition_cells(c: Condition) -> list[Any]:
        style = "green" if c.status == "True" else ("red" if c.status == "False" else "yellow")
        if c.type in ("Failed", "Suspended") and c.status == "True":  # conditions whose True is the bad news
            style = "red"
        return [Text(c.type), Text(c.status, style=style), Text(c.reason), Text(c.message), age(c.last_transition)]

    @staticmethod
    def _event_cells(e: Event, ref: ObjectRef) -> list[Any]:
        own = f"{ref.kind}/{ref.name}"
        message = e.message if e.involved in ("", own) else f"{e.involved}: {e.message}"
        kind = Text(e.type, style="yellow" if e.type == "Warning" else "")
        return [kind, Text(e.reason), age(e.last_seen), str(e.count), Text(message)]

    def action_close(self) -> None:
        self.dismiss(None)
