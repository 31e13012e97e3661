"""Bring back one object: the counterpart of `upload.py`, so the local file only ever holds S3's bytes.

The object streams into a temporary file beside its destination (memory stays at one chunk per worker),
is checked against what the backup recorded (size, and the MD5 the backup sent: a plain MD5, or the
multipart ETag computed with the recorded part size), gets the file's original mtime and only then is
renamed into place. So an interrupted restore never leaves a partial file under a real name, and a
download whose bytes are wrong is tried again (bounded). A local file that is already there with the
right bytes is left alone; one that differs is never replaced without `--overwrite`. The GET is
conditional on the listed ETag, so the bytes can only be the object that was listed.

What the bytes are checked against: the manifest's MD5 when a manifest describes the object, else the
listing's ETag. A listing ETag that is neither the recorded MD5 nor the `s3_etag` the backup recorded
means the object changed in S3, unless the object is SSE-KMS or DSSE-KMS encrypted, whose ETags are
not MD5s: that is read from the GET's `x-amz-server-side-encryption` header (never guessed from the
ETag's shape), and such an object is downloaded and its MD5 compared with the manifest's. An SSE-KMS
object no manifest describes can only be checked by size; those are counted (`size_checked_only`).

Nothing is written through a symbolic link: directories are opened from the target's descriptor one
component at a time with O_NOFOLLOW, and files are created with O_EXCL|O_NOFOLLOW in them (see
`target.py`); a link in the way fails that one file.

Objects in GLACIER or DEEP_ARCHIVE cannot be read until S3 has restored them, which takes hours: the
restore is requested and the object reported as pending with AWS's estimate; a later run downloads it.

A listed version (`--as-of`) is read by its VersionId, for HEAD, GET and RestoreObject alike: no later
write can change those bytes, so the GET is not conditional. A key whose newest record is in an
untrusted manifest (`disputed`) is judged by the older, trusted records; one that only such a manifest
vouches for is not restored (`untrusted-record`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_engine.config import RestoreSettings
from sync_engine.errors import StoreError
from sync_engine.etag import StreamingEtag, etag_part_count, file_matches_etag, is_kms, is_multipart_etag
from sync_engine.manifests import Recorded
from sync_engine.models import Fate, FileResult, RemoteObject
from sync_engine.scan import printable
from sync_engine.store import ObjectStore, is_outage
from sync_engine.target import NEW_FILE_FLAGS, Blocked, open_dirs, temp_name
from sync_engine.versions import ObjectVersion

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


def local_parts(rel: str) -> list[str]:
    """The path components a key becomes. A key that could escape the target or collapse onto another
    is refused."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ValueError("the key is not a safe relative path (empty, '.' or '..' component)")
    return parts


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


def _version(obj: RemoteObject) -> str | None:
    """The VersionId to read, for an object listed as one version of a versioned key."""
    return obj.get_version if isinstance(obj, ObjectVersion) else None


def _matches_record(obj: RemoteObject, recorded: Recorded) -> bool:
    return obj.etag == recorded.etag or bool(recorded.s3_etag and obj.etag == recorded.s3_etag)


def _changed_detail(obj: RemoteObject, recorded: Recorded) -> str:
    detail = (
        f"changed in S3 after the backup wrote it (size {obj.size}, ETag {obj.etag}; "
        f"the manifest recorded {recorded.size}, {recorded.etag}): not restored"
    )
    if not recorded.verified:
        detail += "; its last upload was not confirmed by S3 (S3 answered another ETag than the bytes sent)"
    return detail


# -- one object ------------------------------------------------------------------------------------


class _Cancelled(Exception):
    """The run is stopping: the temporary file goes, nothing is renamed into place."""


class _Retry(Exception):
    """This attempt's bytes are not the object's; another attempt may get them right."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Changed(Exception):
    """S3 holds, consistently, other bytes than the backup recorded: another attempt would not help."""

    def __init__(self, obj: RemoteObject, recorded: Recorded) -> None:
        super().__init__(_changed_detail(obj, recorded))
        self.detail = str(self)
        self.key = obj.key


class Downloader:
    """Brings back one object at a time; shared by all workers (it holds no per-object state).

    Every path is resolved from `root_fd`, the target directory's descriptor, without following links."""

    def __init__(
        self,
        settings: RestoreSettings,
        store: ObjectStore,
        records: Mapping[str, Recorded],
        root_fd: int,
        *,
        disputed: Mapping[str, str] | None = None,
        why: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.records = records  # what the backup's trusted manifests say each key holds
        self.disputed = disputed or {}  # key -> the untrusted manifest that names it
        self.why = why or {}  # untrusted manifest -> why it is not trusted
        self.root_fd = root_fd
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self.size_checked_only = 0  # SSE-KMS objects no manifest describes: only their size was checked

    def restore(self, obj: RemoteObject) -> FileResult:
        """Never raises: whatever goes wrong becomes this object's result, so no object goes uncounted."""
        rel = obj.key[len(self.settings.media_prefix) :]
        result = _ResultFactory(obj, rel)
        if self.cancel.is_set():
            return result(Fate.CANCELLED)
        try:
            parts = local_parts(rel)
        except ValueError as exc:
            return result(Fate.FAILED, str(exc), kind="unsafe-key")
        recorded = self.records.get(obj.key)
        if recorded is None and obj.key in self.disputed:
            return result(Fate.FAILED, self._only_untrusted(obj.key), kind="untrusted-record")
        if recorded is not None and recorded.size != obj.size:
            return result(Fate.FAILED, self._disputed(obj.key, _changed_detail(obj, recorded)), kind="changed-in-s3")
        try:
            return self._restore(obj, parts, recorded, result)
        except _Cancelled:
            return result(Fate.CANCELLED)
        except _Changed as exc:
            return result(Fate.FAILED, self._disputed(exc.key, exc.detail), kind="changed-in-s3")
        except Blocked as exc:
            if exc.link:
                return result(Fate.FAILED, f"{exc.strerror}: not followed", kind="local-error")
            return result(Fate.CONFLICT, "a file is in the way of one of its parent directories", kind="conflict")
        except StoreError as exc:
            return result(Fate.FAILED, str(exc), kind="s3-error", s3_failure=True, s3_outage=is_outage(exc))
        except OSError as exc:
            detail = f"{exc.strerror or exc}" + (f": {printable(str(exc.filename))}" if exc.filename else "")
            return result(Fate.FAILED, detail, kind="local-error", fatal=exc.errno in _LOCAL_FATAL)
        except Exception as exc:  # one odd object must not take the pool down with it
            return result(Fate.FAILED, f"{exc.__class__.__name__}: {exc}", kind="error")

    def _only_untrusted(self, key: str) -> str:
        manifest = self.disputed[key]
        return (
            f"only manifest {printable(manifest)} records it, and that manifest is not trusted "
            f"({self.why.get(manifest, 'see problems')}): not restored; `immich-sync restore --as-of` a time "
            "before it was written restores the bucket as it was"
        )

    def _disputed(self, key: str, detail: str) -> str:
        manifest = self.disputed.get(key)
        if manifest is None:
            return detail
        return (
            f"{detail}; a newer record of it is in manifest {printable(manifest)}, which is not trusted "
            f"({self.why.get(manifest, 'see problems')})"
        )

    def _restore(
        self, obj: RemoteObject, parts: list[str], recorded: Recorded | None, result: _ResultFactory
    ) -> FileResult:
        try:
            parent: int | None = open_dirs(self.root_fd, parts[:-1], create=False)
        except FileNotFoundError:
            parent = None
        try:
            name = parts[-1]
            st: os.stat_result | None = None
            if parent is not None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    return result(Fate.CONFLICT, "a directory is in the way", kind="conflict")
                if stat.S_ISREG(st.st_mode) and st.st_size == obj.size:
                    if self._same_content(parent, name, obj, recorded):  # type: ignore[arg-type]
                        return result(Fate.ALREADY_THERE)
                    head = self.store.head_object(obj.key, version_id=_version(obj)) if recorded is None else None
                    if head is not None and is_kms(head.encryption):
                        # Its ETag is no MD5 and none was recorded: a download could not be checked
                        # better than this file is, by size (a resumed restore of such objects).
                        self._size_only()
                        return result(Fate.ALREADY_THERE)
                if not self.settings.overwrite:
                    what = f"{st.st_size:,} bytes here" if stat.S_ISREG(st.st_mode) else "not a regular file here"
                    return result(
                        Fate.CONFLICT,
                        f"differs from the backup ({what}, {obj.size:,} in S3); --overwrite replaces it",
                        kind="conflict",
                    )
            if obj.storage_class in ARCHIVED_CLASSES:
                pending = self._archived(obj, obj.storage_class, recorded, result)
                if pending is not None:
                    return pending
            if parent is None:
                parent = open_dirs(self.root_fd, parts[:-1], create=True)
            return self._download(obj, parent, name, recorded, result)
        finally:
            if parent is not None:
                os.close(parent)

    def _part_size(self, obj: RemoteObject, recorded: Recorded | None) -> int:
        """The recorded part size, else part 1's size from HEAD (allowed by s3:GetObject)."""
        if recorded is not None and recorded.part_size:
            return recorded.part_size
        parts = etag_part_count(recorded.etag if recorded is not None else obj.etag)
        if parts <= 1:
            return max(obj.size, 1)
        part_size = self.store.head_object(obj.key, part_number=1, version_id=_version(obj)).size
        if part_size <= 0 or -(-obj.size // part_size) != parts:
            raise StoreError(f"cannot tell the part size of s3://{self.store.bucket}/{obj.key}", code="PartSize")
        return part_size

    def _same_content(self, parent: int, name: str, obj: RemoteObject, recorded: Recorded | None) -> bool:
        """The local file holds the backup's bytes: the recorded MD5 when there is one (it holds whatever
        the encryption), else the listing's ETag."""
        expected = recorded.etag if recorded is not None else obj.etag
        if is_multipart_etag(expected) and not etag_part_count(expected):
            return False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            if is_multipart_etag(expected):
                return file_matches_etag(fd, expected, obj.size, (self._part_size(obj, recorded),))
            return file_matches_etag(fd, expected, obj.size, ())
        finally:
            os.close(fd)

    def _archived(
        self, obj: RemoteObject, storage_class: str, recorded: Recorded | None, result: _ResultFactory
    ) -> FileResult | None:
        """None when a restored copy can be downloaded now; otherwise the pending result. An object that
        changed in S3 is reported before S3 is asked to restore it (the HEAD tells its encryption)."""
        tier = effective_tier(storage_class, self.settings.restore_tier)
        estimate = restore_estimate(storage_class, tier)
        if storage_class in ARCHIVED_CLASSES:
            head = self.store.head_object(obj.key, version_id=_version(obj))
            if recorded is not None and not _matches_record(obj, recorded) and not is_kms(head.encryption):
                raise _Changed(obj, recorded)
            state = restore_state(head.restore)
            if state == "restored":
                return None
            if state == "in-progress":
                return result(Fate.PENDING, pending_state="in-progress", estimate=estimate)
        days = None if storage_class == "INTELLIGENT_TIERING" else self.settings.restore_days
        try:
            started = self.store.restore_object(obj.key, days=days, tier=tier, version_id=_version(obj))
        except StoreError as exc:
            if exc.code == "RestoreAlreadyInProgress":
                return result(Fate.PENDING, pending_state="in-progress", estimate=estimate)
            raise
        if not started:
            return None
        return result(Fate.PENDING, pending_state="requested", estimate=estimate)

    def _download(
        self, obj: RemoteObject, parent: int, name: str, recorded: Recorded | None, result: _ResultFactory
    ) -> FileResult:
        expected = recorded.etag if recorded is not None else obj.etag
        multipart = is_multipart_etag(expected) and etag_part_count(expected) > 0
        part_size = self._part_size(obj, recorded) if multipart else None
        mtime = recorded.mtime if recorded is not None and recorded.mtime is not None else obj.last_modified
        problem, s3_failure, s3_outage = "", False, False
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if self._fetch(obj, parent, name, recorded, part_size, mtime):
                    return result(Fate.DOWNLOADED, attempts=attempt)
                return result(
                    Fate.CONFLICT, "a local file appeared during the restore; --overwrite replaces it", kind="conflict"
                )
            except _Retry as exc:
                problem, s3_failure, s3_outage = exc.message, False, False
            except StoreError as exc:
                if exc.code == "InvalidObjectState":
                    # Archived after all (an INTELLIGENT_TIERING archive tier, or a restored copy expired).
                    pending = self._archived(obj, obj.storage_class, recorded, result)
                    if pending is not None:
                        return pending
                    problem, s3_failure, s3_outage = str(exc), True, False
                    continue
                if exc.code in ("PreconditionFailed", "412"):
                    return result(
                        Fate.FAILED, "replaced in S3 during the restore; run the restore again", kind="changed-in-s3"
                    )
                if exc.code in ("NoSuchKey", "404"):
                    return result(Fate.FAILED, "deleted from S3 during the restore", kind="s3-error")
                if not exc.transport:
                    raise
                problem, s3_failure, s3_outage = str(exc), True, is_outage(exc)
        return result(
            Fate.FAILED,
            f"{problem} (after {ATTEMPTS} attempts)",
            kind="s3-error" if s3_failure else "verify-failed",
            s3_failure=s3_failure,
            s3_outage=s3_outage,
            attempts=ATTEMPTS,
        )

    def _fetch(
        self,
        obj: RemoteObject,
        parent: int,
        name: str,
        recorded: Recorded | None,
        part_size: int | None,
        mtime: float,
    ) -> bool:
        """One attempt: stream to a temporary file in `parent`, verify, date it, rename it into place.

        False when a file appeared at the destination meanwhile (it is left alone). Raises _Retry when
        the bytes are wrong, _Changed when S3 holds other bytes than the backup recorded; the temporary
        file never survives a failed attempt."""
        tmp = temp_name()
        fd = os.open(tmp, NEW_FILE_FLAGS, 0o666, dir_fd=parent)
        try:
            version = _version(obj)
            with (
                os.fdopen(fd, "wb") as fh,
                self.store.open_object(obj.key, if_match=None if version else obj.etag, version_id=version) as reader,
            ):
                head = reader.head
                kms = is_kms(head.encryption)
                if recorded is not None and not kms and not _matches_record(obj, recorded):
                    raise _Changed(obj, recorded)  # an MD5 ETag, and not the one recorded: the body is not needed
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
                if written != obj.size:
                    raise _Retry(f"size does not match: got {written:,} bytes, expected {obj.size:,}")
                if head.etag and head.etag != obj.etag:
                    raise _Retry(f"S3 answered with ETag {head.etag}, which does not match the listed {obj.etag}")
                size_only = self._check_content(obj, recorded, kms, digest.hexdigest())
                ns = seconds_to_ns(mtime)
                os.utime(fh.fileno(), ns=(ns, ns))
            with contextlib.suppress(FileNotFoundError):
                os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not self.settings.overwrite:
                    return False
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            if size_only:
                self._size_only()
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)

    def _size_only(self) -> None:
        with self._lock:
            self.size_checked_only += 1

    @staticmethod
    def _check_content(obj: RemoteObject, recorded: Recorded | None, kms: bool, got: str) -> bool:
        """True when only the size could be checked (SSE-KMS, no manifest record)."""
        if recorded is None:
            if kms:
                return True
            if got != obj.etag:
                raise _Retry(f"content does not match the ETag: got {got}, expected {obj.etag}")
            return False
        if got == recorded.etag:
            return False
        if not kms and got == obj.etag:
            raise _Changed(obj, recorded)  # S3's bytes agree with its own ETag: not the ones the backup sent
        raise _Retry(f"content does not match the ETag the manifest recorded: got {got}, expected {recorded.etag}")


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
