"""Throwaway PostgreSQL servers archiving through Debian's `barman-cli-cloud` to the local S3 endpoint.

PostgreSQL refuses to run as root, so under root every server and barman command runs as the `postgres` user
(dropped with `setpriv`); any other user runs them as itself. Each server lives in a private temporary folder
owned by that user, listens only on a unix socket there, and gets its AWS settings from its own process
environment, which is what its `archive_command` and `restore_command` inherit. Every failure names the
command and ends with the tail of the PostgreSQL log, so a server that does not start says why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immich_tui.sandbox import free_port

SERVER_USER = "postgres"
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
    """`PG_BINDIR` if set, else the newest Debian PostgreSQL (`/usr/lib/postgresql/<major>/bin`)."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    if not found:
        raise PgError("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    return found[0].parent


def barman_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise PgError(f"{name} not found on PATH (apt-get install barman-cli-cloud)")
    return path


@dataclass(frozen=True)
class RunAs:
    """Who runs servers and barman: `postgres` when the tests run as root, else the current user."""

    prefix: tuple[str, ...]
    uid: int
    gid: int

    @classmethod
    def detect(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls((), os.geteuid(), os.getegid())
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PgError(f"running as root needs a {SERVER_USER!r} user (the postgresql package creates it)") from None
        setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
        if not setpriv:
            raise PgError("setpriv not found (apt-get install util-linux)")
        return cls(
            (setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"), user.pw_uid, user.pw_gid
        )

    def own(self, path: Path) -> Path:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        return path


def run(
    runas: RunAs,
    argv: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    *,
    timeout: float = 120.0,
    log: Callable[[], str] | None = None,
) -> str:
    """Run as the server user with exactly `env`; on failure raise with the output and, if given, the log tail."""
    try:
        done = subprocess.run(
            [*runas.prefix, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
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
    """A private temporary folder the server user owns (pytest's own temp folders are root-only)."""

    def __init__(self, runas: RunAs) -> None:
        self.runas = runas
        self.root = runas.own(Path(tempfile.mkdtemp(prefix="immich-pg-")))

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700)
        return self.runas.own(path)

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
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
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

    runas: RunAs
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
        return run(self.runas, argv, self.env, self.data.parent, timeout=timeout, log=self.log_tail)

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
    """Debian's barman-cloud commands against one archive (destination URL + server name)."""

    runas: RunAs
    env: dict[str, str]
    cwd: Path
    s3: S3Access
    destination: str
    server_name: str

    def _run(self, tool: str, *args: str, log: Callable[[], str] | None = None, timeout: float = 180.0) -> str:
        argv = [barman_tool(tool), "--endpoint-url", self.s3.endpoint, *args]
        return run(self.runas, argv, self.env, self.cwd, timeout=timeout, log=log)

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
        self.runas = RunAs.detect()
        self.servers: list[PgServer] = []
        self.workspace = Workspace(self.runas)
        try:
            self.env = server_env(self.workspace.root, self.bindir, s3)
            self.sockets = self.workspace.dir("sockets")
        except BaseException:
            self.workspace.close()
            raise

    def server(self, name: str) -> PgServer:
        """A server whose data folder is `<workspace>/<name>`: empty, for initdb or a restore to fill."""
        data = self.workspace.root / name
        pg = PgServer(self.runas, self.bindir, data, self.sockets, self.env)
        self.servers.append(pg)
        return pg

    def barman(self, destination: str, server_name: str) -> BarmanCloud:
        return BarmanCloud(self.runas, self.env, self.workspace.root, self.s3, destination, server_name)

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
