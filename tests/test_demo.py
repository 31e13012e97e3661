"""The demo sandbox is an optional extra that stays on loopback and runs nothing a client names.

Its API emulator answers `exec` only with the library inventory script the Library tab sends, so a
process on this machine cannot use the sandbox to run commands; both servers listen on 127.0.0.1; and
without the extra installed, `--demo` says which `pip install` line brings it and exits 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

from immich_tui.demo.emulator import EmulatorServer, ExecMount
from immich_tui.demo.fixtures import NS, SERVER_POD, World, seed
from immich_tui.demo.s3 import LocalS3
from immich_tui.services.library import INVENTORY_NAME, INVENTORY_SCRIPT, MOUNT

ROOT = Path(__file__).resolve().parent.parent


def _exec(kubeconfig: Path, command: list[str]) -> tuple[int, str, str]:
    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    ws: Any = stream(
        api.connect_get_namespaced_pod_exec,
        SERVER_POD,
        NS,
        command=command,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    ws.run_forever(timeout=60)
    out, err, code = ws.read_stdout(), ws.read_stderr(), ws.returncode
    ws.close()
    return code, out, err


@pytest.fixture
def emulated(tmp_path: Path) -> Any:
    import yaml

    library = tmp_path / "library"
    (library / "library").mkdir(parents=True)
    (library / "library" / ".immich").write_bytes(b"")
    (library / "library" / "a.jpg").write_bytes(b"x" * 10)
    with EmulatorServer() as server:
        seed(server, World(library=library))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        yield server, kubeconfig, library


def test_exec_runs_the_inventory_script_and_nothing_else(emulated: Any, tmp_path: Path) -> None:
    server, kubeconfig, library = emulated
    assert server.emulator.exec_mounts[NS, SERVER_POD] == ExecMount(MOUNT, str(library))

    code, out, _ = _exec(kubeconfig, ["sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, MOUNT, "0"])
    assert code == 0
    assert "S\tlibrary\t2\t10" in out  # the marker and the photo, counted in the sandbox's library

    witness = tmp_path / "ran"
    refused = [
        ["sh", "-c", f"touch {witness}"],
        ["sh", "-c", f"touch {witness}", INVENTORY_NAME, MOUNT, "0"],  # the same shape, another script
        ["sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, MOUNT, f"0; touch {witness}"],  # a smuggled argument
        ["sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, str(tmp_path), "0"],  # a path outside the mount
        ["touch", str(witness)],
    ]
    for command in refused:
        code, out, err = _exec(kubeconfig, command)
        assert code == 126, command
        assert out == ""
        assert "runs the library inventory script" in err
    assert not witness.exists()


def test_both_servers_listen_on_loopback_only(emulated: Any) -> None:
    server, _, _ = emulated
    assert urllib.parse.urlsplit(server.url).hostname == "127.0.0.1"
    s3 = LocalS3()
    assert urllib.parse.urlsplit(s3.endpoint).hostname == "127.0.0.1"


def test_demo_without_the_extra_prints_the_install_line_and_exits_2(tmp_path: Path) -> None:
    """A site where kmock and moto cannot be imported, as after a plain `pip install immich-offsite-backup`."""
    for name in ("kmock", "moto"):
        message = f"No module named {name!r}"
        (tmp_path / f"{name}.py").write_text(f"raise ModuleNotFoundError({message!r}, name={name!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    for argv in (["-m", "immich_tui.cli", "--demo"], ["-m", "immich_tui.plugin.cli", "tui", "--demo"]):
        done = subprocess.run(
            [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            "immich-tui: --demo needs the sandbox's servers: pip install 'immich-offsite-backup[demo]'"
        ]
