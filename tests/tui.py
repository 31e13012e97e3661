"""The TUI's test world: the demo sandbox with a pinned clock, so every frame is reproducible.

`IMMICH_BACKUP_NOW` pins the services' clock (and the emulator's creation times); the sandbox seeds
its Job history, Backups and run reports relative to it, and its sample library has fixed file times.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from immich_tui.app import ImmichApp
from immich_tui.demo.fixtures import World
from immich_tui.demo.world import Sandbox
from immich_tui.services.status import Services, Target

FROZEN_NOW = "2026-11-27T09:14:00Z"
SIZE = (120, 40)


def pinned_env() -> dict[str, str]:
    return {"IMMICH_BACKUP_NOW": FROZEN_NOW, "TEXTUAL_ANIMATIONS": "none"}


class PinnedClock:
    """Sets the pinned clock in the process environment for as long as a sandbox lives."""

    def __enter__(self) -> PinnedClock:
        self.saved = {k: os.environ.get(k) for k in pinned_env()}
        os.environ.update(pinned_env())
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_sandbox(root: Path, world: World | None = None) -> Sandbox:
    return Sandbox(root, world=world, initial_sync=False).start()


def make_app(box: Sandbox, *, read_only: bool = False, tick_seconds: float = 3600) -> ImmichApp:
    """No polling by default, so a snapshot is taken of exactly one load of each pane."""
    target = Target(kubeconfig=str(box.kubeconfig), context="sandbox", read_only=read_only)
    return ImmichApp(Services(target, env=box.env), tick_seconds=tick_seconds, cursor_blink=False)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One healthy sandbox per test module (modules that change it get their own)."""
    with PinnedClock():
        box = start_sandbox(tmp_path_factory.mktemp("sandbox"))
        try:
            yield box
        finally:
            box.stop()
