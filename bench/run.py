"""Side-by-side benchmark: aws s3 sync vs rclone vs immich-sync against one local moto S3 server.

Everything runs in one invocation against one server so the tools see identical conditions; the figures
go to bench/RESULTS.md (overwritten) and stdout. See bench/README.md for what is measured and why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.config import Config
from libgen import (
    BACKED_UP,
    PLAN_DIRS,
    PLAN_FILES_PER_DIR,
    SPEC_A,
    SPEC_B,
    TOP_FOLDERS,
    LibSpec,
    LibStats,
    ensure_library,
    ensure_plan_tree,
    library_stats,
)
from measure import CLK_TCK, Measured, failures_section, run_measured
from servers import CountProxy, MotoServer
from tools import (
    CREDS,
    REGION,
    VENV_BIN,
    WORK,
    Invocation,
    Target,
    aws_sync,
    ensure_aws,
    ensure_rclone,
    immich_plan,
    immich_sync,
    rclone_copy,
    sync_available,
    versions,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
LOGS = WORK / "logs"
KEEP_LOG_DIRS = 5
MiB = 1024 * 1024

AWS, RCLONE, RCLONE_FL, SYNC = "aws s3 sync", "rclone", "rclone --fast-list", "immich-sync"
# immich-sync lists only directories changed since its last successful run, except on the periodic
# full listing (weekly by default); this variant forces that full listing every time.
SYNC_FULL = "immich-sync full listing"
# Which bucket a variant works on: both rclone modes share rclone's upload, both immich-sync modes its.
OWNER = {AWS: "aws", RCLONE: "rclone", RCLONE_FL: "rclone", SYNC: "sync", SYNC_FULL: "sync"}
UPLOADERS = (AWS, RCLONE, SYNC)
NOOP_VARIANTS = (AWS, RCLONE, RCLONE_FL, SYNC, SYNC_FULL)
RSS_LIMIT_MB = 200.0
# A small library's weekly full listing: start-up must not be what a no-op costs.
FULL_LISTING_LIMIT = 1.2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    scenario: str
    tool: str
    runs: list[Measured] = field(default_factory=list)
    check: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(m.ok for m in self.runs)

    def median(self, attr: Callable[[Measured], float]) -> float | None:
        return statistics.median(attr(m) for m in self.runs) if self.ok else None

    @property
    def wall(self) -> float | None:
        return self.median(lambda m: m.wall_s)

    @property
    def cpu(self) -> float | None:
        return self.median(lambda m: m.cpu_s)

    @property
    def rss(self) -> float | None:
        return self.median(lambda m: m.maxrss_mb)

    @property
    def server_cpu(self) -> float | None:
        vals = [m.server_cpu_s for m in self.runs if m.server_cpu_s is not None]
        return statistics.median(vals) if self.ok and vals else None


@dataclass
class RequestCount:
    library: str
    tool: str
    objects: int
    counts: dict[str, int]
    ok: bool
    # Distinct (prefix, delimiter) pairs the tool listed, counted at the proxy.
    list_prefixes: int = 0

    @property
    def list_bound(self) -> int:
        """ceil(objects / 1000) + number of prefixes listed: one page per 1,000 keys plus, per listed
        prefix, at most one partly filled page."""
        return math.ceil(self.objects / 1000) + (self.list_prefixes or len(BACKED_UP))


@dataclass
class Report:
    args: argparse.Namespace
    started: dt.datetime
    rows: list[Row] = field(default_factory=list)
    requests: list[RequestCount] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, LibStats] = field(default_factory=dict)
    plan_summary: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    cpu_start: tuple[float, float] = field(default_factory=lambda: (system_busy_s(), own_cpu_s()))
    load_start: str = field(default_factory=lambda: Path("/proc/loadavg").read_text().split(" ", 1)[0])

    def row(self, scenario: str, tool: str) -> Row | None:
        return next((r for r in self.rows if r.scenario == scenario and r.tool == tool), None)

    def record(self, row: Row) -> Row:
        self.rows.append(row)
        for m in row.runs:
            if not m.ok:
                self.failures.append(f"{row.scenario} / {row.tool}: {m.describe_failure()}")
        return row


class S3:
    """Untimed bookkeeping against the server: bucket creation and verification listings."""

    def __init__(self, url: str) -> None:
        self.client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        )

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str) -> set[str]:
        out: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.update(o["Key"] for o in page.get("Contents", []))
        return out


def expected_keys(lib: Path, prefix: str) -> set[str]:
    keys: set[str] = set()
    for top in BACKED_UP:
        for dirpath, _dirs, names in os.walk(lib / top):
            rel = os.path.relpath(dirpath, lib)
            keys.update(f"{prefix}{rel}/{n}" for n in names)
    return keys


def verify(s3: S3, lib: Path, t: Target) -> str:
    """Compare the bucket with the library so a fast-but-wrong tool cannot look good."""
    want = expected_keys(lib, t.prefix)
    have = s3.keys(t.bucket, t.prefix)
    missing, extra = want - have, have - want
    excluded = [k for k in extra if k[len(t.prefix) :].split("/", 1)[0] in TOP_FOLDERS[3:]]
    parts = [f"{len(have & want)}/{len(want)} objects"]
    if missing:
        parts.append(f"{len(missing)} MISSING")
    if excluded:
        parts.append(f"{len(excluded)} EXCLUDED-FOLDER KEYS")
    if len(extra) > len(excluded):
        parts.append(f"{len(extra) - len(excluded)} extra keys")
    return ", ".join(parts)


def invocation_for(tool: str, lib: Path, t: Target) -> Invocation:
    if tool == AWS:
        return aws_sync(lib, t)
    if tool == RCLONE:
        return rclone_copy(lib, t)
    if tool == RCLONE_FL:
        return rclone_copy(lib, t, fast_list=True)
    if tool == SYNC_FULL:
        return immich_sync(lib, t, "--full-listing-days", "0")
    return immich_sync(lib, t)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        report: Report,
        moto: MotoServer,
        s3: S3,
        proxy: CountProxy | None,
        sync_ok: bool,
        logs: Path,
    ) -> None:
        self.logs = logs
        self.args = args
        self.report = report
        self.moto = moto
        self.s3 = s3
        self.proxy = proxy
        self.sync_ok = sync_ok
        self.targets: dict[tuple[str, str], Target] = {}

    def tools(self, names: Iterable[str]) -> list[str]:
        wanted = set(self.args.tools)
        out = [t for t in names if OWNER[t] in wanted]
        return [t for t in out if t not in (SYNC, SYNC_FULL) or self.sync_ok]

    def run(self, label: str, tool: str, lib: Path, t: Target, timeout_s: float) -> Measured:
        inv = invocation_for(tool, lib, t)
        log_path = self.logs / f"{slug(label)}.log"
        m = run_measured(label, inv.cmd, inv.env, log_path, timeout_s, server_pid=self.moto.pid)
        status = "ok" if m.ok else ("TIMEOUT" if m.timed_out else f"FAILED rc={m.returncode}")
        log(f"{label}: {m.wall_s:.2f}s wall, {m.cpu_s:.2f}s cpu, {m.maxrss_mb:.0f} MB rss, {status}")
        return m

    def new_target(self, name: str, owner: str, rep: int) -> Target:
        bucket = f"bench-{name.lower()}-{owner}-{rep}"
        self.s3.create_bucket(bucket)
        t = Target(url=self.moto.url, bucket=bucket, prefix=f"bench-{name.lower()}-{owner}/")
        self.targets[(name, owner)] = t
        return t

    def initial(self, name: str, lib: Path, reps: int, timeout_s: float, reported: bool = True) -> None:
        rows = {tool: Row(f"{name} initial", tool) for tool in self.tools(UPLOADERS)}
        for rep in range(1, reps + 1):
            order = list(rows)
            order = order[rep - 1 :] + order[: rep - 1]
            for tool in order:
                t = self.new_target(name, OWNER[tool], rep)
                rows[tool].runs.append(self.run(f"{name} initial #{rep} {tool}", tool, lib, t, timeout_s))
                rows[tool].check = verify(self.s3, lib, t)
                log(f"  check: {rows[tool].check}")
        if reported:
            for row in rows.values():
                row.note = f"median of {reps}" if reps > 1 else "1 run"
                self.report.record(row)

    def seed(self, name: str, lib: Path, timeout_s: float) -> None:
        """For --skip-b-initial: fill buckets without reporting; rclone stands in for aws (both compare size
        or size+mtime only, so any uploader leaves an equivalent prefix), immich-sync seeds its own."""
        for owner, tool in (("aws", RCLONE), ("rclone", RCLONE), ("sync", SYNC)):
            if owner not in self.args.tools or (tool == SYNC and not self.sync_ok):
                continue
            t = self.new_target(name, owner, 1)
            m = self.run(f"{name} seed {owner} via {tool}", tool, lib, t, timeout_s)
            if not m.ok:
                self.report.failures.append(f"{name} seeding {owner}: {m.describe_failure()}")

    def noop(self, name: str, lib: Path, reps: int, timeout_s: float) -> None:
        variants = [v for v in self.tools(NOOP_VARIANTS) if (name, OWNER[v]) in self.targets]
        rows = {v: Row(f"{name} no-op", v, note=f"median of {reps}") for v in variants}
        for rep in range(1, reps + 1):
            order = variants[rep - 1 :] + variants[: rep - 1] if variants else []
            for v in order:
                t = self.targets[(name, OWNER[v])]
                rows[v].runs.append(self.run(f"{name} no-op #{rep} {v}", v, lib, t, timeout_s))
        for v, row in rows.items():
            row.check = verify(self.s3, lib, self.targets[(name, OWNER[v])])
            self.report.record(row)

    def count_requests(self, name: str, lib: Path, stats: LibStats, timeout_s: float) -> None:
        if self.proxy is None:
            return
        for v in self.tools(NOOP_VARIANTS):
            t = self.targets.get((name, OWNER[v]))
            if t is None:
                continue
            via_proxy = Target(url=self.proxy.url, bucket=t.bucket, prefix=t.prefix)
            self.proxy.reset()
            offset = self.proxy.log_offset()
            m = self.run(f"{name} no-op counted {v}", v, lib, via_proxy, timeout_s)
            entries = self.proxy.entries_since(offset)
            counts = classify_puts(entries, t.bucket, t.prefix)
            prefixes = list_prefixes(entries)
            log(f"  requests: {counts}, {prefixes} distinct LIST prefixes")
            if not m.ok:
                self.report.failures.append(f"{name} counted no-op / {v}: {m.describe_failure()}")
            self.report.requests.append(RequestCount(name, v, stats.files, counts, m.ok, prefixes))

    def plan(self, lib: Path, timeout_s: float) -> None:
        if not self.sync_ok:
            return
        bucket = "bench-plan-1m"
        self.s3.create_bucket(bucket)
        t = Target(url=self.moto.url, bucket=bucket, prefix="bench-plan-1m/")
        inv = immich_plan(lib, t)
        out = self.logs / "plan-1m.json"
        label = "Plan 1M immich-sync plan"
        m = run_measured(
            label,
            inv.cmd,
            inv.env,
            self.logs / "plan-1m.log",
            timeout_s,
            stdout_path=out,
            server_pid=self.moto.pid,
        )
        log(f"{label}: {m.wall_s:.2f}s wall, {m.cpu_s:.2f}s cpu, {m.maxrss_mb:.0f} MB rss, rc={m.returncode}")
        row = Row("Plan 1M", SYNC, [m], note="1 run; empty bucket")
        self.report.plan_summary = summarize_plan(out)
        row.check = self.report.plan_summary
        self.report.record(row)


def classify_puts(entries: Iterable[tuple[str, str, str]], bucket: str, prefix: str) -> dict[str, int]:
    """Split PUTs into media uploads (must be 0 on a no-op) and writes elsewhere, such as run reports."""
    counts: Counter[str] = Counter()
    media = f"/{bucket}/{prefix}"
    for kind, _method, target in entries:
        if kind in ("PUT", "PUT_PART", "POST_CREATE_MULTIPART") and not unquote(target).startswith(media):
            kind = f"{kind} outside prefix"
        counts[kind] += 1
        counts["TOTAL"] += 1
    return dict(counts)


def list_prefixes(entries: Iterable[tuple[str, str, str]]) -> int:
    found = set()
    for kind, _method, target in entries:
        if kind == "LIST":
            query = parse_qs(urlsplit(target).query, keep_blank_values=True)
            found.add((query.get("prefix", [""])[0], query.get("delimiter", [""])[0]))
    return len(found)


def summarize_plan(path: Path) -> str:
    """Best-effort summary of the plan output. Its schema belongs to immich-sync, so only the status, the
    non-zero scalar totals and the request counts are read, and anything unexpected degrades to a size."""
    try:
        size = path.stat().st_size
    except OSError:
        return "no output"
    head = f"{size / 1024:.1f} KiB JSON"
    if size > 256 * MiB:
        return f"{size / MiB:.1f} MiB of output"
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return f"{size / 1024:.1f} KiB of non-JSON output"
    if not isinstance(data, dict):
        return head
    parts = [f"status={data['status']}"] if "status" in data else []
    for section in ("totals", "requests"):
        block = data.get(section)
        if isinstance(block, dict):
            parts += [f"{k}={v}" for k, v in block.items() if isinstance(v, int | float) and v]
    return f"{head}: {', '.join(parts)}" if parts else head


# ---------------------------------------------------------------- reporting


def fmt(val: float | None, digits: int = 2) -> str:
    return "n/a" if val is None else f"{val:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def system_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_cpu_s() -> float:
    """CPU of the bench and everything it started and reaped (launchers, tools, moto, proxy)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def foreign_load(report: Report) -> str:
    """CPU burnt by processes outside the bench while it ran: on a 2-core box that skews every figure."""
    elapsed = time.time() - report.started.timestamp()
    other = (system_busy_s() - report.cpu_start[0]) - (own_cpu_s() - report.cpu_start[1])
    other = max(other, 0.0)
    share = other / elapsed if elapsed > 0 else 0.0
    load = f"1-min load at start {report.load_start}"
    return f"{other:.0f} CPU-s ({share:.2f} cores on average); {load}"


def machine_info() -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", cpu),
        ("memory", f"{mem:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("python", sys.version.split()[0]),
    ]


def results_table(report: Report) -> list[str]:
    lines = [
        "| Scenario | Tool | Wall s | Client CPU s (user+sys) | Server CPU s | Peak RSS MB | Runs | Check |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in report.rows:
        wall = fmt(r.wall) if r.ok else "FAILED"
        spread = ""
        if r.ok and len(r.runs) > 1:
            walls = [m.wall_s for m in r.runs]
            spread = f" ({min(walls):.2f}–{max(walls):.2f})"
        lines.append(
            f"| {r.scenario} | {r.tool} | {wall}{spread} | {fmt(r.cpu)} | {fmt(r.server_cpu)} | "
            f"{fmt(r.rss, 0)} | {r.note} | {r.check} |"
        )
    return lines


@dataclass
class Goal:
    label: str
    value: float | None
    limit: float | None
    unit: str = "×"

    def verdict(self) -> str:
        if self.limit is None:
            return "—"
        if self.value is None:
            return "n/a"
        return "✔" if self.value <= self.limit else "✘"


def targets(report: Report) -> list[Goal]:
    def val(scn: str, tool: str, what: str) -> float | None:
        r = report.row(scn, tool)
        return None if r is None else getattr(r, what)

    def best_rclone(scn: str) -> float | None:
        vals = [v for v in (val(scn, RCLONE, "wall"), val(scn, RCLONE_FL, "wall")) if v is not None]
        return min(vals) if vals else None

    out = [
        Goal(
            "A initial: wall immich-sync / rclone",
            ratio(val("A initial", SYNC, "wall"), val("A initial", RCLONE, "wall")),
            1.0,
        ),
        Goal(
            "A initial: wall immich-sync / aws",
            ratio(val("A initial", SYNC, "wall"), val("A initial", AWS, "wall")),
            0.8,
        ),
        Goal(
            "A initial: client CPU immich-sync / aws",
            ratio(val("A initial", SYNC, "cpu"), val("A initial", AWS, "cpu")),
            0.5,
        ),
        Goal(
            "A initial: client CPU immich-sync / rclone",
            ratio(val("A initial", SYNC, "cpu"), val("A initial", RCLONE, "cpu")),
            None,
        ),
        Goal(
            "A no-op: wall immich-sync / rclone --fast-list",
            ratio(val("A no-op", SYNC, "wall"), val("A no-op", RCLONE_FL, "wall")),
            1.5,
        ),
        Goal(
            "A no-op: wall immich-sync / aws",
            ratio(val("A no-op", SYNC, "wall"), val("A no-op", AWS, "wall")),
            0.5,
        ),
        Goal(
            "B no-op: wall immich-sync / better rclone mode",
            ratio(val("B no-op", SYNC, "wall"), best_rclone("B no-op")),
            1.0,
        ),
        Goal(
            "B no-op: wall immich-sync / aws",
            ratio(val("B no-op", SYNC, "wall"), val("B no-op", AWS, "wall")),
            0.4,
        ),
    ]
    for scn in ("A no-op", "B no-op"):
        out.append(
            Goal(
                f"{scn}: wall immich-sync full listing / better rclone mode",
                ratio(val(scn, SYNC_FULL, "wall"), best_rclone(scn)),
                FULL_LISTING_LIMIT if scn == "A no-op" else None,
            )
        )
        out.append(
            Goal(
                f"{scn}: wall immich-sync full listing / aws",
                ratio(val(scn, SYNC_FULL, "wall"), val(scn, AWS, "wall")),
                None,
            )
        )
    plan = report.row("Plan 1M", SYNC)
    if plan is not None:
        out.append(Goal("Plan 1M: peak RSS (MB)", plan.rss, RSS_LIMIT_MB, "MB"))
        out.append(Goal("Plan 1M: wall (s)", plan.wall, None, "s"))
    return out


def target_lines(report: Report) -> list[str]:
    lines = ["| Target | Value | Limit | Met |", "|---|---:|---:|:---:|"]
    for t in targets(report):
        value = fmt(t.value, 3) if t.unit == "×" else fmt(t.value, 1)
        value = f"{value}{t.unit}" if t.value is not None and t.unit == "×" else value
        unit = t.unit if t.unit == "×" else ""
        limit = "—" if t.limit is None else f"≤ {t.limit:g}{unit}"
        lines.append(f"| {t.label} | {value} | {limit} | {t.verdict()} |")
    for rc in report.requests:
        if rc.tool != SYNC:
            continue
        lists = rc.counts.get("LIST", 0)
        puts = sum(rc.counts.get(k, 0) for k in ("PUT", "PUT_PART", "POST_CREATE_MULTIPART"))
        ok_l = "✔" if rc.ok and lists <= rc.list_bound else "✘"
        ok_p = "✔" if rc.ok and puts == 0 else "✘"
        what = f"{rc.library} no-op: LIST requests (immich-sync)"
        lines.append(f"| {what} | {lists} | ≤ {rc.list_bound} | {ok_l} |")
        lines.append(f"| {rc.library} no-op: media PUT requests (immich-sync) | {puts} | = 0 | {ok_p} |")
    return lines


def ratio_lines(report: Report) -> list[str]:
    lines = ["| Scenario | immich-sync vs | Wall ratio | Client CPU ratio |", "|---|---|---:|---:|"]
    for scn in dict.fromkeys(r.scenario for r in report.rows):
        for variant in (SYNC, SYNC_FULL):
            mine = report.row(scn, variant)
            if mine is None:
                continue
            label = "" if variant == SYNC else " (full listing)"
            for other in (AWS, RCLONE, RCLONE_FL):
                r = report.row(scn, other)
                if r is None:
                    continue
                w, c = ratio(mine.wall, r.wall), ratio(mine.cpu, r.cpu)
                cells = f"{fmt(w)}{'×' if w else ''} | {fmt(c)}{'×' if c else ''}"
                lines.append(f"| {scn}{label} | {other} | {cells} |")
    return lines


def request_lines(report: Report) -> list[str]:
    kinds = sorted({k for rc in report.requests for k in rc.counts} - {"TOTAL"})
    head = "| Library | Tool | Objects | LIST bound | LIST prefixes | " + " | ".join(kinds) + " | Total |"
    lines = [head, "|---|---|---:|---:|---:|" + "---:|" * (len(kinds) + 1)]
    for rc in report.requests:
        cells = " | ".join(str(rc.counts.get(k, 0)) for k in kinds)
        status = "" if rc.ok else " (run failed)"
        who = f"{rc.library} | {rc.tool}{status}"
        bound = f"{rc.objects} | {rc.list_bound} | {rc.list_prefixes}"
        lines.append(f"| {who} | {bound} | {cells} | {rc.counts.get('TOTAL', 0)} |")
    return lines


def render(report: Report) -> str:
    a = report.args
    elapsed = time.time() - report.started.timestamp()
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    out = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`{command}`) on {report.started:%Y-%m-%d %H:%M UTC}; "
        f"total bench time {elapsed:.0f}s.",
        "All tools ran in this one run against one local moto S3 server (a separate process).",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in machine_info()]
    out += [f"| {k} | {v} |" for k, v in report.versions.items()]
    out.append(f"| other processes' CPU during the bench | {foreign_load(report)} |")
    out += [
        "",
        "## Libraries",
        "",
        "| Library | Files backed up | Bytes backed up | Per folder |",
        "|---|---:|---:|---|",
    ]
    for name, st in report.stats.items():
        per = ", ".join(f"{k} {v}" for k, v in st.per_folder.items())
        out.append(f"| {name} | {st.files} | {st.bytes / MiB:.1f} MiB | {per} |")
    out += [
        "",
        "## Results",
        "",
        f"Initial uploads: A median of {a.a_initial_reps}, B {a.b_initial_reps} run(s) per tool, each into a "
        "fresh bucket. "
        f"No-op reruns: median of {a.reps} repetitions "
        "(wall and CPU medians taken independently; wall range in parentheses), "
        "repetitions interleaved across tools. Client CPU = user+sys of the tool's whole process tree "
        "(os.wait4). Server CPU = moto's CPU during the run, for context only.",
        "",
        *results_table(report),
        "",
        "## Targets",
        "",
        *target_lines(report),
        "",
        "## Ratios (immich-sync ÷ other tool; < 1 means immich-sync is faster / cheaper)",
        "",
        *ratio_lines(report),
        "",
    ]
    if report.requests:
        out += [
            "## Requests during one no-op rerun (counted by bench/countproxy.py)",
            "",
            "LIST bound = ceil(objects / 1000) + LIST prefixes, where LIST prefixes = the distinct "
            "(prefix, delimiter) pairs the tool listed, counted at the proxy. "
            "PUT counts uploads under the tool's media prefix; writes elsewhere (immich-sync's run "
            "report) are counted separately as `… outside prefix`.",
            "",
            *request_lines(report),
            "",
        ]
    if report.notes:
        out += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    out += failures_section(report.failures)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--only",
        action="append",
        choices=["A", "B", "plan"],
        help="run only these scenarios (repeatable); default: all",
    )
    p.add_argument(
        "--tools",
        default="aws,rclone,sync",
        type=lambda s: [x.strip() for x in s.split(",") if x],
        help="comma list of aws,rclone,sync (default: all)",
    )
    p.add_argument("--reps", type=int, default=3, help="no-op repetitions (median reported)")
    p.add_argument("--a-initial-reps", type=int, default=3, help="A initial uploads per tool (median)")
    p.add_argument("--b-initial-reps", type=int, default=1, help="B initial uploads per tool (median)")
    p.add_argument(
        "--skip-b-initial",
        action="store_true",
        help="do not time B initial uploads; seed the buckets instead (aws's via rclone)",
    )
    p.add_argument("--no-requests", action="store_true", help="skip the counted (proxied) no-op runs")
    p.add_argument("--plan-dirs", type=int, default=PLAN_DIRS, help="directories in the plan tree")
    p.add_argument("--plan-files", type=int, default=PLAN_FILES_PER_DIR, help="files per plan-tree directory")
    p.add_argument("--results", type=Path, default=RESULTS, help="where to write the markdown report")
    return p.parse_args(argv)


def prepare_library(spec: LibSpec, report: Report) -> Path:
    root = WORK / f"lib-{spec.name}"
    t0 = time.monotonic()
    if ensure_library(spec, root):
        log(f"generated library {spec.name} in {time.monotonic() - t0:.0f}s")
    report.stats[spec.name] = library_stats(root)
    warm_cache(root)
    return root


def warm_cache(root: Path) -> None:
    """Read the tree once so no tool pays for cold disk reads that the next tool would not."""
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as fh:
                while fh.read(8 * MiB):
                    pass


def new_log_dir(root: Path = LOGS) -> Path:
    """One directory per run, so two benches started side by side never mix their per-run files."""
    root.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in root.iterdir() if p.is_dir())
    for stale in old[: max(len(old) - KEEP_LOG_DIRS + 1, 0)]:
        shutil.rmtree(stale, ignore_errors=True)
    path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir()
    return path


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    scenarios = set(args.only or ["A", "B", "plan"])
    report = Report(args=args, started=dt.datetime.now(dt.UTC))
    WORK.mkdir(parents=True, exist_ok=True)
    logs = new_log_dir()
    log(f"logs in {logs}")
    try:
        if "aws" in args.tools:
            ensure_aws()
        if "rclone" in args.tools:
            ensure_rclone()
        sync_ok = "sync" in args.tools
        if sync_ok:
            sync_ok, why = sync_available()
            if not sync_ok:
                report.failures.append(f"immich-sync unavailable, its rows are missing: {why}")
                log(f"immich-sync unavailable: {why}")
        report.versions = versions()
        report.notes.append(
            "rclone runs once over the library root with filters `+ /upload/** + /library/** + /profile/** "
            "- **` rather than once per folder: one process and one transfer pool over the whole set is its "
            "best configuration and mirrors immich-sync's single process (aws keeps the CronJob's per-folder "
            "loop)."
        )
        report.notes.append(
            "moto lists a prefix by scanning and sorting the whole bucket on every LIST page, so each tool "
            "writes to a bucket of its own; per-directory listing (rclone without --fast-list) is penalised "
            "more than on real S3."
        )
        libs: dict[str, Path] = {}
        for spec in (SPEC_A, SPEC_B):
            if spec.name in scenarios:
                libs[spec.name] = prepare_library(spec, report)
        plan_root = WORK / "lib-plan1m"
        if "plan" in scenarios and sync_ok:
            t0 = time.monotonic()
            if ensure_plan_tree(plan_root, args.plan_dirs, args.plan_files):
                log(f"generated plan tree in {time.monotonic() - t0:.0f}s")
        with MotoServer(VENV_BIN / "python", logs / "moto.log") as moto:
            log(f"moto server at {moto.url} (pid {moto.pid})")
            s3 = S3(moto.url)
            proxy_ctx = None if args.no_requests else CountProxy(moto.port, logs / "proxy-requests.log")
            proxy = proxy_ctx.__enter__() if proxy_ctx else None
            try:
                bench = Bench(args, report, moto, s3, proxy, sync_ok, logs)
                if "A" in libs:
                    bench.initial("A", libs["A"], args.a_initial_reps, 1800)
                    bench.noop("A", libs["A"], args.reps, 900)
                    bench.count_requests("A", libs["A"], report.stats["A"], 900)
                if "B" in libs:
                    if args.skip_b_initial:
                        bench.seed("B", libs["B"], 1800)
                        report.notes.append("B initial uploads were not timed (--skip-b-initial).")
                    else:
                        bench.initial("B", libs["B"], args.b_initial_reps, 1800)
                    bench.noop("B", libs["B"], args.reps, 900)
                    bench.count_requests("B", libs["B"], report.stats["B"], 900)
                if "plan" in scenarios:
                    files = args.plan_dirs * args.plan_files
                    report.notes.append(
                        f"Plan tree: {args.plan_dirs} dirs × {args.plan_files} zero-byte files "
                        f"= {files:,} files under upload/ (+ 6 `.immich` markers)."
                    )
                    bench.plan(plan_root, 1800)
            finally:
                if proxy_ctx is not None:
                    proxy_ctx.__exit__(None, None, None)
    except BaseException as exc:
        report.failures.append(f"bench aborted: {type(exc).__name__}: {exc}")
        raise
    finally:
        text = render(report)
        args.results.write_text(text)
        print(text)
        log(f"wrote {args.results}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
