"""Bring back one object: the counterpart of `upload.py`, so the local file only ever holds S3's bytes.

The object streams into a temporary file beside its destination (memory stays at one chunk per worker),
is checked against what the backup recorded (size, and the ETag: an MD5, or the multipart ETag computed
with the recorded part size), gets the file's original mtime and only then is renamed into place. So an
interrupted restore never leaves a partial file under a real name, and a download whose bytes are wrong
is tried again (bounded). A local file that is already there with the right bytes is left alone; one
that differs is never replaced without `--overwrite`. The GET is conditional on the listed ETag, so the
bytes can only be the object that was listed.

Objects in GLACIER or DEEP_ARCHIVE cannot be read until S3 has restored them, which takes hours: the
restore is requested and the object reported as pending with AWS's estimate; a later run downloads it.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync_engine.config import RestoreSettings
from sync_engine.errors import StoreError
from sync_engine.etag import StreamingEtag, etag_part_count, file_matches_etag, is_multipart_etag
from sync_engine.manifests import Recorded
from sync_engine.models import Fate, FileResult, RemoteObject
from sync_engine.scan import printable
from sync_engine.store import ObjectStore

# Short and independent of the file's own name, so a 255-byte file name still gets a temporary file.
_TEMP_NAME = re.compile(r"^\.immich-sync-[0-9a-f]{16}\.tmp$")

ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
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
_LOCAL_FATAL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_RESTORE_STATE = re.compile(r'ongoing-request\s*=\s*"?(true|false)"?', re.IGNORECASE)


# -- paths and times -------------------------------------------------------------------------------


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
    """How long AWS says a restore of this class takes with this tier."""
    tier = effective_tier(storage_class, tier)
    return _ESTIMATES.get((storage_class, tier)) or _ESTIMATES.get((storage_class, "Standard"), "some hours")


# -- verification ----------------------------------------------------------------------------------


def _md5_comparable(head_encryption: str) -> bool:
    """An SSE-KMS object's ETag is not an MD5 of its bytes; its download is checked by size only."""
    return not head_encryption.startswith("aws:kms")


# -- one object ------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """The run is stopping: the temporary file goes, nothing is renamed into place."""


class _Retry(Exception):
    """This attempt's bytes are not the object's; another attempt may get them right."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Downloader:
    """Brings back one object at a time; shared by all workers (it holds no per-object state)."""

    def __init__(self, settings: RestoreSettings, store: ObjectStore, records: Mapping[str, Recorded]) -> None:
        self.settings = settings
        self.store = store
        self.records = records  # what the backup's manifests say each key holds
        self.cancel = threading.Event()

    def restore(self, obj: RemoteObject) -> FileResult:
        """Never raises: whatever goes wrong becomes this object's result, so no object goes uncounted."""
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
    """Makes one object's result; every fate of an object shares its key, path, folder and size."""

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
