"""Helper processes the bench runs beside the tools: the moto S3 server and the counting proxy.

Both are separate processes so neither their CPU nor their GIL contention is charged to the client under
test, and both are torn down on every exit path (context managers), including errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# werkzeug logs one line per request to stderr; at tens of thousands of requests that is pure overhead
# for the server, so the bench quiets it before handing over to moto's own entry point.
MOTO_BOOT = (
    "import logging, sys\n"
    "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
    "from moto.server import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MotoServer:
    """`boot` is the Python source that starts the server (MOTO_BOOT, or a variant that adjusts moto
    first); it gets moto's command-line arguments."""

    def __init__(self, python: Path, log_path: Path, boot: str = MOTO_BOOT) -> None:
        self.python = python
        self.log_path = log_path
        self.boot = boot
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> MotoServer:
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(self.python), "-c", self.boot, "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_port(self.port, self.proc, 60)
        except BaseException:
            _stop(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.proc)


class CountProxy:
    def __init__(self, upstream_port: int, log_path: Path) -> None:
        self.upstream_port = upstream_port
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CountProxy:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "countproxy.py"),
                "--upstream",
                f"127.0.0.1:{self.upstream_port}",
                "--log",
                str(self.log_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if not line:
                raise RuntimeError("count proxy did not start")
            self.port = int(line)
            _wait_for_port(self.port, self.proc, 30)
        except BaseException:
            _stop(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.proc)

    def _call(self, method: str, path: str) -> dict[str, int]:
        req = urllib.request.Request(self.url + path, method=method)
        # The proxy is on loopback; never route this through an HTTP proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=30) as resp:
            data: dict[str, int] = json.loads(resp.read() or b"{}")
        return data

    def reset(self) -> None:
        self._call("POST", "/__bench__/reset")

    def counts(self) -> dict[str, int]:
        return self._call("GET", "/__bench__/counts")

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def entries_since(self, offset: int) -> list[tuple[str, str, str]]:
        """(kind, method, target) of each request logged after offset; counts() first, as it flushes."""
        self.counts()
        with open(self.log_path, encoding="utf-8") as fh:
            fh.seek(offset)
            rows = [line.rstrip("\n").split("\t") for line in fh]
        return [(r[0], r[1], r[3]) for r in rows if len(r) == 4]


class ShapingProxy:
    """bench/shaper.py in front of an S3 server: a household uplink (shared FIFO link per direction,
    RTT, per-connection backpressure) whose byte counters go to `stats_path`."""

    def __init__(
        self,
        upstream_port: int,
        stats_path: Path,
        rtt_ms: float = 40.0,
        up_mbit: float = 50.0,
        down_mbit: float = 250.0,
        stats_interval: float = 0.25,
        upstream_host: str = "127.0.0.1",
    ) -> None:
        self.upstream = f"{upstream_host}:{upstream_port}"
        self.stats_path = stats_path
        self.rtt_ms = rtt_ms
        self.up_mbit = up_mbit
        self.down_mbit = down_mbit
        self.stats_interval = stats_interval
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> ShapingProxy:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        self.stats_path.write_text("")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "shaper.py"),
                "--upstream",
                self.upstream,
                "--rtt-ms",
                str(self.rtt_ms),
                "--up-mbit",
                str(self.up_mbit),
                "--down-mbit",
                str(self.down_mbit),
                "--stats",
                str(self.stats_path),
                "--stats-interval",
                str(self.stats_interval),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if not line:
                raise RuntimeError("shaping proxy did not start")
            self.port = int(line)
        except BaseException:
            _stop(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # SIGTERM makes the proxy write a last stats line, so totals read afterwards are complete.
        _stop(self.proc)
