"""Context and namespace switching: the kubeconfig's contexts, a Services for another one, and the screen
that picks it, against the emulated API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static
from textual.worker import WorkerFailed

from immich_tui.demo.world import Sandbox
from immich_tui.services.contexts import ContextChoice, ContextList, available, namespace_problem, switch
from immich_tui.services.errors import ServiceError
from immich_tui.services.kube import Access, ClusterError
from immich_tui.services.status import Services, Target
from immich_tui.widgets.context import ContextScreen
from tests.tui import PinnedClock, start_sandbox


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("contexts"))
        try:
            yield sandbox
        finally:
            sandbox.stop()


@pytest.fixture
def two_contexts(tmp_path: Path, box: Sandbox) -> Path:
    """A kubeconfig with `sandbox` (current) and `backup-site`, both at the emulator."""
    config = box.server.kubeconfig("sandbox")
    config["clusters"].append({"name": "backup-site", "cluster": {"server": box.server.url}})
    config["contexts"].append(
        {"name": "backup-site", "context": {"cluster": "backup-site", "user": "operator", "namespace": "photos"}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def services_for(path: Path, box: Sandbox, **target: Any) -> Services:
    return Services(Target(kubeconfig=str(path), **target), env=box.env)


def test_lists_every_context_and_the_current_one(two_contexts: Path, box: Sandbox) -> None:
    found = available(services_for(two_contexts, box))
    assert found == ContextList(contexts=["backup-site", "sandbox"], current="sandbox", path=str(two_contexts))


def test_the_current_one_is_the_chosen_context(two_contexts: Path, box: Sandbox) -> None:
    assert available(services_for(two_contexts, box, context="backup-site")).current == "backup-site"


def test_switch_returns_services_for_the_choice(two_contexts: Path, box: Sandbox) -> None:
    old = services_for(two_contexts, box, read_only=True, cronjob="nightly", stale_after_hours=12.0)
    new = switch(old, ContextChoice("backup-site", "photos", "databases"))
    assert new is not old
    assert new.target == Target(
        kubeconfig=str(two_contexts),
        context="backup-site",
        namespace="photos",
        db_namespace="databases",
        cronjob="nightly",
        read_only=True,
        stale_after_hours=12.0,
    )
    assert new.env == old.env
    assert new.kube.context == "backup-site" and new.kube.read_only
    namespace = new.kube.call(Access("get", "namespaces", ""), new.kube.core.read_namespace, "immich")
    assert namespace["metadata"]["name"] == "immich"  # the new connection answers
    assert old.target.context is None  # the old one is untouched, for the caller to close


def test_switch_to_a_context_not_in_the_kubeconfig(two_contexts: Path, box: Sandbox) -> None:
    with pytest.raises(ClusterError) as caught:
        switch(services_for(two_contexts, box), ContextChoice("prod", "immich", "postgresql"))
    assert str(caught.value) == f"context 'prod' is not in {two_contexts} (has: backup-site, sandbox)"


@pytest.mark.parametrize(
    ("namespace", "db_namespace", "expected"),
    [
        ("Immich", "postgresql", "namespace 'Immich' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"),
        ("immich", "-pg", "database namespace '-pg' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"),
        ("", "postgresql", "namespace '' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"),
        ("a" * 64, "postgresql", f"namespace '{'a' * 64}' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"),
    ],
)
def test_invalid_namespace_is_refused(
    two_contexts: Path, box: Sandbox, namespace: str, db_namespace: str, expected: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        switch(services_for(two_contexts, box), ContextChoice("sandbox", namespace, db_namespace))
    assert str(caught.value) == expected


def test_namespace_problem_accepts_labels() -> None:
    assert namespace_problem("immich-2", "namespace") == ""
    assert namespace_problem("a" * 63, "namespace") == ""
    assert namespace_problem("immich.prod", "namespace") != ""


def test_unreadable_kubeconfig_is_one_line(tmp_path: Path, box: Sandbox) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ClusterError) as caught:
        available(services_for(path, box))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"kubeconfig {path} is a list in YAML")


# The screen -------------------------------------------------------------------------------------
class Host(App[None]):
    def __init__(self, screen: ContextScreen) -> None:
        super().__init__()
        self.context_screen = screen
        self.results: list[ContextChoice | None] = []

    def on_mount(self) -> None:
        self.push_screen(self.context_screen, callback=self.results.append)


def run(screen: ContextScreen, scenario: Any) -> Host:
    host = Host(screen)

    async def main() -> None:
        async with host.run_test(size=(80, 24)) as pilot:
            for _ in range(3):
                with contextlib.suppress(WorkerFailed):
                    await pilot.app.workers.wait_for_complete()
                await pilot.pause()
            await scenario(pilot)

    with PinnedClock():
        asyncio.run(main())
    return host


def test_screen_lists_contexts_with_the_current_highlighted(two_contexts: Path, box: Sandbox) -> None:
    screen = ContextScreen(services_for(two_contexts, box, context="sandbox", namespace="immich"))

    async def scenario(pilot: Pilot[Any]) -> None:
        options = pilot.app.screen.query_one("#context-list", OptionList)
        assert [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)] == [
            "backup-site",
            "sandbox (current)",
        ]
        assert options.highlighted == 1
        assert pilot.app.screen.query_one("#context-namespace", Input).value == "immich"
        assert pilot.app.screen.query_one("#context-db-namespace", Input).value == "postgresql"
        await pilot.press("up", "enter")
        await pilot.pause()

    host = run(screen, scenario)
    assert host.results == [ContextChoice("backup-site", "immich", "postgresql")]


def test_screen_applies_edited_namespaces_on_enter(two_contexts: Path, box: Sandbox) -> None:
    screen = ContextScreen(services_for(two_contexts, box))

    async def scenario(pilot: Pilot[Any]) -> None:
        namespace = pilot.app.screen.query_one("#context-namespace", Input)
        namespace.focus()
        namespace.value = ""
        await pilot.press(*"photos", "enter")
        await pilot.pause()

    host = run(screen, scenario)
    assert host.results == [ContextChoice("sandbox", "photos", "postgresql")]


def test_screen_refuses_an_invalid_namespace_with_one_line(two_contexts: Path, box: Sandbox) -> None:
    screen = ContextScreen(services_for(two_contexts, box))

    async def scenario(pilot: Pilot[Any]) -> None:
        db = pilot.app.screen.query_one("#context-db-namespace", Input)
        db.focus()
        db.value = ""
        await pilot.press(*"Postgres_DB", "enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ContextScreen)  # still open: nothing applied
        assert str(pilot.app.screen.query_one("#context-error", Static).render()) == (
            "database namespace 'Postgres_DB' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"
        )
        await pilot.press("escape")
        await pilot.pause()

    host = run(screen, scenario)
    assert host.results == [None]


def test_screen_shows_a_kubeconfig_problem_as_one_line(tmp_path: Path, box: Sandbox) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("- not a kubeconfig\n")
    screen = ContextScreen(services_for(path, box))

    async def scenario(pilot: Pilot[Any]) -> None:
        line = str(pilot.app.screen.query_one("#context-error", Static).render())
        assert line.startswith(f"kubeconfig {path} is a list in YAML") and "\n" not in line
        await pilot.press("escape")
        await pilot.pause()

    assert run(screen, scenario).results == [None]
