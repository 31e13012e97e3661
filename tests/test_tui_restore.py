"""The TUI's restore dialogs on a sandbox of their own (a real sync elsewhere would move "the latest media
sync" past the pinned clock): the database wizard and the media restore Job, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, TabbedContent

from immich_tui.demo.world import Sandbox
from immich_tui.widgets.logview import LogView
from immich_tui.widgets.restore_dialogs import MediaRestoreScreen, RecoveryWizard
from tests.test_tui_actions import press, requests, run, settle, text, until
from tests.tui import PinnedClock, make_app, start_sandbox


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("restore"))
        yield sandbox
        sandbox.stop()


def test_db_restore_wizard_previews_warns_and_applies(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "R")
        assert isinstance(app.screen, RecoveryWizard)
        wizard = app.screen
        assert "recovers to" in text(app, "#wizard-result")  # the default target: the latest media sync
        assert (
            wizard.plan is not None
            and "targetTime" in wizard.plan.manifest["spec"]["bootstrap"]["recovery"]["recoveryTarget"]
        )
        await press(pilot, *"2020-01-01T00:00:00Z")
        assert "before the recovery window" in text(app, "#wizard-result")
        assert wizard.query_one("#apply", Button).disabled
        target = wizard.query_one("#wizard-target", Input)
        target.value = "2026-11-27T09:00:00Z"  # after the latest media sync (02:30)
        await settle(pilot)
        assert "offsite media copy does not have" in text(app, "#wizard-result")
        wizard.query_one("#wizard-name", Input).value = "immich-db-wizard"
        await settle(pilot)
        before = len(requests(box, "POST", "/clusters"))
        wizard.query_one("#apply", Button).press()
        await settle(pilot)
        await until(pilot, lambda: len(requests(box, "POST", "/clusters")) == before + 1)
        created = requests(box, "POST", "/clusters")[-1].data
        assert created["metadata"]["name"] == "immich-db-wizard"
        assert created["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {"targetTime": "2026-11-27T09:00:00Z"}
        await press(pilot, "R", "escape")
        assert not isinstance(app.screen, RecoveryWizard)

    run(app, scenario)


def test_db_restore_wizard_read_only_previews_but_never_applies(box: Sandbox) -> None:
    app = make_app(box, read_only=True)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "R")
        assert isinstance(app.screen, RecoveryWizard)
        assert app.screen.query_one("#apply", Button).disabled
        assert not app.screen.query_one("#write", Button).disabled
        await press(pilot, "escape", "3", "R")
        assert not isinstance(app.screen, RecoveryWizard)
        assert not requests(box, "POST", "/jobs") or all(
            "restore" not in r.data["metadata"]["name"] for r in requests(box, "POST", "/jobs")
        )

    run(app, scenario)


def test_media_restore_job_restores_the_library_and_streams_its_log(box: Sandbox) -> None:
    app = make_app(box, tick_seconds=0.5)
    restored = box.sync_target().restore_root
    box.sync()  # something to restore: the sample library's first backup

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        await settle(pilot)
        await press(pilot, "R")
        assert isinstance(app.screen, MediaRestoreScreen)
        app.screen.query_one("#yes", Button).press()
        await until(pilot, lambda: any("restore" in r.data["metadata"]["name"] for r in requests(box, "POST", "/jobs")))
        job = requests(box, "POST", "/jobs")[-1].data
        assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
            {"secretRef": {"name": "immich-offsite-restorer"}}
        ]
        # the request is seen before its answer reaches the app, which then switches to the Jobs tab
        await until(pilot, lambda: app.query_one("#tabs", TabbedContent).active == "tab-jobs")
        log = app.query_one(LogView)
        await until(pilot, lambda: "log ended" in text(app, "#jobs-log-status"), timeout=90)
        assert any("restore" in line for line in log.lines)
        table = app.query_one("#jobs-table", DataTable)
        assert "restore" in str(table.get_row_at(0)[0])

    run(app, scenario)
    for folder in ("upload", "library", "profile", "thumbs", "encoded-video", "backups"):
        assert (restored / folder / ".immich").is_file()
    backed_up = [p for f in ("upload", "library", "profile") for p in (box.library / f).rglob("*") if p.is_file()]
    assert len(backed_up) == 203
    for path in backed_up:
        assert (restored / path.relative_to(box.library)).read_bytes() == path.read_bytes(), path
