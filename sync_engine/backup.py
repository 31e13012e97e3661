"""One backup (or dry-run plan) of the selected folders: walk + listing → merge-join → worker pool.

The planner thread feeds the bounded pool of `pool.py`, so uploads begin while the listing is still
paging and the number of queued items (hence memory) is capped. Results are folded into per-folder
counters, the manifest (what was uploaded) and the files cache (what was confirmed, see filescache.py)
as they complete. A plan (`dry_run`) is the same run with `Uploader.predict` in place of the upload:
it reads and compares bytes with the listing's ETags exactly where a backup would, and decides the
held overwrites the same way, so its "to upload" is what the next backup in the same state sends; it
writes nothing (no upload, no report, no files cache). If S3 becomes unreachable mid-run, submission
stops and the run ends as aborted rather than failing every remaining file one by one. Before any of
that, every selected folder must be a real directory holding Immich's `.immich` marker: an unmounted
volume is refused, not backed up as empty.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from sync_engine import __version__
from sync_engine.config import SyncSettings
from sync_engine.errors import EXIT_ABORTED, EXIT_CONFIG, EXIT_OK, EXIT_PARTIAL, SetupError, StoreError
from sync_engine.filescache import CacheWriter
from sync_engine.inventory import unusable_folders
from sync_engine.manifests import ManifestWriter
from sync_engine.models import (
    BLOCKING_PROBLEMS,
    Cached,
    CacheState,
    FolderStats,
    LocalFile,
    Outcome,
    PlanItem,
    ProblemKind,
    Reason,
    ScanProblem,
    UploadResult,
)
from sync_engine.orphans import abort_orphans
from sync_engine.overwrite import judge, mass_change_record
from sync_engine.plan import Rule, merge_join, shard_of, trusted, trusted_items
from sync_engine.pool import WorkerPool
from sync_engine.prefetch import PrefetchedListing
from sync_engine.report import RunReport, coverage, report_key, utc_iso, write_report
from sync_engine.scan import printable, walk_unit
from sync_engine.store import SETUP_CODES, ObjectStore
from sync_engine.trust import History, load_history
from sync_engine.units import ListUnit, list_units
from sync_engine.upload import Uploader

MAX_PROBLEMS_IN_REPORT = 1000


class Observer(Protocol):
    """Receives events as the run goes: the progress display and the line log implement it."""

    def folder_started(self, folder: str) -> None: ...
    def planned(self, item: PlanItem) -> None: ...
    def problem(self, problem: ScanProblem) -> None: ...
    def finished(self, result: UploadResult) -> None: ...


class NullObserver:
    """Ignores every event: a run nobody watches."""

    def folder_started(self, folder: str) -> None:
        pass

    def planned(self, item: PlanItem) -> None:
        pass

    def problem(self, problem: ScanProblem) -> None:
        pass

    def finished(self, result: UploadResult) -> None:
        pass


@dataclass
class _State:
    report: RunReport
    manifest: ManifestWriter | None
    cache: CacheWriter | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    blocking: int = 0  # problems only the operator can fix (see BLOCKING_PROBLEMS)
    held: list[UploadResult] = field(default_factory=list)  # changed content over an object: see overwrite.py
    in_bucket: int = 0  # files of this run already in the bucket (the breaker's denominator)

    def stats(self, folder: str) -> FolderStats:
        return self.report.per_folder.setdefault(folder, FolderStats())


def _bump(stats: FolderStats, name: str, size: int) -> None:
    setattr(stats, name, getattr(stats, name) + 1)
    if hasattr(stats, f"{name}_bytes"):
        setattr(stats, f"{name}_bytes", getattr(stats, f"{name}_bytes") + size)


def run(
    settings: SyncSettings,
    store: ObjectStore,
    *,
    dry_run: bool = False,
    observer: Observer | None = None,
    clock: Callable[[], float] = time.time,
) -> RunReport:
    """Back up (or, with dry_run, only plan) every selected folder and return the finished report."""
    observer = observer or NullObserver()
    started = clock()
    report = RunReport(
        run_id=uuid.uuid4().hex[:8],
        engine_version=__version__,
        command="plan" if dry_run else "backup",
        started_at=utc_iso(started),
        bucket=settings.s3.bucket,
        media_prefix=settings.media_prefix,
        library_root=str(settings.library_root),
        folders=list(settings.folders),
        shard=str(settings.shard) if settings.shard else None,
        dry_run=dry_run,
        settle_seconds=settings.settle_seconds,
        part_size=settings.part_size,
        multipart_threshold=settings.multipart_threshold,
        bwlimit=settings.s3.bwlimit.describe() if settings.s3.bwlimit else "off",
    )
    state = _State(report, None if dry_run else ManifestWriter(), None if dry_run else CacheWriter())
    rule = Rule(settings.settle_seconds, started)
    uploader = Uploader(store, settings, clock)
    # A plan runs the backup's own decisions, ETag comparisons included, and only leaves out the sending.
    work = uploader.predict if dry_run else uploader.upload

    refused = unusable_folders(settings.library_root, tuple(settings.folders))
    if refused:
        _refuse(report, state, store, settings, started, clock, refused)
        return report
    _read_versioning(store, report)

    def record(result: UploadResult) -> None:
        _record_result(state, pool, result)
        observer.finished(result)

    def produce(pool: WorkerPool[PlanItem, UploadResult]) -> None:
        if not dry_run:
            _abort_orphans(store, settings, report)
        history = _history(store, settings, report, started, state.cache)
        current, folder_start = "", clock()
        for unit, listing, entries in _listed_units(store, settings, report, history):
            if unit.folder != current:
                if current:
                    report.folder_seconds[current] = round(clock() - folder_start, 3)
                current, folder_start = unit.folder, clock()
                observer.folder_started(current)
            for entry in _plan_unit(store, settings, report, rule, unit, listing, entries, history):
                if pool.stopping:
                    break
                if not _record_planned(state, current, entry, observer):
                    continue
                assert isinstance(entry, PlanItem)
                if dry_run and not entry.check_content:
                    record(uploader.predict(entry))  # decided without reading: in walk order, no worker
                else:
                    pool.submit(entry)
            if pool.stopping:
                break
        if current:
            report.folder_seconds[current] = round(clock() - folder_start, 3)

    def store_failed(exc: StoreError) -> str:
        if not pool.submitted and (exc.transport or exc.code in SETUP_CODES):
            # Nothing was done yet: a setup problem, reported as one line by the CLI.
            raise SetupError(str(exc), code=exc.code, transport=exc.transport) from None
        return str(exc)

    pool = WorkerPool(work, record, workers=settings.workers, name="upload", cancel=uploader.cancel, unit="uploads")
    try:
        reason = pool.run(
            produce, interrupted="interrupted (SIGINT/SIGTERM): in-flight uploads aborted", store_failed=store_failed
        )
    except (SetupError, KeyboardInterrupt):
        raise
    except Exception as exc:  # an engine bug: still say what was done, and exit as aborted
        reason = f"internal error: {exc.__class__.__name__}: {exc}"
    try:
        reason = _decide_overwrites(state, settings, report, work, uploader.cancel, observer, reason)
    except (SetupError, KeyboardInterrupt):
        raise
    except Exception as exc:
        reason = reason or f"internal error: {exc.__class__.__name__}: {exc}"
    _finish(report, state, reason, store, settings, started, clock)
    return report


def _read_versioning(store: ObjectStore, report: RunReport) -> None:
    """One request per run: whether an overwrite would leave the old bytes behind. Unreadable counts as
    off, so the originals are kept rather than bet on."""
    try:
        report.versioning = store.bucket_versioning()
    except StoreError as exc:
        if exc.transport:
            raise SetupError(str(exc), code=exc.code, transport=True) from None
        report.versioning = "unknown"
        report.versioning_note = f"{exc} (grant s3:GetBucketVersioning); treated as not versioned"


def _decide_overwrites(
    state: _State,
    settings: SyncSettings,
    report: RunReport,
    work: Callable[[PlanItem], UploadResult],
    cancel: threading.Event,
    observer: Observer,
    reason: str,
) -> str:
    """Once every file has been compared: overwrite the held files, or keep the originals and say why.
    A plan decides the same way, so it predicts the overwrites and the kept originals too."""
    policy = settings.overwrite
    held = state.held
    if reason:  # the run stopped: nothing is overwritten by a run that could not finish comparing
        for result in held:
            _record_kept(state, result, "changed-original-kept", "the run stopped before overwrites were decided")
        report.mass_change = mass_change_record(held, state.in_bucket, policy, tripped=False)
        return reason
    verdict = judge(held, state.in_bucket, report.versioning, policy)
    tripped = verdict.kind == "suspicious-mass-change"
    report.mass_change = mass_change_record(held, state.in_bucket, policy, tripped=tripped)
    if tripped:
        report.error = verdict.detail
    for result in verdict.kept:
        detail = "not overwritten: part of a suspicious mass change (see mass_change)" if tripped else verdict.detail
        _record_kept(state, result, verdict.kind, detail)
    if not verdict.overwrite:
        return ""

    def record(result: UploadResult) -> None:
        _record_result(state, pool, result)
        observer.finished(result)

    pool: WorkerPool[PlanItem, UploadResult] = WorkerPool(
        work, record, workers=settings.workers, name="overwrite", cancel=cancel, unit="uploads"
    )

    def produce(pool: WorkerPool[PlanItem, UploadResult]) -> None:
        for item in verdict.overwrite:
            if pool.stopping:
                break
            pool.submit(replace(item, overwrite=True))

    return pool.run(
        produce,
        interrupted="interrupted (SIGINT/SIGTERM): in-flight uploads aborted",
        store_failed=lambda exc: str(exc),
    )


def _record_kept(state: _State, result: UploadResult, kind: str, detail: str) -> None:
    item = result.item
    with state.lock:
        state.stats(item.local.folder).kept += 1
        _add_problem(state.report, printable(item.local.rel), kind, detail)
        if item.cached is not None and state.cache is not None:
            state.cache.carry(item.key)  # as the last run confirmed it: the next run compares it again


LIST_AHEAD = 4
# A multipart upload this old under the media prefix belongs to a run that was killed (SIGKILL, OOM,
# a node lost): no single file takes half a day to send, and judged on S3's own clock.
ORPHAN_AGE_SECONDS = 12 * 3600


def _abort_orphans(store: ObjectStore, settings: SyncSettings, report: RunReport) -> None:
    shard = settings.shard
    owns = (lambda key: shard_of(key, shard.count) == shard.index) if shard is not None else None
    found = abort_orphans(store, settings.media_prefix, ORPHAN_AGE_SECONDS, owns=owns)
    report.orphan_uploads = {
        "found": found.found,
        "aborted": found.aborted,
        "kept_recent": found.kept_recent,
        "gone": found.gone,
        "errors": found.errors[:20],
        "note": found.note,
    }


def _history(
    store: ObjectStore, settings: SyncSettings, report: RunReport, started: float, state_cache: CacheWriter | None
) -> History:
    """What earlier runs of this coverage left: the files cache and whether a full listing is recent."""
    history = load_history(
        store,
        settings.report_prefix,
        coverage(report.library_root, settings.media_prefix, list(settings.folders), report.shard),
        started,
        settings.full_listing_days,
    )
    if history.cache is not None:
        if state_cache is not None:
            state_cache.previous = history.cache
        report.files_cache = history.cache.source
        report.files_cache_entries_read = len(history.cache.entries)
        report.files_cache_bad_lines = history.cache.bad_lines
    report.files_cache_note = history.note
    report.trusted_run = history.full_listing_run.key if history.may_skip_listings and history.full_listing_run else ""
    return history


def _refuse(
    report: RunReport,
    state: _State,
    store: ObjectStore,
    settings: SyncSettings,
    started: float,
    clock: Callable[[], float],
    problems: list[str],
) -> None:
    """Nothing is uploaded from a library that is not Immich's; the report says why (when S3 allows)."""
    report.status, report.exit_code = "refused", EXIT_CONFIG
    report.error = (
        f"{settings.library_root} does not look like a mounted Immich library: "
        + "; ".join(problems)
        + " — nothing was uploaded"
    )
    for line in problems:
        _add_problem(report, line.split(" ", 1)[0], "not-immich", line)
    state.manifest = state.cache = None
    finished = clock()
    report.finished_at = utc_iso(finished)
    report.duration_seconds = round(finished - started, 3)
    if report.dry_run:
        return
    try:
        write_report(store, report_key(settings.report_prefix, report), report, b"", None)
    except StoreError as exc:
        report.error += f"; report not written: {exc}"


def _prefetch(store: ObjectStore, settings: SyncSettings, unit: ListUnit) -> PrefetchedListing:
    prefix = f"{settings.media_prefix}{unit.rel_dir}/"
    return store.prefetch(prefix, delimiter="/" if unit.direct_only else None)


Walked = list[LocalFile | ScanProblem]


def _unit_trusted(settings: SyncSettings, history: History, entries: Walked) -> bool:
    """Every file of the unit (in this shard) is exactly as a run confirmed it: no listing needed."""
    cache = history.cache
    if cache is None or not history.may_skip_listings:
        return False
    shard = settings.shard
    for entry in entries:
        if not isinstance(entry, LocalFile):
            continue
        key = settings.media_prefix + entry.rel
        if shard is not None and shard_of(key, shard.count) != shard.index:
            continue
        if not trusted(entry, cache.get(key)):
            return False
    return True


def _listed_units(
    store: ObjectStore, settings: SyncSettings, report: RunReport, history: History
) -> Iterator[tuple[ListUnit, PrefetchedListing | None, Walked | None]]:
    """Each unit with its listing, the next few already paging in, so the walk never waits on S3.

    When listings may be skipped, each unit is walked here first (at most `UNIT_FILES` entries), and
    only a unit holding a file that is not exactly as confirmed gets a listing; its walk is passed
    on. The first page requested doubles as the access check: a wrong key or bucket fails it before
    any upload."""
    units = [unit for folder in settings.folders for unit in list_units(settings.library_root, folder)]
    report.list_units = len(units)
    started: deque[tuple[ListUnit, PrefetchedListing | None, Walked | None]] = deque()
    pending = iter(units)
    try:
        while True:
            while len(started) < LIST_AHEAD and (unit := next(pending, None)) is not None:
                if history.may_skip_listings:
                    entries: Walked | None = list(walk_unit(settings.library_root, unit.rel_dir, unit.covered))
                    trusted_unit = _unit_trusted(settings, history, entries)  # type: ignore[arg-type]
                else:
                    entries, trusted_unit = None, False
                started.append((unit, None if trusted_unit else _prefetch(store, settings, unit), entries))
            if not started:
                return
            yield started[0]
            listing = started.popleft()[1]
            if listing is not None:
                listing.close()
    finally:
        for _, listing, _ in started:
            if listing is not None:
                listing.close()


def _plan_unit(
    store: ObjectStore,
    settings: SyncSettings,
    report: RunReport,
    rule: Rule,
    unit: ListUnit,
    listing: PrefetchedListing | None,
    entries: Walked | None,
    history: History,
) -> Iterator[PlanItem | ScanProblem]:
    """Merge-join one unit with its listing, or trust it when every file is as confirmed."""
    local: Iterable[LocalFile | ScanProblem] = (
        entries if entries is not None else walk_unit(settings.library_root, unit.rel_dir, unit.covered)
    )
    if listing is None and entries is not None and history.cache is not None:
        report.units_trusted += 1
        yield from trusted_items(entries, key_prefix=settings.media_prefix, cache=history.cache, shard=settings.shard)
        return
    report.units_listed += 1
    assert listing is not None
    yield from merge_join(
        local, listing, key_prefix=settings.media_prefix, rule=rule, cache=history.cache, shard=settings.shard
    )


def _record_planned(state: _State, folder: str, entry: PlanItem | ScanProblem, observer: Observer) -> bool:
    """Count one merge-join result; True when it must go to an upload worker (or, in a plan, be predicted)."""
    if isinstance(entry, ScanProblem):
        _record_problem(state, folder, entry)
        observer.problem(entry)
        return False
    with state.lock:
        stats = state.stats(folder)
        stats.files += 1
        stats.bytes += entry.local.size
        state.in_bucket += entry.remote is not None or entry.reason is Reason.TRUSTED
        stats.by_reason[entry.reason.value] = stats.by_reason.get(entry.reason.value, 0) + 1
    observer.planned(entry)
    if entry.uploads:
        return True
    _record_plan_only(state, entry)
    return False


def _record_problem(state: _State, folder: str, problem: ScanProblem) -> None:
    with state.lock:
        stats = state.stats(folder)
        if problem.kind is ProblemKind.VANISHED:
            stats.vanished += 1
        else:
            stats.skipped += 1
        state.blocking += problem.kind in BLOCKING_PROBLEMS
        _add_problem(state.report, printable(problem.rel), problem.kind.value, problem.detail)


def _add_problem(report: RunReport, path: str, kind: str, detail: str) -> None:
    if len(report.problems) < MAX_PROBLEMS_IN_REPORT:
        report.problems.append({"path": path, "kind": kind, "detail": detail})
    else:
        report.problems_truncated += 1


def _remember(
    state: _State, key: str, look: LocalFile | UploadResult, etag: str, part_size: int | None, how: CacheState
) -> None:
    if state.cache is not None:
        state.cache.add(key, Cached(look.size, look.mtime_ns, look.ctime_ns, look.ino, etag, part_size, how))


def _record_plan_only(state: _State, item: PlanItem) -> None:
    with state.lock:
        stats = state.stats(item.local.folder)
        size = item.local.size
        if item.reason is Reason.SETTLING:
            _bump(stats, "deferred", size)
            _remember(state, item.key, item.local, "", None, CacheState.SEEN)
        else:
            _bump(stats, "unchanged", size)
            if item.cached is not None and state.cache is not None:  # unchanged, trusted: exactly as confirmed
                state.cache.carry(item.key)


def _record_result(state: _State, pool: WorkerPool[PlanItem, UploadResult], result: UploadResult) -> None:
    item = result.item
    with state.lock:
        stats = state.stats(item.local.folder)
        outcome = result.outcome
        how = CacheState.RACY if result.racy else CacheState.OK
        if outcome is Outcome.HELD:
            state.held.append(result)  # counted once the run decides (see _decide_overwrites)
        elif outcome is Outcome.UPLOADED:
            _bump(stats, "uploaded", result.size)
            pool.s3_worked()
            _record_overwrite(state.report, result)
            if state.manifest is not None:
                state.manifest.add(result)
            _remember(state, item.key, result, result.s3_etag or result.etag, result.part_size, how)
        elif outcome is Outcome.WOULD_UPLOAD:
            _bump(stats, "uploaded", result.size)  # "to upload" in a plan
            _record_overwrite(state.report, result)
        elif outcome is Outcome.SAME_CONTENT:
            _bump(stats, "unchanged", item.local.size)
            _bump(stats, "same_content", item.local.size)
            _remember(state, item.key, result, result.etag, result.part_size, how)
        elif outcome is Outcome.DEFERRED:
            _bump(stats, "deferred", item.local.size)
            _remember(state, item.key, result, "", None, CacheState.SEEN)
        elif outcome is Outcome.VANISHED:
            stats.vanished += 1
            _add_problem(state.report, printable(item.local.rel), "vanished", result.error)
        elif outcome is Outcome.UNSTABLE:
            stats.unstable += 1
            _add_problem(state.report, printable(item.local.rel), "unstable", result.error)
        else:
            _bump(stats, "failed", item.local.size)
            _add_problem(state.report, printable(item.local.rel), "failed", result.error)
            if result.unconfirmed:
                # S3 holds bytes it did not confirm: recorded, so verify fails on the key and the
                # next run sends it again until S3 confirms it.
                if state.manifest is not None:
                    state.manifest.add(result)
                _remember(state, item.key, result, result.etag, result.part_size, CacheState.FAILED)
            if result.s3_failure:
                pool.s3_failed(result.error, outage=result.s3_outage)


def _record_overwrite(report: RunReport, result: UploadResult) -> None:
    item = result.item
    if item.overwrite and item.remote is not None:
        report.overwrites.append(
            {
                "key": item.key,
                "old_size": item.remote.size,
                "old_etag": item.remote.etag,
                "new_size": result.size,
                "new_etag": result.s3_etag or result.etag,  # empty in a plan: nothing was sent
            }
        )


def _finish(
    report: RunReport,
    state: _State,
    abort_reason: str,
    store: ObjectStore,
    settings: SyncSettings,
    started: float,
    clock: Callable[[], float],
) -> None:
    totals = FolderStats()
    for stats in report.per_folder.values():
        totals.add(stats)
    report.totals = totals
    if abort_reason:
        report.status, report.exit_code, report.error = "aborted", EXIT_ABORTED, abort_reason
    elif totals.failed or state.blocking or (totals.kept and not report.dry_run):  # a plan keeps nothing itself
        report.status, report.exit_code = "partial", EXIT_PARTIAL
    else:
        report.status, report.exit_code = "ok", EXIT_OK
    report.requests = store.request_counts()
    finished = clock()
    report.finished_at = utc_iso(finished)
    report.duration_seconds = round(finished - started, 3)
    if state.manifest is None or state.cache is None:
        return
    report.listing = "incremental" if report.units_trusted else "full"
    key = report_key(settings.report_prefix, report)
    report.manifest_entries = state.manifest.entries
    report.files_cache_entries = state.cache.entries
    files = state.cache.finish()
    if files is None and state.cache.previous is not None:
        report.files_cache_key = state.cache.previous.source  # nothing new: the previous cache says it all
    try:
        write_report(store, key, report, state.manifest.finish(), files)
    except StoreError as exc:
        report.error = (report.error + "; " if report.error else "") + f"report not written: {exc}"
        if report.exit_code == EXIT_OK:
            report.status, report.exit_code = "partial", EXIT_PARTIAL
