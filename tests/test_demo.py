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


def _plugin(box: Any, *argv: str) -> tuple[int, str, str]:
    """`kubectl immich-backup ARGV` against the sandbox, as the runbook types it (the console script's code)."""
    import io

    from immich_tui.plugin.cli import main as plugin_main

    stdout, stderr = io.StringIO(), io.StringIO()
    code = plugin_main([*argv, "--kubeconfig", str(box.kubeconfig)], stdout=stdout, stderr=stderr, env=box.env)
    return code, stdout.getvalue(), stderr.getvalue()


def test_db_catalog_reads_a_barman_archive_matching_the_sandbox_backups(tmp_path: Path) -> None:
    """The runbook's `db catalog` step on the demo: the bucket holds the Barman archive the cluster's Backups
    describe, so every completed Backup is a DONE base backup there with the same id, WAL range and times."""
    import json

    from immich_tui.demo.world import Sandbox
    from tests.tui import FROZEN_NOW, PinnedClock

    with PinnedClock(), Sandbox(tmp_path, initial_sync=False, history_nights=1) as box:
        code, text, err = _plugin(box, "db", "catalog")
        assert (code, err) == (0, ""), err
        code, shown, err = _plugin(box, "db", "backups", "-o", "json")
        assert (code, err) == (0, ""), err
        code, listed, err = _plugin(box, "db", "catalog", "-o", "json")
        assert (code, err) == (0, ""), err
        api = client.CustomObjectsApi(config.new_client_from_config(str(box.kubeconfig)))
        objects = api.list_namespaced_custom_object("postgresql.cnpg.io", "v1", "postgresql", "backups")["items"]

    assert FROZEN_NOW.startswith("2026-11-27")
    lines = text.splitlines()
    assert lines[0] == "s3://immich-offsite/immich/postgres · serverName immich-db-2026"
    assert lines[3].split()[:2] == ["20261127T020000", "DONE"]  # the newest first
    # the ObjectStore's recovery window starts where the archive's oldest DONE backup ends
    assert lines[-1] == "recoverable from 2026-10-28T07:14:00Z (30d ago) (end of the oldest DONE backup)"

    backups = json.loads(shown)["backups"]
    catalog = json.loads(listed)
    archived = {b["backup_id"]: b for b in catalog["backups"]}
    assert len(backups) == 14
    assert len(archived) == 31  # 30 nightly backups and the oldest one within the 30-day retention
    for backup in backups:
        base = archived[backup["backup_id"]]
        assert base["status"] == "DONE"
        assert (base["begin_time"], base["end_time"]) == (backup["started"], backup["stopped"])
    assert len(objects) == 14
    for obj in objects:  # the Backup objects' own WAL range, which `db backups` does not show
        status = obj["status"]
        base = archived[status["backupId"]]
        assert (status["destinationPath"], status["serverName"]) == (catalog["destination_path"], "immich-db-2026")
        assert (base["begin_wal"], base["end_wal"]) == (status["beginWal"], status["endWal"])
        assert base["begin_wal"] < base["end_wal"]
    wal = catalog["wal"]
    ordered = catalog["backups"]  # oldest first
    assert wal["first"] == ordered[0]["begin_wal"]
    assert wal["last"] > ordered[-1]["end_wal"]
    assert wal["count"] == int(wal["last"], 16) - int(wal["first"], 16) + 1  # no gap in the WAL stream
    assert wal["timelines"] == [1]


def test_readme_screenshot_is_a_png_of_the_demo_frame() -> None:
    """docs/demo.png (`make screenshot`) is a whole PNG of a 120x40 terminal frame, and the README shows it."""
    import struct
    import zlib

    png = (ROOT / "docs" / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    header = png[16:29]
    assert struct.unpack(">I", png[29:33])[0] == zlib.crc32(kind + header)
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert (depth, colour) in ((8, 2), (8, 6))  # 8-bit RGB or RGBA
    # 120 columns and 40 rows of a monospace font, plus the window's title bar and margins
    assert 120 * 8 <= width <= 120 * 16
    assert 40 * 16 <= height <= 40 * 32
    assert png.endswith(b"IEND\xaeB`\x82")
    assert 30_000 < len(png) < 2_000_000  # text and colour, not a blank canvas
    assert "](docs/demo.png)" in (ROOT / "README.md").read_text().split("\n## ", 1)[0]
