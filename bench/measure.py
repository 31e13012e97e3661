"""Run one command and measure it the way an operator would feel it.

Client CPU comes from os.wait4 on the tool's process (done by bench/spawn.py): Linux reports the tool's
own usage plus that of all descendants it reaped, so a shell loop around `aws` or a tool that forks
helpers is counted whole, while the S3 server (a separate process, not a descendant) is not. Peak RSS is
the tool's ru_maxrss, kept free of the bench's own footprint by forking from the small launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SPAWN = Path(__file__).resolve().parent / "spawn.py"


@dataclass
class Measured:
    label: str
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mb: float
    returncode: int
    timed_out: bool
    log_path: Path
    server_cpu_s: float | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe_failure(self) -> str:
        why = "timed out" if self.timed_out else f"exit code {self.returncode}"
        return f"{self.label}: {why} (log: {self.log_path})\n{self.tail()}"


def process_cpu_s(pid: int | None) -> float | None:
    """User+sys CPU of a live process (all threads), used to show how busy the S3 server was."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields after "(comm)": index 11 = utime, 12 = stime (1-based fields 14 and 15).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_measured(
    label: str,
    cmd: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    stdout_path: Path | None = None,
    server_pid: int | None = None,
) -> Measured:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    report = log_path.with_suffix(".rusage.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(SPAWN), str(report), "--", *cmd]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "wb"))
        out = stack.enter_context(open(stdout_path, "wb")) if stdout_path else log
        server_before = process_cpu_s(server_pid)
        start = time.perf_counter()
        proc = subprocess.Popen(
            launcher, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=log, start_new_session=True
        )
        timed_out = threading.Event()

        def kill_tree() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill_tree)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill_tree()
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        server_after = process_cpu_s(server_pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Reap anything the tool left behind in its session so it cannot skew the next measurement.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before
    try:
        tool = json.loads(report.read_text())
    except (OSError, ValueError):
        # Launcher killed (timeout) before reporting: fall back to its own, coarser figures.
        tool = {
            "wall_s": wall,
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
            "maxrss_kb": usage.ru_maxrss,
            "returncode": proc.returncode or -1,
        }
    return Measured(
        label=label,
        wall_s=float(tool["wall_s"]),
        user_s=float(tool["user_s"]),
        sys_s=float(tool["sys_s"]),
        maxrss_mb=float(tool["maxrss_kb"]) / 1024,
        returncode=int(tool["returncode"]),
        timed_out=timed_out.is_set(),
        log_path=log_path,
        server_cpu_s=server_cpu,
    )


def failures_section(failures: Sequence[str]) -> list[str]:
    """A results file's closing section: each failed run's output verbatim, or that there was none."""
    out = ["## Failures", ""]
    for failure in failures:
        out += ["```", failure.rstrip(), "```"]
    return out if failures else [*out, "None."]
