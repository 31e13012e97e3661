"""The files cache: how each file looked when a run last confirmed its bytes offsite.

This is restic's files cache, kept in the bucket because a CronJob pod has no disk that outlives it.
Every backup run writes one gzipped JSON-lines object beside its report, one line per file it
confirmed (uploaded and checked, or proven identical by ETag, or carried over unchanged), with the
file's size, mtime, ctime and inode as the walk saw them. The next run compares each file with its line:

* all four equal, and S3 (when listed) still shows the recorded ETag → the bytes are the ones
  confirmed: nothing to read, nothing to send;
* anything differs (a rewrite, `cp -p` or `rsync -a` that keeps an old mtime, a replace by rename, a
  `touch`) → the local bytes are compared with the object's ETag before deciding to upload.

No decision compares a file timestamp with the pod's clock or with S3's clock, so a phone that stamps
a future mtime, an NFS server whose clock runs ahead or behind, or a settle window changed between runs
cannot make a file look older than it is. ctime cannot be set from user space, and an inode changes on
every replace-by-rename, which is what makes the comparison trustworthy.

Lines have a state: `ok` (confirmed), `racy` (confirmed, but the file may have changed without its
times showing it: re-compared by content next run), `seen` (deferred while settling: the look the next
run compares with), `failed` (S3 committed bytes it did not confirm: uploaded again next run). A file
with no line is compared by content, so a lost or unreadable cache costs local reads, never a miss.

Each line is a JSON array `[key, size, mtime_ns, ctime_ns, inode, etag, part_size (0: none), state]`:
a run reads and writes one line per file of the library, so the format is the one the C JSON parser
takes fastest, parsed thousands of lines per call. The object is read from the bucket, so it is
untrusted: each row is checked, a bad line is skipped (that file is compared by content), and the
decompressed size is capped.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import IO, Any

from sync_engine.models import Cached
from sync_engine.models import CacheState as State

MAX_LINE = 8 * 1024  # one S3 key (at most 1,024 bytes) and a few numbers
MAX_COMPRESSED = 512 * 1024 * 1024  # checked against the listing before the GET
MAX_DECOMPRESSED = 4 * 1024 * 1024 * 1024  # ~40 million lines: far beyond any Immich library
CHUNK = 1024 * 1024  # inflated and parsed at a time
WRITE_BATCH = 4096  # lines compressed at a time
STATES = {state.value: state for state in State}
STATE_TEXT = {state: f'"{state.value}"' for state in State}


class CacheWriter:
    """Thread-safe spool of cache lines, gzipped into a temporary file until the run ends.

    A file found exactly as the previous cache describes it is only *carried* (its key noted). When
    every line of a run is carried, the previous cache already says all this run would write, so
    nothing is written and the next run reads the same object: a quiet night costs no upload of it.
    Keys the previous cache holds for files that are gone stay in it, which is harmless: a line only
    vouches for a file with the same size, mtime, ctime and inode."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish()
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=1)  # read once, written nightly
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._carried: list[str] = []
        self.previous: FilesCache | None = None
        self.changed = False
        self.entries = 0

    def carry(self, key: str) -> None:
        """The file is exactly as `previous` has it (the caller looked the line up there)."""
        with self._lock:
            self._carried.append(key)
            self.entries += 1

    def add(self, key: str, cached: Cached) -> None:
        line = _line(key, cached)
        with self._lock:
            self._lines.append(line)
            self.changed = True
            self.entries += 1
            if len(self._lines) >= WRITE_BATCH:
                self._flush()

    def _flush(self) -> None:
        self._gzip.write("".join(self._lines).encode("utf-8", "surrogatepass"))
        self._lines.clear()

    def finish(self) -> bytes | None:
        """The cache object to store, or None when the previous one says it all."""
        with self._lock:
            if not self.changed and self.previous is not None:
                self._file.close()
                return None
            entries = self.previous.entries if self.previous is not None else {}
            for key in self._carried:
                self._lines.append(_line(key, entries[key]))
                if len(self._lines) >= WRITE_BATCH:
                    self._flush()
            self._flush()
            self._gzip.close()
            self._file.seek(0)
            data = self._file.read()
            self._file.close()
            return data


def _line(key: str, cached: Cached) -> str:
    return (
        f"[{encode_basestring(key)},{cached.size},{cached.mtime_ns},{cached.ctime_ns},{cached.ino},"
        f"{encode_basestring(cached.etag)},{cached.part_size or 0},{STATE_TEXT[cached.state]}]\n"
    )


def parse_row(row: Any) -> tuple[str, Cached] | None:
    """One decoded line, checked; None when it is not a cache line. An ETag in another spelling than
    the engine writes only makes the file's bytes be compared again."""
    if type(row) is not list or len(row) != 8:
        return None
    key, size, mtime_ns, ctime_ns, ino, etag, part_size, state = row
    if (
        type(key) is str
        and 0 < len(key) <= 1024
        and type(size) is int
        and type(mtime_ns) is int
        and type(ctime_ns) is int
        and type(ino) is int
        and type(part_size) is int
        and min(size, mtime_ns, ctime_ns, ino, part_size) >= 0
        and type(etag) is str
        and len(etag) <= 100
        and type(state) is str
        and state in STATES
    ):
        return key, Cached(size, mtime_ns, ctime_ns, ino, etag, part_size or None, STATES[state])
    return None


@dataclass
class FilesCache:
    """The previous run's files, by key; `bad_lines` were skipped (those files are compared by content)."""

    entries: dict[str, Cached]
    source: str = ""  # the object it was read from
    bad_lines: int = 0

    def get(self, key: str) -> Cached | None:
        return self.entries.get(key)


class CacheTooLarge(ValueError):
    pass


def _inflate(data: bytes) -> Iterator[bytes]:
    """The decompressed stream in chunks, never more than MAX_DECOMPRESSED in all."""
    inflated = 0
    try:
        with gzip.GzipFile(fileobj=_Reader(data)) as stream:
            while chunk := stream.read(CHUNK):
                inflated += len(chunk)
                if inflated > MAX_DECOMPRESSED:
                    raise CacheTooLarge(f"inflates beyond {MAX_DECOMPRESSED // 2**30} GiB")
                yield chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not a gzip stream ({exc.__class__.__name__}: {exc})") from None


class _Reader:
    """A read-only file over bytes without copying them (GzipFile needs a file object)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos : end].tobytes()
        self._pos = end
        return chunk


def _add_lines(cache: FilesCache, lines: list[bytes]) -> None:
    """Parse a batch of complete lines with one call of the C parser; line by line only if that fails."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return
    try:
        rows = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        rows = None
    if rows is None or len(rows) != len(lines):
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except (ValueError, RecursionError):  # RecursionError: a line of deeply nested brackets
                rows.append(None)
    entries = cache.entries
    for row in rows:
        parsed = parse_row(row)
        if parsed is None:
            cache.bad_lines += 1
        else:
            entries[parsed[0]] = parsed[1]


def read_cache(data: bytes, source: str) -> FilesCache:
    """Parse a cache object; a ValueError when it is not one at all (the caller then has no cache)."""
    cache = FilesCache({}, source)
    pending = b""
    skipping = False  # inside an over-long line: drop everything up to its newline
    for chunk in _inflate(data):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if skipping and lines:
            lines, skipping = lines[1:], False
        elif skipping:
            pending = b""
        if len(pending) > MAX_LINE:
            cache.bad_lines += 1
            pending, skipping = b"", True
        long_lines = [line for line in lines if len(line) > MAX_LINE]
        if long_lines:
            cache.bad_lines += len(long_lines)
            lines = [line for line in lines if len(line) <= MAX_LINE]
        _add_lines(cache, lines)
    if pending and not skipping:
        _add_lines(cache, [pending])
    return cache
