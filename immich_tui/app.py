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
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalGroup
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.widgets._footer import FooterKey  # not re-exported; Textual is pinned exactly
from textual.worker import Worker, WorkerState

from immich_tui.services.contexts import ContextChoice, switch
from immich_tui.services.kube import context_name
from immich_tui.services.status import Services, StatusReport
from immich_tui.services.workload import ServerWorkload, refuse_while_running
from immich_tui.widgets.context import ContextScreen
from immich_tui.widgets.database import DatabasePane
from immich_tui.widgets.describe import DescribeScreen
from immich_tui.widgets.dialogs import ConfirmScreen, HelpScreen
from immich_tui.widgets.jobs import JobsPane
from immich_tui.widgets.library import LibraryPane
from immich_tui.widgets.offsite import OffsitePane
from immich_tui.widgets.overview import OverviewPane, chips
from immich_tui.widgets.pane import NARROW, Pane
from immich_tui.widgets.restore_dialogs import (
    MediaRestoreRequest,
    MediaRestoreScreen,
    RecoveryRequest,
    RecoveryWizard,
    RestoreChoiceScreen,
)
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
TITLE = " immich-tui"
PINNED_ACTIONS = ("help", "quit")


class KeysFooter(Footer):
    """The footer with `? Help` and `q Quit` (and the palette) pinned right: whatever else a narrow
    terminal cuts off, the way to every other key and the way out are always on screen."""

    def compose(self) -> ComposeResult:
        pinned: list[Widget] = []
        for widget in super().compose():
            if isinstance(widget, FooterKey) and (
                widget.action in PINNED_ACTIONS or widget.has_class("-command-palette")
            ):
                widget.remove_class("-command-palette")
                pinned.append(widget)
            else:
                yield widget
        if pinned:
            pinned.sort(key=lambda w: PINNED_ACTIONS.index(w.action) if w.action in PINNED_ACTIONS else 9)
            with HorizontalGroup(id="footer-pinned"):
                yield from pinned


def elide(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: max(1, cells - 1)] + "…"


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
        Binding("d", "describe", "Describe"),
        Binding("colon", "switch_context", "Context", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),  # Textual's default is copy
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
        # named from the kubeconfig before any request, so an unreachable cluster is still named
        self._context_name = context_name(services.target.kubeconfig, services.target.context)
        self.media_as_of: dt.datetime | None = None  # the point the recovery wizard chose for the media
        self._chips: Text = chips(None)
        self._filter_target: Widget | None = None  # what `/` filters: the widget focused when it was pressed
        self._filter_pane: Pane | None = None

    # Layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(TITLE, id="app-title")
            yield Static(self._context_text(), id="app-context")
            yield Static(self._chips, id="verdict")
        with TabbedContent(id="tabs"):
            for pid, title, cls in PANES:
                with TabPane(title, id=f"tab-{pid}"):
                    yield cls(self.services, id=pid)
        yield Input(placeholder="filter: a regex or plain text — Esc clears", id="filter", disabled=True)
        yield KeysFooter(compact=True)

    def _context_text(self, room: int | None = None) -> str:
        """The context and namespaces in `room` cells: spelled out when they fit, then compact, then
        with the context name elided. `room` defaults to what the title and the verdict chips leave."""
        t = self.services.target
        ctx = self._context_name or "-"
        if room is None:
            room = (self.size.width or 120) - len(TITLE) - self._chips.cell_len - 1
        ro, ro_short = "  [reverse yellow] READ-ONLY [/]", " [reverse yellow] RO [/]"
        candidates = [
            (f" ctx: {ctx}  ns: {t.namespace} / {t.db_namespace}", ro),
            (f" {ctx} · {t.namespace}/{t.db_namespace}", ro),
            (f" {ctx} · {t.namespace}/{t.db_namespace}", ro_short),
        ]
        for text, flag in candidates:
            flag = flag if self.read_only else ""
            if len(text) + Text.from_markup(flag).cell_len <= room:
                return text + flag
        flag = ro_short if self.read_only else ""
        spaces = f" · {t.namespace}/{t.db_namespace}"
        keep = room - len(spaces) - Text.from_markup(flag).cell_len - 1
        if keep >= 4:
            return f" {elide(ctx, keep)}{spaces}{flag}"
        return f" {elide(ctx, max(4, room - 1 - Text.from_markup(flag).cell_len))}{flag}"

    def _update_header(self) -> None:
        """The verdict chips are never cut; the context comes next, and the app's name gives way to it
        in a narrow terminal (the terminal's title bar names the app anyway)."""
        width = self.size.width or 120
        room = width - self._chips.cell_len - 1
        with_title = self._context_text(room - len(TITLE))
        title_fits = "…" not in with_title or "…" in self._context_text(room)
        self.query_one("#app-title", Static).display = title_fits
        self.query_one("#app-context", Static).update(with_title if title_fits else self._context_text(room))
        self.query_one("#verdict", Static).update(self._chips)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).cursor_blink = self.cursor_blink
        self.refresh_status()
        self.set_interval(self.tick_seconds, self.tick)

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW, "-narrow")
        with contextlib.suppress(NoMatches):
            self._update_header()

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
            self._chips = chips(self.report.verdict)
            self._update_header()
            overview.loaded_at = time.monotonic()
            overview.show(self.report)
        elif event.state == WorkerState.ERROR:
            message = one_line(event.worker.error or RuntimeError("status failed"))
            self._chips = chips(None, "cluster unreachable" if "reach" in message else "error")
            self._update_header()
            overview.show_error(message)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._close_filter()  # a filter belongs to the panel it was typed for
        pane = self.active_pane
        if isinstance(pane, OverviewPane):
            return
        pane.focus_main()
        if pane.due():
            pane.load()

    # Navigation and help -------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        # Let go of the focus first: hiding the focused table moves the focus to the next widget of the
        # same tab, and a focused widget in a tab makes TabbedContent show that tab again.
        self.screen.set_focus(None)
        self.query_one("#tabs", TabbedContent).active = f"tab-{pane}"

    def action_refresh(self) -> None:
        self.refresh_status()
        pane = self.active_pane
        if not isinstance(pane, OverviewPane):
            pane.load()

    def _focused_panel(self) -> tuple[Pane, Widget | None]:
        """The active tab's pane and its widget that has focus (None when the focus is elsewhere, e.g. on
        the tab strip): `?`, `/` and `S` act on that panel, as in lazygit and k9s."""
        pane = self.active_pane
        focused = self.screen.focused
        if focused is not None and (focused is pane or pane in focused.ancestors):
            return pane, focused
        return pane, None

    def action_help(self) -> None:
        pane, focused = self._focused_panel()
        keys: list[tuple[str, str]] = list(pane.help_keys)  # said better than a binding's short name
        seen: set[str] = {key for key, _ in keys}
        for node in (focused, pane) if focused is not None else (pane,):
            for binding in node._bindings.key_to_bindings.values():
                for b in binding:
                    if b.show and b.description and b.key not in seen:
                        seen.add(b.key)
                        keys.append((self.get_key_display(b), b.description.lower()))
        name = str(focused.border_title or "") if focused is not None else ""
        name = name.split(" · sorted by ")[0]
        title = f"{pane.title}: {name}" if name and name != pane.title else (pane.title or "Overview")
        self.push_screen(HelpScreen(self.read_only, title, keys))

    def action_filter(self) -> None:
        pane, focused = self._focused_panel()
        if isinstance(pane, OverviewPane):
            self.notify("the Overview has nothing to filter: pick a tab with a table (2-5)", timeout=4)
            return
        if focused is None:
            pane.focus_main()
            focused = self.screen.focused
        self._close_filter()
        self._filter_target, self._filter_pane = focused, pane
        box = self.query_one("#filter", Input)
        name = str(focused.border_title or pane.title) if focused is not None else pane.title
        box.border_title = f"filter {name.split(' · sorted by ')[0]}"
        box.border_subtitle = ""
        box.disabled = False
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and self._filter_pane is not None:
            self._filter_pane.apply_filter(event.value, self._filter_target)
            event.input.border_subtitle = self._filter_pane.filter_problem

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._refocus_filtered()

    def _refocus_filtered(self) -> None:
        target = self._filter_target
        if target is not None and target.is_attached and target.focusable:
            target.focus()
        else:
            self.active_pane.focus_main()

    def _close_filter(self) -> None:
        """Clear the filter of the panel it was typed for, and hide the box."""
        box = self.query_one("#filter", Input)
        if self._filter_pane is not None and box.value:
            box.value = ""
            self._filter_pane.apply_filter("", self._filter_target)
        box.display = False
        box.disabled = True

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            self._close_filter()
            self._refocus_filtered()
            event.stop()

    # Describe and context ------------------------------------------------------------------------
    def action_describe(self) -> None:
        """`d`: what `kubectl describe` says about the object under the cursor."""
        ref = self.active_pane.selected_ref()
        if ref is None:
            self.notify("nothing selected to describe", severity="warning", timeout=4)
            return
        self.push_screen(DescribeScreen(self.services, ref))

    def action_switch_context(self) -> None:
        """`:`: another kubeconfig context or namespaces; every pane then reads through the new services."""
        self.push_screen(ContextScreen(self.services), self._context_chosen)

    def _context_chosen(self, choice: ContextChoice | None) -> None:
        if choice is None:
            return
        try:
            services = switch(self.services, choice)
        except Exception as exc:  # a bad kubeconfig or context: say so, keep the current one
            self.notify(f"cannot switch context: {one_line(exc)}", severity="error", timeout=8, markup=False)
            return
        self.services = services
        self.read_only = services.target.read_only
        self._context_name = services.target.context or choice.context
        self.report = None
        self._chips = chips(None)
        for pane in self.query(Pane):
            pane.services = services
            pane.loaded_at = None
            pane._worker = None  # a read still running answers for the old context: ignored
        self._update_header()
        self._status_worker = None
        self.refresh_status()
        pane = self.active_pane
        if not isinstance(pane, OverviewPane):
            pane.load()
        self.refresh_bindings()

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
        """Database tab: the recovery wizard (preview allowed read-only). Offsite tab: the media restore Job.
        Elsewhere: a choice between the two, which then opens in its own tab."""
        pane = self.active_pane
        if isinstance(pane, DatabasePane):
            self._open_recovery_wizard(pane)
        elif isinstance(pane, OffsitePane):
            self._open_media_restore(pane)
        else:
            media_allowed = bool(self.check_action("media_restore", ()))
            self.push_screen(RestoreChoiceScreen(media_allowed=media_allowed), self._restore_chosen)

    def _restore_chosen(self, what: str | None) -> None:
        if what == "database":
            self.action_show_pane("database")
            database = self.query_one("#database", DatabasePane)
            if database.state is None:  # the tab's first load is on its way: open once it has answered
                database.when_loaded.append(lambda: self._open_recovery_wizard(database))
                database.load()
            else:
                self._open_recovery_wizard(database)
        elif what == "media":
            self.action_show_pane("offsite")
            self._open_media_restore(self.query_one("#offsite", OffsitePane))

    def _open_recovery_wizard(self, pane: DatabasePane) -> None:
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

    def _open_media_restore(self, pane: OffsitePane) -> None:
        if not self.check_action("media_restore", ()):
            self.notify("read-only mode: a media restore is a change to the cluster", severity="warning")
            return
        bucket = pane.state.bucket if pane.state else "the bucket"
        dialog = MediaRestoreScreen(
            self.services.target.namespace, bucket, cursor_blink=self.cursor_blink, as_of=self.media_as_of
        )
        self.push_screen(dialog, self._media_restore_answer)

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
        workload = ServerWorkload(namespace=self.services.target.namespace)
        allow = request.allow_running_server

        def restore() -> Any:
            """The plugin's rule: refused while the Immich server runs, unless the dialog's box says so."""
            refuse_while_running(
                self.services.kube, workload, allow=allow, override='tick "--allow-running-server" in the dialog'
            )
            return self.services.media.start_restore(pvc, force=force, as_of=as_of)

        self.run_worker(
            restore,
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
            ("describe", "Describe", "The selected object's conditions, Events and YAML", self.action_describe),
            (
                "switch_context",
                "Switch context / namespace",
                "Another kubeconfig context or namespaces",
                self.action_switch_context,
            ),
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
