"""Pilot tests for every action of the TUI on the sandbox: confirm and cancel, read-only refusal,
failing panes, and polling that never overlaps and skips hidden tabs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, TabbedContent
from textual.worker import WorkerFailed

from immich_tui.app import ImmichApp
from immich_tui.demo.emulator import Denial
from immich_tui.demo.fixtures import CRONJOB, DB_NS, NS
from immich_tui.demo.world import Sandbox
from immich_tui.services.status import Services, Target
from immich_tui.widgets.dialogs import ConfirmScreen, HelpScreen
from immich_tui.widgets.logview import LogView
from tests.tui import SIZE, PinnedClock, make_app, start_sandbox


async def settle(pilot: Pilot[Any], rounds: int = 3) -> None:
    for _ in range(rounds):
        with contextlib.suppress(WorkerFailed):  # a failed load is the app's to show, not the test's
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Press, then let the action run (a pushed dialog is on screen, a started worker has begun)."""
    for key in keys:
        await pilot.press(key)
        await pilot.pause()


async def until(pilot: Pilot[Any], condition: Any, timeout: float = 60.0) -> None:
    """Wait for something the app does in the background (a sandbox Job runs the real engine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for the app"
        await pilot.pause(0.1)


def text(app: ImmichApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def requests(box: Any, method: str, path: str) -> list[Any]:
    return [r for r in box.server.emulator.requests if r.method.value == method and path in str(r.url.path)]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("actions"))
        yield sandbox
        sandbox.stop()


def run(app: ImmichApp, scenario: Any, size: tuple[int, int] = SIZE) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    with PinnedClock():
        asyncio.run(main())


def test_trigger_sync_streams_the_log_and_updates_offsite(box: Sandbox) -> None:
    app = make_app(box, tick_seconds=0.5)  # polling picks up the new Job's pod

    async def scenario(pilot: Pilot[Any]) -> None:
        runs_before = len(app.report.offsite.value.reports.runs)  # type: ignore[union-attr]
        await press(pilot, "t")
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "y")
        await until(pilot, lambda: requests(box, "POST", "/jobs"))
        created = requests(box, "POST", "/jobs")[-1].data
        assert created["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
        # the request is seen before its answer reaches the app, which then switches to the Jobs tab
        await until(pilot, lambda: app.query_one("#tabs", TabbedContent).active == "tab-jobs")
        log = app.query_one(LogView)
        await until(pilot, lambda: any("backup ok" in line for line in log.lines), timeout=90)
        await until(pilot, lambda: "log ended" in text(app, "#jobs-log-status"))
        await press(pilot, "3")
        await settle(pilot)
        await until(pilot, lambda: app.query_one("#offsite-runs", DataTable).row_count > runs_before)
        newest = app.query_one("#offsite-runs", DataTable).get_row_at(0)
        assert "ok" in str(newest[1]) and newest[2] == "full"

    run(app, scenario)


def test_trigger_cancelled_creates_nothing(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        before = len(requests(box, "POST", "/jobs"))
        await press(pilot, "t")
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "n")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        await press(pilot, "t", "escape")
        await settle(pilot)
        assert len(requests(box, "POST", "/jobs")) == before

    run(app, scenario)


def test_suspend_then_resume(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4")
        await settle(pilot)
        await press(pilot, "s")
        assert "Suspend the nightly media sync?" in str(app.screen.query_one("#dialog-title", Static).render())
        await press(pilot, "y")
        await until(pilot, lambda: (box.server.get("batch/v1/cronjobs", NS, CRONJOB) or {})["spec"]["suspend"] is True)
        await settle(pilot)
        await until(pilot, lambda: "SUSPENDED" in text(app, "#jobs-cronjob"))
        await press(pilot, "s")
        assert "Resume the nightly media sync?" in str(app.screen.query_one("#dialog-title", Static).render())
        await press(pilot, "y")
        await until(pilot, lambda: (box.server.get("batch/v1/cronjobs", NS, CRONJOB) or {})["spec"]["suspend"] is False)

    run(app, scenario)


def test_backup_db_now(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        before = len(requests(box, "POST", "/backups"))
        await press(pilot, "5")
        await settle(pilot)
        await press(pilot, "b", "y")
        await until(pilot, lambda: len(requests(box, "POST", "/backups")) == before + 1)
        body = requests(box, "POST", "/backups")[-1].data
        assert body["spec"]["method"] == "plugin"
        assert body["metadata"]["namespace"] == DB_NS
        await settle(pilot)
        await until(pilot, lambda: app.query_one("#db-backups", DataTable).get_row_at(0)[0] == body["metadata"]["name"])

    run(app, scenario)


def test_refresh_filter_help_and_palette(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5")
        await settle(pilot)
        rows = app.query_one("#db-backups", DataTable).row_count
        lists_before = len(requests(box, "GET", "/backups"))
        await press(pilot, "r")
        await settle(pilot)
        assert len(requests(box, "GET", "/backups")) > lists_before
        await press(pilot, "slash")
        assert app.query_one("#filter", Input).has_focus
        await press(pilot, *"1126")
        await settle(pilot)
        filtered = app.query_one("#db-backups", DataTable).row_count
        assert 0 < filtered < rows
        await press(pilot, "escape")
        await settle(pilot)
        assert app.query_one("#db-backups", DataTable).row_count == rows
        assert not app.query_one("#filter", Input).display
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await press(pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for expected in (
            "Go to Overview",
            "Go to Library",
            "Go to Offsite",
            "Go to Jobs",
            "Go to Database",
            "Trigger media sync",
            "Suspend / resume media sync",
            "Back up the database now",
            "Refresh",
            "Filter",
            "Help",
            "List the bucket",
            "Verify offsite",
        ):
            assert expected in titles

    run(app, scenario)


def test_offsite_verify_and_listing(box: Sandbox) -> None:
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        await settle(pilot)
        await press(pilot, "v")
        await settle(pilot)
        await until(pilot, lambda: "verify" in text(app, "#offsite-task") and "…" not in text(app, "#offsite-task"))
        assert "verify ok" in text(app, "#offsite-task")
        await press(pilot, "l")
        await settle(pilot)
        await until(pilot, lambda: "bucket listed" in text(app, "#offsite-task"))

    run(app, scenario)


def test_read_only_hides_and_refuses_every_write(box: Sandbox) -> None:
    app = make_app(box, read_only=True)

    async def scenario(pilot: Pilot[Any]) -> None:
        posts, patches = len(requests(box, "POST", "")), len(requests(box, "PATCH", ""))
        for key in ("t", "s", "b"):
            await press(pilot, key)
            await settle(pilot)
            assert not isinstance(app.screen, ConfirmScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Trigger media sync" not in titles and "Back up the database now" not in titles
        assert not any(app.check_action(a, ()) for a in ("trigger_sync", "toggle_suspend", "backup_db"))
        shown = {b.binding.key for b in app.screen.active_bindings.values() if b.enabled and b.binding.show}
        assert not shown & {"t", "s", "b"} and "r" in shown
        assert "READ-ONLY" in text(app, "#app-context")
        assert len(requests(box, "POST", "")) == posts and len(requests(box, "PATCH", "")) == patches

    run(app, scenario)


def test_rbac_denied_pane_degrades_with_a_message(tmp_path: Path) -> None:
    with PinnedClock():
        box = start_sandbox(tmp_path)
    try:
        box.server.emulator.denials.append(Denial("list", "backups", group="postgresql.cnpg.io"))
        box.server.emulator.denials.append(Denial("create", "jobs", group="batch"))
        app = make_app(box)

        async def scenario(pilot: Pilot[Any]) -> None:
            await press(pilot, "5")
            await settle(pilot)
            banner = text(app, "#database-error")
            assert "RBAC denies list backups.postgresql.cnpg.io in namespace postgresql" in banner
            await press(pilot, "4")
            await settle(pilot)
            assert app.query_one("#jobs-table", DataTable).row_count > 0  # the other panes still work
            await press(pilot, "t", "y")
            await settle(pilot)
            await until(
                pilot, lambda: any("RBAC denies create jobs.batch" in str(n.message) for n in app._notifications)
            )
            assert not requests(box, "POST", "/jobs")

        run(app, scenario)
    finally:
        box.stop()


def test_unreachable_cluster_and_bad_credentials_do_not_crash(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: gone, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: gone, context: {cluster: gone, user: u}}]\n"
        "current-context: gone\n"
    )
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAWRONG",
        "AWS_SECRET_ACCESS_KEY": "wrong",
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": "immich-offsite",
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
    }
    app = ImmichApp(Services(Target(kubeconfig=str(kubeconfig)), env=env), tick_seconds=3600, cursor_blink=False)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert "cannot reach the cluster at http://127.0.0.1:9" in text(app, "#overview-error")
        assert "unreachable" in text(app, "#verdict")
        for key in ("2", "3", "4", "5"):
            await press(pilot, key)
            await settle(pilot)
        assert "cannot reach" in text(app, "#jobs-error")
        assert "cannot reach" in text(app, "#database-error")
        assert text(app, "#offsite-error").startswith("⚠ ")  # S3 unreachable with the env credentials
        assert app.is_running

    run(app, scenario)


def test_polls_never_overlap_and_skip_hidden_tabs(tmp_path: Path) -> None:
    with PinnedClock():
        box = start_sandbox(tmp_path)
    try:
        app = ImmichApp(Services(Target(kubeconfig=str(box.kubeconfig)), env=box.env), tick_seconds=0.05)

        async def scenario(pilot: Pilot[Any]) -> None:
            for _ in range(20):
                await pilot.pause(0.05)
            # Overview visible: nothing of the Library (exec) or Offsite listing was fetched
            assert not [r for r in box.server.emulator.requests if "exec" in str(r.url.path)]
            await press(pilot, "5")
            pane = app.query_one("#database")
            before = len(requests(box, "GET", "/backups"))
            for _ in range(10):
                pane.load()  # type: ignore[attr-defined]
            await settle(pilot)
            assert len(requests(box, "GET", "/backups")) - before <= 1

        run(app, scenario)
    finally:
        box.stop()
