"""The recovery wizard's "Write YAML" on the sandbox, through the whole app: the new Cluster's name must be
one CNPG accepts before it can name a file, the file is written whole or not at all (a temporary file in
the same directory, then a rename), a symbolic link where the file goes is never followed nor replaced,
and a directory that cannot be written is a red banner, never a crash."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.pilot import Pilot
from textual.widgets import Button, Input

from immich_tui.app import ImmichApp
from immich_tui.demo.world import Sandbox
from immich_tui.widgets.restore_dialogs import RecoveryWizard
from tests.crd_schema import validate
from tests.test_tui_actions import press, run, settle, text
from tests.tui import PinnedClock, make_app, start_sandbox


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("write-yaml"))
        yield sandbox
        sandbox.stop()


async def open_wizard(pilot: Pilot[Any], name: str) -> RecoveryWizard:
    """The Database tab, `R`, a target the recovery window holds, and the new cluster's name."""
    app = pilot.app
    await press(pilot, "5")
    await settle(pilot)
    await press(pilot, "R")
    wizard = app.screen
    assert isinstance(wizard, RecoveryWizard)
    wizard.query_one("#wizard-target", Input).value = "2026-11-27T02:30:00Z"
    wizard.query_one("#wizard-name", Input).value = name
    await settle(pilot)
    return wizard


async def write(pilot: Pilot[Any], name: str) -> None:
    wizard = await open_wizard(pilot, name)
    assert not wizard.query_one("#write", Button).disabled, text(pilot.app, "#wizard-result")  # type: ignore[arg-type]
    wizard.query_one("#write", Button).press()
    await settle(pilot)
    assert not isinstance(pilot.app.screen, RecoveryWizard)


def banners(app: ImmichApp, severity: str) -> list[str]:
    return [str(n.message) for n in app._notifications if n.severity == severity]


def test_write_yaml_writes_the_manifest_whole_and_replaces_an_earlier_one(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "immich-db-written.yaml"
    earlier.write_text("an earlier plan\n")
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await write(pilot, "immich-db-written")

    run(app, scenario)
    assert app.is_running is False and app._exception is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["immich-db-written.yaml"]  # no temporary file left
    manifest = yaml.safe_load(earlier.read_text())
    validate(manifest)
    assert manifest["metadata"]["name"] == "immich-db-written"
    assert any(f"wrote {earlier}" in m for m in banners(app, "information"))
    assert banners(app, "error") == []


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_write_yaml_never_follows_a_symlink(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dangling: bool
) -> None:
    """A link where the file goes, planted by someone else: what it points at is neither written nor
    created, and the link stays as it was."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "authorized_keys"
    if not dangling:
        victim.write_text("precious\n")
    link = here / "immich-db-linked.yaml"
    link.symlink_to(victim)
    monkeypatch.chdir(here)
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await write(pilot, "immich-db-linked")

    run(app, scenario)
    assert app._exception is None
    assert link.is_symlink() and os.readlink(link) == str(victim)
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in here.iterdir()) == ["immich-db-linked.yaml"]
    errors = banners(app, "error")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"cannot write {link}: it is a symbolic link, neither followed nor replaced")


def test_write_yaml_into_a_directory_that_cannot_be_written_is_a_banner(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc takes no new files, not even from root: the app says so and goes on."""
    monkeypatch.chdir("/proc")
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await write(pilot, "immich-db-nowhere")
        await press(pilot, "1")  # the app still answers keys

    run(app, scenario)
    assert app._exception is None
    errors = banners(app, "error")
    assert len(errors) == 1, errors
    assert errors[0].startswith("cannot write /proc/immich-db-nowhere.yaml: ")
    assert "\n" not in errors[0]


def test_write_yaml_over_a_directory_of_that_name_is_a_banner(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "immich-db-taken.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await write(pilot, "immich-db-taken")

    run(app, scenario)
    assert app._exception is None
    assert (tmp_path / "immich-db-taken.yaml").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["immich-db-taken.yaml"]
    errors = banners(app, "error")
    assert len(errors) == 1 and errors[0].startswith(f"cannot write {tmp_path / 'immich-db-taken.yaml'}: "), errors


def test_write_yaml_after_the_working_directory_was_removed_is_a_banner(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        await write(pilot, "immich-db-gone")

    run(app, scenario)
    assert app._exception is None
    errors = banners(app, "error")
    assert len(errors) == 1 and errors[0].startswith("cannot write immich-db-gone.yaml: the working directory is gone")


BAD_NAMES = [
    ("../escaped", "a lowercase letter"),
    ("sub/dir", "a lowercase letter"),
    ("Immich-DB", "a lowercase letter"),
    ("immich.db.restore", "a lowercase letter"),
    ("immich-db-", "a lowercase letter"),
    ("9-immich", "a lowercase letter"),
    ("immich[/]db[b]", "a lowercase letter"),
    ("x" * 51, "at most 50 characters"),
]


@pytest.mark.parametrize(("name", "why"), BAD_NAMES, ids=[n[:20] for n, _ in BAD_NAMES])
def test_a_name_cnpg_would_refuse_keeps_write_and_apply_off(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, why: str
) -> None:
    """`../escaped` would name a file outside the directory; the rest CNPG refuses. Neither button works,
    not even by key, and a good name turns them back on."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    app = make_app(box)

    async def scenario(pilot: Pilot[Any]) -> None:
        wizard = await open_wizard(pilot, name)
        wizard.query_one("#cancel", Button).focus()
        await press(pilot, "w")
        assert sorted(tmp_path.rglob("*")) == [work], "a file was written"
        await press(pilot, "a")
        assert app.screen is wizard
        result = text(app, "#wizard-result")
        assert "is not a valid name for the new cluster" in result, result
        assert why in result, result
        assert repr(name) in result, result  # markup in a typed name is shown, never interpreted
        assert wizard.query_one("#write", Button).disabled and wizard.query_one("#apply", Button).disabled
        wizard.query_one("#wizard-name", Input).value = "immich-db-good"
        await settle(pilot)
        assert not wizard.query_one("#write", Button).disabled and not wizard.query_one("#apply", Button).disabled
        await press(pilot, "escape")

    run(app, scenario)
    assert app._exception is None
    assert sorted(tmp_path.rglob("*")) == [work]
