"""`immich-sync restore`: the media half of disaster recovery, verified file by file and resumable.

Every object under the selected Immich folders of MEDIA_PREFIX comes back as `PATH/<key minus the
prefix>`, byte for byte. A download streams into a temporary file beside its destination, is checked
against what the backup recorded (size, and the ETag: an MD5, or the multipart ETag computed with the
recorded part size), gets the file's original mtime and only then is renamed into place. So an
interrupted restore never leaves a partial file under a real name, and running it again skips every
file that is already there with the right bytes. A local file that differs is never replaced without
`--overwrite`.

The run manifests of the backup are the reference: an object whose size or ETag no longer matches
the manifest was changed in S3 after the backup wrote it, and is reported instead of restored.
Objects in GLACIER or DEEP_ARCHIVE cannot be read until S3 has restored them, which takes hours: the
restore is requested, they are reported as pending with an estimate, and a later run downloads them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sync_engine import __version__
from sync_engine.backup import EXIT_ABORTED, EXIT_OK, EXIT_PARTIAL
from sync_engine.config import (
    IMMICH_FOLDERS,
    ConfigError,
    S3Settings,
    _number,
    _pick,
    default_report_prefix,
    normalize_prefix,
    s3_settings,
)
from sync_engine.etag import etag_part_count, file_matches_etag, is_multipart_etag, multipart_etag
from sync_engine.models import RemoteObject
from sync_engine.report import ReportName, parse_report_key, read_manifest, utc_iso
from sync_engine.scan import printable
from sync_engine.store import ObjectStore, SetupError, StoreError

# Done except for archived objects that S3 is still restoring: run the same command again later.
EXIT_PENDING = 4

PROGRESS_MARKER = ".immich-sync-restore.json"
IMMICH_MARKER = ".immich"
# Short and independent of the file's own name, so a 255-byte file name still gets a temporary file.
_TEMP_NAME = re.compile(r"^\.immich-sync-[0-9a-f]{16}\.tmp$")
# A fresh ext4 volume is never empty: its lost+found does not make a target "not empty".
_IGNORED_IN_EMPTY_TARGET = frozenset({"lost+found"})

ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
RESTORE_TIERS = ("Standard", "Bulk", "Expedited")
DEFAULT_RESTORE_DAYS = 7
DEFAULT_RESTORE_TIER = "Standard"
# What AWS documents for each retrieval tier.
_ESTIMATES: dict[tuple[str, str], str] = {
    ("GLACIER", "Expedited"): "usually 1–5 minutes",
    ("GLACIER", "Standard"): "usually 3–5 hours",
    ("GLACIER", "Bulk"): "usually 5–12 hours",
    ("DEEP_ARCHIVE", "Standard"): "within 12 hours",
    ("DEEP_ARCHIVE", "Bulk"): "within 48 hours",
    ("INTELLIGENT_TIERING", "Standard"): "3–5 hours (Archive Access) or within 12 hours (Deep Archive Access)",
    ("INTELLIGENT_TIERING", "Bulk"): "5–12 hours (Archive Access) or within 48 hours (Deep Archive Access)",
}

CHUNK = 1024 * 1024  # per worker in flight: memory is workers × CHUNK, whatever the file sizes
ATTEMPTS = 3  # per file, for a download that fails verification or loses its connection
ABORT_AFTER_S3_FAILURES = 8
MAX_LISTED = 1000  # problems and pending objects kept for the summary
_LOCAL_FATAL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_RESTORE_STATE = re.compile(r'ongoing-request\s*=\s*"?(true|false)"?', re.IGNORECASE)


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreSettings:
    target: Path
    media_prefix: str
    report_prefix: str
    s3: S3Settings
    folders: tuple[str, ...] = IMMICH_FOLDERS
    workers: int = 16
    overwrite: bool = False
    force: bool = False
    restore_days: int = DEFAULT_RESTORE_DAYS
    restore_tier: str = DEFAULT_RESTORE_TIER


def _names(text: str | None) -> list[str]:
    return [f.strip().strip("/") for f in (text or "").split(",") if f.strip().strip("/")]


def parse_restore_folders(include: str | None, only: str | None, exclude: str | None) -> tuple[str, ...]:
    """All six folders unless `--only` narrows them; `--include` adds to `--only`, `--exclude` removes.

    The flags mean what they mean for `backup`; only the default differs, because a restore should
    bring back whatever the bucket holds."""
    chosen = _names(only) or list(IMMICH_FOLDERS)
    chosen += _names(include)
    dropped = _names(exclude)
    unknown = [f for f in chosen + dropped if f not in IMMICH_FOLDERS]
    if unknown:
        raise ConfigError(f"unknown folder(s) {', '.join(unknown)}: choose from {', '.join(IMMICH_FOLDERS)}")
    folders = tuple(f for f in IMMICH_FOLDERS if f in chosen and f not in dropped)
    if not folders:
        raise ConfigError("no folder left to restore (check --only and --exclude)")
    return folders


def restore_settings(args: object, env: Mapping[str, str] | None = None) -> RestoreSettings:
    """The same variables and flags as the other commands; the credentials should be the restorer's."""
    env = os.environ if env is None else env
    target_text = getattr(args, "to", None)
    if not target_text:
        raise ConfigError("--to PATH is required: the directory to restore into")
    prefix_raw = _pick(getattr(args, "prefix", None), env, "MEDIA_PREFIX")
    if prefix_raw is None:
        raise ConfigError("MEDIA_PREFIX is not set (set the variable or pass --prefix)")
    media_prefix = normalize_prefix(prefix_raw)
    report_raw = _pick(getattr(args, "report_prefix", None), env, "REPORT_PREFIX")
    report_prefix = normalize_prefix(report_raw) if report_raw else default_report_prefix(media_prefix)
    workers = int(_number(args, "workers", env, "IMMICH_SYNC_WORKERS", 16, int))
    if not 1 <= workers <= 256:
        raise ConfigError("--workers must be between 1 and 256")
    days = int(_number(args, "restore_days", env, "IMMICH_SYNC_RESTORE_DAYS", DEFAULT_RESTORE_DAYS, int))
    if not 1 <= days <= 36500:
        raise ConfigError("IMMICH_SYNC_RESTORE_DAYS (--restore-days) must be between 1 and 36500")
    tier_text = _pick(getattr(args, "restore_tier", None), env, "IMMICH_SYNC_RESTORE_TIER") or DEFAULT_RESTORE_TIER
    tier = next((t for t in RESTORE_TIERS if t.lower() == tier_text.lower()), None)
    if tier is None:
        raise ConfigError(
            f"IMMICH_SYNC_RESTORE_TIER (--restore-tier) must be one of {', '.join(RESTORE_TIERS)}, got {tier_text!r}"
        )
    return RestoreSettings(
        target=Path(target_text).expanduser(),
        media_prefix=media_prefix,
        report_prefix=report_prefix,
        s3=s3_settings(args, env, workers=workers + 2),  # + the listing and the manifest reads
        folders=parse_restore_folders(
            getattr(args, "include", None), getattr(args, "only", None), getattr(args, "exclude", None)
        ),
        workers=workers,
        overwrite=bool(getattr(args, "overwrite", False)),
        force=bool(getattr(args, "force", False)),
        restore_days=days,
        restore_tier=tier,
    )


# -- results ---------------------------------------------------------------------------------------


class Fate(StrEnum):
    DOWNLOADED = "downloaded"
    ALREADY_THERE = "already-there"  # same size and ETag: left untouched
    CONFLICT = "conflict"  # a local file differs and --overwrite was not given
    FAILED = "failed"
    PENDING = "pending"  # archived: S3 is restoring it
    CANCELLED = "cancelled"  # the run was stopped before this file was done


@dataclass(frozen=True, slots=True)
class FileResult:
    key: str
    path: str  # relative to the target, printable
    folder: str
    fate: Fate
    size: int
    detail: str = ""
    kind: str = ""  # for problems: what went wrong, in one word
    storage_class: str = ""
    pending_state: str = ""  # requested | in-progress
    estimate: str = ""
    attempts: int = 0
    s3_failure: bool = False  # S3 refused or was unreachable
    fatal: bool = False  # the target file system cannot take more (full, read-only): stop the run


@dataclass
class RestoreStats:
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
    def listed(self, obj: RemoteObject) -> None: ...
    def finished(self, result: FileResult) -> None: ...


class _NullObserver:
    def listed(self, obj: RemoteObject) -> None:
        pass

    def finished(self, result: FileResult) -> None:
        pass


# -- the backup's records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """One manifest line: what the backup uploaded for a key."""

    size: int
    etag: str
    mtime: float | None
    part_size: int | None


@dataclass
class Records:
    entries: dict[str, Recorded] = field(default_factory=dict)
    manifests: int = 0
    last_sync: ReportName | None = None
    note: str = ""


def load_records(store: ObjectStore, settings: RestoreSettings) -> Records:
    """Every manifest under the report prefix, oldest first, so the newest line for a key wins.

    Manifest keys are listed beside the reports, so no report needs reading. Only keys of the
    selected folders are kept. Without read access to the reports the restore still works; it then
    checks downloads against the listing's ETag and dates files by LastModified."""
    records = Records()
    try:
        listed = sorted(o.key for o in store.list_objects(settings.report_prefix))
    except StoreError as exc:
        if exc.transport:
            raise
        records.note = f"run reports not readable, so files get S3's LastModified as mtime: {exc}"
        return records
    wanted = tuple(f"{settings.media_prefix}{folder}/" for folder in settings.folders)
    for key in listed:
        if key.endswith(".json"):
            name = parse_report_key(key)
            if (
                name is not None
                and name.status == "ok"
                and (not records.last_sync or name.started >= records.last_sync.started)
            ):
                records.last_sync = name
            continue
        if not key.endswith(".manifest.jsonl.gz"):
            continue
        try:
            lines = read_manifest(store.get_bytes(key))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            records.note = f"manifest {key} is unreadable and was skipped ({exc.__class__.__name__})"
            continue
        records.manifests += 1
        for line in lines:
            obj_key = str(line.get("key", ""))
            if not obj_key.startswith(wanted):
                continue
            mtime = line.get("mtime")
            records.entries[obj_key] = Recorded(
                size=int(line.get("size", -1)),
                etag=str(line.get("etag", "")).strip('"').lower(),
                mtime=float(mtime) if mtime is not None else None,
                part_size=int(line["part_size"]) if line.get("part_size") else None,
            )
    return records


# -- the target directory --------------------------------------------------------------------------


def check_target(settings: RestoreSettings) -> bool:
    """Refuse a target that would mix a restore into unrelated files; True when resuming.

    Nothing is written here: a refused restore leaves the target as it was."""
    target = settings.target
    if target.is_symlink() and not target.exists():
        raise ConfigError(f"restore target {target} is a broken symlink")
    if not target.exists():
        return False
    if not target.is_dir():
        raise ConfigError(f"restore target {target} is not a directory")
    try:
        entries = sorted(e for e in os.listdir(target) if e not in _IGNORED_IN_EMPTY_TARGET)
    except OSError as exc:
        raise ConfigError(f"restore target {target} cannot be read: {exc.strerror or exc}") from None
    marker = target / PROGRESS_MARKER
    if PROGRESS_MARKER in entries:
        try:
            previous = json.loads(marker.read_text("utf-8"))
        except (OSError, ValueError):
            previous = {}
        same = previous.get("bucket") == settings.s3.bucket and previous.get("media_prefix") == settings.media_prefix
        if same or settings.force:
            return True
        where = f"s3://{previous.get('bucket', '?')}/{previous.get('media_prefix', '')}"
        raise ConfigError(
            f"restore target {target} holds an unfinished restore from {where}; pass --force to restore into it anyway"
        )
    if entries and not settings.force:
        shown = ", ".join(printable(e) for e in entries[:3]) + (", …" if len(entries) > 3 else "")
        raise ConfigError(
            f"restore target {target} is not empty ({len(entries)} entries: {shown}); "
            "choose an empty directory or pass --force to restore into it"
        )
    return False


def write_progress_marker(settings: RestoreSettings, started: float) -> None:
    """Says "a restore is under way here", so re-running after an interruption needs no --force."""
    marker = settings.target / PROGRESS_MARKER
    body = {
        "bucket": settings.s3.bucket,
        "media_prefix": settings.media_prefix,
        "folders": list(settings.folders),
        "started_at": utc_iso(started),
        "engine_version": __version__,
    }
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", "utf-8")
    os.replace(tmp, marker)


def remove_stale_temp_files(target: Path) -> int:
    """Temporary files of a run that was killed (SIGKILL, node loss) before it could remove them."""
    removed = 0
    for dirpath, _, files in os.walk(target):
        for name in files:
            if _TEMP_NAME.match(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def ensure_immich_markers(target: Path) -> list[str]:
    """Immich refuses to start unless every one of its folders holds `.immich`, restored or not."""
    created = []
    for folder in IMMICH_FOLDERS:
        marker = target / folder / IMMICH_MARKER
        if os.path.lexists(marker):
            continue
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        created.append(folder)
    return created


def seconds_to_ns(seconds: float) -> int:
    """The nanosecond nearest a manifest's float mtime; `seconds * 1e9` would lose another 256 ns."""
    whole = math.floor(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def local_path(target: Path, rel: str) -> Path:
    """Where a key goes. A key that could escape the target or collapse onto another is refused."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ValueError("the key is not a safe relative path (empty, '.' or '..' component)")
    return target.joinpath(*parts)


# -- archived objects ------------------------------------------------------------------------------


def restore_state(header: str) -> str:
    """`restored`, `in-progress`, or empty when no restore was ever requested (or it expired)."""
    match = _RESTORE_STATE.search(header or "")
    if not match:
        return ""
    return "in-progress" if match[1].lower() == "true" else "restored"


def effective_tier(storage_class: str, tier: str) -> str:
    """DEEP_ARCHIVE has no Expedited retrieval; Standard is the fastest it offers."""
    return "Standard" if storage_class == "DEEP_ARCHIVE" and tier == "Expedited" else tier


def restore_estimate(storage_class: str, tier: str) -> str:
    tier = effective_tier(storage_class, tier)
    return _ESTIMATES.get((storage_class, tier)) or _ESTIMATES.get((storage_class, "Standard"), "some hours")


# -- verification ----------------------------------------------------------------------------------


class StreamingEtag:
    """The ETag S3 computes, over bytes as they stream past: MD5, or MD5 of the parts' MD5s + `-N`."""

    def __init__(self, part_size: int | None) -> None:
        self.part_size = part_size
        self._current = hashlib.md5(usedforsecurity=False)
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, chunk: bytes) -> None:
        if self.part_size is None:
            self._current.update(chunk)
            return
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._in_part)
            self._current.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._in_part = 0

    def hexdigest(self) -> str:
        if self.part_size is None:
            return self._current.hexdigest()
        digests = self._digests + ([self._current.digest()] if self._in_part else [])
        return multipart_etag(digests)


def _md5_comparable(head_encryption: str) -> bool:
    """An SSE-KMS object's ETag is not an MD5 of its bytes; its download is checked by size only."""
    return not head_encryption.startswith("aws:kms")


# -- one object ------------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _Retry(Exception):
    """This attempt's bytes are not the object's; another attempt may get them right."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ObjectRestorer:
    """Brings back one object at a time; shared by all workers (it holds no per-object state)."""

    def __init__(self, settings: RestoreSettings, store: ObjectStore, records: Records) -> None:
        self.settings = settings
        self.store = store
        self.records = records.entries
        self.cancel = threading.Event()

    def restore(self, obj: RemoteObject) -> FileResult:
        rel = obj.key[len(self.settings.media_prefix) :]
        result = _ResultFactory(obj, rel)
        if self.cancel.is_set():
            return result(Fate.CANCELLED)
        try:
            path = local_path(self.settings.target, rel)
        except ValueError as exc:
            return result(Fate.FAILED, str(exc), kind="unsafe-key")
        recorded = self.records.get(obj.key)
        if recorded is not None and (recorded.size != obj.size or recorded.etag != obj.etag):
            return result(
                Fate.FAILED,
                f"changed in S3 after the backup wrote it (size {obj.size}, ETag {obj.etag}; "
                f"the manifest recorded {recorded.size}, {recorded.etag}): not restored",
                kind="changed-in-s3",
            )
        try:
            return self._restore(obj, path, recorded, result)
        except _Cancelled:
            return result(Fate.CANCELLED)
        except StoreError as exc:
            return result(Fate.FAILED, str(exc), kind="s3-error", s3_failure=True)
        except OSError as exc:
            detail = f"{exc.strerror or exc}" + (f": {printable(str(exc.filename))}" if exc.filename else "")
            return result(Fate.FAILED, detail, kind="local-error", fatal=exc.errno in _LOCAL_FATAL)
        except Exception as exc:  # one odd object must not take the pool down with it
            return result(Fate.FAILED, f"{exc.__class__.__name__}: {exc}", kind="error")

    def _restore(self, obj: RemoteObject, path: Path, recorded: Recorded | None, result: _ResultFactory) -> FileResult:
        try:
            st: os.stat_result | None = path.lstat()
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            return result(Fate.CONFLICT, "a file is in the way of one of its parent directories", kind="conflict")
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                return result(Fate.CONFLICT, "a directory is in the way", kind="conflict")
            if stat.S_ISREG(st.st_mode) and st.st_size == obj.size and self._same_content(path, obj, recorded):
                return result(Fate.ALREADY_THERE)
            if not self.settings.overwrite:
                what = f"{st.st_size:,} bytes here" if stat.S_ISREG(st.st_mode) else "not a regular file here"
                return result(
                    Fate.CONFLICT,
                    f"differs from the backup ({what}, {obj.size:,} in S3); --overwrite replaces it",
                    kind="conflict",
                )
        if obj.storage_class in ARCHIVED_CLASSES:
            pending = self._archived(obj, obj.storage_class, result)
            if pending is not None:
                return pending
        return self._download(obj, path, recorded, result)

    def _part_size(self, obj: RemoteObject, recorded: Recorded | None) -> int:
        """The recorded part size, else part 1's size from HEAD (allowed by s3:GetObject)."""
        if recorded is not None and recorded.part_size:
            return recorded.part_size
        parts = etag_part_count(obj.etag)
        if parts <= 1:
            return max(obj.size, 1)
        part_size = self.store.head_object(obj.key, part_number=1).size
        if part_size <= 0 or -(-obj.size // part_size) != parts:
            raise StoreError(f"cannot tell the part size of s3://{self.store.bucket}/{obj.key}", code="PartSize")
        return part_size

    def _same_content(self, path: Path, obj: RemoteObject, recorded: Recorded | None) -> bool:
        if is_multipart_etag(obj.etag):
            if not etag_part_count(obj.etag):
                return False
            return file_matches_etag(path, obj.etag, obj.size, (self._part_size(obj, recorded),))
        return file_matches_etag(path, obj.etag, obj.size, ())

    def _archived(self, obj: RemoteObject, storage_class: str, result: _ResultFactory) -> FileResult | None:
        """None when a restored copy can be downloaded now; otherwise the pending result."""
        tier = effective_tier(storage_class, self.settings.restore_tier)
        estimate = restore_estimate(storage_class, tier)
        if storage_class in ARCHIVED_CLASSES:
            state = restore_state(self.store.head_object(obj.key).restore)
            if state == "restored":
                return None
            if state == "in-progress":
                return result(Fate.PENDING, pending_state="in-progress", estimate=estimate)
        days = None if storage_class == "INTELLIGENT_TIERING" else self.settings.restore_days
        try:
            started = self.store.restore_object(obj.key, days=days, tier=tier)
        except StoreError as exc:
            if exc.code == "RestoreAlreadyInProgress":
                return result(Fate.PENDING, pending_state="in-progress", estimate=estimate)
            raise
        if not started:
            return None
        return result(Fate.PENDING, pending_state="requested", estimate=estimate)

    def _download(self, obj: RemoteObject, path: Path, recorded: Recorded | None, result: _ResultFactory) -> FileResult:
        multipart = is_multipart_etag(obj.etag) and etag_part_count(obj.etag) > 0
        part_size = self._part_size(obj, recorded) if multipart else None
        mtime = recorded.mtime if recorded is not None and recorded.mtime is not None else obj.last_modified
        path.parent.mkdir(parents=True, exist_ok=True)
        problem, s3_failure = "", False
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if self._fetch(obj, path, part_size, mtime):
                    return result(Fate.DOWNLOADED, attempts=attempt)
                return result(
                    Fate.CONFLICT, "a local file appeared during the restore; --overwrite replaces it", kind="conflict"
                )
            except _Retry as exc:
                problem, s3_failure = exc.message, False
            except StoreError as exc:
                if exc.code == "InvalidObjectState":
                    # Archived after all (an INTELLIGENT_TIERING archive tier, or a restored copy expired).
                    pending = self._archived(obj, obj.storage_class, result)
                    if pending is not None:
                        return pending
                    problem, s3_failure = str(exc), True
                    continue
                if exc.code in ("PreconditionFailed", "412"):
                    return result(
                        Fate.FAILED, "replaced in S3 during the restore; run the restore again", kind="changed-in-s3"
                    )
                if exc.code in ("NoSuchKey", "404"):
                    return result(Fate.FAILED, "deleted from S3 during the restore", kind="s3-error")
                if not exc.transport:
                    raise
                problem, s3_failure = str(exc), True
        return result(
            Fate.FAILED,
            f"{problem} (after {ATTEMPTS} attempts)",
            kind="s3-error" if s3_failure else "verify-failed",
            s3_failure=s3_failure,
            attempts=ATTEMPTS,
        )

    def _fetch(self, obj: RemoteObject, path: Path, part_size: int | None, mtime: float) -> bool:
        """One attempt: stream to a temporary file, verify, date it, rename it into place.

        False when a file appeared at the destination meanwhile (it is left alone). Raises _Retry when
        the bytes are wrong; the temporary file never survives a failed attempt."""
        tmp = path.parent / f".immich-sync-{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh, self.store.open_object(obj.key, if_match=obj.etag) as reader:
                digest = StreamingEtag(part_size)
                written = 0
                for chunk in reader.chunks(CHUNK):
                    if self.cancel.is_set():
                        raise _Cancelled
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())  # the bytes are on disk before a name points at them
            head = reader.head
            if written != obj.size:
                raise _Retry(f"size does not match: got {written:,} bytes, expected {obj.size:,}")
            if head.etag and head.etag != obj.etag:
                raise _Retry(f"S3 answered with ETag {head.etag}, which does not match the listed {obj.etag}")
            if _md5_comparable(head.encryption) and (got := digest.hexdigest()) != obj.etag:
                raise _Retry(f"content does not match the ETag: got {got}, expected {obj.etag}")
            ns = seconds_to_ns(mtime)
            os.utime(tmp, ns=(ns, ns))
            if not self.settings.overwrite and os.path.lexists(path):
                return False
            os.replace(tmp, path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@dataclass(frozen=True, slots=True)
class _ResultFactory:
    obj: RemoteObject
    rel: str

    def __call__(self, fate: Fate, detail: str = "", **extra: Any) -> FileResult:
        return FileResult(
            key=self.obj.key,
            path=printable(self.rel),
            folder=self.rel.split("/", 1)[0],
            fate=fate,
            size=self.obj.size,
            detail=detail,
            storage_class=self.obj.storage_class,
            **extra,
        )


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class _State:
    report: RestoreReport
    lock: threading.Lock = field(default_factory=threading.Lock)
    s3_failures: int = 0  # consecutive; reset by any success
    abort_reason: str = ""


def _check_source(store: ObjectStore, settings: RestoreSettings) -> None:
    """One LIST and one HEAD up front: wrong credentials, a missing bucket, an empty prefix or keys that
    may list but not read (the writer's) stop the restore before anything is written to the target."""
    where = f"s3://{settings.s3.bucket}/{settings.media_prefix}"
    first: list[RemoteObject] = []
    try:
        pages = store.list_pages(settings.media_prefix)
        first = next(pages, [])
        pages.close()
        if first:
            store.head_object(first[0].key)
    except StoreError as exc:
        if exc.code in ("403", "AccessDenied") and first:
            raise SetupError(
                f"{where}: access denied reading objects: these credentials may list but not read "
                "(use the restorer's, with s3:GetObject)",
                code=exc.code,
            ) from None
        raise SetupError(str(exc), code=exc.code, transport=exc.transport) from None
    if not first:
        raise ConfigError(f"nothing to restore: {where} holds no objects (check BUCKET_NAME and MEDIA_PREFIX)")


def run_restore(
    settings: RestoreSettings,
    store: ObjectStore,
    *,
    observer: RestoreObserver | None = None,
    clock: Callable[[], float] = time.time,
) -> RestoreReport:
    """Restore the selected folders into the target and return the finished report.

    Raises ConfigError or SetupError, with nothing written, when the target or the bucket cannot be
    used; every later problem is counted in the report instead."""
    observer = observer or _NullObserver()
    started = clock()
    resumed = check_target(settings)
    _check_source(store, settings)
    report = RestoreReport(
        engine_version=__version__,
        started_at=utc_iso(started),
        target=str(settings.target.absolute()),
        bucket=settings.s3.bucket,
        media_prefix=settings.media_prefix,
        report_prefix=settings.report_prefix,
        folders=list(settings.folders),
        resumed=resumed,
        overwrite=settings.overwrite,
        restore_days=settings.restore_days,
        restore_tier=settings.restore_tier,
        per_folder={folder: RestoreStats() for folder in settings.folders},
    )
    try:
        settings.target.mkdir(parents=True, exist_ok=True)
        write_progress_marker(settings, started)
    except OSError as exc:
        raise ConfigError(f"cannot write to restore target {settings.target}: {exc.strerror or exc}") from None
    if resumed:
        report.temp_files_removed = remove_stale_temp_files(settings.target)

    records = load_records(store, settings)
    report.manifests, report.recorded, report.records_note = records.manifests, len(records.entries), records.note
    if records.last_sync is not None:
        report.last_sync = utc_iso(records.last_sync.started)
        report.last_sync_report = records.last_sync.key

    state = _State(report)
    restorer = ObjectRestorer(settings, store, records)
    _restore_all(settings, store, restorer, state, observer)
    _finish(settings, store, state, started, clock)
    return report


def _restore_all(
    settings: RestoreSettings,
    store: ObjectStore,
    restorer: ObjectRestorer,
    state: _State,
    observer: RestoreObserver,
) -> None:
    """List folder by folder and keep a bounded pool busy; listing pages ahead in its own thread."""
    in_flight = settings.workers * 4
    slots = threading.BoundedSemaphore(in_flight)

    def on_done(future: Future[FileResult]) -> None:
        try:
            result = future.result()
        finally:
            slots.release()
        _record(state, result)
        observer.finished(result)
        if state.abort_reason:
            restorer.cancel.set()

    try:
        with ThreadPoolExecutor(settings.workers, thread_name_prefix="restore") as pool:
            try:
                for folder in settings.folders:
                    listing = store.prefetch(f"{settings.media_prefix}{folder}/")
                    try:
                        for obj in listing:
                            if state.abort_reason:
                                break
                            if obj.key.endswith("/"):
                                continue  # a "folder" placeholder written by a console, not a file
                            _count_listed(state, folder, obj)
                            observer.listed(obj)
                            slots.acquire()
                            pool.submit(restorer.restore, obj).add_done_callback(on_done)
                    finally:
                        listing.close()
                    if state.abort_reason:
                        break
                for _ in range(in_flight):  # wait here, where an interrupt can still stop the workers
                    slots.acquire()
            except StoreError as exc:
                state.abort_reason = f"listing failed: {exc}"
            except KeyboardInterrupt:
                state.abort_reason = "interrupted (SIGINT/SIGTERM): no partial file was left; run again to finish"
            if state.abort_reason:
                restorer.cancel.set()
    except BaseException:
        restorer.cancel.set()
        raise


def _count_listed(state: _State, folder: str, obj: RemoteObject) -> None:
    with state.lock:
        stats = state.report.per_folder.setdefault(folder, RestoreStats())
        stats.objects += 1
        stats.bytes += obj.size


def _record(state: _State, result: FileResult) -> None:
    report = state.report
    with state.lock:
        if result.fate is Fate.CANCELLED:
            return
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
            if len(report.problems) < MAX_LISTED:
                report.problems.append({"path": result.path, "kind": result.kind, "detail": result.detail})
            else:
                report.problems_truncated += 1
        if result.fatal and not state.abort_reason:
            state.abort_reason = f"the restore target cannot take more files: {result.detail}"
        if result.s3_failure and result.fate is Fate.FAILED:
            state.s3_failures += 1
            if state.s3_failures >= ABORT_AFTER_S3_FAILURES and not state.abort_reason:
                state.abort_reason = f"S3 keeps failing ({state.s3_failures} files in a row): {result.detail}"
        elif result.fate in (Fate.DOWNLOADED, Fate.ALREADY_THERE, Fate.PENDING):
            state.s3_failures = 0


def _finish(
    settings: RestoreSettings, store: ObjectStore, state: _State, started: float, clock: Callable[[], float]
) -> None:
    report = state.report
    totals = RestoreStats()
    for stats in report.per_folder.values():
        totals.add(stats)
    report.totals = totals
    if state.abort_reason:
        report.status, report.exit_code, report.error = "aborted", EXIT_ABORTED, state.abort_reason
    else:
        try:
            report.markers_created = ensure_immich_markers(settings.target)
        except OSError as exc:
            report.problems.append({"path": ".immich", "kind": "local-error", "detail": exc.strerror or str(exc)})
            report.failed_by_kind["local-error"] = report.failed_by_kind.get("local-error", 0) + 1
            totals.failed += 1
        if totals.failed or totals.conflicts:
            report.status, report.exit_code = "partial", EXIT_PARTIAL
        elif totals.pending:
            report.status, report.exit_code = "pending", EXIT_PENDING
        else:
            report.status, report.exit_code = "ok", EXIT_OK
    if report.exit_code == EXIT_OK:
        with contextlib.suppress(FileNotFoundError):
            (settings.target / PROGRESS_MARKER).unlink()
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
