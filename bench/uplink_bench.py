"""Home uplink benchmark: aws s3 sync, rclone and immich-sync through a shaped household line.

On loopback every tool is CPU-bound and the comparison is about who burns the least CPU. A first backup
from home is bound by the uplink instead: a few tens of Mbit/s, tens of milliseconds to the region, one
pipe for every connection. Here each tool uploads libraries A and B through bench/shaper.py (one FIFO
link per direction, RTT, per-connection backpressure) to a real S3 server (Ceph RGW when installed),
and its wall time is set against the physical floor: payload ÷ upload bandwidth + 3 RTT. A "bwlimit"
scenario checks that immich-sync's --bwlimit holds its rate, measured on the wire, and follows a
timetable change within two seconds.

Figures go to bench/RESULTS-uplink.md (overwritten) and stdout; see bench/README.md, "Home uplink".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from libgen import SPEC_A, SPEC_B, LibSpec, LibStats, ensure_library, library_stats
from measure import Measured, failures_section, process_cpu_s, run_measured
from run import (
    S3,
    Row,
    fmt,
    machine_info,
    new_log_dir,
    on_sigterm,
    own_cpu_s,
    ratio,
    system_busy_s,
    verify,
    warm_cache,
)
from servers import MotoServer, ShapingProxy
from shaper import Sample, read_stats
from tools import (
    CREDS,
    REGION,
    SYNC_BIN,
    VENV_BIN,
    WORK,
    Invocation,
    Target,
    aws_sync,
    base_env,
    ensure_aws,
    ensure_rclone,
    immich_sync,
    rclone_copy,
    sync_available,
    versions,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS-uplink.md"
LOGS = WORK / "logs-uplink"
MB = 1_000_000
MiB = 1024 * 1024

AWS, RCLONE4, RCLONE16, SYNC = "aws s3 sync", "rclone (defaults: --transfers 4)", "rclone --transfers 16", "immich-sync"
# Memstore keeps every object in the OSD's memory; runs are purged after verification, so this only has
# to hold one run (plus what RGW's garbage collector has not reclaimed yet) with a wide margin.
RGW_MEMSTORE_BYTES = 4 * 1024**3
# rclone's --bwlimit units, which immich-sync's --bwlimit takes: a bare number is KiB/s.
RATE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
TOLERANCE = 0.10
SETTLE_GOAL_S = 2.0
FLOOR_GOAL_A = 1.1
NCPU = len(os.sched_getaffinity(0))
BUSY_LIMIT = 0.8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pure arithmetic (unit-tested)


def floor_s(payload_bytes: int, up_mbit: float, rtt_ms: float) -> float:
    """The fastest any tool could upload `payload_bytes`: every byte through the uplink once, plus three
    round trips no upload can avoid: the TCP handshake, one listing before the first upload can be
    decided, and the last upload's response."""
    return payload_bytes * 8 / (up_mbit * 1e6) + 3 * rtt_ms / 1000


def wire_floor_s(wire_up_bytes: int, up_mbit: float) -> float:
    """What the bytes a tool actually sent (payload plus HTTP requests) cost at the line's rate alone."""
    return wire_up_bytes * 8 / (up_mbit * 1e6)


def cumulative_at(samples: Sequence[Sample], t: float, direction: str = "up") -> float:
    """Bytes delivered by time t, interpolated linearly between stats lines (clamped at both ends)."""
    if not samples:
        return 0.0

    def val(s: Sample) -> int:
        return s.up if direction == "up" else s.down

    if t <= samples[0].t:
        return float(val(samples[0]))
    for a, b in itertools.pairwise(samples):
        if a.t <= t <= b.t:
            if b.t == a.t:
                return float(val(b))
            return val(a) + (val(b) - val(a)) * (t - a.t) / (b.t - a.t)
    return float(val(samples[-1]))


def rate_between(samples: Sequence[Sample], t0: float, t1: float, direction: str = "up") -> float:
    """Mean rate in bytes/s over [t0, t1]."""
    if t1 <= t0:
        raise ValueError("empty window")
    return (cumulative_at(samples, t1, direction) - cumulative_at(samples, t0, direction)) / (t1 - t0)


def window_rates(
    samples: Sequence[Sample], t0: float, t1: float, width: float = 1.0, direction: str = "up"
) -> list[tuple[float, float]]:
    """(end, rate over [end - width, end]) for every stats line with t0 + width <= end <= t1."""
    return [(s.t, rate_between(samples, s.t - width, s.t, direction)) for s in samples if t0 + width <= s.t <= t1]


def settle_time(rates: Sequence[tuple[float, float]], boundary: float, target: float, tol: float) -> float | None:
    """Seconds from `boundary` to the first window end from which every later window's rate stays within
    ±tol of `target`; None when the last window is still outside."""
    settled: float | None = None
    for end, rate in rates:
        if end < boundary:
            continue
        if abs(rate - target) <= tol * target:
            if settled is None:
                settled = end
        else:
            settled = None
    return None if settled is None else settled - boundary


def rate_bytes(text: str) -> float:
    """rclone's units: `2M` = 2 MiB/s, `512k` = 512 KiB/s, a bare number is KiB/s."""
    t = text.strip().lower()
    if t[-1] in RATE_UNITS:
        return float(t[:-1]) * RATE_UNITS[t[-1]]
    return float(t) * 1024


def next_boundary(now: dt.datetime, lead_s: float) -> dt.datetime:
    """The first whole minute at least `lead_s` after `now`."""
    earliest = now + dt.timedelta(seconds=lead_s)
    base = earliest.replace(second=0, microsecond=0)
    return base if base == earliest else base + dt.timedelta(minutes=1)


def timetable(now: dt.datetime, boundary: dt.datetime, before: str, after: str) -> str:
    """`HH:MM,before HH:MM,after`: the first entry is the current minute (already begun, and never after
    midnight relative to the boundary), the second the boundary."""
    return f"{now:%H:%M},{before} {boundary:%H:%M},{after}"


# ---------------------------------------------------------------- the S3 server


@dataclass
class Server:
    """The S3 server all runs write to, with what the bench needs to talk to it and to clean up."""

    name: str
    url: str
    port: int
    creds: dict[str, str]
    pids: list[int]
    sync_args: tuple[str, ...] = ()
    conf: Path | None = None  # Ceph's config, for radosgw-admin

    def cpu_s(self) -> float | None:
        vals = [process_cpu_s(pid) for pid in self.pids]
        known = [v for v in vals if v is not None]
        return sum(known) if known else None

    def collect_garbage(self) -> None:
        """RGW hands the tails of deleted large objects to its garbage collector, which waits two hours by
        default; process them now so memstore really frees the memory."""
        if self.conf is None:
            return
        cmd = ["radosgw-admin", "gc", "process", "--include-all", "-c", str(self.conf)]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(cmd, capture_output=True, timeout=300, check=False)


class BenchS3(S3):
    """run.py's bookkeeping client with the server's own credentials (RGW has its own keys)."""

    def __init__(self, url: str, creds: dict[str, str]) -> None:
        self.client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        )

    def purge(self, bucket: str) -> None:
        """Delete every object, upload and the bucket, so the next run starts from an empty server."""
        c = self.client
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                c.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for up in page.get("Uploads", []):
                c.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        c.delete_bucket(Bucket=bucket)


def rgw_missing() -> list[str]:
    from conformance.rgw import missing

    return missing()


@contextlib.contextmanager
def open_server(logs: Path) -> Iterator[Server]:
    """Ceph RGW when its daemons are installed, moto otherwise (named in the results either way)."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    absent = rgw_missing()
    if not absent:
        from conformance.rgw import ACCESS_KEY, SECRET_KEY, RadosGateway

        root = logs / "rgw"
        with RadosGateway(root, memstore_bytes=RGW_MEMSTORE_BYTES) as rgw:
            port = int(rgw.endpoint.rsplit(":", 1)[1])
            creds = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}
            version = first_line(["radosgw", "--version"]).split()
            release = " ".join(version[2:3] + version[4:5])  # "ceph version 16.2.15 (sha) pacific (stable)"
            name = f"Ceph RGW {release} (one memstore OSD, beast frontend) on 127.0.0.1"
            pids = [p.pid for p in rgw.procs]
            yield Server(name, rgw.endpoint, port, creds, pids, ("--path-style",), rgw.conf)
        return
    with MotoServer(VENV_BIN / "python", logs / "moto.log") as moto:
        name = f"moto (Ceph RGW not installed: missing {', '.join(absent)})"
        yield Server(name, moto.url, moto.port, dict(CREDS), [moto.pid] if moto.pid else [])


def first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=base_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else f"unavailable (exit {proc.returncode})"


# ---------------------------------------------------------------- report


@dataclass
class Wire:
    """What crossed the shaped line during one run, counted by the proxy."""

    up: int
    down: int
    connections: int
    proxy_cpu_s: float | None
    # Busy CPU of the whole machine during the run, as a share of all cores: the tool, the server, the
    # proxy and anything else running. Near 1 the machine, not the link, set the pace.
    machine_busy: float | None = None


@dataclass
class UplinkRow(Row):
    library: str = ""
    family: str = ""
    wire: list[Wire] = field(default_factory=list)

    def wire_median(self, attr: Callable[[Wire], float]) -> float | None:
        return statistics.median(attr(w) for w in self.wire) if self.wire else None


@dataclass
class BwResult:
    """One --bwlimit measurement: `figures` are rendered as they are; the goal is met when value <= limit."""

    label: str
    figures: dict[str, str] = field(default_factory=dict)
    goal: str = ""
    value: float | None = None
    limit: float | None = None
    shown: str = ""
    limit_shown: str = ""
    failed: str = ""


@dataclass
class Report:
    args: argparse.Namespace
    started: dt.datetime
    server: str = "not started"
    rows: list[UplinkRow] = field(default_factory=list)
    bw: list[BwResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, LibStats] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cpu_start: tuple[float, float] = field(default_factory=lambda: (system_busy_s(), own_cpu_s()))
    load_start: str = field(default_factory=lambda: Path("/proc/loadavg").read_text().split(" ", 1)[0])

    def floor(self, library: str) -> float | None:
        st = self.stats.get(library)
        a = self.args
        return None if st is None else floor_s(st.bytes, a.up_mbit, a.rtt_ms)

    def best_other(self, row: UplinkRow) -> tuple[float, str] | None:
        """The fastest other tool's best configuration on the same library: (wall, label)."""
        cands = [
            (r.wall, r.tool)
            for r in self.rows
            if r.library == row.library and r.family != row.family and r.wall is not None
        ]
        return min(cands) if cands else None


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class Variant:
    label: str
    family: str
    make: Callable[[Path, Target, Server], Invocation]


def variants(args: argparse.Namespace, sync_ok: bool) -> list[Variant]:
    out: list[Variant] = []
    if "aws" in args.tools:
        out.append(Variant(AWS, "aws", lambda lib, t, s: aws_sync(lib, t, creds=s.creds)))
    if "rclone" in args.tools:
        out.append(Variant(RCLONE4, "rclone", lambda lib, t, s: rclone_copy(lib, t, transfers=None, creds=s.creds)))
        out.append(Variant(RCLONE16, "rclone", lambda lib, t, s: rclone_copy(lib, t, transfers=16, creds=s.creds)))
    if "sync" in args.tools and sync_ok:
        out.append(Variant(SYNC, SYNC, lambda lib, t, s: immich_sync(lib, t, *s.sync_args, creds=s.creds)))
        for extra in args.sync_args:
            words = tuple(shlex.split(extra))
            out.append(
                Variant(
                    f"{SYNC} {' '.join(words)}",
                    SYNC,
                    lambda lib, t, s, w=words: immich_sync(lib, t, *s.sync_args, *w, creds=s.creds),
                )
            )
    return out


def slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def sync_has_bwlimit() -> bool:
    """Asked at the time of the scenario: the flag is developed alongside the bench."""
    proc = subprocess.run([str(SYNC_BIN), "backup", "--help"], capture_output=True, text=True, env=base_env())
    return proc.returncode == 0 and "--bwlimit" in proc.stdout


class Bench:
    """The runs of one bench invocation against one server; results accumulate in `report`."""

    def __init__(self, args: argparse.Namespace, report: Report, server: Server, logs: Path) -> None:
        self.args = args
        self.report = report
        self.server = server
        self.s3 = BenchS3(server.url, server.creds)
        self.logs = logs

    def proxy(self, stats: Path, up_mbit: float, interval: float = 0.25) -> ShapingProxy:
        a = self.args
        return ShapingProxy(self.server.port, stats, a.rtt_ms, up_mbit, a.down_mbit, interval)

    def purge(self, bucket: str) -> None:
        try:
            self.s3.purge(bucket)
            self.server.collect_garbage()
        except Exception as exc:  # cleanup only; a leftover bucket must not abort the bench
            self.report.notes.append(f"could not delete bucket {bucket}: {type(exc).__name__}: {exc}")

    def library(self, name: str, lib: Path, variants_: list[Variant]) -> None:
        st = self.report.stats[name]
        floor = floor_s(st.bytes, self.args.up_mbit, self.args.rtt_ms)
        timeout = max(900.0, 12 * floor)
        rows = {v.label: UplinkRow(f"{name} initial", v.label, library=name, family=v.family) for v in variants_}
        reps = self.args.reps
        for rep in range(1, reps + 1):
            order = variants_[rep - 1 :] + variants_[: rep - 1] if variants_ else []
            for v in order:
                m, wire, check = self.run(name, lib, v, rep, timeout)
                row = rows[v.label]
                row.runs.append(m)
                row.wire.append(wire)
                row.check = check
                if not m.ok:
                    self.report.failures.append(f"{row.scenario} / {row.tool}: {m.describe_failure()}")
                if any(word in check for word in ("MISSING", "extra", "EXCLUDED")):
                    # A fast but wrong upload is a failed run, whatever its exit code said.
                    self.report.failures.append(f"{row.scenario} #{rep} / {row.tool}: bucket check failed: {check}")
        for row in rows.values():
            row.note = f"median of {reps}" if reps > 1 else "1 run"
            self.report.rows.append(row)

    def run(self, name: str, lib: Path, v: Variant, rep: int, timeout: float) -> tuple[Measured, Wire, str]:
        """One upload into a fresh bucket through a fresh proxy (empty queues, counters from zero), then
        verification against the library and deletion of the bucket."""
        label = f"{name} #{rep} {v.label}"
        bucket = f"up-{name.lower()}-{slug(v.label)}"[:56].rstrip("-") + f"-{rep}"
        prefix = f"uplink-{name.lower()}/"
        self.s3.create_bucket(bucket)
        stats = self.logs / f"{slug(label)}.stats"
        with self.proxy(stats, self.args.up_mbit) as proxy:
            inv = v.make(lib, Target(proxy.url, bucket, prefix), self.server)
            server_before, busy_before = self.server.cpu_s(), system_busy_s()
            m = run_measured(label, inv.cmd, inv.env, self.logs / f"{slug(label)}.log", timeout)
            server_after, busy_after = self.server.cpu_s(), system_busy_s()
            proxy_cpu = process_cpu_s(proxy.pid)
        if server_before is not None and server_after is not None:
            m.server_cpu_s = server_after - server_before
        samples = read_stats(stats)
        last = samples[-1] if samples else Sample(0.0, 0, 0, 0)
        busy = (busy_after - busy_before) / (m.wall_s * NCPU) if m.wall_s > 0 else None
        wire = Wire(last.up, last.down, last.connections, proxy_cpu, busy)
        check = verify(self.s3, lib, Target(self.server.url, bucket, prefix))
        status = "ok" if m.ok else ("TIMEOUT" if m.timed_out else f"FAILED rc={m.returncode}")
        log(
            f"{label}: {m.wall_s:.2f}s wall, {m.cpu_s:.2f}s cpu, {wire.up / MB:.1f} MB up, "
            f"{wire.down / MB:.1f} MB down, {wire.connections} conns, machine {fmt_share(busy)} busy, {status}; "
            f"check: {check}"
        )
        self.purge(bucket)
        return m, wire, check

    # ------------------------------------------------------------ bwlimit

    def bwlimit(self, lib: Path) -> None:
        """The limit is judged on the wire, where the household feels it, not by the engine's own account."""
        if not sync_has_bwlimit():
            why = "immich-sync has no --bwlimit (`immich-sync backup --help` does not list it)"
            self.report.bw.append(BwResult("--bwlimit", failed=why))
            self.report.failures.append(f"bwlimit: {why}")
            return
        self.bw_steady(lib)
        self.bw_timetable(lib)

    def spawn_sync(
        self, label: str, lib: Path, proxy: ShapingProxy, bucket: str, limit: str
    ) -> subprocess.Popen[bytes]:
        t = Target(proxy.url, bucket, "uplink-bw/")
        inv = immich_sync(
            lib, t, *self.server.sync_args, "--bwlimit", limit, creds=self.server.creds, env={"TZ": "UTC"}
        )
        out = open(self.logs / f"{slug(label)}.log", "wb")  # noqa: SIM115 - closed when the process is stopped
        proc = subprocess.Popen(
            inv.cmd, env=inv.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()  # the child holds its own descriptor
        return proc

    def watch(self, proc: subprocess.Popen[bytes], until: float) -> int | None:
        """Wait until the monotonic time `until`; returns the exit code if the run ended before it."""
        while time.monotonic() < until:
            if proc.poll() is not None:
                return proc.returncode
            time.sleep(0.1)
        return None

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM (the engine stops cleanly), then SIGKILL for anything left in its session."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def early_exit(self, label: str, rc: int) -> BwResult:
        tail = "\n".join((self.logs / f"{slug(label)}.log").read_text(errors="replace").splitlines()[-20:])
        why = f"immich-sync exited with code {rc} before the measurement ended"
        self.report.failures.append(f"{label}: {why}\n{tail}")
        return BwResult(label, failed=why)

    def bw_steady(self, lib: Path) -> None:
        a = self.args
        label = f"bwlimit {a.bwlimit_rate} steady"
        limit = rate_bytes(a.bwlimit_rate)
        bucket = "up-bw-steady"
        self.s3.create_bucket(bucket)
        stats = self.logs / f"{slug(label)}.stats"
        with self.proxy(stats, a.bwlimit_up_mbit, interval=0.1) as proxy:
            start = time.monotonic()
            proc = self.spawn_sync(label, lib, proxy, bucket, a.bwlimit_rate)
            t0, t1 = start + a.bwlimit_skip, start + a.bwlimit_skip + a.bwlimit_window
            rc = self.watch(proc, t1 + 0.5)
            self.stop(proc)
        self.purge(bucket)
        if rc is not None:
            self.report.bw.append(self.early_exit(label, rc))
            return
        samples = read_stats(stats)
        mean = rate_between(samples, t0, t1)
        ones = [r for _end, r in window_rates(samples, t0, t1)]
        worst = max(ones, key=lambda r: abs(r - limit)) if ones else None
        dev = mean / limit - 1
        log(f"{label}: mean {mean / MiB:.3f} MiB/s ({dev:+.1%}), 1-s {min(ones) / MiB:.2f}–{max(ones) / MiB:.2f}")
        figures = {
            "limit": f"{a.bwlimit_rate} = {limit / MiB:.3f} MiB/s",
            "window": f"{a.bwlimit_skip:g}–{a.bwlimit_skip + a.bwlimit_window:g} s after start",
            "mean rate": f"{mean / MiB:.3f} MiB/s",
            "deviation": f"{dev:+.1%}",
            "1-s rates": f"{min(ones) / MiB:.3f}–{max(ones) / MiB:.3f} MiB/s" if ones else "n/a",
            "worst 1-s": f"{worst / MiB:.3f} MiB/s ({worst / limit - 1:+.1%})" if worst else "n/a",
        }
        self.report.bw.append(
            BwResult(label, figures, "mean rate vs limit", abs(dev), TOLERANCE, f"{dev:+.1%}", f"±{TOLERANCE:.0%}")
        )

    def bw_timetable(self, lib: Path) -> None:
        a = self.args
        before, after = a.bwlimit_before, a.bwlimit_after
        label = f"bwlimit timetable {before}→{after}"
        bucket = "up-bw-timetable"
        self.s3.create_bucket(bucket)
        stats = self.logs / f"{slug(label)}.stats"
        target = rate_bytes(after)
        with self.proxy(stats, a.bwlimit_up_mbit, interval=0.1) as proxy:
            now, start = dt.datetime.now(dt.UTC), time.monotonic()
            boundary = next_boundary(now, a.bwlimit_lead)
            spec = timetable(now, boundary, before, after)
            at = start + (boundary - now).total_seconds()
            log(f"{label}: --bwlimit '{spec}' (TZ=UTC), boundary in {at - start:.1f}s")
            proc = self.spawn_sync(label, lib, proxy, bucket, spec)
            end = at + a.bwlimit_after_s
            rc = self.watch(proc, end + 0.5)
            self.stop(proc)
        self.purge(bucket)
        if rc is not None:
            self.report.bw.append(self.early_exit(label, rc))
            return
        samples = read_stats(stats)
        pre_t0 = max(start + a.bwlimit_skip, at - 15)
        pre = rate_between(samples, pre_t0, at - 0.2)
        rates = window_rates(samples, start + a.bwlimit_skip, end)
        settle = settle_time(rates, at, target, TOLERANCE)
        post = [r for e, r in rates if e >= at + (1.0 if settle is None else settle)]
        log(f"{label}: before {pre / MiB:.3f} MiB/s, settle {settle}")
        figures = {
            "--bwlimit": f"`{spec}` (TZ=UTC)",
            "before the boundary": f"{pre / MiB:.3f} MiB/s (limit {rate_bytes(before) / MiB:.3f})",
            "settled within ±10% of": f"{target / MiB:.3f} MiB/s",
            "settle time": "never" if settle is None else f"{settle:.2f} s after the boundary",
            "1-s rates after settling": f"{min(post) / MiB:.3f}–{max(post) / MiB:.3f} MiB/s" if post else "n/a",
        }
        shown = "never" if settle is None else f"{settle:.2f} s"
        value = settle if settle is not None else float("inf")
        goal = "from the boundary until the 1-s rate stays within ±10%"
        self.report.bw.append(BwResult(label, figures, goal, value, SETTLE_GOAL_S, shown, f"≤ {SETTLE_GOAL_S:g} s"))


# ---------------------------------------------------------------- rendering


def fmt_share(val: float | None) -> str:
    return "n/a" if val is None else f"{val:.0%}"


def mb(val: float | None) -> str:
    return "n/a" if val is None else f"{val / MB:.1f}"


def times(val: float | None) -> str:
    return "n/a" if val is None else f"{val:.2f}×"


def foreign_load(report: Report) -> str:
    elapsed = time.time() - report.started.timestamp()
    other = max((system_busy_s() - report.cpu_start[0]) - (own_cpu_s() - report.cpu_start[1]), 0.0)
    share = other / elapsed if elapsed > 0 else 0.0
    return f"{other:.0f} CPU-s ({share:.2f} cores on average); 1-min load at start {report.load_start}"


def results_table(report: Report) -> list[str]:
    a = report.args
    lines = [
        "| Library | Tool | Wall s | × floor | × fastest other (its best configuration) | Wire MB up | "
        "Wire MB down | Wire floor s | Connections | Client CPU s | Server CPU s | Proxy CPU s | Machine busy | Runs | "
        "Check |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report.rows:
        wall = fmt(r.wall) if r.ok else "FAILED"
        if r.ok and len(r.runs) > 1:
            walls = [m.wall_s for m in r.runs]
            wall += f" ({min(walls):.2f}–{max(walls):.2f})"
        best = report.best_other(r)
        vs = f"{times(ratio(r.wall, best[0]))} ({best[1]})" if best and r.wall is not None else "n/a"
        up = r.wire_median(lambda w: w.up)
        wf = None if up is None else wire_floor_s(int(up), a.up_mbit)
        conns = r.wire_median(lambda w: w.connections)
        pcpu = [w.proxy_cpu_s for w in r.wire if w.proxy_cpu_s is not None]
        lines.append(
            f"| {r.library} | {r.tool} | {wall} | {times(ratio(r.wall, report.floor(r.library)))} | {vs} | "
            f"{mb(up)} | {mb(r.wire_median(lambda w: w.down))} | {fmt(wf)} | {fmt(conns, 0)} | {fmt(r.cpu)} | "
            f"{fmt(r.server_cpu)} | {fmt(statistics.median(pcpu) if pcpu else None)} | "
            f"{fmt_share(r.wire_median(lambda w: w.machine_busy or 0.0))} | {r.note} | {r.check} |"
        )
    return lines


def goal_lines(report: Report) -> list[str]:
    lines = ["| Goal | Value | Limit | Met |", "|---|---:|---:|:---:|"]

    def row(library: str) -> UplinkRow | None:
        return next((r for r in report.rows if r.library == library and r.tool == SYNC), None)

    def verdict(value: float | None, limit: float, strict: bool = False) -> str:
        if value is None:
            return "n/a"
        return "✔" if (value < limit if strict else value <= limit) else "✘"

    a_row = row("A")
    if a_row is not None:
        v = ratio(a_row.wall, report.floor("A"))
        lines.append(f"| A: immich-sync wall ÷ floor | {times(v)} | ≤ {FLOOR_GOAL_A:g}× | {verdict(v, FLOOR_GOAL_A)} |")
    b_row = row("B")
    if b_row is not None:
        best = report.best_other(b_row)
        v = ratio(b_row.wall, best[0]) if best else None
        who = f" ({best[1]})" if best else ""
        lines.append(
            f"| B: immich-sync wall ÷ fastest other tool's best configuration{who} | {times(v)} | < 1× | "
            f"{verdict(v, 1.0, strict=True)} |"
        )
    for bw in report.bw:
        if bw.failed:
            lines.append(f"| {bw.label} | {bw.failed} | — | ✘ |")
        elif bw.limit is not None:
            lines.append(f"| {bw.label}: {bw.goal} | {bw.shown} | {bw.limit_shown} | {verdict(bw.value, bw.limit)} |")
    return lines


def bw_lines(report: Report) -> list[str]:
    out: list[str] = []
    for bw in report.bw:
        out += [f"### {bw.label}", ""]
        if bw.failed:
            out += [f"FAILED: {bw.failed}", ""]
            continue
        out += ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in bw.figures.items()], ""]
    return out


def render(report: Report) -> str:
    a = report.args
    elapsed = time.time() - report.started.timestamp()
    command = " ".join(["bench/uplink_bench.py", *sys.argv[1:]])
    out = [
        "# Home uplink benchmark results",
        "",
        f"Generated by `make bench-uplink` (`{command}`) on {report.started:%Y-%m-%d %H:%M UTC}; "
        f"total bench time {elapsed:.0f}s.",
        f"All tools ran in this one run, each through its own instance of the shaping proxy "
        f"(bench/shaper.py) to one S3 server: **{report.server}**.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine_info()],
        *[f"| {k} | {v} |" for k, v in report.versions.items()],
        f"| S3 server | {report.server} |",
        f"| other processes' CPU during the bench | {foreign_load(report)} |",
        "",
        "## Link",
        "",
        "| | |",
        "|---|---|",
        f"| upload | {a.up_mbit:g} Mbit/s, one FIFO link shared by all connections |",
        f"| download | {'unlimited' if a.down_mbit == 0 else f'{a.down_mbit:g} Mbit/s'}, likewise |",
        f"| RTT | {a.rtt_ms:g} ms (half each way; a new connection waits one RTT before its first byte) |",
        "| per-connection window | 512 KiB or the link's bandwidth-delay product, whichever is larger |",
        f"| bwlimit runs | {a.bwlimit_up_mbit:g} Mbit/s up, same RTT |",
        "",
        "## Libraries and floors",
        "",
        "Floor = payload ÷ upload bandwidth + 3 × RTT (TCP handshake, one listing before the first upload "
        "can be decided, the last upload's response).",
        "",
        "| Library | Files backed up | Payload | Floor s |",
        "|---|---:|---:|---:|",
    ]
    for name, st in report.stats.items():
        out.append(
            f"| {name} | {st.files} | {st.bytes / MiB:.1f} MiB ({st.bytes / MB:.1f} MB) | {fmt(report.floor(name))} |"
        )
    out.append("")
    if report.rows:
        out += [
            "## Results",
            "",
            f"Initial upload of each library into a fresh bucket, {a.reps} run(s) per tool (median), interleaved. "
            "Wall from fork to exit. × fastest other = wall ÷ the fastest wall of any other tool's rows on the "
            "same library (rclone's best of its two settings). Wire MB: bytes that crossed the shaped link (HTTP "
            "requests and responses included), counted by the proxy; wire floor = wire MB up ÷ bandwidth. "
            "Client CPU = the tool's process tree; server CPU = the S3 server's processes; proxy CPU = the "
            "shaper's; machine busy = busy CPU of the whole machine during the run ÷ (wall × cores). "
            "Check = the bucket listed and compared with the library after the run.",
            "",
            *results_table(report),
            "",
        ]
    out += [
        "## Goals",
        "",
        *goal_lines(report),
        "",
    ]
    if report.bw:
        out += [
            "## --bwlimit on the wire",
            "",
            f"immich-sync on library A through a {a.bwlimit_up_mbit:g} Mbit/s link, each run into a fresh bucket "
            "and stopped with SIGTERM once measured (not verified). Rates are measured at the proxy from its "
            "byte counters (stats every 0.1 s, interpolated), and include HTTP request headers (about 1% of A's "
            "photo sizes). 1-s rates are over sliding 1-s windows ending at each stats line.",
            "",
            *bw_lines(report),
        ]
    if report.notes:
        out += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    out += failures_section(report.failures)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=["A", "B", "bwlimit"], help="scenarios (repeatable)")
    p.add_argument(
        "--tools",
        default="aws,rclone,sync",
        type=lambda s: [x.strip() for x in s.split(",") if x],
        help="comma list of aws,rclone,sync (default: all)",
    )
    p.add_argument("--reps", type=int, default=1, help="runs per tool and library (median reported)")
    p.add_argument("--rtt-ms", type=float, default=40.0, help="round-trip time (default 40)")
    p.add_argument("--up-mbit", type=float, default=50.0, help="upload bandwidth (default 50)")
    p.add_argument("--down-mbit", type=float, default=250.0, help="download bandwidth, 0 = unlimited (default 250)")
    p.add_argument(
        "--sync-args",
        action="append",
        default=[],
        help='extra immich-sync row with these arguments, e.g. --sync-args "--workers 64" (repeatable)',
    )
    p.add_argument("--bwlimit-up-mbit", type=float, default=200.0, help="link for the bwlimit runs (default 200)")
    p.add_argument("--bwlimit-rate", default="2M", help="steady --bwlimit (rclone units; default 2M)")
    p.add_argument("--bwlimit-before", default="1M", help="timetable rate before the boundary (default 1M)")
    p.add_argument("--bwlimit-after", default="4M", help="timetable rate after the boundary (default 4M)")
    p.add_argument("--bwlimit-skip", type=float, default=3.0, help="seconds skipped after start (default 3)")
    p.add_argument("--bwlimit-window", type=float, default=20.0, help="steady window in seconds (default 20)")
    p.add_argument("--bwlimit-lead", type=float, default=25.0, help="min seconds to the timetable boundary")
    p.add_argument("--bwlimit-after-s", type=float, default=10.0, help="seconds observed after the boundary")
    p.add_argument("--results", type=Path, default=RESULTS, help="where to write the markdown report")
    return p.parse_args(argv)


def prepare(spec: LibSpec, report: Report) -> Path:
    root = WORK / f"lib-{spec.name}"
    t0 = time.monotonic()
    if ensure_library(spec, root):
        log(f"generated library {spec.name} in {time.monotonic() - t0:.0f}s")
    report.stats[spec.name] = library_stats(root)
    warm_cache(root)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    scenarios = set(args.only or ["A", "B", "bwlimit"])
    report = Report(args=args, started=dt.datetime.now(dt.UTC))
    WORK.mkdir(parents=True, exist_ok=True)
    logs = new_log_dir(LOGS)
    log(f"logs in {logs}")
    try:
        if "aws" in args.tools:
            ensure_aws()
        if "rclone" in args.tools:
            ensure_rclone()
        sync_ok = "sync" in args.tools or "bwlimit" in scenarios
        if sync_ok:
            sync_ok, why = sync_available()
            if not sync_ok:
                report.failures.append(f"immich-sync unavailable, its rows are missing: {why}")
        report.versions = versions()
        libs: dict[str, Path] = {}
        for spec in (SPEC_A, SPEC_B):
            if spec.name in scenarios or (spec.name == "A" and "bwlimit" in scenarios):
                libs[spec.name] = prepare(spec, report)
        with open_server(logs) as server:
            report.server = server.name
            if server.conf is not None:
                report.versions.pop("moto", None)
            log(f"S3 server: {server.name} at {server.url}")
            if server.conf is None:
                report.notes.append(
                    "Ceph RGW is not installed, so the server is moto: it spends about 3 ms of CPU per PUT, which "
                    "caps library B near 300 PUT/s on this machine and can hide the link entirely. "
                    "`make conformance` installs RGW (Debian's radosgw, ceph-mon, ceph-osd)."
                )
            bench = Bench(args, report, server, logs)
            vs = variants(args, sync_ok)
            for name in ("A", "B"):
                if name in scenarios:
                    bench.library(name, libs[name], vs)
            if "bwlimit" in scenarios and sync_ok:
                bench.bwlimit(libs["A"])
        report.notes += standard_notes(report)
    except BaseException as exc:
        report.failures.append(f"bench aborted: {type(exc).__name__}: {exc}")
        raise
    finally:
        text = render(report)
        args.results.write_text(text)
        print(text)
        log(f"wrote {args.results}")
    return 1 if report.failures else 0


def standard_notes(report: Report) -> list[str]:
    if not report.rows:
        return []
    notes = [
        "aws runs as the old CronJob did: one `aws s3 sync` process per folder (upload, library, profile) in "
        "sequence, each opening its own connections and listing its own prefix.",
        "rclone runs once over the library root with filters, --size-only --s3-no-head --s3-no-check-bucket; "
        "'defaults' leaves --transfers at rclone's default of 4.",
        "immich-sync also writes its run report and files cache (outside the media prefix); they are in its "
        "wire bytes but not in the payload.",
    ]
    busy = []
    for r in report.rows:
        share = r.wire_median(lambda w: w.machine_busy or 0.0)
        if r.wall and share is not None and share > BUSY_LIMIT:
            busy.append(f"{r.library} / {r.tool} ({share:.0%})")
    if busy:
        notes.append(
            f"The machine's {NCPU} cores were over {BUSY_LIMIT:.0%} busy on average during these runs (the tool, "
            f"the server, the proxy and any other process), so CPU, not only the link, set their pace: "
            f"{', '.join(busy)}."
        )
    return notes


if __name__ == "__main__":
    sys.exit(main())
