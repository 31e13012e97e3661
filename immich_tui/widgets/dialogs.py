"""Modal screens: confirmation before every change, and the key reference."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for one action, naming exactly what will change in the cluster."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, body: str, confirm: str = "Yes") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title")
            yield Static(self.body, id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.confirm} (y)", variant="warning", id="yes")
                yield Button("Cancel (n)", variant="default", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer is the default one

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


HELP = """\
[b]Panes[/]                      [b]Actions[/] (each asks first)
 1  Overview                  t  trigger a media sync now
 2  Library (PVC)             s  suspend / resume the nightly sync
 3  Offsite (S3)              b  take a database backup now
 4  Jobs + live logs          r  refresh now
 5  Database (CNPG)           R  restore: DB wizard (Database tab),
                                 media Job (Offsite tab)
                              /  filter the pane (Esc clears)
                              ctrl+p  every action and pane
[b]Jobs pane[/]                  [b]Offsite pane[/]
 ↑↓ pick a Job, its log       l  list the bucket (exact counts)
 f  follow on/off             v  verify against run manifests
 w  wrap on/off
 G  jump to the end           [b]Library pane[/]
                              enter  open a folder, backspace up
 ?  this help    q  quit
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close", show=False)]

    def __init__(self, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("immich-tui — keys", id="help-title")
            note = "\n[yellow]Read-only: t, s, b and applying a restore are disabled.[/]" if self.read_only else ""
            yield Static(HELP + note, id="help-body")
            yield Static("Esc to close", id="help-foot")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
