"""Modal screens: confirmation before every change, and the key reference."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.markup import escape
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static


class FitsTheTerminal:
    """A dialog whose middle scrolls so its title and buttons stay on screen in a small terminal.

    CSS cannot say "the screen's height minus the title and buttons", so the middle's maximum height is
    set from the measured rest of the dialog whenever the terminal is resized.
    """

    scroll_id = "dialog-scroll"
    box_id = "dialog"

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit)  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.call_after_refresh(self._fit)  # type: ignore[attr-defined]

    def _fit(self) -> None:
        screen: Screen[object] = self  # type: ignore[assignment]
        try:
            box, middle = screen.query_one(f"#{self.box_id}"), screen.query_one(f"#{self.scroll_id}")
        except NoMatches:
            return
        # measured from the parts around the middle: the box itself may already be cut to the screen
        rest = box.styles.gutter.height + sum(
            child.outer_size.height + child.styles.margin.height for child in box.children if child is not middle
        )
        footer = sum(f.outer_size.height for f in screen.query("Footer"))
        middle.styles.max_height = max(3, screen.size.height - footer - rest - box.styles.margin.height)


class ConfirmScreen(FitsTheTerminal, ModalScreen[bool]):
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
            with VerticalScroll(id="dialog-scroll"):
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


GLOBAL_KEYS: tuple[tuple[str, str], ...] = (
    ("1-5", "Overview, Library, Offsite, Jobs, Database"),
    ("tab", "the next panel of the tab"),
    ("/", "filter the focused panel (a regex; Esc clears)"),
    ("d", "describe the selected object"),
    (":", "switch context / namespace"),
    ("r", "refresh now"),
    ("t", "trigger a media sync now"),
    ("s", "suspend / resume the nightly sync"),
    ("b", "take a database backup now"),
    ("R", "restore: the database or the media"),
    ("ctrl+p", "every action and pane"),
    ("?", "this help"),
    ("q  ctrl+c", "quit"),
)
WRITE_KEYS = frozenset({"t", "s", "b"})


def key_lines(keys: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f" [b]{escape(key):>9}[/]  {escape(what)}" for key, what in keys)


class HelpScreen(FitsTheTerminal, ModalScreen[None]):
    """The keys of the panel that has focus first, then the ones that work everywhere (k9s-style)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close", show=False)]
    scroll_id, box_id = "help-scroll", "help"

    def __init__(self, read_only: bool, panel: str = "", panel_keys: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.read_only = read_only
        self.panel = panel
        self.panel_keys = list(panel_keys)

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("immich-tui — keys  [dim](Esc closes)[/]", id="help-title")
            with VerticalScroll(id="help-scroll"):
                if self.panel_keys:
                    yield Static(f"[b $accent]{escape(self.panel)}[/]\n" + key_lines(self.panel_keys), id="help-panel")
                shown = [(k, w) for k, w in GLOBAL_KEYS if not (self.read_only and k in WRITE_KEYS)]
                note = "\n[yellow]Read-only: t, s, b and applying a restore are disabled.[/]" if self.read_only else ""
                yield Static("[b $accent]Everywhere[/]\n" + key_lines(shown) + note, id="help-body")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
