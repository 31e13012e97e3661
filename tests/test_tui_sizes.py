"""The TUI at every terminal size: 80x24 up to 200x60, the header, the footer's way out, the dialogs'
titles and buttons, and every column of the Jobs table stay on screen (Pilot on the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static

from immich_tui.app import ImmichApp
from immich_tui.demo.world import Sandbox
from tests.test_tui_actions import press, run, settle, text
from tests.tui import PinnedClock, make_app, start_sandbox

SIZES = ((80, 24), (120, 40), (200, 60))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("sizes"))
        yield sandbox
        sandbox.stop()


def at(app: ImmichApp, size: tuple[int, int], scenario: Any) -> None:
    run(app, scenario, size)


def on_screen(app: ImmichApp, widget: Widget) -> bool:
    """Whether the widget is what the terminal shows at its own centre (not cut off, not covered)."""
    region = widget.region
    if not region.width or not region.height:
        return False
    x, y = region.x + region.width // 2, region.y + region.height // 2
    if not app.screen.region.contains(x, y):
        return False
    shown, _ = app.screen.get_widget_at(x, y)
    return shown is widget or widget in shown.ancestors


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_header_keeps_context_and_chips_and_footer_keeps_help_and_quit(
    box: Sandbox, size: tuple[int, int], read_only: bool
) -> None:
    app = make_app(box, read_only=read_only)

    async def scenario(pilot: Pilot[Any]) -> None:
        for key in ("1", "4", "5"):
            await press(pilot, key)
            await settle(pilot)
            context, verdict = app.query_one("#app-context", Static), app.query_one("#verdict", Static)
            assert context.region.right <= verdict.region.x and verdict.region.right <= size[0]
            shown = text(app, "#app-context")
            assert Text(shown).cell_len <= context.region.width  # nothing of it cut off
            assert "sandbox" in shown and "immich/postgresql" in shown.replace(" / ", "/")
            assert ("READ-ONLY" in shown or " RO " in shown) == read_only
            assert "MEDIA" in text(app, "#verdict") and "WAL" in text(app, "#verdict")
            keys = {k.action: k for k in app.screen.query("FooterKey")}  # type: ignore[attr-defined]
            assert on_screen(app, keys["help"]) and on_screen(app, keys["quit"])

    at(app, size, scenario)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_jobs_column_and_the_reason_are_readable(box: Sandbox, size: tuple[int, int]) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4")
        await settle(pilot)
        table = app.query_one("#jobs-table", DataTable)
        needed = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert needed <= table.scrollable_content_region.width  # no column pushed off the right edge
        failed = next(i for i in range(table.row_count) if "failed" in str(table.get_row_at(i)[1]))
        table.move_cursor(row=failed)
        await settle(pilot)
        detail = app.query_one("#jobs-detail", Static)
        assert "BackoffLimitExceeded" in text(app, "#jobs-detail") and on_screen(app, detail)
        status = app.query_one("#jobs-log-status", Static)
        assert on_screen(app, status) and status.region.right <= size[0]

    at(app, size, scenario)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    ("keys", "title", "buttons"),
    [
        (("5", "R"), "#wizard-title", ("write", "apply", "cancel")),
        (("3", "R"), "#dialog-title", ("yes", "no")),
        (("t",), "#dialog-title", ("yes", "no")),
        (("question_mark",), "#help-title", ()),
    ],
    ids=["recovery-wizard", "media-restore", "confirm", "help"],
)
def test_dialogs_show_title_and_buttons(
    box: Sandbox, size: tuple[int, int], keys: tuple[str, ...], title: str, buttons: tuple[str, ...]
) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        for key in keys:
            await press(pilot, key)
            await settle(pilot)
        await settle(pilot)
        assert on_screen(app, app.screen.query_one(title, Static))
        for button in buttons:
            assert on_screen(app, app.screen.query_one(f"#{button}", Button)), button

    at(app, size, scenario)
