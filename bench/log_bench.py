"""Does the Jobs pane's log view keep up with a chatty pod?

Target: a `LogView(max_lines=10_000)` follows a pod printing 2,000 lines/s for 30 s without falling
more than 1 s behind, and holds no more than its line cap.

The cluster side (the Kubernetes emulator and a producer thread writing the pod's log, paced, each line
carrying its sequence number and `time.monotonic()` write time) runs in a child process, as a real
cluster would be elsewhere; so this process is only the TUI: a headless Textual app whose LogView reads
the production `LogStream` over real HTTP (`pods/log?follow=true`). Every ~100 ms the lag is sampled:
now minus the write time of the newest line the view holds (CLOCK_MONOTONIC is shared between
processes). Results go to bench/RESULTS-log.md (overwritten) and stdout; the exit status is 1 when the
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.app import App, ComposeResult  # noqa: E402
from textual.geometry import Region  # noqa: E402
from textual.strip import Strip  # noqa: E402

from immich_tui.demo.emulator import EmulatorServer, PodLog  # noqa: E402
from immich_tui.demo.fixtures import World, seed  # noqa: E402
from immich_tui.services.status import Services, Target  # noqa: E402
from immich_tui.widgets.logview import LogView  # noqa: E402

NAMESPACE = "immich"
MAX_LAG_S = 1.0
SAMPLE_S = 0.1


# The cluster: its own process --------------------------------------------------------------------
def cluster_process(conn: Connection, rate: int, seconds: float) -> None:
    """Serve the emulated API, then write the pod's log at `rate` lines/s when told to start."""
    server = EmulatorServer().start()
    try:
        seed(server, World())
        conn.send(server.kubeconfig())
        pod = conn.recv()
        followed = FirstUse()
        log = PodLog(lock=followed)  # type: ignore[arg-type]
        server.emulator.pod_logs[(NAMESPACE, pod)] = log
        conn.send("ready")
        if conn.recv() != "go":
            return
        # With tailLines=0 a line written before the server has read the log's length counts as history
        # and is not sent; the producer starts once the follow has looked at the (empty) log.
        if not followed.used.wait(30):
            raise RuntimeError("the log follow never reached the emulator")
        written, elapsed = produce(log, rate, seconds)
        conn.send({"written": written, "seconds": elapsed})
        conn.recv()  # "stop": the reader has everything
    finally:
        server.stop()


class FirstUse:
    """The pod log's lock, which tells when the log follow first read the log (it is the only user until then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.used = threading.Event()

    def __enter__(self) -> bool:
        acquired = self._lock.__enter__()
        self.used.set()
        return acquired

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def produce(log: PodLog, rate: int, seconds: float) -> tuple[int, float]:
    """Paced writes: every few ms, as many lines as the schedule says are due, then `finish()`."""
    written = 0
    total = int(rate * seconds)
    start = time.monotonic()
    while written < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while written < due:
            log.write(
                f"{written:09d} {time.monotonic():.6f} INFO uploaded upload/user-{written % 7}/2024/06/"
                f"IMG_{written:07d}.jpg 2.4 MB in 41 ms"
            )
            written += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    log.finish()
    return written, elapsed


# The TUI: this process ---------------------------------------------------------------------------
def parse(line: str | None) -> tuple[int, float] | None:
    if not line:
        return None
    seq, stamp, _ = line.split(" ", 2)
    return int(seq), float(stamp)


def rss_mb() -> float:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return float("nan")


class PaintProbe(LogView):
    """Counts frames and how far behind the newest line was when the screen was last painted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames = 0
        self.max_paint_lag = 0.0

    def render_lines(self, crop: Region) -> list[Strip]:
        strips = super().render_lines(crop)
        self.frames += 1
        newest = parse(self.last_line)
        if newest is not None and self.follow:
            prefix = f"{newest[0]:09d}"
            if any(strip.text.startswith(prefix) for strip in strips):  # the newest line is on screen
                self.max_paint_lag = max(self.max_paint_lag, time.monotonic() - newest[1])
        return strips


class BenchApp(App[None]):
    def __init__(self, cap: int, wrap: bool) -> None:
        super().__init__()
        self.cap = cap
        self.wrap = wrap
        self.batches = 0
        self.ended = threading.Event()
        self.failure = ""

    def compose(self) -> ComposeResult:
        yield PaintProbe(max_lines=self.cap, wrap=self.wrap)

    def on_log_view_lines(self, message: LogView.Lines) -> None:
        self.batches += 1

    def on_log_view_ended(self, message: LogView.Ended) -> None:
        self.ended.set()

    def on_log_view_failed(self, message: LogView.Failed) -> None:
        self.failure = message.message
        self.ended.set()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def follow(args: argparse.Namespace, conn: Connection, services: Services, pod: str) -> dict[str, Any]:
    app = BenchApp(args.cap, args.wrap)
    lags: list[float] = []
    stalls: list[float] = []
    max_count = 0
    rss: dict[str, float] = {}
    async with app.run_test(size=(args.width, 40)) as pilot:
        view = app.query_one(PaintProbe)
        view.set_filter(args.filter)
        await pilot.pause()
        rss["start"] = rss_mb()
        cpu0, wall0 = time.process_time(), time.monotonic()
        view.attach(services.media.logs(pod, follow=True, tail=0))
        conn.send("go")
        produced: dict[str, Any] | None = None
        next_sample = time.monotonic() + SAMPLE_S
        while produced is None:
            await asyncio.sleep(max(0.0, next_sample - time.monotonic()))
            now = time.monotonic()
            stalls.append(now - next_sample)
            next_sample = now + SAMPLE_S
            newest = parse(view.last_line)
            if newest is not None:
                lags.append(now - newest[1])
            max_count = max(max_count, view.line_count)
            if "middle" not in rss and now - wall0 >= args.seconds / 2:
                rss["middle"] = rss_mb()
            if conn.poll():
                produced = conn.recv()
        deadline = time.monotonic() + 30
        while not app.ended.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(SAMPLE_S)
            max_count = max(max_count, view.line_count)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        await pilot.pause()
        rss["end"] = rss_mb()
        held = view.lines
        result = {
            "produced": produced,
            "ended": app.ended.is_set(),
            "failure": app.failure,
            "lags": lags,
            "stalls": stalls,
            "line_count": view.line_count,
            "max_line_count": max_count,
            "dropped": view.dropped,
            "held": held,
            "held_mb": sum(sys.getsizeof(line) for line in held) / 2**20,
            "batches": app.batches,
            "frames": view.frames,
            "max_paint_lag": view.max_paint_lag,
            "rss": rss,
            "cpu_share": cpu / wall if wall else 0.0,
        }
    conn.send("stop")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the pod prints (default 30)")
    parser.add_argument("--rate", type=int, default=2_000, help="lines per second the pod prints (default 2000)")
    parser.add_argument("--cap", type=int, default=10_000, help="the LogView's max_lines (default 10000)")
    parser.add_argument("--wrap", action="store_true", help="follow with line wrapping on")
    parser.add_argument("--width", type=int, default=120, help="terminal columns (lines are ~95; 60 wraps each)")
    parser.add_argument("--filter", default="", help="follow with this filter set (e.g. 'user-3')")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS-log.md")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=cluster_process, args=(child_conn, args.rate, args.seconds), daemon=True)
    child.start()
    workdir = Path(tempfile.mkdtemp(prefix="log-bench-"))
    try:
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(conn.recv()))
        services = Services(Target(kubeconfig=str(kubeconfig)), env={})
        job, pod = services.media.newest_job_pod(None)
        conn.send(pod)
        conn.recv()
        print(f"following pod {pod} (Job {job}): {args.rate} lines/s for {args.seconds:g} s, cap {args.cap}")
        result = asyncio.run(follow(args, conn, services, pod))
        services.close()
    finally:
        child.join(15)
        if child.is_alive():
            child.terminate()
    return report(args, result)


def command_options(args: argparse.Namespace) -> str:
    options = " --wrap" if args.wrap else ""
    options += f" --width {args.width}" if args.width != 120 else ""
    return options + (f" --filter {args.filter}" if args.filter else "")


def report(args: argparse.Namespace, r: dict[str, Any]) -> int:
    filtered = f" with the filter {args.filter!r} set," if args.filter else ""
    produced = r["produced"]
    written, seconds = produced["written"], produced["seconds"]
    received = r["line_count"] + r["dropped"]
    seqs = [int(line.split(" ", 1)[0]) for line in r["held"]]
    contiguous = seqs == list(range(written - len(seqs), written))
    lags = r["lags"] or [float("inf")]
    max_lag = max(lags)
    bounded = r["max_line_count"] <= args.cap and r["line_count"] == min(args.cap, written)
    complete = r["ended"] and not r["failure"] and received == written and contiguous
    met = max_lag <= MAX_LAG_S and bounded and complete
    rss = r["rss"]
    verdict = "met" if met else "NOT met"
    lines = [
        "# The log pane keeps up with a chatty pod",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `.venv/bin/python bench/log_bench.py --seconds {args.seconds:g} "
        f"--rate {args.rate} --cap {args.cap}{command_options(args)}`.",
        "",
        f"A pod (Kubernetes emulator in a separate process, 127.0.0.1) prints {args.rate:,} lines/s for "
        f"{args.seconds:g} s; a headless Textual app ({args.width}×40) follows it with "
        f"`LogView(max_lines={args.cap:,}{', wrap=True' if args.wrap else ''})`{filtered} "
        "reading the production `LogStream` over HTTP (`pods/log?follow=true&tailLines=0`). Lag is sampled "
        f"every {SAMPLE_S * 1000:.0f} ms: now minus the write time of the newest line the view holds.",
        "",
        f"**Target** (max lag ≤ {MAX_LAG_S:g} s, line_count ≤ cap, no line lost but those the cap drops): "
        f"**{verdict}**",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Producer: lines written / rate achieved | {written:,} / {written / seconds:,.0f} lines/s |",
        f"| Lines received by the view (held + dropped by the cap) | {received:,} "
        f"({'all' if received == written else f'{written - received:,} missing'}) |",
        f"| Held lines contiguous and ending at the newest | {'yes' if contiguous else 'no'} |",
        f"| Lag: max / p95 / p50 ({len(r['lags'])} samples) | **{max_lag:.3f} s** / "
        f"{percentile(lags, 0.95):.3f} s / {statistics.median(lags):.3f} s |",
        f"| Newest line on screen, worst lag at paint ({r['frames']:,} frames) | {r['max_paint_lag']:.3f} s |",
        f"| Event-loop stall beyond the sample interval: max / p95 | {max(r['stalls']):.3f} s / "
        f"{percentile(r['stalls'], 0.95):.3f} s |",
        f"| Batches handed to the view (`LogView.Lines`) | {r['batches']:,} "
        f"(~{written / max(1, r['batches']):,.0f} lines each) |",
        f"| line_count final / max seen / cap | {r['line_count']:,} / {r['max_line_count']:,} / {args.cap:,} |",
        f"| Dropped by the cap | {r['dropped']:,} |",
        f"| Held lines (string objects) | {r['held_mb']:.1f} MB |",
        f"| RSS start / middle / end | {rss['start']:.0f} / {rss.get('middle', float('nan')):.0f} / "
        f"{rss['end']:.0f} MB (growth {rss['end'] - rss['start']:+.0f} MB; middle → end "
        f"{rss['end'] - rss.get('middle', rss['end']):+.0f} MB) |",
        f"| TUI process CPU while following | {r['cpu_share'] * 100:.0f} % of one core |",
        f"| Stream outcome | {'Ended' if r['ended'] and not r['failure'] else r['failure'] or 'no end seen'} |",
        "",
    ]
    if args.cap / args.rate <= args.seconds / 2:
        lines += [
            f"The cap is reached after {args.cap / args.rate:.1f} s, so RSS from the middle to the end is the steady "
            "state: lines keep arriving and old ones are evicted.",
            "",
        ]
    text = "\n".join(lines)
    args.results.write_text(text)
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
