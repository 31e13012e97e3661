"""Pick another kubeconfig context and the namespaces to watch there (k9s's `:ctx`, `:ns`).

The screen only chooses: it returns a `ContextChoice` (or None), and the app builds the new services with
`contexts.switch` on a worker. Namespace names are checked here first, so a typo is one line under the
field instead of a round trip and a screen full of "not found".
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from immich_tui.services.contexts import ContextChoice, ContextList, available, namespace_problem
from immich_tui.services.status import Services
from sync_engine.text import one_line


class ContextScreen(ModalScreen[ContextChoice | None]):
    """`ContextScreen(services)`: Enter applies (in the list or a field), Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    ContextScreen {
        align: center middle;
    }
    ContextScreen #context-dialog {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    ContextScreen #context-title {
        text-style: bold;
    }
    ContextScreen .context-label {
        color: $text-muted;
    }
    ContextScreen #context-list {
        height: auto;
        max-height: 7;  /* five contexts, then it scrolls: the dialog fits 80x24 with a two-line error */
    }
    ContextScreen #context-error {
        height: auto;
        color: $text-error;
    }
    ContextScreen #context-foot {
        color: $text-muted;
    }
    """

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.contexts: ContextList | None = None
        self._worker: Worker[ContextList] | None = None

    def compose(self) -> ComposeResult:
        target = self.services.target
        with Vertical(id="context-dialog"):
            yield Static("Switch context", id="context-title")
            yield Static("Context (reading the kubeconfig…)", id="context-list-label", classes="context-label")
            yield OptionList(id="context-list")
            yield Static("Media namespace", classes="context-label")
            yield Input(target.namespace, id="context-namespace", placeholder="immich")
            yield Static("Database namespace (CNPG)", classes="context-label")
            yield Input(target.db_namespace, id="context-db-namespace", placeholder="postgresql")
            yield Static("", id="context-error", markup=False)
            yield Static("↑↓ context · Tab next field · Enter apply · Esc cancel", id="context-foot")

    def on_mount(self) -> None:
        self._worker = self.run_worker(
            lambda: available(self.services), thread=True, group="contexts", exit_on_error=False
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state == WorkerState.SUCCESS and event.worker.result is not None:
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.query_one("#context-list-label", Static).update("Context")
            self.error(one_line(event.worker.error or "failed"))

    def show(self, found: ContextList) -> None:
        self.contexts = found
        where = f" from {found.path}" if found.path else ""
        self.query_one("#context-list-label", Static).update(f"Context{where}")
        options = self.query_one("#context-list", OptionList)
        options.clear_options()
        options.add_options(
            Option(f"{name} (current)" if name == found.current else name, id=name) for name in found.contexts
        )
        if found.current in found.contexts:
            options.highlighted = found.contexts.index(found.current)
        options.focus()

    def error(self, message: str) -> None:
        self.query_one("#context-error", Static).update(message)

    # Applying --------------------------------------------------------------------------------------
    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.apply()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply()

    def chosen(self) -> str:
        options = self.query_one("#context-list", OptionList)
        if options.highlighted is None or options.option_count == 0:
            return ""
        return options.get_option_at_index(options.highlighted).id or ""

    def apply(self) -> None:
        namespace = self.query_one("#context-namespace", Input).value.strip()
        db_namespace = self.query_one("#context-db-namespace", Input).value.strip()
        problem = namespace_problem(namespace, "namespace") or namespace_problem(db_namespace, "database namespace")
        context = self.chosen()
        if not problem and not context:
            problem = "no context to switch to: the kubeconfig could not be read"
        if problem:
            self.error(problem)
            return
        self.dismiss(ContextChoice(context, namespace, db_namespace))

    def action_cancel(self) -> None:
        self.dismiss(None)
