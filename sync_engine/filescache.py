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

The object is read from the bucket, so it is untrusted: each line is checked, a bad line is skipped
(that file is compared by content) and the decompressed size is capped.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from sync_engine.models import Cached
from sync_engine.models import CacheState as State

MAX_LINE = 8 * 1024  # one S3 key (at most 1,024 bytes) and a few numbers
MAX_COMPRESSED = 512 * 1024 * 1024  # checked against the listing before the GET
MAX_DECOMPRESSED = 4 * 1024 * 1024 * 1024  # ~20 million lines: far beyond any Immich library


class CacheWriter:
    """Thread-safe spool of cache lines, gzipped into a temporary file until the run ends."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish()
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6)
        self._lock = threading.Lock()
        self.entries = 0

    def add(self, key: str, cached: Cached) -> None:
        line = {
            "key": key,
            "size": cached.size,
            "mtime_ns": cached.mtime_ns,
            "ctime_ns": cached.ctime_ns,
            "ino": cached.ino,
            "etag": cached.etag,
            "state": cached.state.value,
        }
        if cached.part_size:
            line["part_size"] = cached.part_size
        data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        with self._lock:
            self._gzip.write(data)
            self.entries += 1

    def finish(self) -> bytes:
        with self._lock:
            self._gzip.close()
            self._file.seek(0)
            data = self._file.read()
            self._file.close()
            return data


def _count(line: dict[str, Any], name: str) -> int:
    value = line.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} {value!r} is not a non-negative integer")
    return value


def parse_line(line: Any) -> tuple[str, Cached]:
    if not isinstance(line, dict):
        raise ValueError("not a JSON object")
    key, etag, state = line.get("key"), line.get("etag", ""), line.get("state")
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise ValueError("no usable key")
    if not isinstance(etag, str) or len(etag) > 100:
        raise ValueError(f"{key}: etag is not an ETag")
    if state not in State.__members__.values():
        raise ValueError(f"{key}: unknown state {state!r}")
    part_size = line.get("part_size")
    if part_size is not None and (not isinstance(part_size, int) or isinstance(part_size, bool) or part_size <= 0):
        raise ValueError(f"{key}: part_size {part_size!r} is not a byte count")
    cached = Cached(
        size=_count(line, "size"),
        mtime_ns=_count(line, "mtime_ns"),
        ctime_ns=_count(line, "ctime_ns"),
        ino=_count(line, "ino"),
        etag=etag.strip('"').lower(),
        part_size=part_size,
        state=State(state),
    )
    return key, cached


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


def _lines(data: bytes) -> Iterator[bytes]:
    inflated = 0
    try:
        with gzip.GzipFile(fileobj=_Reader(data)) as stream:
            while raw := stream.readline(MAX_LINE + 1):
                inflated += len(raw)
                if inflated > MAX_DECOMPRESSED:
                    raise CacheTooLarge(f"inflates beyond {MAX_DECOMPRESSED // 2**30} GiB")
                yield raw
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


def read_cache(data: bytes, source: str) -> FilesCache:
    """Parse a cache object; a ValueError when it is not one at all (the caller then has no cache)."""
    cache = FilesCache({}, source)
    skipping = False  # inside an over-long line, whose rest arrives as further reads
    for raw in _lines(data):
        if skipping:
            skipping = not raw.endswith(b"\n")
            continue
        if len(raw) > MAX_LINE:
            cache.bad_lines += 1
            skipping = not raw.endswith(b"\n")
            continue
        if not raw.strip():
            continue
        try:
            key, cached = parse_line(json.loads(raw))
        except (ValueError, RecursionError):  # RecursionError: a line of deeply nested brackets
            cache.bad_lines += 1
            continue
        cache.entries[key] = cached
    return cache
