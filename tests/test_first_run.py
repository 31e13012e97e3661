"""The first `make demo` / `make test` on a fresh clone builds .venv through uv, and still works without it.

pip resolving and installing the demo's wheels took most of the first run's 100 s; uv does it in seconds. The
Makefile bootstraps uv with the venv's own pip (one wheel) and installs through it, and falls back to pip
when uv cannot be installed. These tests read what `make -n` would run in a copy of the checkout, then run
the install line itself with stand-in `uv` / `pip` executables that record their arguments, so both branches
are exercised without touching the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh clone's top level: the Makefile and pyproject.toml, no .venv yet."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def dry_run(checkout: Path, target: str) -> list[str]:
    """`make -n` as on a fresh shell: under `make test` the parent's MAKEFLAGS would add its own lines
    ("make[1]: Entering directory …") to what is read here."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def install_line(lines: list[str], extra: str) -> str:
    found = [line for line in lines if f"'.[{extra}]'" in line]
    assert len(found) == 1, lines
    return found[0]


@pytest.mark.parametrize(("target", "extra"), [("demo", "demo"), (".venv/.installed-dev", "dev")])
def test_fresh_clone_bootstraps_uv_and_installs_through_it(checkout: Path, target: str, extra: str) -> None:
    lines = dry_run(checkout, target)
    assert lines[0] == "python3 -m venv .venv"
    assert lines[1].startswith(".venv/bin/pip install --quiet uv || ")
    line = install_line(lines, extra)
    assert f".venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[{extra}]'" in line
    assert f".venv/bin/pip install --quiet -e '.[{extra}]'" in line  # the fallback


def test_make_test_builds_the_checkov_venv_through_uv_too(checkout: Path) -> None:
    lines = dry_run(checkout, "test")
    assert any(".venv/bin/uv pip install --quiet --python .venv/tools/checkov/bin/python --group" in x for x in lines)
    assert any("install-promtool.sh" in x for x in lines)


def _recorder(path: Path, log: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n')
    path.chmod(0o755)


@pytest.mark.parametrize("with_uv", [True, False])
def test_the_install_line_uses_uv_when_present_and_pip_otherwise(checkout: Path, with_uv: bool) -> None:
    line = install_line(dry_run(checkout, "demo"), "demo")
    log = checkout / "calls.log"
    _recorder(checkout / ".venv" / "bin" / "pip", log)
    if with_uv:
        _recorder(checkout / ".venv" / "bin" / "uv", log)
    done = subprocess.run(["sh", "-c", line], cwd=checkout, capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    if with_uv:
        assert calls == ["uv pip install --quiet --python .venv/bin/python -e .[demo]"]
    else:
        assert calls == ["pip install --quiet -e .[demo]"]
