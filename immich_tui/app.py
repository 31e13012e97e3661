"""`immich-tui`: is Immich safe offsite, and since when — and the actions to keep it so.

The app owns one `Services` (the same layer as `kubectl immich-backup`) and hands it to each pane;
panes never import the app, they ask it for app-wide things with messages (`Pane.StatusWanted`) and
the app pushes app-wide state down (the status report to Overview). Every call to the cluster or the
bucket runs on a thread worker; results come back as worker state messages. Only the verdict
and the visible tab are polled, and a poll never starts while the previous one of the same kind runs.
Writes (trigger, suspend/resume, DB backup) are confirmed first and refused in read-only mode by
`check_action`, the one place that decides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import yaml
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from immich_tui.services.status import Services, StatusReport
from immich_tui.widgets.database import DatabasePane
from immich_tui.widgets.dialogs import ConfirmScreen, HelpScreen
from immich_tui.widgets.jobs import JobsPane
from immich_tui.widgets.library import LibraryPane
from immich_tui.widgets.offsite import OffsitePane
from immich_tui.widgets.overview import OverviewPane, chips
from immich_tui.widgets.pane import Pane
from immich_tui.widgets.restore_dialogs import MediaRestoreRequest, MediaRestoreScreen, RecoveryRequest, RecoveryWizard
from sync_engine.text import one_line

PANES: tuple[tuple[str, str, type[Pane]], ...] = (
    ("overview", "Overview", OverviewPane),
    ("library", "Library", LibraryPane),
    ("offsite", "Offsite", OffsitePane),
    ("jobs", "Jobs", JobsPane),
    ("database", "Database", DatabasePane),
)
WRITE_ACTIONS = frozenset({"trigger_sync", "toggle_suspend", "backup_db", "apply_restore", "media_restore"})
STATUS_SECONDS = 30.0
OVERVIEW_RUNS = 12


class WriteFailed(Exception):
    """A file the app could not write; `str()` is the one-line banner, naming the file and why."""


def write_whole(name: str, text: str, directory: Path | None = None) -> Path:
    """Write `name` in `directory` (the working directory) whole or not at all, and return its path.

    The text goes to a new temporary file beside it (O_EXCL and O_NOFOLLOW: nothing planted there is
    followed), then replaces the file in one rename, so an interrupted write never leaves half a
    manifest for GitOps to apply. A symbolic link or anything else that is not a regular file where the
    file goes is refused, never followed nor replaced: someone else may have planted it to make the app
    write elsewhere. An earlier regular file of the same name is replaced (the same plan, written again).
    """
    try:
        folder = directory if directory is not None else Path.cwd()
    except OSError as exc:
        raise WriteFailed(f"cannot write {name}: the working directory is gone ({exc.strerror or exc})") from None
    target = folder / name
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise WriteFailed(f"cannot write {target}: not a plain file name")

    def refuse_what_is_there() -> None:
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise WriteFailed(f"cannot write {target}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(mode):
            raise WriteFailed(
                f"cannot write {target}: it is a symbolic link, neither followed nor replaced (remove it, or "
                "choose another cluster name)"
            )
        if not stat.S_ISREG(mode):
            raise WriteFailed(f"cannot write {target}: it exists and is not a regular file")

    refuse_what_is_there()
    temp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o666)
    except OSError as exc:
        raise WriteFailed(f"cannot write {target}: cannot create a file in {folder} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        refuse_what_is_there()  # again: a link planted meanwhile is not replaced either
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise WriteFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target


class ImmichApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "immich-tui"
    AUTO_FOCUS = "Tabs"  # the tab strip: keys reach the app, arrows switch tabs

    BINDINGS: ClassVar = [
        *(Binding(str(i), f"show_pane('{pid}')", title, show=False) for i, (pid, title, _) in enumerate(PANES, 1)),
        Binding("t", "trigger_sync", "Trigger sync"),
        Binding("s", "toggle_suspend", "Suspend/Resume"),
        Binding("b", "backup_db", "Backup DB"),
        Binding("R", "restore", "Restore…"),
        Binding("r", "refresh", "Refresh"),
        Binding("slash", "filter", "Filter"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, services: Services, *, tick_seconds: float = 1.0, cursor_blink: bool = True) -> None:
        super().__init__()
        self.services = services
        self.read_only = services.target.read_only
        self.tick_seconds = tick_seconds
        self.cursor_blink = cursor_blink
        self.report: StatusReport | None = None
        self._status_worker: Worker[Any] | None = None
        self._status_at: float | None = None
        self._context_name = services.target.context or ""
        self.media_as_of: dt.datetime | None = None  # the point the recovery wizard chose for the media

    # Layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(" immich-tui", id="app-title")
            yield Static(self._context_text(), id="app-context")
            yield Static(chips(None), id="verdict")
        with TabbedContent(id="tabs"):
            for pid, title, cls in PANES:
                with TabPane(title, id=f"tab-{pid}"):
                    yield cls(self.services, id=pid)
        yield Input(placeholder="filter the pane — Esc clears", id="filter", disabled=True)
        yield Footer()

    def _context_text(self) -> str:
        t = self.services.target
        ro = "  [reverse yellow] READ-ONLY [/]" if self.read_only else ""
        return f" ctx: {self._context_name or '-'}  ns: {t.namespace} / {t.db_namespace}{ro}"

    def on_mount(self) -> None:
        self.query_one("#filter", Input).cursor_blink = self.cursor_blink
        self.refresh_status()
        self.set_interval(self.tick_seconds, self.tick)

    # Loading -------------------------------------------------------------------------------------
    @property
    def active_pane(self) -> Pane:
        active = self.query_one("#tabs", TabbedContent).active.removeprefix("tab-")
        return self.query_one(f"#{active}", Pane)

    def tick(self) -> None:
        """Poll only what is visible: the verdict, and the active tab when its data is due."""
        if self._status_at is None or time.monotonic() - self._status_at >= STATUS_SECONDS:
            self.refresh_status()
        try:
            pane = self.active_pane
        except NoMatches:  # a tick that lands while the app shuts down finds no tabs: nothing to poll
            return
        if not isinstance(pane, OverviewPane) and pane.due():
            pane.load()

    def refresh_status(self) -> None:
        if self._status_worker is not None and self._status_worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            return
        self._status_at = time.monotonic()
        self._status_worker = self.run_worker(
            lambda: self.services.status(report_limit=OVERVIEW_RUNS), thread=True, group="status", exit_on_error=False
        )

    def on_pane_status_wanted(self, message: Pane.StatusWanted) -> None:
        message.stop()
        self.refresh_status()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._status_worker:
            self._status_done(event)
        elif event.worker.group == "write":
            self._write_done(event)

    def _status_done(self, event: Worker.StateChanged) -> None:
        overview = self.query_one("#overview", OverviewPane)
        if event.state == WorkerState.SUCCESS:
            self.report = event.worker.result
            assert self.report is not None
            self._context_name = self.report.context or self._context_name
            self.query_one("#app-context", Static).update(self._context_text())
            self.query_one("#verdict", Static).update(chips(self.report.verdict))
            overview.loaded_at = time.monotonic()
            overview.show(self.report)
        elif event.state == WorkerState.ERROR:
            message = one_line(event.worker.error or RuntimeError("status failed"))
            self.query_one("#verdict", Static).update(
                chips(None, "cluster unreachable" if "reach" in message else "error")
            )
            overview.show_error(message)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.active_pane
        if isinstance(pane, OverviewPane):
            return
        pane.focus_main()
        if pane.due():
            pane.load()
        filter_input = self.query_one("#filter", Input)
        if filter_input.value:
            pane.apply_filter(filter_input.value)

    # Navigation and help -------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        self.query_one("#tabs", TabbedContent).active = f"tab-{pane}"

    def action_refresh(self) -> None:
        self.refresh_status()
        pane = self.active_pane
        if not isinstance(pane, OverviewPane):
            pane.load()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.read_only))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.active_pane.apply_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.active_pane.focus_main()

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.display = False
            box.disabled = True
            self.active_pane.apply_filter("")
            self.active_pane.focus_main()
            event.stop()

    # Writes: one guard, one confirmation, one worker ---------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only mode hides and refuses every write here, for keys and the command palette alike."""
        return not (self.read_only and action in WRITE_ACTIONS)

    def _confirm_then(self, title: str, body: str, confirm: str, work: Callable[[], Any], name: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"{name}…", timeout=3)
                self.run_worker(work, thread=True, group="write", name=name, exit_on_error=False)
            else:
                self.notify(f"{name}: cancelled", timeout=3)

        self.push_screen(ConfirmScreen(title, body, confirm), answered)

    def action_trigger_sync(self) -> None:
        t = self.services.target
        self._confirm_then(
            "Start a media sync now?",
            f"Creates a Job from cronjob/{t.cronjob} in namespace {t.namespace}, exactly as\n"
            f"`kubectl create job --from=cronjob/{t.cronjob}` does. Its log streams in the Jobs tab.",
            "Start sync",
            self.services.media.trigger,
            "trigger sync",
        )

    def action_toggle_suspend(self) -> None:
        history = self.query_one("#jobs", JobsPane).history
        report_history = self.report.media.value if self.report else None
        cronjob = (history or report_history).cronjob if (history or report_history) else None
        suspended = bool(cronjob and cronjob.suspended)
        verb = "Resume" if suspended else "Suspend"
        t = self.services.target
        body = f"Patches cronjob/{t.cronjob} in {t.namespace}: spec.suspend = {str(not suspended).lower()}.\n" + (
            "Nightly syncs start again at the next scheduled time."
            if suspended
            else "No nightly sync runs until you resume it; running Jobs are not stopped."
        )
        self._confirm_then(
            f"{verb} the nightly media sync?",
            body,
            verb,
            lambda: self.services.media.set_suspended(not suspended),
            f"{verb.lower()} sync",
        )

    def action_backup_db(self) -> None:
        t = self.services.target
        self._confirm_then(
            "Take a database backup now?",
            f"Creates a CNPG Backup of cluster {t.db_cluster} in {t.db_namespace} with the method the\n"
            "cluster uses (Barman Cloud Plugin or in-tree barmanObjectStore).",
            "Back up",
            self.services.database.backup_now,
            "database backup",
        )

    def action_restore(self) -> None:
        """Database tab: the recovery wizard (preview allowed read-only). Offsite tab: the media restore Job."""
        pane = self.active_pane
        if isinstance(pane, DatabasePane):
            if pane.state is None:
                self.notify("the Database tab has no cluster data yet", severity="warning")
                return
            reports = self.report.offsite.value.reports if self.report and self.report.offsite.value else None
            latest = reports.latest_ok if reports else None
            can_apply = bool(self.check_action("apply_restore", ()))
            wizard = RecoveryWizard(
                pane.state,
                latest.started if latest else None,
                can_apply=can_apply,
                cursor_blink=self.cursor_blink,
                syncs=reports.points if reports else None,
                syncs_since=reports.listed_since if reports else None,
            )
            self.push_screen(wizard, self._db_restore_answer)
        elif isinstance(pane, OffsitePane):
            if not self.check_action("media_restore", ()):
                self.notify("read-only mode: a media restore is a change to the cluster", severity="warning")
                return
            bucket = pane.state.bucket if pane.state else "the bucket"
            dialog = MediaRestoreScreen(
                self.services.target.namespace, bucket, cursor_blink=self.cursor_blink, as_of=self.media_as_of
            )
            self.push_screen(dialog, self._media_restore_answer)
        else:
            self.notify("R restores: the database from the Database tab, the media from the Offsite tab")

    def _db_restore_answer(self, request: RecoveryRequest | None) -> None:
        if request is not None:
            self.media_as_of = request.plan.as_of  # the media restore dialog starts with the same point
        if request is None:
            self.notify("restore: cancelled", timeout=3)
        elif request.apply and self.check_action("apply_restore", ()):
            manifest = request.plan.manifest
            self.run_worker(
                lambda: self.services.database.create_cluster(manifest),
                thread=True,
                group="write",
                name="database restore",
                exit_on_error=False,
            )
        elif request.path is not None:
            try:
                written = write_whole(request.path.name, yaml.safe_dump(request.plan.manifest, sort_keys=False))
            except WriteFailed as exc:
                self.notify(str(exc), severity="error", timeout=10, markup=False)
                return
            self.notify(f"wrote {written} — apply it with kubectl or commit it for GitOps", timeout=8, markup=False)

    def _media_restore_answer(self, request: MediaRestoreRequest | None) -> None:
        if request is None:
            self.notify("media restore: cancelled", timeout=3)
            return
        pvc, force, as_of = request.pvc, request.force, request.as_of
        self.run_worker(
            lambda: self.services.media.start_restore(pvc, force=force, as_of=as_of),
            thread=True,
            group="write",
            name="media restore",
            exit_on_error=False,
        )

    def _write_done(self, event: Worker.StateChanged) -> None:
        name = event.worker.name
        if event.state == WorkerState.ERROR:
            self.notify(f"{name} failed: {one_line(event.worker.error or 'failed')}", severity="error", timeout=8)
            return
        if event.state != WorkerState.SUCCESS:
            return
        result = event.worker.result
        if name in ("trigger sync", "media restore"):
            self.notify(f"job/{result.name} created", timeout=5)
            self.action_show_pane("jobs")
            self.query_one("#jobs", JobsPane).show_job(result.name)
        elif name == "database restore":
            meta = result.get("metadata", {})
            self.notify(f"cluster/{meta.get('name')} created in {meta.get('namespace')}: it recovers now", timeout=8)
            self.query_one("#database", DatabasePane).load()
        elif name == "database backup":
            self.notify(f"backup/{result.name} created ({result.method})", timeout=5)
            self.query_one("#database", DatabasePane).load()
        else:
            self.notify(f"cronjob/{result.name} {'suspended' if result.suspended else 'resumed'}", timeout=5)
            self.query_one("#jobs", JobsPane).load()
        self.refresh_status()

    # Command palette -----------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every pane and every action; writes only when allowed (the same check as the keys)."""
        yield from super().get_system_commands(screen)
        for pid, title, _ in PANES:
            yield SystemCommand(f"Go to {title}", f"Show the {title} tab", lambda p=pid: self.action_show_pane(p))
        actions = (
            ("trigger_sync", "Trigger media sync", "Start a Job from the CronJob now", self.action_trigger_sync),
            (
                "toggle_suspend",
                "Suspend / resume media sync",
                "Toggle the CronJob's suspend",
                self.action_toggle_suspend,
            ),
            ("backup_db", "Back up the database now", "Create a CNPG Backup", self.action_backup_db),
            ("restore", "Restore…", "Database recovery wizard or media restore Job", self.action_restore),
            ("refresh", "Refresh", "Reload the verdict and the visible tab", self.action_refresh),
            ("filter", "Filter", "Filter the visible tab", self.action_filter),
            ("help", "Help", "Keys and panes", self.action_help),
        )
        for action, title, help_, fn in actions:
            if self.check_action(action, ()):
                yield SystemCommand(title, help_, fn)
        offsite = self.query_one("#offsite", OffsitePane)

        def on_offsite(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                self.action_show_pane("offsite")
                fn()

            return run

        yield SystemCommand("List the bucket", "Exact object counts per folder", on_offsite(offsite.action_list_bucket))
        yield SystemCommand(
            "Verify offsite", "Check the bucket against the run manifests", on_offsite(offsite.action_verify)
        )
