"""How the TUI feels: first paint on the sandbox, and key presses answered while big data loads.

1. First paint: `immich-tui` on the demo sandbox is started as a separate process five times; the
   figure is the time from spawning the process to Textual's `Ready` event (the first frame is on
   screen), median of 5. Target < 1 s.
2. Responsiveness: the sandbox's bucket is grown to 100,000 objects and its CronJob to 1,000 Jobs.
   In a headless app, the bucket listing (`l`), the Jobs history and the verdict load on worker threads
   while keys are pressed every 50 ms; each key's latency is the time from the event's creation to the
   app handling it (Pilot/Textual timestamps). Target: every key within 100 ms. Also checked: no
   table holds more than a few dozen rows.

Results go to bench/RESULTS-tui.md (overwritten) and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual._time import get_time  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from immich_tui.app import ImmichApp  # noqa: E402
from immich_tui.demo.fixtures import (  # noqa: E402
    BUCKET,
    MEDIA_PREFIX,
    World,
)
from immich_tui.demo.world import Sandbox  # noqa: E402
from immich_tui.services.status import Services  # noqa: E402

PAINT_TARGET_S = 1.0
KEY_TARGET_S = 0.100

FIRST_PAINT = r"""
import sys, time
from immich_tui.app import ImmichApp
from immich_tui.services.status import Services, Target

class Timed(ImmichApp):
    def on_ready(self) -> None:
        print(f"READY {time.time():.6f}", flush=True)
        self.exit()

env = dict(a.split("=", 1) for a in sys.argv[2:])
Timed(Services(Target(kubeconfig=sys.argv[1], context="sandbox"), env=env)).run(headless=True)
"""


def first_paint(box: Sandbox, runs: int) -> list[float]:
    times = []
    env_args = [f"{k}={v}" for k, v in box.env.items()]
    for _ in range(runs):
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-c", FIRST_PAINT, str(box.kubeconfig), *env_args],
            capture_output=True,
            text=True,
            env={**os.environ, "TEXTUAL_ANIMATIONS": "none"},
            check=False,
            timeout=60,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("READY ")), None)
        if line is None:
            raise RuntimeError(f"the app did not paint: {done.stderr[-2000:]}")
        times.append(float(line.split()[1]) - started)
    return times


def grow_bucket(box: Sandbox, objects: int) -> None:
    client = box.s3.client()
    existing = sum(p.get("KeyCount", 0) for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET))

    def put(n: int) -> None:
        folder = ("upload", "library")[n % 2]
        client.put_object(
            Bucket=BUCKET, Key=f"{MEDIA_PREFIX}{folder}/u{n % 5}/{n // 1000:03d}/IMG_{n:06d}.jpg", Body=b"x"
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(existing, objects)))


class Measured(ImmichApp):
    """Records how long each key waited between its creation and its handling."""

    latencies: list[float]

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.latencies.append(get_time() - event.time)
        await super().on_event(event)


async def responsiveness(box: Sandbox, presses: int) -> dict[str, Any]:
    app = Measured(Services(box.target, env=box.env), tick_seconds=1.0, cursor_blink=False)
    app.latencies = []
    max_rows = 0
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.press("l")  # list 100,000 objects on a worker thread
        keys = ["4", "down", "down", "up", "3", "2", "5", "1", "4", "down"]
        started = time.monotonic()
        for i in range(presses):
            await pilot.press(keys[i % len(keys)])
            await asyncio.sleep(0.05)
            for table in app.query(DataTable):
                max_rows = max(max_rows, table.row_count)
        load_seconds = time.monotonic() - started
        await pilot.press("3")
        while "bucket listed" not in str(app.query_one("#offsite-task").render()):
            await asyncio.sleep(0.2)
        listed_after = time.monotonic() - started
        listed = str(app.query_one("#offsite-task").render()).strip()
        for table in app.query(DataTable):
            max_rows = max(max_rows, table.row_count)
    lat = sorted(app.latencies)
    return {
        "keys": len(lat),
        "p50": statistics.median(lat),
        "p95": lat[int(0.95 * (len(lat) - 1))],
        "max": lat[-1],
        "max_rows": max_rows,
        "pressing_seconds": load_seconds,
        "listing_seconds": listed_after,
        "listed": listed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS-tui.md")
    args = parser.parse_args()
    os.environ["TEXTUAL_ANIMATIONS"] = "none"
    with Sandbox(Path(tempfile.mkdtemp(prefix="tui-bench-"))) as box:
        paint = first_paint(box, args.runs)
        print("first paint:", ", ".join(f"{t:.2f}s" for t in paint), flush=True)
    with Sandbox(Path(tempfile.mkdtemp(prefix="tui-bench-")), world=World(jobs=args.jobs, job_pods=50)) as box:
        t0 = time.monotonic()
        grow_bucket(box, args.objects)
        print(f"bucket grown to {args.objects} objects in {time.monotonic() - t0:.0f}s", flush=True)
        result = asyncio.run(responsiveness(box, args.presses))
    paint_median = statistics.median(paint)
    paint_met = "met" if paint_median < PAINT_TARGET_S else "NOT met"
    key_met = "met" if result["max"] <= KEY_TARGET_S else "NOT met"
    p50, p95, worst = (result[k] * 1000 for k in ("p50", "p95", "max"))
    ok = paint_median < PAINT_TARGET_S and result["max"] <= KEY_TARGET_S and result["max_rows"] < 1_000
    lines = [
        "# TUI: first paint and responsiveness",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `python bench/tui_bench.py` (`make bench-tui`).",
        "",
        "| Measure | Value | Target |",
        "|---|---|---|",
        f"| First paint on the sandbox, spawn → first frame, median of {args.runs} | **{paint_median:.2f} s** "
        f"({min(paint):.2f}–{max(paint):.2f}) | < {PAINT_TARGET_S:.0f} s: {paint_met} |",
        f"| Key latency while loading ({result['keys']} key events, {args.objects:,} objects, {args.jobs:,} Jobs): "
        f"p50 / p95 / max | {p50:.1f} / {p95:.1f} / **{worst:.1f} ms** | ≤ 100 ms: {key_met} |",
        f"| Largest table while loading | {result['max_rows']} rows | no 100,000-row table |",
        f"| Bucket listing on its worker | {result['listed']} after {result['listing_seconds']:.0f} s | — |",
        "",
    ]
    text = "\n".join(lines)
    args.results.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
