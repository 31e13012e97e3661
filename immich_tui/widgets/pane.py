"""What every tab of the TUI shares: loading on a thread worker, one load at a time, errors in place.

A pane is handed the `Services` it reads from and knows nothing of the app around it: what only the
app can do (read the verdict again) it asks for with a message, and app-wide state (the latest status
report) is pushed down to it. So the panes can be built and tested alone, and no pane imports the app.

A pane's `fetch()` runs on a worker thread and talks to the services only; `show()` runs on the UI
thread with the result. A failed fetch leaves the last good data on screen under a one-line banner,
so an RBAC denial or an unreachable cluster degrades the pane instead of the app.
"""

from __future__ import annotations

import time
from typing import Any

from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from immich_tui.services.status import Services
from sync_engine.text import one_line


class Pane(Vertical):
    """Base of the Overview, Library, Offsite, Jobs and Database tabs."""

    title = ""
    poll_seconds = 30.0  # how stale the data may get while the tab is visible
    placeholder = ""  # id of the line that says "loading…" until the first data arrives

    class StatusWanted(Message):
        """Read the verdict again now: the app owns the one status poll, shared by the chips and Overview."""

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self._worker: Worker[Any] | None = None
        self.loaded_at: float | None = None
        self.error = ""

    def banner(self) -> Static:
        return Static("", classes="pane-error", id=f"{self.id}-error")

    @property
    def loading_now(self) -> bool:
        return self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def load(self) -> None:
        """Start a fetch unless one is already running: polls never overlap."""
        if self.loading_now:
            return
        self._worker = self.run_worker(self.fetch, thread=True, group=f"load-{self.id}", exit_on_error=False)

    def due(self) -> bool:
        return self.loaded_at is None or time.monotonic() - self.loaded_at >= self.poll_seconds

    def fetch(self) -> Any:  # runs on a worker thread
        raise NotImplementedError

    def show(self, data: Any) -> None:  # runs on the UI thread
        raise NotImplementedError

    def show_error(self, message: str) -> None:
        self.error = message
        banner = self.query_one(f"#{self.id}-error", Static)
        banner.update(f"⚠ {message}")
        banner.display = True
        if self.placeholder and self.loaded_at is not None and not self.has_data:
            self.query_one(f"#{self.placeholder}", Static).update(" Nothing to show yet: r retries.")

    @property
    def has_data(self) -> bool:
        return False

    def clear_error(self) -> None:
        self.error = ""
        self.query_one(f"#{self.id}-error", Static).display = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state == WorkerState.SUCCESS:
            self.loaded_at = time.monotonic()
            self.clear_error()
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.loaded_at = time.monotonic()
            self.show_error(one_line(event.worker.error or "failed"))

    def focus_main(self) -> None:
        """Put the cursor in the pane's first table, so its keys and arrows work right away."""
        for widget in self.query("DataTable"):
            widget.focus()
            return

    # Filtering (`/`): panes with tables filter their rows; the Jobs pane filters the log.
    def apply_filter(self, text: str) -> None:
        pass
