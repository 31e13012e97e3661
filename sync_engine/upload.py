"""Upload one file so that S3 only ever holds bytes that existed together on disk.

The file is opened once (no symlink following) and checked with fstat and stat before and after it
is read: size, mtime, ctime, inode. Any change means the bytes read may be a mix of two versions, so
the single PUT is not sent or the multipart upload is aborted, and the file is read again (bounded).
A change noticed only after the object was committed means the object holds an older but consistent
version whose LastModified would hide the newer one from later runs, so it is uploaded again too.
Every request carries Content-MD5, and every commit's ETag is compared with the locally computed one.
`predict` runs the same decisions for a plan and stops where the sending would start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sync_engine.config import MAX_PARTS, MiB, SyncSettings
from sync_engine.etag import COMMON_PART_SIZES, file_matches_etag, is_multipart_etag, multipart_etag
from sync_engine.models import Outcome, PlanItem, Reason, UploadResult
from sync_engine.store import ObjectStore, PutResult, StoreError, is_outage

ETAG_RETRIES = 2
# File times come from the kernel's coarse clock (one tick, up to 10 ms). A write in the same tick as
# our first fstat leaves ctime unchanged, so a file changed that recently cannot prove it was stable
# while read. As git does for "racily clean" index entries, wait until its ctime is safely in the past.
RACY_SECONDS = 0.1
RACY_TRIES = 20
# A file whose ctime is this close to the pod's clock when it is read, or ahead of it (another
# machine's clock stamped it), or that changed while an earlier attempt read it, is confirmed as
# `racy`: the next run compares its bytes again even if its times are unchanged. That also covers
# writers through mmap, whose later stores to already-dirty pages do not update mtime or ctime.
RACY_WINDOW = 2.0


class _Changed(Exception):
    """The file changed while it was being read or sent."""

    def __init__(self, committed: bool) -> None:
        super().__init__("changed while uploading")
        self.committed = committed


@dataclass(frozen=True)
class _Snapshot:
    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Snapshot:
        return cls(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def fields(self) -> dict[str, int]:
        """The look a result records (and the files cache keeps)."""
        return {"size": self.size, "mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns, "ino": self.ino}


class EtagMismatch(Exception):
    """S3 committed an ETag that is not the one computed from the bytes sent."""

    def __init__(self, message: str, expected: str, part_size: int | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.part_size = part_size


class Cancelled(Exception):
    """The run is stopping (SIGTERM, Ctrl-C, S3 gone): nothing half-done may be left behind."""


class ByteBudget:
    """Caps the file bytes all workers hold in memory at once, whatever the worker count.

    Each worker holds at most one buffer (a whole small file or one part) and the budget is at least
    the largest such buffer, so waiting here can never deadlock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= size)
            self._free -= size
        try:
            yield
        finally:
            with self._cond:
                self._free += size
                self._cond.notify_all()


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, grown (in MiB steps) when a file would need more than 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(preferred, -(-needed // MiB) * MiB)


class Uploader:
    """Uploads plan items; safe to call from many threads at once."""

    def __init__(self, store: ObjectStore, settings: SyncSettings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.cancel = threading.Event()
        self.budget = ByteBudget(settings.memory_budget)

    def upload(self, item: PlanItem) -> UploadResult:
        """Never raises: whatever goes wrong becomes this file's result, so no file goes uncounted."""
        try:
            return self._upload(item, dry_run=False)
        except Exception as exc:  # an engine bug must still fail the file visibly
            return UploadResult(item, Outcome.FAILED, error=f"internal error: {exc.__class__.__name__}: {exc}")

    def predict(self, item: PlanItem) -> UploadResult:
        """What `upload` would do, without sending anything: a plan runs the very same decision, so it
        compares bytes with the listing's ETag where a backup would, and its "to upload" is the
        backup's. The outcome is `WOULD_UPLOAD` where `upload` would send the file."""
        try:
            if not item.check_content:  # nothing to read before deciding: no I/O for a plan
                local = item.local
                look = {"size": local.size, "mtime_ns": local.mtime_ns, "ctime_ns": local.ctime_ns, "ino": local.ino}
                return _predicted(item, look)
            return self._upload(item, dry_run=True)
        except Exception as exc:
            return UploadResult(item, Outcome.FAILED, error=f"internal error: {exc.__class__.__name__}: {exc}")

    def _upload(self, item: PlanItem, *, dry_run: bool) -> UploadResult:
        path = self.settings.library_root / item.local.rel
        attempts = self.settings.max_change_retries + 1
        committed_old = False
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(item, path, attempt, dry_run=dry_run)
            except _Changed as changed:
                committed_old = committed_old or changed.committed
            except EtagMismatch as exc:
                if attempt > ETAG_RETRIES:
                    # Recorded as unconfirmed: verify fails on the key and the next run sends it again.
                    return UploadResult(
                        item,
                        Outcome.FAILED,
                        size=item.local.size,
                        mtime_ns=item.local.mtime_ns,
                        etag=exc.expected,
                        part_size=exc.part_size,
                        attempts=attempt,
                        error=str(exc),
                        unconfirmed=True,
                    )
            except FileNotFoundError:
                return UploadResult(item, Outcome.VANISHED, attempts=attempt, error="deleted before upload")
            except StoreError as exc:
                return UploadResult(
                    item, Outcome.FAILED, attempts=attempt, error=str(exc), s3_failure=True, s3_outage=is_outage(exc)
                )
            except Cancelled:
                return UploadResult(item, Outcome.FAILED, attempts=attempt, error="interrupted; nothing committed")
            except OSError as exc:
                return UploadResult(item, Outcome.FAILED, attempts=attempt, error=f"cannot read: {exc.strerror or exc}")
        note = (
            " (a copy read while the file stood still is stored; compared again next run)"
            if committed_old
            else " (nothing committed)"
        )
        return UploadResult(item, Outcome.UNSTABLE, attempts=attempts, error="kept changing while read" + note)

    def _attempt(self, item: PlanItem, path: Path, attempt: int, *, dry_run: bool = False) -> UploadResult:
        if self.cancel.is_set():
            raise Cancelled
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return UploadResult(item, Outcome.FAILED, error="no longer a regular file")
            before = _settled_snapshot(fd)
            if self._still_written(item, before):
                return UploadResult(item, Outcome.DEFERRED, **before.fields())
            racy = attempt > 1 or self.clock() - before.ctime_ns / 1e9 < RACY_WINDOW
            remote = item.remote
            if item.check_content and not item.overwrite and remote is not None and remote.size == before.size:
                recorded = item.cached.part_size if item.cached is not None else None
                part_sizes = (recorded, *COMMON_PART_SIZES) if recorded else COMMON_PART_SIZES
                same = file_matches_etag(path, remote.etag, before.size, part_sizes)
                self._check_unchanged(fd, path, before, committed=False)
                if same:
                    part_size = recorded if is_multipart_etag(remote.etag) else None
                    return UploadResult(
                        item,
                        Outcome.SAME_CONTENT,
                        **before.fields(),
                        etag=remote.etag,
                        part_size=part_size,
                        racy=racy,
                    )
            if dry_run:
                return _predicted(item, before.fields())
            if remote is not None and not item.overwrite and item.reason is not Reason.RETRY:
                # Changed content over an existing object: the run decides at its end (overwrite.py).
                return UploadResult(item, Outcome.HELD, **before.fields(), racy=racy)
            if before.size < self.settings.multipart_threshold:
                put, part_size = self._single(fd, path, item.key, before), None
            else:
                part_size = part_size_for(before.size, self.settings.part_size)
                put = self._multipart(fd, path, item.key, before, part_size)
        finally:
            os.close(fd)
        etag, s3_etag = put
        return UploadResult(
            item,
            Outcome.UPLOADED,
            **before.fields(),
            etag=etag,
            s3_etag=s3_etag,
            part_size=part_size,
            attempts=attempt,
            racy=racy,
        )

    def _still_written(self, item: PlanItem, now: _Snapshot) -> bool:
        """Changed since the walk looked, and recently (or at a time the pod cannot judge): a writer
        is at work, so the next run takes it. Unchanged since the walk → the planner already judged."""
        settle = self.settings.settle_seconds
        local = item.local
        if settle <= 0 or (now.size, now.mtime_ns, now.ctime_ns, now.ino) == (
            local.size,
            local.mtime_ns,
            local.ctime_ns,
            local.ino,
        ):
            return False
        return self.clock() - now.ctime_ns / 1e9 < settle

    @staticmethod
    def _check_unchanged(fd: int, path: Path, before: _Snapshot, *, committed: bool) -> None:
        try:
            now_path = _Snapshot.of(os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            if committed:
                return  # what was stored is consistent and nothing newer exists to miss
            raise
        if _Snapshot.of(os.fstat(fd)) != before or now_path != before:
            raise _Changed(committed)

    def _single(self, fd: int, path: Path, key: str, before: _Snapshot) -> tuple[str, str]:
        with self.budget.hold(before.size):
            data = _read_exact(fd, 0, before.size)
            self._check_unchanged(fd, path, before, committed=False)
            md5 = hashlib.md5(data, usedforsecurity=False)
            result = self.store.put_object(key, data, md5.digest(), self.settings.storage_class)
            del data
        self._check_unchanged(fd, path, before, committed=True)
        return self._confirm(result, md5.hexdigest(), key, None)

    def _multipart(self, fd: int, path: Path, key: str, before: _Snapshot, part_size: int) -> tuple[str, str]:
        upload_id = self.store.create_multipart(key, self.settings.storage_class)
        committed = False
        try:
            digests: list[bytes] = []
            etags: list[str] = []
            for number, offset in enumerate(range(0, before.size, part_size), start=1):
                if self.cancel.is_set():
                    raise Cancelled
                length = min(part_size, before.size - offset)
                with self.budget.hold(length):
                    body = _read_exact(fd, offset, length)
                    self._check_unchanged(fd, path, before, committed=False)
                    digest = hashlib.md5(body, usedforsecurity=False).digest()
                    etags.append(self.store.upload_part(key, upload_id, number, body, digest))
                    digests.append(digest)
                    del body
            self._check_unchanged(fd, path, before, committed=False)
            if self.cancel.is_set():
                raise Cancelled
            result = self.store.complete_multipart(key, upload_id, etags)
            committed = True
        finally:
            if not committed:
                self._abort_quietly(key, upload_id)
        expected = multipart_etag(digests)
        self._check_unchanged(fd, path, before, committed=True)
        return self._confirm(result, expected, key, part_size)

    def _confirm(self, result: PutResult, expected: str, key: str, part_size: int | None) -> tuple[str, str]:
        """The MD5-form ETag and, for SSE-KMS, the opaque one S3 lists; a mismatch raises.

        A commit answered without an ETag (Ceph RGW's CompleteMultipartUpload, a known Ceph bug) is
        confirmed from a listing of its exact key, which such servers fill in correctly; the listing
        must then show the expected ETag like any answer would."""
        if result.kms:
            return expected, result.etag  # not an MD5; Content-MD5 was still checked by S3 on arrival
        got = result.etag
        if not got:
            listed = self.store.listed_etag(key)
            if listed is None:
                raise EtagMismatch(f"{key}: S3 answered no ETag and does not list the object", expected, part_size)
            got = listed
            if got != expected:
                raise EtagMismatch(
                    f"{key}: S3 answered no ETag and lists ETag {got}, expected {expected}", expected, part_size
                )
        if got != expected:
            raise EtagMismatch(f"{key}: S3 returned ETag {got}, expected {expected}", expected, part_size)
        return expected, ""

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        # An abort that fails here is retried by botocore; if S3 is gone entirely, the bucket's
        # AbortIncompleteMultipartUpload lifecycle rule is the backstop (see README).
        with contextlib.suppress(StoreError):
            self.store.abort_multipart(key, upload_id)


def _predicted(item: PlanItem, look: dict[str, int]) -> UploadResult:
    """A plan's outcome for a file whose bytes are not those of its object (or that has none): held
    for the end-of-run overwrite decision like `upload` holds it, or sent."""
    if item.remote is not None and not item.overwrite and item.reason is not Reason.RETRY:
        return UploadResult(item, Outcome.HELD, **look)
    return UploadResult(item, Outcome.WOULD_UPLOAD, **look)


def _settled_snapshot(fd: int) -> _Snapshot:
    """The file's look once its ctime is a few ticks old. A ctime ahead of the pod's clock (another
    machine stamped it) cannot be waited out: it is taken as it is and the result marked racy."""
    for _ in range(RACY_TRIES):
        st = os.fstat(fd)
        age = time.time() - st.st_ctime_ns / 1e9
        if age >= RACY_SECONDS or age < 0:
            return _Snapshot.of(st)
        time.sleep(max(RACY_SECONDS - age, 0.01))
    raise _Changed(False)


def _read_exact(fd: int, offset: int, length: int) -> bytes:
    """Read exactly `length` bytes; a short read means the file shrank underneath us."""
    if length == 0:
        return b""
    chunks: list[bytes] = []
    remaining = length
    while remaining:
        chunk = os.pread(fd, remaining, offset + length - remaining)
        if not chunk:
            raise _Changed(False)
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
