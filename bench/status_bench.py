"""How fast `kubectl immich-backup status` answers on a busy cluster and a large bucket.

The emulated cluster holds 500 Jobs of the sync CronJob, 2,000 pods and 300 CNPG Backups; the bucket
holds 20,000 objects written by a real `immich-sync backup` (so its run report is real too). The
plugin runs as a separate process, exactly as kubectl starts it, five times; the median is the figure.
Results go to bench/RESULTS-status.md (overwritten) and stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from immich_tui.demo.emulator import EmulatorServer  # noqa: E402
from immich_tui.demo.fixtures import World, seed  # noqa: E402
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3  # noqa: E402

WORK = ROOT / "bench" / ".work"
BIN = Path(sys.executable).parent
TARGET_S = 1.5


def make_library(root: Path, files: int) -> None:
    stamp = root / ".generated"
    if stamp.exists() and stamp.read_text() == str(files):
        return
    for n in range(files):
        folder = ("upload", "library")[n % 2]
        path = root / folder / f"user-{n % 7}" / f"{n // 500:03d}" / f"IMG_{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (1 + n % 5))
    for folder in ("upload", "library", "profile", "thumbs", "encoded-video", "backups"):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / ".immich").write_bytes(b"")
    stamp.write_text(str(files))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pods", type=int, default=2_000)
    parser.add_argument("--backups", type=int, default=300)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS-status.md")
    args = parser.parse_args()

    library = WORK / f"lib-status-{args.objects}"
    print(f"library: {library}", flush=True)
    make_library(library, args.objects - 3)  # + three of the six markers are backed up
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG"))}
    with LocalS3() as s3, EmulatorServer() as server:
        s3.client().create_bucket(Bucket="immich-offsite")
        sync_env = {
            **env,
            "AWS_ACCESS_KEY_ID": DEMO_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DEMO_SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": s3.endpoint,
            "BUCKET_NAME": "immich-offsite",
            "MEDIA_PREFIX": "immich/media/",
            "LIBRARY_ROOT": str(library),
        }
        started = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "immich-sync"), "backup", "--settle-seconds", "0", "--no-progress", "--quiet"],
            env=sync_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        print(f"bucket seeded by immich-sync in {time.perf_counter() - started:.1f}s", flush=True)
        objects = sum(
            page.get("KeyCount", 0)
            for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket="immich-offsite")
        )

        job_pods = min(args.jobs, args.pods // 4)
        world = World(
            jobs=args.jobs,
            job_pods=job_pods,
            failed_job_days=(17, 90),
            backups=args.backups,
            other_pods=args.pods - job_pods - 1,
            restorer={k: sync_env[k] for k in sync_env if k.startswith("AWS_") or k in ("BUCKET_NAME", "MEDIA_PREFIX")},
        )
        seed(server, world)
        em = server.emulator
        counts = {
            "jobs": sum(1 for key in em.objects if key[0].plural == "jobs"),
            "pods": sum(1 for key in em.objects if key[0].plural == "pods"),
            "backups": sum(1 for key in em.objects if key[0].plural == "backups"),
        }
        kubeconfig = Path(tempfile.mkdtemp()) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        plugin_env = {k: v for k, v in env.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        plugin_env["AWS_CONFIG_FILE"] = plugin_env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
        command = [str(BIN / "kubectl-immich_backup"), "status", "--kubeconfig", str(kubeconfig), "-o", "json"]
        times, k8s_requests, s3_requests, verdict = [], [], [], ""
        for _ in range(args.runs):
            before = len(em.requests)
            t0 = time.perf_counter()
            run = subprocess.run(command, env=plugin_env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            k8s_requests.append(len(em.requests) - before)
            if run.returncode not in (0, 1):
                print(run.stdout, run.stderr, file=sys.stderr)
                return 1
            data = json.loads(run.stdout)
            verdict = data["verdict"]["state"]
            s3_requests.append(sum((data["offsite"]["value"] or {}).get("requests", {}).values()))
        lists = [r for r in em.requests[-k8s_requests[-1] :] if r.action is not None and r.action.value == "LIST"]
        scoped = all(r.params.get("limit") for r in lists)

    median = statistics.median(times)
    lines = [
        "# `kubectl immich-backup status` on a busy cluster",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `python bench/status_bench.py` (`make bench-status`).",
        "",
        f"Cluster (kmock emulator on 127.0.0.1): {counts['jobs']} Jobs, {counts['pods']} pods, "
        f"{counts['backups']} CNPG Backups. Bucket (moto on 127.0.0.1): {objects} objects written by "
        "`immich-sync backup`, with its run report.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Wall time, median of {args.runs} (separate process, as kubectl starts it) | **{median:.2f} s** "
        f"(target < {TARGET_S} s: {'met' if median < TARGET_S else 'NOT met'}) |",
        f"| Min / max | {min(times):.2f} s / {max(times):.2f} s |",
        f"| Kubernetes requests per run | {k8s_requests[-1]} (lists all paginated: {'yes' if scoped else 'no'}) |",
        f"| S3 requests per run | {s3_requests[-1]} (the bucket itself is not listed) |",
        f"| Verdict | {verdict} |",
        "",
        "Runs: " + ", ".join(f"{t:.2f} s" for t in times),
        "",
    ]
    text = "\n".join(lines)
    args.results.write_text(text)
    print(text)
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
