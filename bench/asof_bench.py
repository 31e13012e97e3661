"""What `--as-of` costs in S3 requests: verify and restore against the same versioned bucket, with and without it.

`--as-of` reads object versions (ListObjectVersions, 1,000 entries per page; GetObject with a VersionId)
instead of the plain listing. On a bucket where every object has exactly one version that must cost no
more than twice the plain command's requests, and a backup's versioning check must stay at one request
per run however large the library. Library B (30,000 files) is backed up once into a versioned moto
bucket; then verify, verify --as-of, restore and restore --as-of run once each, and a no-op backup last.

Requests are counted twice: by immich-sync itself (the `requests` map of its `-o json` report) and on
the wire by bench/countproxy.py, which every measured run goes through. The two must agree, so neither
a request the report forgets nor one the bench misclassifies goes unnoticed. Figures go to
bench/RESULTS-asof.md (overwritten) and stdout; the exit code is non-zero when a ratio is over the limit,
the counts disagree, a restore does not reproduce the library, or any run fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from countproxy import LIST_PARAMS  # a bucket-level GET with only these is a ListObjectsV2 page
from libgen import BACKED_UP, SPEC_B, TOP_FOLDERS, LibSpec, LibStats, ensure_library, library_stats
from measure import Measured, failures_section, run_measured
from run import S3, log, machine_info, new_log_dir, on_sigterm, warm_cache
from servers import MOTO_BOOT, CountProxy, MotoServer
from tools import CREDS, SYNC_BIN, VENV_BIN, WORK, Target, base_env, immich_sync, sync_available

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS-asof.md"
LOGS = WORK / "logs-asof"
BUCKET = "bench-asof"
MEDIA_PREFIX = "immich/media/"
RATIO_LIMIT = 2.0
MiB = 1024 * 1024
# Setup (30,000 PUTs) and the restores (30,000 GETs each) are the slow runs against moto.
LONG_TIMEOUT_S = 3600.0
SHORT_TIMEOUT_S = 900.0

LIST_V2, LIST_VERSIONS, VERSIONING = "ListObjectsV2", "ListObjectVersions", "GetBucketVersioning"
# moto's ListObjectVersions deep-copies every version in the bucket on each page (to mark the newest one
# per key on the copies), and moto's model tracker keeps every model instance ever created, copies
# included: each page of a 30,000-object bucket leaks the whole bucket's bytes again, and a few dozen
# pages exhaust the machine's memory. The shim below hands that one function shallow views instead:
# instances of a subclass of the same class sharing the original's attributes (and so its bytes), made
# without moto's tracking constructor, and without FakeKey's __del__, which would close the shared bytes
# when the view goes. Every answer stays the same; only the copying and the leak go.
MOTO_VERSIONS_SHIM = """
import copy as _copy
import types as _types
from moto.s3 import models as _models

_VIEWS = {}


def _view(item):
    cls = type(item)
    if cls not in _VIEWS:
        _VIEWS[cls] = type(cls.__name__, (cls,), {"__del__": lambda self: None})
    view = object.__new__(_VIEWS[cls])
    view.__dict__.update(item.__dict__)
    return view


class _Copy:
    copy = staticmethod(_copy.copy)

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, list):
            return [_view(item) for item in value]
        return _copy.deepcopy(value, memo)


_f = _models.S3Backend.list_object_versions
_models.S3Backend.list_object_versions = _types.FunctionType(
    _f.__code__, {**_f.__globals__, "copy": _Copy}, _f.__name__, _f.__defaults__, _f.__closure__
)
_models.S3Backend.list_object_versions.__kwdefaults__ = _f.__kwdefaults__
"""
MOTO_BOOT_ASOF = MOTO_VERSIONS_SHIM + MOTO_BOOT

# A backup freezes its request count into its run report before it writes that report (and the files
# cache and manifest that go with it), so those PUTs are on the wire only. They are shown in a column of
# their own and left out of the comparison with the report.
REPORT_WRITES = "report writes (wire only)"


@dataclass
class RunCount:
    """One measured command: its wall time, and its requests as it reported them and as the proxy saw them."""

    label: str
    measured: Measured | None = None
    reported: dict[str, int] = field(default_factory=dict)
    wire: dict[str, int] | None = None  # None: not counted on the wire
    check: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.measured is not None and self.measured.ok and not self.problems

    @property
    def total(self) -> int:
        return sum(self.reported.values())

    @property
    def wire_total(self) -> int | None:
        return None if self.wire is None else sum(self.wire.values())

    @property
    def wire_comparable(self) -> dict[str, int]:
        """The wire counts the report can hold: all but the writes of the report itself."""
        return {k: v for k, v in (self.wire or {}).items() if k != REPORT_WRITES}

    @property
    def agree(self) -> bool | None:
        return None if self.wire is None else self.wire_comparable == self.reported


@dataclass
class Pair:
    """A plain command and its `--as-of` twin on the same bucket."""

    name: str
    plain: RunCount
    as_of: RunCount

    @property
    def ratio(self) -> float | None:
        if not (self.plain.ok and self.as_of.ok) or self.plain.total <= 0:
            return None
        return self.as_of.total / self.plain.total


@dataclass
class Bench:
    args: argparse.Namespace
    started: dt.datetime
    stats: LibStats | None = None
    setup: RunCount | None = None
    versions_check: str = ""
    as_of: str = ""
    pairs: list[Pair] = field(default_factory=list)
    noop: RunCount | None = None
    failures: list[str] = field(default_factory=list)
    load_start: str = field(default_factory=lambda: Path("/proc/loadavg").read_text().split(" ", 1)[0])


# ------------------------------------------------------------------------------------------- requests


def operation(method: str, target: str) -> str:
    """The S3 operation a path-style request is, named as immich-sync's report names it, so the wire
    count and the report's can be compared key by key (countproxy's own classes lump every bucket-level
    GET that is not ListObjectsV2 together, and ListObjectVersions and GetBucketVersioning are exactly
    the ones this bench is about)."""
    parts = urlsplit(target)
    query = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    path = unquote(parts.path).lstrip("/")
    key = path.split("/", 1)[1] if "/" in path else ""
    if not key:
        if method == "GET" and "versions" in query:
            return LIST_VERSIONS
        if method == "GET" and "versioning" in query:
            return VERSIONING
        if method == "GET" and "uploads" in query:
            return "ListMultipartUploads"
        if method == "GET" and query <= LIST_PARAMS:
            return LIST_V2
        return f"{method} bucket ?{','.join(sorted(query))}"
    if method == "GET":
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        return "UploadPart" if "uploadId" in query else "PutObject"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "POST" and "restore" in query:
        return "RestoreObject"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return f"{method} object ?{','.join(sorted(query))}"


def wire_counts(entries: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    media = f"/{BUCKET}/{MEDIA_PREFIX}"
    for _kind, method, target in entries:
        op = operation(method, target)
        if op == "PutObject" and not unquote(target).startswith(media):
            op = REPORT_WRITES
        counts[op] += 1
    return dict(counts)


def versioned_gets(entries: Iterable[tuple[str, str, str]]) -> int:
    """Object GETs that name a VersionId: how `--as-of` reads each object."""
    return sum(
        1
        for _k, method, target in entries
        if operation(method, target) == "GetObject" and "versionId" in dict(parse_qsl(urlsplit(target).query))
    )


def media_puts(entries: Iterable[tuple[str, str, str]]) -> int:
    media = f"/{BUCKET}/{MEDIA_PREFIX}"
    return sum(1 for _k, method, target in entries if method in ("PUT", "POST") and unquote(target).startswith(media))


# ------------------------------------------------------------------------------------------- commands


def sync_env() -> dict[str, str]:
    """The moto credentials and nothing else: no profile or config file of the machine may redirect it."""
    env = base_env() | CREDS
    empty = WORK / "aws-credentials-none"
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty))
    return env


def sync_cmd(command: str, url: str, *extra: str) -> list[str]:
    return [
        str(SYNC_BIN),
        command,
        "--bucket",
        BUCKET,
        "--prefix",
        MEDIA_PREFIX,
        "--endpoint-url",
        url,
        "--no-progress",
        "--log-format",
        "text",
        "--quiet",
        "-o",
        "json",
        *extra,
    ]


def read_report(path: Path) -> dict[str, Any]:
    """immich-sync's `-o json` document; an empty dict when it wrote none (a failed run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digests(root: Path, folders: Sequence[str]) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, sha256) of every file under the given folders of root."""
    out: dict[str, tuple[int, str]] = {}
    for folder in folders:
        for dirpath, _dirs, names in os.walk(root / folder):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as fh:
                    data = fh.read()
                out[os.path.relpath(path, root)] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def compare_restore(target: Path, want: dict[str, tuple[int, str]]) -> tuple[str, list[str]]:
    """The restored tree against the library: same files, sizes and bytes. The `.immich` markers restore
    creates in the folders the backup leaves out are expected; anything else there is extra."""
    have = file_digests(target, TOP_FOLDERS)
    for folder in TOP_FOLDERS:
        if folder not in BACKED_UP:
            have.pop(f"{folder}/.immich", None)
    missing = want.keys() - have.keys()
    extra = have.keys() - want.keys()
    differ = [p for p in want.keys() & have.keys() if have[p] != want[p]]
    files = sum(1 for p in have if p in want)
    size = sum(have[p][0] for p in have if p in want)
    check = f"{files}/{len(want)} files, {size / MiB:.1f} MiB"
    problems = [
        f"{len(missing)} files missing" if missing else "",
        f"{len(extra)} extra files (e.g. {sorted(extra)[0]})" if extra else "",
        f"{len(differ)} files differ (e.g. {sorted(differ)[0]})" if differ else "",
    ]
    problems = [p for p in problems if p]
    return (check + (", " + ", ".join(problems) if problems else ", identical"), problems)


class Runner:
    def __init__(self, lib: Path, logs: Path, moto: MotoServer, proxy: CountProxy | None) -> None:
        self.lib = lib
        self.logs = logs
        self.moto = moto
        self.proxy = proxy

    @property
    def url(self) -> str:
        return self.proxy.url if self.proxy is not None else self.moto.url

    def run(self, label: str, cmd: list[str], timeout_s: float) -> tuple[RunCount, dict[str, Any], list[Any]]:
        """Run one command through the proxy (when counting on the wire) and collect both counts."""
        slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
        out = self.logs / f"{slug}.json"
        offset = self.proxy.log_offset() if self.proxy is not None else 0
        m = run_measured(
            label,
            cmd,
            sync_env(),
            self.logs / f"{slug}.log",
            timeout_s,
            stdout_path=out,
            server_pid=self.moto.pid,
        )
        entries = self.proxy.entries_since(offset) if self.proxy is not None else []
        report = read_report(out)
        rc = RunCount(label, m, dict(report.get("requests") or {}))
        if self.proxy is not None:
            rc.wire = wire_counts(entries)
        status = "ok" if m.ok else ("TIMEOUT" if m.timed_out else f"FAILED rc={m.returncode}")
        log(f"{label}: {m.wall_s:.1f}s wall, {status}; reported {rc.reported}; wire {rc.wire}")
        if not m.ok:
            rc.problems.append(m.describe_failure())
        elif not rc.reported:
            rc.problems.append(f"{label}: no `requests` map in its JSON report ({out})")
        if rc.agree is False:
            wire = rc.wire_comparable
            diff = {
                k: (rc.reported.get(k, 0), wire.get(k, 0))
                for k in sorted(rc.reported.keys() | wire.keys())
                if rc.reported.get(k, 0) != wire.get(k, 0)
            }
            rc.problems.append(f"{label}: reported and wire counts disagree (reported, wire): {diff}")
        return rc, report, entries

    def verify(self, as_of: str) -> RunCount:
        extra = ["--library-root", str(self.lib), "--settle-seconds", "0"]
        label = f"verify --as-of {as_of}" if as_of else "verify"
        rc, report, _ = self.run(label, sync_cmd("verify", self.url, *extra, *as_of_args(as_of)), SHORT_TIMEOUT_S)
        if report:
            rc.check = (
                f"{report.get('verified', 0)}/{report.get('recorded', 0)} recorded verified, "
                f"{report.get('missing', 0)} missing, versioned={report.get('versioned')}"
            )
            if not report.get("ok"):
                rc.problems.append(f"{label}: not ok: {rc.check}")
        return rc

    def restore(self, as_of: str, want: dict[str, tuple[int, str]]) -> RunCount:
        label = f"restore --as-of {as_of}" if as_of else "restore"
        target = Path(tempfile.mkdtemp(prefix="asof-restore-", dir=WORK))
        try:
            cmd = sync_cmd("restore", self.url, "--to", str(target), *as_of_args(as_of))
            rc, report, entries = self.run(label, cmd, LONG_TIMEOUT_S)
            rc.check, problems = compare_restore(target, want)
            if self.proxy is not None:
                rc.check += f"; {versioned_gets(entries)} GETs named a VersionId"
            rc.problems += [f"{label}: restored tree: {p}" for p in problems]
            if report and report.get("status") != "ok":
                rc.problems.append(f"{label}: status {report.get('status')}: {report.get('error', '')}")
            if report.get("written_after_as_of"):
                rc.problems.append(f"{label}: {report['written_after_as_of']} objects written after as-of")
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return rc

    def noop_backup(self) -> RunCount:
        inv = immich_sync(self.lib, Target(self.url, BUCKET, MEDIA_PREFIX), "-o", "json")
        rc, report, entries = self.run("no-op backup", inv.cmd, SHORT_TIMEOUT_S)
        puts = media_puts(entries) if self.proxy is not None else rc.reported.get("PutObject", 0)
        checks = rc.reported.get(VERSIONING, 0)
        rc.check = f"{checks} {VERSIONING}, {puts} media PUTs, versioning={report.get('versioning', '?')}"
        if checks != 1:
            rc.problems.append(f"no-op backup: {checks} {VERSIONING} requests, expected exactly 1")
        if puts:
            rc.problems.append(f"no-op backup: {puts} PUTs under the media prefix, expected none")
        return rc


def as_of_args(as_of: str) -> list[str]:
    return ["--as-of", as_of] if as_of else []


def check_versions(s3: S3) -> tuple[str, list[str]]:
    """Every media object must have exactly one version with a real VersionId: the premise of the
    comparison (and what makes `--as-of now` see exactly the current objects)."""
    per_key: Counter[str] = Counter()
    null_ids = markers = 0
    paginator = s3.client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=MEDIA_PREFIX):
        for v in page.get("Versions", []):
            per_key[v["Key"]] += 1
            null_ids += v.get("VersionId") in (None, "", "null")
        markers += len(page.get("DeleteMarkers", []))
    multi = sum(1 for n in per_key.values() if n != 1)
    text = f"{len(per_key)} objects under {MEDIA_PREFIX}, {sum(per_key.values())} versions"
    problems = [
        f"{multi} keys with more than one version" if multi else "",
        f"{null_ids} versions with a null VersionId" if null_ids else "",
        f"{markers} delete markers" if markers else "",
    ]
    problems = [p for p in problems if p]
    return (text + (": " + ", ".join(problems) if problems else ", one each"), problems)


def settle_as_of() -> str:
    """A time after every write so far, to the second as an operator types it: waiting for the next
    whole second makes every object's LastModified (which carries milliseconds) lie before it."""
    time.sleep(1.0 - time.time() % 1.0 + 0.05)
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------- reporting


def fmt_s(m: Measured | None) -> str:
    return "—" if m is None else f"{m.wall_s:.1f}"


def runs(b: Bench) -> list[RunCount]:
    out = [r for p in b.pairs for r in (p.plain, p.as_of)]
    return out + ([b.noop] if b.noop is not None else [])


def request_table(b: Bench) -> list[str]:
    rows = runs(b)
    kinds = sorted({k for r in rows for k in (*r.reported, *r.wire_comparable)})
    if any(REPORT_WRITES in (r.wire or {}) for r in rows):
        kinds.append(REPORT_WRITES)
    head = "| Command | Wall s | " + " | ".join(kinds) + " | Total (report) | Total (wire) | Agree | Check |"
    lines = [head, "|---|---:|" + "---:|" * (len(kinds) + 2) + ":---:|---|"]
    for r in rows:
        cells = " | ".join(str((r.wire or {}).get(k, 0) if k == REPORT_WRITES else r.reported.get(k, 0)) for k in kinds)
        wire = "—" if r.wire_total is None else str(r.wire_total)
        agree = "—" if r.agree is None else ("✔" if r.agree else "✘")
        label = r.label + ("" if r.measured is not None and r.measured.ok else " (FAILED)")
        lines.append(f"| `{label}` | {fmt_s(r.measured)} | {cells} | {r.total} | {wire} | {agree} | {r.check} |")
    return lines


def pages(r: RunCount) -> str:
    return f"{r.reported.get(LIST_V2, 0)} / {r.reported.get(LIST_VERSIONS, 0)}"


def ratio_table(b: Bench) -> list[str]:
    lines = [
        "| Pair | Plain total | As-of total | As-of ÷ plain | Limit | Met | Plain pages V2 / Versions "
        "| As-of pages V2 / Versions |",
        "|---|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for p in b.pairs:
        r = p.ratio
        value = "n/a" if r is None else f"{r:.3f}×"
        met = "n/a" if r is None else ("✔" if r <= b.args.limit else "✘")
        lines.append(
            f"| {p.name} | {p.plain.total} | {p.as_of.total} | {value} | ≤ {b.args.limit:g}× | {met} "
            f"| {pages(p.plain)} | {pages(p.as_of)} |"
        )
    return lines


def render(b: Bench) -> str:
    elapsed = time.time() - b.started.timestamp()
    command = " ".join(["bench/asof_bench.py", *sys.argv[1:]])
    versions = {}
    for label, dist in (("immich-sync", "immich-offsite-backup"), ("moto", "moto")):
        try:
            versions[label] = f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            versions[label] = "not installed"
    st = b.stats
    wire = "through bench/countproxy.py" if not b.args.no_wire else "straight to moto (no wire count)"
    out = [
        "# `--as-of` request cost: verify and restore with and without it",
        "",
        f"Generated by `make bench-asof` (`{command}`) on {b.started:%Y-%m-%d %H:%M UTC}; total bench time "
        f"{elapsed:.0f}s. One local moto S3 server (a separate process), one repetition of each command.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine_info()],
        *[f"| {k} | {v} |" for k, v in versions.items()],
        f"| 1-min load at start / end | {b.load_start} / {Path('/proc/loadavg').read_text().split(' ', 1)[0]} |",
        "",
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| Library | {library_spec(b.args.files).name}: {st.files if st else '?'} files backed up, "
        f"{st.bytes / MiB if st else 0:.1f} MiB |",
        f"| Bucket | `{BUCKET}`, versioning Enabled, media prefix `{MEDIA_PREFIX}` |",
    ]
    if b.setup is not None:
        s = b.setup
        out.append(
            f"| Initial `immich-sync backup` (straight to moto) | {fmt_s(s.measured)} s; "
            f"{s.reported.get('PutObject', 0)} PutObject, {s.reported.get(VERSIONING, 0)} {VERSIONING}, "
            f"{s.total} requests in all |"
        )
    out += [
        f"| Object versions after it | {b.versions_check or 'not checked'} |",
        f"| `--as-of` | {b.as_of or 'n/a'} (after every write) |",
        f"| Measured runs | {wire} |",
        "",
        "## Ratios",
        "",
        "Total S3 requests of each command as immich-sync reports them. Pages = ListObjectsV2 / "
        "ListObjectVersions requests.",
        "",
        *ratio_table(b),
        "",
        "## Requests by kind",
        "",
        "Counts are immich-sync's own (`requests` in its `-o json` report; botocore's internal retries not "
        "included); Total (wire) is what the counting proxy saw, classified into the same operations, and "
        "Agree says the two match kind by kind. A backup counts its requests into its run report before it "
        "writes that report and its files cache (and its manifest, when it uploaded anything), so those PUTs "
        "under the report prefix are seen on the wire only: they have a column of their own and are in "
        "Total (wire), but are not compared. Wall time is information only: it includes the proxy and moto, "
        "which is far slower per request than S3 (and sorts every version in the bucket for each "
        "ListObjectVersions page).",
        "",
        *request_table(b),
        "",
        "## Notes",
        "",
        "- A plain `verify` on a versioned bucket lists the versions too (ListObjectVersions beside "
        "ListObjectsV2), to name originals overwritten or deleted since their upload; `verify --as-of` "
        "compares the versions it lists instead of the current listing, so it needs no ListObjectsV2 pages "
        "for the media (its one ListObjectsV2 is the start-up access check, MaxKeys=1).",
        "- `restore` lists each of the six Immich folders separately, so a folder's last page is partly "
        "filled and an empty folder still costs one page, with or without `--as-of`.",
        "- moto runs with a shim (`MOTO_VERSIONS_SHIM` in bench/asof_bench.py): its ListObjectVersions "
        "deep-copies the whole bucket on every page and never frees the copies, which exhausts memory within "
        "a few dozen pages of a 30,000-object bucket. The shim hands that function shallow views instead; "
        "the answers are unchanged.",
        "",
        *failures_section(b.failures),
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=float, default=RATIO_LIMIT, help="largest as-of ÷ plain request ratio")
    p.add_argument("--no-wire", action="store_true", help="run straight to moto: no counting proxy")
    p.add_argument(
        "--files",
        type=int,
        default=SPEC_B.n_files,
        help="photos in the library (default: library B's; fewer only to try the bench out quickly)",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="where to write the markdown report")
    return p.parse_args(argv)


def library_spec(files: int) -> LibSpec:
    """Library B, or for a quick trial a smaller library of the same shape (its own cached tree)."""
    if files == SPEC_B.n_files:
        return SPEC_B
    return replace(SPEC_B, name=f"B-{files}", n_files=files, n_excluded=max(files // 100, 3))


def measure(b: Bench, logs: Path) -> None:
    ok, why = sync_available()
    if not ok:
        b.failures.append(f"immich-sync unavailable: {why}")
        return
    spec = library_spec(b.args.files)
    lib = WORK / f"lib-{spec.name}"
    t0 = time.monotonic()
    if ensure_library(spec, lib):
        log(f"generated library {spec.name} in {time.monotonic() - t0:.0f}s")
    b.stats = library_stats(lib)
    warm_cache(lib)
    want = file_digests(lib, BACKED_UP)
    with MotoServer(VENV_BIN / "python", logs / "moto.log", boot=MOTO_BOOT_ASOF) as moto:
        log(f"moto server at {moto.url} (pid {moto.pid})")
        s3 = S3(moto.url)
        s3.create_bucket(BUCKET)
        s3.client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        proxy_ctx = None if b.args.no_wire else CountProxy(moto.port, logs / "proxy-requests.log")
        proxy = proxy_ctx.__enter__() if proxy_ctx is not None else None
        try:
            setup = Runner(lib, logs, moto, None)
            inv = immich_sync(lib, Target(moto.url, BUCKET, MEDIA_PREFIX), "-o", "json")
            b.setup, _, _ = setup.run("initial backup", inv.cmd, LONG_TIMEOUT_S)
            if not b.setup.ok:
                b.failures += b.setup.problems
                return
            b.versions_check, problems = check_versions(s3)
            b.failures += [f"object versions: {p}" for p in problems]
            b.as_of = settle_as_of()
            runner = Runner(lib, logs, moto, proxy)
            b.pairs.append(Pair("verify", runner.verify(""), runner.verify(b.as_of)))
            b.pairs.append(Pair("restore --to DIR", runner.restore("", want), runner.restore(b.as_of, want)))
            b.noop = runner.noop_backup()
        finally:
            if proxy_ctx is not None:
                proxy_ctx.__exit__(None, None, None)
    for r in runs(b):
        b.failures += r.problems
    for p in b.pairs:
        if p.ratio is not None and p.ratio > b.args.limit:
            b.failures.append(
                f"{p.name}: --as-of sent {p.as_of.total} requests, {p.ratio:.2f}× the plain command's "
                f"{p.plain.total} (limit {b.args.limit:g}×)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    b = Bench(args, dt.datetime.now(dt.UTC))
    WORK.mkdir(parents=True, exist_ok=True)
    logs = new_log_dir(LOGS)
    log(f"logs in {logs}")
    try:
        measure(b, logs)
    except BaseException as exc:
        b.failures.append(f"bench aborted: {type(exc).__name__}: {exc}")
        raise
    finally:
        text = render(b)
        args.results.write_text(text)
        print(text)
        log(f"wrote {args.results}")
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
