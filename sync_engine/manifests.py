"""The run manifests: what every backup uploaded, written by `backup`, read by `verify` and `restore`.

A manifest is gzipped JSON lines, one per uploaded object (key, size, mtime, ETag, part size), stored
beside its run report under REPORT_PREFIX. Its key starts with the run's start time, so listing the
report prefix gives the manifests oldest first and the newest line for a key is what S3 should hold.

A manifest is read from the bucket, so it is untrusted input: every line is schema-checked and
length-capped, and one that does not fit makes the whole manifest unreadable (`ManifestError`), which
verify reports as a difference and restore skips with a note. S3 errors (`StoreError`) are the caller's
to handle. The writer spools to a temporary file while the run goes, so memory does not grow with uploads.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sync_engine.errors import ManifestError
from sync_engine.models import UploadResult
from sync_engine.report import MANIFEST_SUFFIX, ReportName, parse_report_key
from sync_engine.store import ObjectStore

MAX_LINE = 64 * 1024  # a line names one S3 key (at most 1,024 bytes) and four short fields


class ManifestWriter:
    """Thread-safe spool of uploaded objects (key, size, mtime, ETag, part size)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish()
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6)
        self._lock = threading.Lock()
        self.entries = 0

    def add(self, result: UploadResult) -> None:
        line = json.dumps(
            {
                "key": result.item.key,
                "size": result.size,
                "mtime": result.mtime_ns / 1e9,
                "etag": result.etag,
                "part_size": result.part_size,
            },
            ensure_ascii=False,
        )
        with self._lock:
            self._gzip.write(line.encode("utf-8") + b"\n")
            self.entries += 1

    def finish(self) -> bytes:
        with self._lock:
            self._gzip.close()
            self._file.seek(0)
            data = self._file.read()
            self._file.close()
            return data


@dataclass(frozen=True, slots=True)
class Recorded:
    """One manifest line: what the backup uploaded for a key."""

    size: int
    etag: str  # without quotes, lower case
    mtime: float | None
    part_size: int | None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_line(line: dict[str, Any]) -> tuple[str, Recorded]:
    """One manifest line, checked; a ValueError says which field is wrong."""
    key, size, etag = line.get("key"), line.get("size"), line.get("etag", "")
    mtime, part_size = line.get("mtime"), line.get("part_size")
    if not isinstance(key, str) or not key:
        raise ValueError("a line has no key")
    if not _is_int(size) or size < 0:  # type: ignore[operator]
        raise ValueError(f"{key}: size {size!r} is not a byte count")
    if not isinstance(etag, str):
        raise ValueError(f"{key}: etag {etag!r} is not text")
    if mtime is not None and (isinstance(mtime, bool) or not isinstance(mtime, int | float)):
        raise ValueError(f"{key}: mtime {mtime!r} is not a time")
    if part_size is not None and (not _is_int(part_size) or part_size < 0):  # type: ignore[operator]
        raise ValueError(f"{key}: part_size {part_size!r} is not a byte count")
    recorded = Recorded(
        size=size,  # type: ignore[arg-type]
        etag=etag.strip('"').lower(),
        mtime=float(mtime) if mtime is not None else None,
        part_size=part_size or None,
    )
    return key, recorded


def read_manifest(data: bytes) -> Iterator[tuple[str, Recorded]]:
    """Each entry of a manifest body, in order; a ManifestError when it is not a manifest the engine wrote."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as lines:
            while raw := lines.readline(MAX_LINE + 1):
                if len(raw) > MAX_LINE:
                    raise ManifestError(f"a line is longer than {MAX_LINE:,} bytes")
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if not isinstance(line, dict):
                    raise ManifestError("a line is not a JSON object")
                yield parse_line(line)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise ManifestError(f"{exc.__class__.__name__}: {exc}") from None


@dataclass
class RunIndex:
    """What a listing of the report prefix tells without reading anything: the manifests, oldest first,
    and the newest successful run."""

    manifests: list[str] = field(default_factory=list)
    last_sync: ReportName | None = None


def index_runs(store: ObjectStore, report_prefix: str) -> RunIndex:
    """One listing of the report prefix (raises StoreError, for the caller to judge)."""
    index = RunIndex()
    for key in sorted(o.key for o in store.list_objects(report_prefix)):
        if key.endswith(MANIFEST_SUFFIX):
            index.manifests.append(key)
        elif key.endswith(".json"):
            name = parse_report_key(key)
            if name and name.status == "ok" and (not index.last_sync or name.started >= index.last_sync.started):
                index.last_sync = name
    return index


@dataclass
class Records:
    """Every manifest entry for the wanted keys (the newest wins), and what could not be read."""

    entries: dict[str, Recorded] = field(default_factory=dict)
    manifests: int = 0  # manifests read
    runs: int = 0  # manifests that described at least one wanted key
    unreadable: dict[str, str] = field(default_factory=dict)  # manifest key -> why
    last_sync: ReportName | None = None
    note: str = ""


def read_records(store: ObjectStore, index: RunIndex, wanted: tuple[str, ...]) -> Records:
    """Read every manifest of `index`, keeping the entries whose keys start with one of `wanted`.

    An unreadable manifest is skipped and named in `unreadable` (and in `note`); S3 errors propagate."""
    records = Records(last_sync=index.last_sync)
    for key in index.manifests:
        found: dict[str, Recorded] = {}
        try:
            for obj_key, recorded in read_manifest(store.get_bytes(key)):
                if obj_key.startswith(wanted):
                    found[obj_key] = recorded
        except ManifestError as exc:
            records.unreadable[key] = str(exc)
            records.note = f"manifest {key} is unreadable and was skipped ({exc})"
            continue
        records.manifests += 1
        records.runs += bool(found)
        records.entries.update(found)
    return records
