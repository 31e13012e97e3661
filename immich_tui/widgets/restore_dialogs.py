"""Restore dialogs: the database recovery wizard (Database tab, `R`) and the media restore (Offsite tab, `R`).

The wizard plans with data the Database tab and the run-report listing already hold — no request until
Apply — and shows the new Cluster as YAML before anything is created. With "one point in time" it picks
the database's target where the media as of the typed time meet it (`services.pointintime`), and the
media restore dialog then starts with that time. Apply and the media restore are writes: the app's
read-only guard refuses them in one place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Static

from immich_tui.services.cnpg import DbState
from immich_tui.services.errors import ServiceError
from immich_tui.services.pointintime import SyncPoint
from immich_tui.services.recovery import RecoveryPlan, parse_target_time, plan_recovery, rfc3339
from immich_tui.widgets.dialogs import FitsTheTerminal


class RestoreChoiceScreen(ModalScreen[str | None]):
    """`R` where neither restore is at home (Overview, Library, Jobs): which one, in one key."""

    BINDINGS = [
        Binding("d", "choose('database')", "Database", show=False),
        Binding("m", "choose('media')", "Media", show=False),
        Binding("escape", "choose(None)", "Cancel", show=False),
    ]

    def __init__(self, *, media_allowed: bool) -> None:
        super().__init__()
        self.media_allowed = media_allowed

    def compose(self) -> ComposeResult:
        with Vertical(id="choice"):
            yield Static("Restore what?", id="dialog-title")
            yield Button("Database recovery wizard (d)", variant="primary", id="database")
            yield Button("Media restore (m)", variant="warning", id="media", disabled=not self.media_allowed)
            if not self.media_allowed:
                yield Static("[yellow]read-only: a media restore changes the cluster[/]", id="choice-note")
            yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#database", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, what: str | None) -> None:
        if what == "media" and not self.media_allowed:
            return
        self.dismiss(what)


@dataclass
class RecoveryRequest:
    """What the wizard hands back: apply this plan, or write it to `path`, a bare file name the app writes
    into its working directory (the plan's name is a DNS label, so it cannot name another directory)."""

    plan: RecoveryPlan
    apply: bool
    path: Path | None = None


class RecoveryWizard(FitsTheTerminal, ModalScreen[RecoveryRequest | None]):
    """Target, one-point and name fields over the plan; `ctrl+s` writes, `ctrl+y` applies from any field.

    Plain `w` and `a` work too while no field is being typed in; in a field they are letters of a name.
    """

    BINDINGS = [
        Binding("ctrl+s", "write", "Write YAML", priority=True),
        Binding("ctrl+y", "apply", "Apply", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]
    scroll_id, box_id = "wizard-body", "wizard"

    def __init__(
        self,
        state: DbState,
        media_sync: dt.datetime | None,
        *,
        can_apply: bool,
        cursor_blink: bool = True,
        syncs: list[SyncPoint] | None = None,
        syncs_since: dt.datetime | None = None,
    ) -> None:
        super().__init__()
        self.state = state
        self.media_sync = media_sync
        self.syncs = syncs
        self.syncs_since = syncs_since
        self.can_apply = can_apply
        self.cursor_blink = cursor_blink
        self.plan: RecoveryPlan | None = None

    def compose(self) -> ComposeResult:
        c = self.state.cluster
        recent = ", ".join(b.name for b in self.state.backups[:2] if b.phase == "completed") or "none"
        with Vertical(id="wizard"):
            yield Static(f"Restore the database into a NEW cluster (cluster/{c.name} is only read)", id="wizard-title")
            with VerticalScroll(id="wizard-body"):
                yield from self._fields(recent)
            with Horizontal(id="wizard-buttons"):
                # the keys are in the footer below, not repeated on the buttons
                yield Button("Write YAML", id="write")
                yield Button("Apply", variant="warning", id="apply", disabled=not self.can_apply)
                yield Button("Cancel", id="cancel")
        yield Footer()

    def _fields(self, recent: str) -> ComposeResult:
        c = self.state.cluster
        yield Static(
            f"Recovery window {rfc3339(c.window.first_point) or '-'} → now · latest media sync "
            f"{rfc3339(self.media_sync) or 'unknown'}\n"
            f"Target: a time with a zone (2026-11-27T02:30:00Z) or a Backup name ({recent})",
            id="wizard-help",
        )
        yield Input(placeholder="target time or Backup name", id="wizard-target")
        yield Checkbox("one point in time: the media as of it, the database where they meet", id="wizard-as-of")
        yield Input(placeholder="new cluster name (default: <cluster>-restore-<time>)", id="wizard-name")
        yield Static("", id="wizard-result")
        yield Static("", id="wizard-yaml")

    def on_mount(self) -> None:
        for box in self.query(Input):
            box.cursor_blink = self.cursor_blink
        self.replan()
        self.query_one("#wizard-target", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.replan()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.replan()

    def replan(self) -> None:
        target = self.query_one("#wizard-target", Input).value.strip()
        name = self.query_one("#wizard-name", Input).value.strip() or None
        result = self.query_one("#wizard-result", Static)
        one_point = self.query_one("#wizard-as-of", Checkbox).value
        try:
            by_backup = bool(target) and any(b.name == target for b in self.state.backups)
            when = parse_target_time(target) if target and not by_backup else None
            if one_point and when is None:
                raise ServiceError("one point in time needs a time with a zone, e.g. 2026-11-27T02:30:00Z")
            self.plan = plan_recovery(
                self.state.cluster,
                self.state.backups,
                backup_name=target if by_backup else None,
                target_time=None if one_point else when,
                name=name,
                media_sync=self.media_sync,
                as_of=when if one_point else None,
                syncs=self.syncs,
                syncs_since=self.syncs_since,
            )
        except ServiceError as exc:
            self.plan = None
            result.update(f"[red]✖ {escape(str(exc))}[/]")  # a typed name may hold markup
            self.query_one("#wizard-yaml", Static).update("")
            self._buttons(False)
            return
        lines = [f"[green]✔[/] cluster/{self.plan.name} recovers to {self.plan.target.describe()}"]
        if self.plan.as_of is not None:
            lines.append(
                f"[green]✔[/] media: restore them as of {rfc3339(self.plan.as_of)} "
                "(Offsite tab, R: the time is filled in)"
            )
        if self.plan.media is not None:
            lines.append(f"  media {self.plan.media.media_line()}")
        lines += [f"[yellow]⚠ {w}[/]" for w in self.plan.warnings]
        result.update("\n".join(lines))
        text = yaml.safe_dump(self.plan.manifest, sort_keys=False)
        preview = Syntax(text, "yaml", theme="ansi_dark", background_color="default")
        self.query_one("#wizard-yaml", Static).update(preview)
        self._buttons(True)

    def _buttons(self, ok: bool) -> None:
        self.query_one("#write", Button).disabled = not ok
        self.query_one("#apply", Button).disabled = not (ok and self.can_apply)
        self.refresh_bindings()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel" or self.plan is None:
            self.dismiss(None)
        elif event.button.id == "write":
            self.dismiss(RecoveryRequest(self.plan, apply=False, path=Path(f"{self.plan.name}.yaml")))
        elif event.button.id == "apply":
            self.dismiss(RecoveryRequest(self.plan, apply=True))

    def key_w(self) -> None:
        if not self.focused_is_input():
            self.action_write()

    def key_a(self) -> None:
        if not self.focused_is_input():
            self.action_apply()

    def action_write(self) -> None:
        if not self.query_one("#write", Button).disabled:
            self.query_one("#write", Button).press()

    def action_apply(self) -> None:
        if not self.query_one("#apply", Button).disabled:
            self.query_one("#apply", Button).press()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Apply is hidden where it is not allowed (read-only), and dimmed while the plan is not valid."""
        if action == "apply" and not self.can_apply:
            return False
        if action in ("write", "apply") and self.plan is None:
            return None
        return True

    def focused_is_input(self) -> bool:
        return isinstance(self.focused, Input)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass
class MediaRestoreRequest:
    pvc: str
    force: bool
    as_of: dt.datetime | None = None  # restore the files as they were then; None: as they are now
    allow_running_server: bool = False  # the plugin's --allow-running-server


FORCE_OFF = "--force: off · the volume must be empty"
FORCE_ON = "--force: on · restore into a volume that already holds files"
SERVER_OFF = "--allow-running-server: off · refused while the Immich server runs"
SERVER_ON = "--allow-running-server: on · restore even though Immich may write meanwhile"


class MediaRestoreScreen(FitsTheTerminal, ModalScreen[MediaRestoreRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(
        self, namespace: str, bucket: str, *, cursor_blink: bool = True, as_of: dt.datetime | None = None
    ) -> None:
        super().__init__()
        self.namespace = namespace
        self.bucket = bucket
        self.cursor_blink = cursor_blink
        self.as_of = as_of

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Restore the media library from the bucket?", id="dialog-title")
            with VerticalScroll(id="dialog-scroll"):
                yield from self._fields()
            with Horizontal(id="dialog-buttons"):
                yield Button("Start restore", variant="warning", id="yes")
                yield Button("Cancel (esc)", id="no")

    def _fields(self) -> ComposeResult:
        yield Static(
            f"Creates a Job in {self.namespace} that runs `immich-sync restore` from {self.bucket} into the "
            "PVC below, mounted read-write, with the immich-offsite-restorer Secret (read-only keys). "
            "Stop Immich first (scale the server to 0). Files already identical are skipped; a differing "
            "file is never overwritten. As of a time, every file comes back as it was then (after "
            "tampering: a time before it). Its log streams in the Jobs tab.",
            id="dialog-body",
        )
        yield Input(value="immich-library", placeholder="target PVC", id="restore-pvc")
        yield Input(
            value=rfc3339(self.as_of),
            placeholder="as of: empty = now, or a time with a zone, e.g. 2026-11-27T02:30:00Z",
            id="restore-as-of",
        )
        yield Checkbox(FORCE_OFF, id="restore-force")
        yield Checkbox(SERVER_OFF, id="restore-allow-running")
        yield Static("", id="restore-error")

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        """The label says what the box means now: an unlabelled tick is easy to misread as on or off."""
        if event.checkbox.id == "restore-force":
            event.checkbox.label = FORCE_ON if event.value else FORCE_OFF
        elif event.checkbox.id == "restore-allow-running":
            event.checkbox.label = SERVER_ON if event.value else SERVER_OFF

    def on_mount(self) -> None:
        for box in self.query(Input):
            box.cursor_blink = self.cursor_blink
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        pvc = self.query_one("#restore-pvc", Input).value.strip()
        if event.button.id != "yes" or not pvc:
            self.dismiss(None)
            return
        text = self.query_one("#restore-as-of", Input).value.strip()
        try:
            as_of = parse_target_time(text, "as of") if text else None
        except ServiceError as exc:
            self.query_one("#restore-error", Static).update(f"[red]✖ {escape(str(exc))}[/]")
            return
        self.dismiss(
            MediaRestoreRequest(
                pvc,
                self.query_one("#restore-force", Checkbox).value,
                as_of,
                allow_running_server=self.query_one("#restore-allow-running", Checkbox).value,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)
