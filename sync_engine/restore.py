"""`immich-sync restore`: the *media* half of disaster recovery, verified file by file and resumable.

(The database half is CNPG's point-in-time recovery, which the operator tools plan and apply; this
module brings back only the files of the library PVC.)

Every object under the selected Immich folders of MEDIA_PREFIX comes back as `PATH/<key minus the
prefix>`, byte for byte. This module orchestrates the run: it checks the target (`target.py`) and the
bucket before writing anything, reads the backup's manifests (`manifests.py`) as the reference each
object is verified against, lists folder by folder into the shared worker pool (`pool.py`) whose
workers download one object each (`download.py`), counts what happened, and says what the operator does
next. An object whose size or ETag no longer matches its manifest was changed in S3 after the backup
wrote it, and is reported instead of restored. Re-running finishes an interrupted restore and skips
every file that is already there with the right bytes.

The manifests are untrusted input: a manifest or a line of one that cannot be read is reported as a
problem (the run is partial, exit 1) while everything else is restored, checked against S3's listing
where no readable record describes it. Nothing is written through a symbolic link (`target.py`).

They are also the writer's word, and the writer's keys may have leaked: a run report or manifest dated
in the future, written before its run started, or rewritten after it was written (`manifests.py`) is
named as a problem (exit 1) and not used. An object whose newest record is in such a manifest is judged
by the older, trusted records (and fails as changed in S3 when it no longer matches them); one that only
such a manifest vouches for is not restored.

`as_of` restores the bucket as it was at that time: every key's newest version with LastModified ≤
as_of (ListObjectVersions per folder, GetObject with its VersionId), delete markers meaning the file was
gone by then, and only run reports and manifests whose own version existed then. A bucket without
versioning keeps current objects only: those written after as_of are left out (a recorded one fails,
since its older bytes cannot exist), and the summary says so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sync_engine import __version__
from sync_engine.asof import iso
from sync_engine.config import DEFAULT_RESTORE_DAYS, DEFAULT_RESTORE_TIER, RestoreSettings
from sync_engine.download import Downloader
from sync_engine.errors import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PENDING,
    ConfigError,
    SetupError,
    StoreError,
    TargetError,
)
from sync_engine.manifests import Records, index_runs, read_records, shown_text
from sync_engine.models import Fate, FileResult, RemoteObject
from sync_engine.pool import WorkerPool
from sync_engine.report import utc_iso
from sync_engine.store import ObjectStore
from sync_engine.target import (
    check_target,
    ensure_immich_markers,
    remove_progress_marker,
    remove_stale_temp_files,
    write_progress_marker,
)
from sync_engine.versions import DENIED, ObjectVersion, VersionListing

MAX_LISTED = 1000  # problems and pending objects kept for the summary


# -- results ---------------------------------------------------------------------------------------


@dataclass
class RestoreStats:
    """Counters for one folder (or all of them): objects listed, and what happened to them, with bytes."""

    objects: int = 0
    bytes: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0
    already_there: int = 0
    already_there_bytes: int = 0
    conflicts: int = 0
    conflicts_bytes: int = 0
    failed: int = 0
    failed_bytes: int = 0
    pending: int = 0
    pending_bytes: int = 0

    def add(self, other: RestoreStats) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


_COUNTER = {
    Fate.DOWNLOADED: "downloaded",
    Fate.ALREADY_THERE: "already_there",
    Fate.CONFLICT: "conflicts",
    Fate.FAILED: "failed",
    Fate.PENDING: "pending",
}


@dataclass
class RestoreReport:
    """What one restore did; printed as the summary (text or JSON), never stored in the bucket."""

    engine_version: str
    started_at: str
    target: str
    bucket: str
    media_prefix: str
    report_prefix: str
    folders: list[str]
    finished_at: str = ""
    duration_seconds: float = 0.0
    status: str = "running"  # ok | partial | pending | aborted
    exit_code: int = EXIT_OK
    resumed: bool = False  # the target held the progress marker of an unfinished restore
    overwrite: bool = False
    restore_days: int = DEFAULT_RESTORE_DAYS
    restore_tier: str = DEFAULT_RESTORE_TIER
    totals: RestoreStats = field(default_factory=RestoreStats)
    per_folder: dict[str, RestoreStats] = field(default_factory=dict)
    manifests: int = 0
    recorded: int = 0  # objects of the selected folders that a manifest describes
    records_note: str = ""
    unreadable_manifests: int = 0
    bad_manifest_lines: int = 0
    untrusted_reports: int = 0  # run reports and manifests not used: dated in the future, rewritten, …
    as_of: str = ""  # the time restored, when not now
    versioned: bool | None = None  # the bucket keeps versions (known with as_of); None: not listed
    written_after_as_of: int = 0  # objects left out: every version of them is younger than as_of
    notes: list[str] = field(default_factory=list)
    size_checked_only: int = 0  # SSE-KMS objects no manifest describes: their content could not be checked
    last_sync: str = ""  # start of the newest successful backup run, from the report names
    last_sync_report: str = ""
    temp_files_removed: int = 0
    markers_created: list[str] = field(default_factory=list)
    regenerate: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    pending_truncated: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    problems_truncated: int = 0
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    next_steps: list[str] = field(default_factory=list)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RestoreObserver(Protocol):
    """Receives events as the restore goes: the progress display and the line log implement it."""

    def listed(self, obj: RemoteObject) -> None: ...
    def finished(self, result: FileResult) -> None: ...


class _NullObserver:
    """Ignores every event: a restore nobody watches."""

    def listed(self, obj: RemoteObject) -> None:
        pass

    def finished(self, result: FileResult) -> None:
        pass


# -- the backup's records --------------------------------------------------------------------------


def load_records(store: ObjectStore, settings: RestoreSettings, now: float | None = None) -> Records:
    """Every trusted manifest under the report prefix (as of `settings.as_of`), oldest first, so the
    newest line for a key wins.

    Manifest keys are listed beside the reports, so no report needs reading. Only keys of the
    selected folders are kept. Without read access to the reports the restore still works; it then
    checks downloads against the listing's ETag and dates files by LastModified."""
    try:
        index = index_runs(store, settings.report_prefix, as_of=settings.as_of, now=now)
    except StoreError as exc:
        if exc.transport:
            raise
        if settings.as_of is not None and exc.code in DENIED:
            raise SetupError(str(exc), code=exc.code) from None
        return Records(note=f"run reports not readable, so files get S3's LastModified as mtime: {exc}")
    wanted = tuple(f"{settings.media_prefix}{folder}/" for folder in settings.folders)
    return read_records(store, index, wanted)


# -- the run ---------------------------------------------------------------------------------------


def _check_source(store: ObjectStore, settings: RestoreSettings) -> None:
    """One LIST and one HEAD up front: wrong credentials, a missing bucket, an empty prefix or keys that
    may list but not read (the writer's) stop the restore before anything is written to the target."""
    where = f"s3://{settings.s3.bucket}/{settings.media_prefix}"
    first: list[RemoteObject] = []
    listed = False
    try:
        if settings.as_of is None:
            pages = store.list_pages(settings.media_prefix)
            first = next(pages, [])
            pages.close()
            listed = bool(first)
        else:  # the listing as-of reads: the same one LIST, and the permission it needs is proven
            history = next(iter(VersionListing(store, settings.media_prefix, required=True)), None)
            listed = history is not None
            first = [v for v in history.versions if not v.deleted] if history is not None else []
        if first:
            store.head_object(first[0].key, version_id=_version(first[0]))
    except StoreError as exc:
        if exc.code in ("403", "AccessDenied") and first:
            raise SetupError(
                f"{where}: access denied reading objects: these credentials may list but not read "
                "(use the restorer's, with s3:GetObject)",
                code=exc.code,
            ) from None
        raise SetupError(str(exc), code=exc.code, transport=exc.transport) from None
    if not listed:
        raise ConfigError(f"nothing to restore: {where} holds no objects (check BUCKET_NAME and MEDIA_PREFIX)")


def run_restore(
    settings: RestoreSettings,
    store: ObjectStore,
    *,
    observer: RestoreObserver | None = None,
    clock: Callable[[], float] = time.time,
) -> RestoreReport:
    """Restore the selected folders into the target and return the finished report.

    Raises TargetError, ConfigError or SetupError, with nothing written, when the target or the bucket
    cannot be used; every later problem is counted in the report instead."""
    observer = observer or _NullObserver()
    started = clock()
    state = check_target(settings)
    _check_source(store, settings)
    report = RestoreReport(
        engine_version=__version__,
        as_of=iso(settings.as_of) if settings.as_of is not None else "",
        started_at=utc_iso(started),
        target=str(settings.target.absolute()),
        bucket=settings.s3.bucket,
        media_prefix=settings.media_prefix,
        report_prefix=settings.report_prefix,
        folders=list(settings.folders),
        resumed=state.resumed,
        overwrite=settings.overwrite,
        restore_days=settings.restore_days,
        restore_tier=settings.restore_tier,
        per_folder={folder: RestoreStats() for folder in settings.folders},
    )
    try:
        settings.target.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(settings.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TargetError(f"cannot write to restore target {settings.target}: {exc.strerror or exc}") from None
    try:
        try:
            write_progress_marker(root_fd, settings, started)
        except OSError as exc:
            raise TargetError(f"cannot write to restore target {settings.target}: {exc.strerror or exc}") from None
        report.temp_files_removed = remove_stale_temp_files(root_fd, state.stale_temps)
        _restore_into(settings, store, report, root_fd, observer, started, clock)
    finally:
        os.close(root_fd)
    return report


def _restore_into(
    settings: RestoreSettings,
    store: ObjectStore,
    report: RestoreReport,
    root_fd: int,
    observer: RestoreObserver,
    started: float,
    clock: Callable[[], float],
) -> None:
    records = load_records(store, settings, started)
    report.manifests, report.recorded, report.records_note = records.manifests, len(records.entries), records.note
    if records.last_sync is not None:
        report.last_sync = utc_iso(records.last_sync.started)
        report.last_sync_report = records.last_sync.key
    report.unreadable_manifests, report.bad_manifest_lines = len(records.unreadable), records.bad_lines
    report.untrusted_reports = len({u.key for u in records.untrusted})
    for untrusted in records.untrusted:
        _problem(report, shown_text(untrusted.key), untrusted.kind, untrusted.detail)
    for key, why in records.unreadable.items():
        _problem(report, shown_text(key), "unreadable-manifest", why)
    for bad in records.bad_examples:
        _problem(report, shown_text(bad.manifest), "bad-manifest-line", bad.detail)

    tally = _Tally(report)
    distrusted = {u.key: u.detail for u in records.untrusted if u.what == "manifest"}
    downloader = Downloader(settings, store, records.entries, root_fd, disputed=records.disputed, why=distrusted)
    as_of = settings.as_of
    listings: list[VersionListing] = []

    def record(result: FileResult) -> None:
        tally.record(result, pool)
        observer.finished(result)

    def objects(folder: str) -> Generator[RemoteObject, None, None]:
        """The folder's objects: as listed now (pages ahead in their own thread), or as they were at as_of."""
        prefix = f"{settings.media_prefix}{folder}/"
        if as_of is None:
            listing = store.prefetch(prefix)
            try:
                yield from listing
            finally:
                listing.close()
            return
        versions = VersionListing(store, prefix, required=True)
        listings.append(versions)
        for history in versions:
            obj = history.at(as_of)
            if obj is not None:
                yield obj
            elif not history.upto(as_of) and not history.key.endswith("/"):
                _written_after(settings, report, records, history.versions[-1], tally, record)

    def produce(pool: WorkerPool[RemoteObject, FileResult]) -> None:
        """List folder by folder and keep the pool busy."""
        for folder in settings.folders:
            listing = objects(folder)
            try:
                for obj in listing:
                    if pool.stopping:
                        break
                    if obj.key.endswith("/"):
                        continue  # a "folder" placeholder written by a console, not a file
                    tally.listed(folder, obj)
                    observer.listed(obj)
                    pool.submit(obj)
            finally:
                listing.close()
            if pool.stopping:
                break

    pool = WorkerPool(
        downloader.restore, record, workers=settings.workers, name="restore", cancel=downloader.cancel, unit="files"
    )
    reason = pool.run(
        produce,
        interrupted="interrupted (SIGINT/SIGTERM): no partial file was left; run again to finish",
        store_failed=lambda exc: f"listing failed: {exc}",
    )
    report.size_checked_only = downloader.size_checked_only
    if as_of is not None:
        report.versioned = any(v.versioned for v in listings) if listings else None
        report.notes = _as_of_notes(report, listings)
    _finish(settings, store, report, root_fd, reason, started, clock)


def _version(obj: RemoteObject) -> str | None:
    return obj.get_version if isinstance(obj, ObjectVersion) else None


def _written_after(
    settings: RestoreSettings,
    report: RestoreReport,
    records: Records,
    oldest: ObjectVersion,
    tally: _Tally,
    record: Callable[[FileResult], None],
) -> None:
    """A key whose every version is younger than as_of: left out, unless a record as old as as_of says it
    existed then, whose bytes are therefore gone (no versions kept, or expired): that one fails."""
    with tally.lock:
        report.written_after_as_of += 1
    if oldest.key not in records.entries:
        return
    rel = oldest.key[len(settings.media_prefix) :]
    why = (
        "the bucket keeps no versions of it, so older bytes cannot exist"
        if not oldest.versioned
        else "no version as old is left (noncurrent versions expire by the bucket's lifecycle rule)"
    )
    tally.listed(rel.split("/", 1)[0], oldest)
    record(
        FileResult(
            key=oldest.key,
            path=shown_text(rel),
            folder=rel.split("/", 1)[0],
            fate=Fate.FAILED,
            size=oldest.size,
            detail=f"a manifest records it before {report.as_of}, but S3 holds only bytes written "
            f"{iso(oldest.last_modified)}: {why}",
            kind="no-version-as-of",
            storage_class=oldest.storage_class,
        )
    )


def _as_of_notes(report: RestoreReport, listings: list[VersionListing]) -> list[str]:
    notes = [n for n in dict.fromkeys(v.note for v in listings) if n]
    later = report.written_after_as_of
    if report.versioned:
        if later:
            notes.append(f"{later:,} object(s) written after {report.as_of} were left out")
    else:
        notes.append(
            f"the bucket keeps no object versions: it holds current objects only, so {later:,} object(s) written "
            f"after {report.as_of} were left out and older bytes of them cannot exist"
        )
    return notes


def _problem(report: RestoreReport, path: str, kind: str, detail: str) -> None:
    if len(report.problems) < MAX_LISTED:
        report.problems.append({"path": path, "kind": kind, "detail": detail})
    else:
        report.problems_truncated += 1


class _Tally:
    """Folds listed objects and results into the report; called from the listing and the workers."""

    def __init__(self, report: RestoreReport) -> None:
        self.report = report
        self.lock = threading.Lock()

    def listed(self, folder: str, obj: RemoteObject) -> None:
        with self.lock:
            stats = self.report.per_folder.setdefault(folder, RestoreStats())
            stats.objects += 1
            stats.bytes += obj.size

    def record(self, result: FileResult, pool: WorkerPool[RemoteObject, FileResult]) -> None:
        if result.fate is Fate.CANCELLED:
            return
        with self.lock:
            self._count(result)
        if result.fatal:
            pool.stop(f"the restore target cannot take more files: {result.detail}")
        if result.s3_failure and result.fate is Fate.FAILED:
            pool.s3_failed(result.detail, outage=result.s3_outage)
        elif result.fate in (Fate.DOWNLOADED, Fate.ALREADY_THERE, Fate.PENDING):
            pool.s3_worked()

    def _count(self, result: FileResult) -> None:
        report = self.report
        stats = report.per_folder.setdefault(result.folder, RestoreStats())
        counter = _COUNTER[result.fate]
        setattr(stats, counter, getattr(stats, counter) + 1)
        setattr(stats, f"{counter}_bytes", getattr(stats, f"{counter}_bytes") + result.size)
        if result.fate is Fate.PENDING:
            if len(report.pending) < MAX_LISTED:
                report.pending.append(
                    {
                        "path": result.path,
                        "key": result.key,
                        "size": result.size,
                        "storage_class": result.storage_class,
                        "state": result.pending_state,
                        "estimate": result.estimate,
                    }
                )
            else:
                report.pending_truncated += 1
        elif result.fate in (Fate.CONFLICT, Fate.FAILED):
            if result.fate is Fate.FAILED:
                report.failed_by_kind[result.kind] = report.failed_by_kind.get(result.kind, 0) + 1
            _problem(report, result.path, result.kind, result.detail)


def _finish(
    settings: RestoreSettings,
    store: ObjectStore,
    report: RestoreReport,
    root_fd: int,
    abort_reason: str,
    started: float,
    clock: Callable[[], float],
) -> None:
    totals = RestoreStats()
    for stats in report.per_folder.values():
        totals.add(stats)
    report.totals = totals
    if abort_reason:
        report.status, report.exit_code, report.error = "aborted", EXIT_ABORTED, abort_reason
    else:
        try:
            report.markers_created = ensure_immich_markers(root_fd)
        except OSError as exc:
            report.problems.append({"path": ".immich", "kind": "local-error", "detail": exc.strerror or str(exc)})
            report.failed_by_kind["local-error"] = report.failed_by_kind.get("local-error", 0) + 1
            totals.failed += 1
        if (
            totals.failed
            or totals.conflicts
            or report.unreadable_manifests
            or report.bad_manifest_lines
            or report.untrusted_reports
        ):
            report.status, report.exit_code = "partial", EXIT_PARTIAL
        elif totals.pending:
            report.status, report.exit_code = "pending", EXIT_PENDING
        else:
            report.status, report.exit_code = "ok", EXIT_OK
    if report.exit_code == EXIT_OK:
        remove_progress_marker(root_fd)
    restored = {f for f, st in report.per_folder.items() if st.downloaded or st.already_there}
    report.regenerate = [f for f in ("thumbs", "encoded-video") if f not in restored]
    report.next_steps = next_steps(settings, report)
    report.requests = store.request_counts()
    finished = clock()
    report.finished_at = utc_iso(finished)
    report.duration_seconds = round(finished - started, 3)


def next_steps(settings: RestoreSettings, report: RestoreReport) -> list[str]:
    """What the operator does next, in order; the same lines go to the text and the JSON summary."""
    t = report.totals
    steps: list[str] = []
    if report.status == "aborted":
        steps.append("run the same restore again: it skips what is already there and finishes the job")
    if t.pending:
        kinds = sorted({(p["storage_class"], p["estimate"]) for p in report.pending})
        waits = "; ".join(f"{cls}: {est}" for cls, est in kinds)
        steps.append(
            f"{t.pending:,} archived object(s) are being restored by S3 ({settings.restore_tier} tier — {waits}); "
            f"run the same restore again after that to download them "
            f"(restored copies stay readable for {settings.restore_days} days)"
        )
    if t.conflicts:
        steps.append(
            f"{t.conflicts:,} local file(s) differ from the backup and were left alone: "
            "inspect them, or run again with --overwrite to replace them"
        )
    changed = report.failed_by_kind.get("changed-in-s3", 0)
    if changed:
        steps.append(
            f"{changed:,} object(s) in S3 no longer match what the backup recorded and were not restored "
            "(see problems; `immich-sync verify` lists every such object): find out who changed them before "
            "copying S3's current version by hand"
        )
    if t.failed - changed:
        steps.append(f"{t.failed - changed:,} file(s) failed (see problems); run the same restore again to retry them")
    if report.unreadable_manifests or report.bad_manifest_lines:
        what = " and ".join(
            part
            for part in (
                f"{report.unreadable_manifests:,} manifest(s)" if report.unreadable_manifests else "",
                f"{report.bad_manifest_lines:,} manifest line(s)" if report.bad_manifest_lines else "",
            )
            if part
        )
        steps.append(
            f"{what} of the backup could not be read (see problems): the objects they described were checked "
            "against S3's listing only; `immich-sync verify` lists what the manifests no longer vouch for"
        )
    if report.untrusted_reports:
        steps.append(
            f"{report.untrusted_reports:,} run report(s) or manifest(s) are not trusted (see problems: dated in the "
            "future, written before their run, or rewritten) and were not used: someone may be writing with the "
            "writer's keys. `immich-sync verify` names every object changed since its first upload; "
            "`immich-sync restore --as-of TIME` with a time before the first of them restores the bucket as it "
            "was then; rotate the writer's keys"
        )
    if report.size_checked_only:
        steps.append(
            f"{report.size_checked_only:,} SSE-KMS object(s) that no manifest describes were checked by size only "
            "(their ETag is not an MD5 and no MD5 was recorded): compare them with another copy if one exists"
        )
    jobs = {"thumbs": '"Generate Thumbnails" (All)', "encoded-video": '"Transcode Videos" (All)'}
    if report.regenerate:
        folders = " and ".join(f"{f}/" for f in report.regenerate)
        steps.append(
            f"{folders} not restored: once Immich runs, open Administration → Jobs and start "
            + " and ".join(jobs[f] for f in report.regenerate)
            + " so Immich regenerates them"
        )
    when = f" ({report.last_sync})" if report.last_sync else ""
    steps.append(
        f"restore the database to a time no later than the last media sync, i.e. the start of the last "
        f"successful backup run{when}, so every asset it references is on disk; a newer database points at "
        "files this restore cannot bring back"
    )
    return steps
