"""Focus and keys, lazygit/k9s-style, with Pilot on the sandbox: the focused panel is the one outlined, and
`?`, `/` and `S` act on it; `ctrl+c` quits; `R` offers both restores; the wizard's keys work from any
field; an applied recovery shows in the Database tab; `d` describes and `:` switches context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, TabbedContent

from immich_tui.app import ImmichApp
from immich_tui.demo.fixtures import DB_NS, NS
from immich_tui.demo.world import Sandbox
from immich_tui.services.contexts import ContextChoice
from immich_tui.services.describe import ObjectRef
from immich_tui.widgets.context import ContextScreen
from immich_tui.widgets.describe import DescribeScreen
from immich_tui.widgets.dialogs import HelpScreen
from immich_tui.widgets.logview import LogView
from immich_tui.widgets.restore_dialogs import MediaRestoreScreen, RecoveryWizard, RestoreChoiceScreen
from tests.test_tui_actions import press, requests, run, settle, text, until
from tests.tui import PinnedClock, make_app, start_sandbox


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("keys"))
        yield sandbox
        sandbox.stop()


def rows(app: ImmichApp, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def tab(app: ImmichApp) -> str:
    return app.query_one("#tabs", TabbedContent).active


def test_the_focused_panel_is_the_one_outlined(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4")
        await settle(pilot)
        table, log = app.query_one("#jobs-table", DataTable), app.query_one(LogView)
        assert table.has_focus
        lit, dim = table.styles.border_top, log.styles.border_top
        assert lit[0] == dim[0] == "round"
        assert lit[1] != dim[1]  # the focused one in the accent colour
        log.focus()
        await settle(pilot)
        assert log.styles.border_top[1] == lit[1] and table.styles.border_top[1] == dim[1]

    run(app, scenario)


def test_help_lists_the_keys_of_the_focused_panel(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4")
        await settle(pilot)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        panel = text(app, "#help-panel")
        assert panel.startswith("Jobs\n") and "sort" in panel and "pick a Job" in panel
        assert "wrap" not in panel  # the log's keys, not the table's
        assert "quit" in text(app, "#help-body")
        listed = [
            {line.split()[0] for line in block.splitlines()[1:] if line.strip()}
            for block in (panel, text(app, "#help-body"))
        ]
        assert listed[0] and not listed[0] & listed[1]  # each key said once
        await press(pilot, "escape")
        app.query_one(LogView).focus()
        await settle(pilot)
        await press(pilot, "question_mark")
        panel = text(app, "#help-panel")
        assert panel.startswith("Jobs: Log") and "follow" in panel and "wrap" in panel
        await press(pilot, "escape", "3")
        await settle(pilot)
        await press(pilot, "question_mark")
        panel = text(app, "#help-panel")
        assert "verify against the run manifests" in panel and "wrap" not in panel

    run(app, scenario)


def test_filter_acts_on_the_focused_widget_and_takes_a_regex(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4")
        await settle(pilot)
        log = app.query_one(LogView)
        await until(pilot, lambda: log.line_count > 0)
        total = app.query_one("#jobs-table", DataTable).row_count
        assert total > 2
        log.focus()
        await press(pilot, "slash", *"listing|done")
        assert log.shown_count == 2 and app.query_one("#jobs-table", DataTable).row_count == total
        assert "Log" in str(app.query_one("#filter", Input).border_title)
        await press(pilot, "escape")
        assert log.shown_count == log.line_count and log.has_focus
        await press(pilot, "slash", "[")
        box_ = app.query_one("#filter", Input)
        assert "not a regex" in str(box_.border_subtitle) and "plain text" in str(box_.border_subtitle)
        assert log.shown_count == sum("[" in line for line in log.lines)  # the literal text, no crash
        await press(pilot, "backspace", *"LEVEL")
        assert box_.border_subtitle == "" and log.shown_count == log.line_count == 3  # any case
        await press(pilot, "escape")
        app.query_one("#jobs-table", DataTable).focus()
        await press(pilot, "slash", *"failed|29929110")
        assert len(rows(app, "jobs-table")) == 2  # the failed Job and the named one: the table, not the log
        assert log.filter_text == ""
        assert "Jobs" in str(box_.border_title)
        await press(pilot, "escape")
        assert app.query_one("#jobs-table", DataTable).row_count == total
        assert app.is_running

    run(app, scenario)


@pytest.mark.parametrize(
    ("key", "table_id", "column"),
    [
        ("4", "jobs-table", "Job"),
        ("5", "db-backups", "Backup"),
        ("3", "offsite-folders", "Folder"),
        ("2", "library-table", "Folder"),
    ],
)
def test_S_sorts_the_focused_table(box: Sandbox, key: str, table_id: str, column: str) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, key)
        await settle(pilot)
        table = app.query_one(f"#{table_id}", DataTable)
        assert table.has_focus and table.row_count > 1
        await press(pilot, "S")
        first = [r[0] for r in rows(app, table_id)]
        assert first == sorted(first, key=str.lower)
        assert str(table.border_title).endswith(f"sorted by {column} ▲")
        await press(pilot, "S")
        assert [r[0] for r in rows(app, table_id)] == list(reversed(first))
        assert str(table.border_title).endswith(f"sorted by {column} ▼")
        await press(pilot, "S")
        second = table.ordered_columns[1].label.plain
        assert str(table.border_title).endswith(f"sorted by {second} ▲")

    run(app, scenario)


def test_sorting_survives_a_reload_and_numbers_sort_by_value(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        await settle(pilot)
        app.query_one("#offsite-folders", DataTable).focus()
        await press(pilot, "S", "S", "S")  # Folder ▲, Folder ▼, Objects ▲
        counts = [int(r[1].replace(",", "")) for r in rows(app, "offsite-folders")]
        assert counts == sorted(counts) and len(counts) > 2
        await press(pilot, "r")
        await settle(pilot)
        assert [int(r[1].replace(",", "")) for r in rows(app, "offsite-folders")] == counts

    run(app, scenario)


def test_ctrl_c_quits(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert app.return_code is None
        await press(pilot, "ctrl+c")
        assert app.return_code == 0

    run(app, scenario)


def test_R_on_the_overview_offers_both_restores(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "R")
        assert isinstance(app.screen, RestoreChoiceScreen)
        await press(pilot, "d")
        await until(pilot, lambda: isinstance(app.screen, RecoveryWizard))
        await settle(pilot)
        assert tab(app) == "tab-database"
        await press(pilot, "escape", "1", "R")
        assert isinstance(app.screen, RestoreChoiceScreen)
        await press(pilot, "m")
        await settle(pilot)
        assert isinstance(app.screen, MediaRestoreScreen) and tab(app) == "tab-offsite"
        await press(pilot, "escape", "1", "R", "escape")
        assert not isinstance(app.screen, RestoreChoiceScreen) and tab(app) == "tab-overview"

    run(app, scenario)


def test_read_only_choice_offers_no_media_restore(box: Sandbox) -> None:
    app = make_app(box, read_only=True)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "R")
        assert isinstance(app.screen, RestoreChoiceScreen)
        await press(pilot, "m")
        assert isinstance(app.screen, RestoreChoiceScreen)  # refused: a media restore is a write
        await press(pilot, "d")
        await until(pilot, lambda: isinstance(app.screen, RecoveryWizard))

    run(app, scenario)


def test_wizard_writes_and_applies_from_a_field_and_the_recovery_shows_in_the_database_tab(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Write YAML writes into the working directory
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "R")
        wizard = app.screen
        assert isinstance(wizard, RecoveryWizard)
        name = wizard.query_one("#wizard-name", Input)
        name.focus()
        await press(pilot, *"keys-wa")  # w and a are letters in a field
        assert name.value == "keys-wa" and app.screen is wizard
        footer = " ".join(f"{b.key} {b.description}" for b in (a.binding for a in wizard.active_bindings.values()))
        assert "ctrl+s Write YAML" in footer and "ctrl+y Apply" in footer
        await press(pilot, "ctrl+s")
        await settle(pilot)
        assert app.screen is not wizard
        assert "name: keys-wa" in (tmp_path / "keys-wa.yaml").read_text()
        posts = len(requests(box, "POST", "/clusters"))
        await press(pilot, "R")
        wizard = app.screen
        assert isinstance(wizard, RecoveryWizard)
        await press(pilot, *"2026-11-26T12:00:00Z")  # the target field has the focus
        assert isinstance(app.screen, RecoveryWizard)
        await press(pilot, "ctrl+y")
        await until(pilot, lambda: len(requests(box, "POST", "/clusters")) == posts + 1)
        await until(pilot, lambda: app.query_one("#db-recoveries", DataTable).row_count > 0)
        created = requests(box, "POST", "/clusters")[-1].data["metadata"]["name"]
        recovered = rows(app, "db-recoveries")
        assert [r[0] for r in recovered] == [created]
        assert recovered[0][3] == "2026-11-26T12:00:00Z" and "/" in recovered[0][2]  # target, ready count
        assert app.query_one("#db-recoveries", DataTable).display

    run(app, scenario)


def test_media_restore_force_reads_on_or_off(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        await settle(pilot)
        await press(pilot, "R")
        force = app.screen.query_one("#restore-force", Checkbox)
        assert "--force: off" in str(force.label) and not force.value
        force.toggle()
        await settle(pilot)
        assert "--force: on" in str(force.label) and force.value

    run(app, scenario)


def test_wizard_says_each_thing_once(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "R")
        said = text(app, "#wizard-help") + "\n" + text(app, "#wizard-result")
        assert said.count("start of the latest media sync") == 1
        labels = [str(b.label) for b in app.screen.query("#wizard-buttons Button")]
        assert labels == ["Write YAML", "Apply", "Cancel"]  # the keys are in the footer, once

    run(app, scenario)


def test_d_describes_the_highlighted_job_and_says_when_nothing_is_selected(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "d")
        assert not isinstance(app.screen, DescribeScreen)
        assert any("nothing selected to describe" in str(n.message) for n in app._notifications)
        await press(pilot, "4")
        await settle(pilot)
        await press(pilot, "down")
        table = app.query_one("#jobs-table", DataTable)
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        await press(pilot, "d")
        assert isinstance(app.screen, DescribeScreen)
        assert app.screen.ref == ObjectRef("Job", name, NS)
        await press(pilot, "escape", "5")
        await settle(pilot)
        await press(pilot, "d")
        assert isinstance(app.screen, DescribeScreen)
        assert app.screen.ref.kind == "Backup" and app.screen.ref.namespace == DB_NS

    run(app, scenario)


def test_colon_switches_the_namespaces_every_pane_reads(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        before = app.services
        await press(pilot, "colon")
        assert isinstance(app.screen, ContextScreen)
        app.screen.dismiss(ContextChoice("sandbox", "photos", DB_NS))
        await settle(pilot)
        assert app.services is not before and app.services.target.namespace == "photos"
        assert all(pane.services is app.services for pane in app.query("Pane"))  # type: ignore[attr-defined]
        assert "photos" in text(app, "#app-context")
        await press(pilot, "4")
        await until(pilot, lambda: "photos" in text(app, "#jobs-error") or "photos" in text(app, "#jobs-cronjob"))
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Switch context / namespace" in titles

    run(app, scenario)


def test_number_keys_leave_every_tab(box: Sandbox) -> None:
    """A focused table must not pull its tab back into view when another tab is chosen."""
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        for key, expected in (
            ("5", "database"),
            ("1", "overview"),
            ("5", "database"),
            ("3", "offsite"),
            ("2", "library"),
        ):
            await press(pilot, key)
            await settle(pilot)
            assert tab(app) == f"tab-{expected}"

    run(app, scenario)
