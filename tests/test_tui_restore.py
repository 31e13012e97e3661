"""The TUI's restore dialogs on a sandbox of their own (a real sync elsewhere would move "the latest media
sync" past the pinned clock): the database wizard and the media restore Job, end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, DataTable, Input, Static, TabbedContent

from immich_tui.demo.world import Sandbox
from immich_tui.services import clock
from immich_tui.services.cnpg import DbState
from immich_tui.services.pointintime import SyncPoint
from immich_tui.widgets.logview import LogView
from immich_tui.widgets.restore_dialogs import MediaRestoreScreen, RecoveryRequest, RecoveryWizard
from tests.test_deploy import mounted_secret
from tests.test_restore_db import _source
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
        app.screen.query_one("#yes", Button).press()  # the sandbox's Immich server pod runs: refused
        await until(pilot, lambda: any("Immich server is running" in str(n.message) for n in app._notifications))
        refusal = next(str(n.message) for n in app._notifications if "Immich server is running" in str(n.message))
        assert "kubectl -n immich scale deployment/immich-server --replicas=0" in refusal
        assert not any("restore" in r.data["metadata"]["name"] for r in requests(box, "POST", "/jobs"))
        await press(pilot, "R")
        assert isinstance(app.screen, MediaRestoreScreen)
        allow = app.screen.query_one("#restore-allow-running", Checkbox)
        allow.value = True
        await settle(pilot)
        assert str(allow.label).startswith("--allow-running-server: on")
        app.screen.query_one("#yes", Button).press()
        await until(pilot, lambda: any("restore" in r.data["metadata"]["name"] for r in requests(box, "POST", "/jobs")))
        job = requests(box, "POST", "/jobs")[-1].data
        assert mounted_secret(job["spec"]["template"]["spec"]) == "immich-offsite-restorer"
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


def test_one_point_for_both_where_the_media_had_no_finished_sync_is_refused(box: Sandbox) -> None:
    """The sandbox's run reports were stored by S3 after the pinned clock's morning: no sync had finished
    by then, so the database and the media cannot meet there, and Apply stays off."""
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "R")
        wizard = app.screen
        assert isinstance(wizard, RecoveryWizard)
        wizard.query_one("#wizard-as-of", Checkbox).value = True
        await settle(pilot)
        assert "one point in time needs a time with a zone" in text(app, "#wizard-result")
        wizard.query_one("#wizard-target", Input).value = "2026-11-27T08:00:00Z"
        await settle(pilot)
        result = text(app, "#wizard-result")
        assert "no point as of 2026-11-27T08:00:00Z has both the database and the media" in result
        assert "no media sync had finished by 2026-11-27T08:00:00Z" in result
        assert wizard.query_one("#apply", Button).disabled and wizard.query_one("#write", Button).disabled
        await press(pilot, "escape")

    run(app, scenario)


class WizardHost(App[None]):
    """The wizard alone, on a recovery window and media syncs made up for it, so the one point can be met
    (the sandbox's syncs are stored by S3 at real time, after the pinned clock)."""

    def __init__(self, wizard: RecoveryWizard) -> None:
        super().__init__()
        self.wizard = wizard
        self.answer: RecoveryRequest | None = None

    def on_mount(self) -> None:
        self.push_screen(self.wizard, self.done)

    def done(self, answer: RecoveryRequest | None) -> None:
        self.answer = answer


def test_one_point_for_both_plans_the_database_where_the_media_meet_it() -> None:
    cluster, backups = _source("plugin")
    now = clock.now()
    started = now - dt.timedelta(hours=5)
    syncs = [SyncPoint("r", started, started + dt.timedelta(minutes=9), "c")]
    state = DbState(cluster, backups, len(backups), [], None, None)
    host = WizardHost(RecoveryWizard(state, started, can_apply=False, cursor_blink=False, syncs=syncs))
    point = clock.iso(now - dt.timedelta(hours=1)) or ""

    async def main() -> None:
        async with host.run_test(size=(140, 45)) as pilot:
            wizard = host.wizard
            wizard.query_one("#wizard-target", Input).value = point
            wizard.query_one("#wizard-as-of", Checkbox).value = True
            await pilot.pause()
            result = str(wizard.query_one("#wizard-result", Static).render())
            assert f"recovers to {clock.iso(started)}" in result
            assert f"media: restore them as of {point}" in result
            assert f"the library as the sync started {clock.iso(started)} copied it" in result
            wizard.query_one("#write", Button).press()
            await pilot.pause()

    asyncio.run(main())
    assert host.answer is not None and host.answer.plan.as_of is not None
    assert clock.iso(host.answer.plan.as_of) == point and host.answer.plan.target.time == started


def test_media_restore_as_of_a_time_reaches_the_job_and_a_bad_time_is_named(box: Sandbox) -> None:
    app = make_app(box, tick_seconds=0.5)
    box.sync()
    point = dt.datetime.now(dt.UTC)  # the engine judges --as-of by the real clock, not the pinned one
    app.media_as_of = point  # what the recovery wizard hands over when it planned one point for both

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        await settle(pilot)
        await press(pilot, "R")
        dialog = app.screen
        assert isinstance(dialog, MediaRestoreScreen)
        box_as_of = dialog.query_one("#restore-as-of", Input)
        assert box_as_of.value == clock.iso(point)  # filled in from the wizard's point
        jobs_before = len(requests(box, "POST", "/jobs"))
        box_as_of.value = "2026-11-27T02:30:00"
        dialog.query_one("#yes", Button).press()
        await settle(pilot)
        assert "must be RFC 3339 with an explicit zone" in text(app, "#restore-error")
        assert isinstance(app.screen, MediaRestoreScreen) and len(requests(box, "POST", "/jobs")) == jobs_before
        box_as_of.value = clock.iso(point) or ""
        dialog.query_one("#restore-force", Checkbox).value = True  # an earlier test restored into the volume
        dialog.query_one("#restore-allow-running", Checkbox).value = True  # the sandbox's server pod runs
        dialog.query_one("#yes", Button).press()
        await until(pilot, lambda: len(requests(box, "POST", "/jobs")) == jobs_before + 1)
        job = requests(box, "POST", "/jobs")[-1].data
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--as-of", clock.iso(point)]
        await until(pilot, lambda: app.query_one("#tabs", TabbedContent).active == "tab-jobs")
        await until(pilot, lambda: "log ended" in text(app, "#jobs-log-status"), timeout=90)
        assert any(f"as it was at {clock.iso(point)}" in line for line in app.query_one(LogView).lines)

    run(app, scenario)
