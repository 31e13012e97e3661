"""Every pane and every dialog at 120x40, the main ones at 80x24 and 200x60 too, on the sandbox with a
pinned clock (SVGs in __snapshots__/).

Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`,
then look at each changed SVG before committing it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerFailed

from immich_tui.demo.fixtures import World
from immich_tui.demo.world import Sandbox
from tests.tui import SIZE, PinnedClock, make_app, start_sandbox

SnapCompare = Callable[..., bool]  # pytest-textual-snapshot's fixture: app (or path), then options


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and every posted message be handled."""
    for _ in range(3):
        with contextlib.suppress(WorkerFailed):  # a failed load is the app's to show, not the test's
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def stable(pilot: Pilot[Any], frames: int = 50) -> None:
    """Until two frames 0.1 s apart are the same, after a resize to one column more and back.

    A DataTable measures its columns when idle but caches rendered lines under a key the widths are not
    part of, so a header drawn before that pass can stay narrow; a resize renews the key (for a user, so
    does the next poll). Then frames are compared, because on a loaded machine the repaint lags."""
    width, height = pilot.app.size
    await pilot.resize_terminal(width + 1, height)
    await settle(pilot)
    await pilot.resize_terminal(width, height)
    await settle(pilot)
    previous = pilot.app.export_screenshot()
    for _ in range(frames):
        await pilot.pause(0.1)
        await settle(pilot)
        current = pilot.app.export_screenshot()
        if current == previous:
            return
        previous = current


def keys(*pressed: str, after: Callable[[Pilot[Any]], Any] | None = None) -> Callable[[Pilot[Any]], Any]:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)
        if after is not None:
            await after(pilot)
            await settle(pilot)
        await stable(pilot)

    return run


@pytest.mark.parametrize(
    ("name", "pressed"),
    [
        ("overview", ()),
        ("library", ("2",)),
        ("library_drill", ("2", "down", "enter")),
        ("offsite", ("3",)),
        ("jobs", ("4",)),
        ("database", ("5",)),
        ("confirm_trigger", ("t",)),
        ("confirm_suspend", ("s",)),
        ("confirm_backup", ("b",)),
        ("help", ("question_mark",)),
        ("filter", ("5", "slash", "1", "1", "2", "6")),
        ("db_restore_wizard", ("5", "R")),
        ("media_restore", ("3", "R")),
        ("restore_choice", ("R",)),
        ("jobs_log_focused", ("4", "tab")),
        ("jobs_sorted", ("4", "S", "S")),
    ],
)
def test_pane_and_dialog(snap_compare: SnapCompare, sandbox: Sandbox, name: str, pressed: tuple[str, ...]) -> None:
    with PinnedClock():
        assert snap_compare(make_app(sandbox), terminal_size=SIZE, run_before=keys(*pressed))


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    ("name", "pressed"),
    [
        ("overview", ()),
        ("jobs", ("4",)),
        ("db_restore_wizard", ("5", "R")),
        ("media_restore", ("3", "R")),
        ("help", ("question_mark",)),
        ("restore_choice", ("R",)),
    ],
)
def test_small_and_large_terminals(
    snap_compare: SnapCompare, sandbox: Sandbox, name: str, pressed: tuple[str, ...], size: tuple[int, int]
) -> None:
    with PinnedClock():
        assert snap_compare(make_app(sandbox), terminal_size=size, run_before=keys(*pressed))


def test_command_palette(snap_compare: SnapCompare, sandbox: Sandbox) -> None:
    async def quiet_cursor(pilot: Pilot[Any]) -> None:
        from textual.command import CommandInput

        pilot.app.screen.query_one(CommandInput).cursor_blink = False
        await pilot.press(*"sync")

    with PinnedClock():
        assert snap_compare(make_app(sandbox), terminal_size=SIZE, run_before=keys("ctrl+p", after=quiet_cursor))


def test_read_only(snap_compare: SnapCompare, sandbox: Sandbox) -> None:
    with PinnedClock():
        assert snap_compare(make_app(sandbox, read_only=True), terminal_size=SIZE, run_before=keys())


def test_degraded_cluster_without_cnpg(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """A failing pane: CNPG not installed, a failed last sync, exec denied — the app says so and goes on."""
    from immich_tui.demo.emulator import Denial

    with PinnedClock():
        box = start_sandbox(tmp_path, World(cnpg=None, failed_job_days=(0,)))
        try:
            box.server.emulator.denials.append(Denial("create", "pods", subresource="exec"))
            assert snap_compare(make_app(box), terminal_size=SIZE, run_before=keys())
            assert snap_compare(make_app(box), terminal_size=SIZE, run_before=keys("5"))
        finally:
            box.stop()
