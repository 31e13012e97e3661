"""The run manifests: what every backup uploaded, written by `backup`, read by `verify` and `restore`.

A manifest is gzipped JSON lines, one per uploaded object (key, size, mtime, ETag, part size, and
`"verified": false` for an upload S3 did not confirm, `"s3_etag"` when S3's ETag is not the MD5 of the
bytes, as with SSE-KMS), stored beside its run report under REPORT_PREFIX. Its key starts with the
run's start time, so listing the report prefix gives the manifests oldest first and the newest line for
a key is what S3 should hold.

A manifest is read from the bucket, so it is untrusted input. Each line is schema-checked on its own:
a line that does not fit (not JSON, not an object, a field of the wrong type, a non-finite mtime, a key
S3 could not hold, longer than MAX_LINE) is skipped and counted with its line number, and the rest of
the manifest is used. A skipped line that names a key also withdraws what older manifests said about
that key: the newest word on it is unreadable, so no older one may stand in for it. A manifest as a
whole is unreadable (`ManifestError`) when it is not gzip, is truncated or fails its checksum, changed
size between the listing and the GET, or exceeds a cap:

- MAX_COMPRESSED (1 GiB) per manifest, checked against the listing before the GET and enforced while
  reading. At roughly 25 bytes of gzip per line, that is tens of millions of uploads in one run.
- MAX_RATIO (128:1) inflated to compressed, plus INFLATE_SLACK for tiny manifests. Every honest line
  carries an MD5 (32 hex digits: at least 16 bytes of gzip that no compressor can avoid) and at most a
  1,024-byte key, so an honest manifest cannot exceed about 75:1; a gzip bomb reaches 1,000:1.
- MAX_INFLATED (4 GiB) in any case, about 25 million lines of a typical length.
- MAX_BAD_LINES (10,000) skipped lines: a manifest the engine wrote has none, so past that it is junk,
  and checking millions of junk lines would only cost time.

Whether a manifest or run report is used at all is decided from the listing first (`index_runs`):

- its name must be a run's (`<start>-<run id>-<coverage>-<status>-<listing>`), since the name is what
  orders the manifests and dates the run;
- its start must not lie in the future (beyond `asof.FUTURE_SKEW`), nor after its own object's
  LastModified (beyond `asof.WRITE_SKEW`): a run writes its manifest and report after it started;
- with `as_of`, only objects whose own version existed then (LastModified ≤ as_of) are seen at all;
- reports and manifests are written once: in a versioned bucket a key with later versions (or a
  delete marker) was rewritten after the run wrote it, which is named, and its first version is read.

One that fails is *untrusted*: named with the reason, never used as a reference, its wanted keys noted
as disputed (`Records.disputed`) so a restore can say which objects only it vouches for.

The body is streamed: memory holds one compressed chunk, one inflated step and one line at a time,
never the manifest, so a bomb costs time up to the cap, not memory. S3 transport errors (`StoreError`)
are the caller's to handle; an object S3 refuses to hand over is one unreadable manifest. The writer
spools to a temporary file while the run goes, so memory does not grow with uploads.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

from sync_engine.asof import FUTURE_SKEW, WRITE_SKEW, iso
from sync_engine.errors import ManifestError, StoreError
from sync_engine.models import RemoteObject, UploadResult
from sync_engine.report import MANIFEST_SUFFIX, ReportName, parse_report_key
from sync_engine.store import ObjectStore
from sync_engine.versions import KeyHistory, ObjectVersion, VersionListing

MAX_LINE = 64 * 1024  # a line names one S3 key (at most 1,024 bytes) and a few short fields
MAX_KEY = 1024  # S3's limit on a key, in UTF-8 bytes
MAX_ETAG = 256  # S3's are 32 hex digits and a part count; room for other servers' forms
MAX_MTIME = 2**63 / 1e9  # seconds whose nanoseconds still fit the file system's 64-bit timestamps
MAX_COMPRESSED = 1024**3
MAX_INFLATED = 4 * 1024**3
MAX_RATIO = 128
INFLATE_SLACK = 1024 * 1024
BAD_EXAMPLES = 5  # bad lines kept with their details; the rest are counted
MAX_BAD_LINES = 10_000  # past this, the manifest is junk, not a manifest with a few damaged lines
_READ = 256 * 1024  # compressed bytes per read
_STEP = 256 * 1024  # inflated bytes per step: a bomb never inflates more than this at once


class ManifestWriter:
    """Thread-safe spool of uploaded objects (key, size, mtime, ETag, part size, S3's word on them)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish()
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6)
        self._lock = threading.Lock()
        self.entries = 0

    def add(self, result: UploadResult) -> None:
        entry: dict[str, Any] = {
            "key": result.item.key,
            "size": result.size,
            "mtime": result.mtime_ns / 1e9,
            "etag": result.etag,
            "part_size": result.part_size,
        }
        if result.unconfirmed:
            entry["verified"] = False  # omitted when true, so confirmed lines read as before
        if result.s3_etag:
            entry["s3_etag"] = result.s3_etag
        line = json.dumps(entry, ensure_ascii=False)
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
    etag: str  # MD5 form of the bytes sent, without quotes, lower case
    mtime: float | None
    part_size: int | None
    verified: bool = True  # False: S3 committed the upload but answered another ETag than the bytes sent
    s3_etag: str = ""  # the ETag S3 answered when it is not `etag` (SSE-KMS): what listings show


@dataclass(frozen=True, slots=True)
class BadLine:
    """A manifest line that could not be used, and why (one line of text, bounded in length)."""

    number: int
    why: str
    key: str | None = None  # the object key it names, when it names one S3 could hold
    manifest: str = ""  # set by `read_records`

    @property
    def reason(self) -> str:
        return self.why + (f" ({shown_text(self.key)})" if self.key else "")

    @property
    def detail(self) -> str:
        return f"line {self.number}: {self.reason}"

    def __str__(self) -> str:
        return f"{shown_text(self.manifest)} {self.detail}"


def shown_text(text: str, limit: int = 200) -> str:
    """Text from the bucket as one printable line: control and format characters escaped, length capped."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, str | list | dict) or len(value) < 100 else type(value).__name__
    return shown_text(text, 40)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _etag(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} {_shown(value)} is not text")
    if len(value) > MAX_ETAG:
        raise ValueError(f"{name} is longer than {MAX_ETAG} characters")
    return value.strip('"').lower()


def object_key(line: object) -> str | None:
    """The key a parsed line names, when it is one S3 could hold (so it can be trusted as a name)."""
    if not isinstance(line, dict):
        return None
    key = line.get("key")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        return None
    try:
        return key if len(key.encode("utf-8")) <= MAX_KEY else None
    except UnicodeEncodeError:
        return None


def parse_line(line: object) -> tuple[str, Recorded]:
    """One parsed manifest line, checked; a ValueError says, in one line, which field is wrong."""
    if not isinstance(line, dict):
        raise ValueError(f"not a JSON object but {_shown(line) if not isinstance(line, list) else 'a list'}")
    key = line.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("no key")
    if object_key(line) is None:
        raise ValueError(f"the key is not one S3 can hold (valid UTF-8, at most {MAX_KEY:,} bytes)")
    size, mtime, part_size = line.get("size"), line.get("mtime"), line.get("part_size")
    if not _is_int(size) or size < 0:  # type: ignore[operator]
        raise ValueError(f"size {_shown(size)} is not a byte count")
    etag = _etag(line.get("etag"), "etag")
    if not etag:
        raise ValueError("etag is empty")
    if mtime is not None and (
        isinstance(mtime, bool)
        or not isinstance(mtime, int | float)
        or not math.isfinite(mtime)
        or abs(mtime) >= MAX_MTIME
    ):
        raise ValueError(f"mtime {_shown(mtime)} is not a time")
    if part_size is not None and (not _is_int(part_size) or part_size < 0):  # type: ignore[operator]
        raise ValueError(f"part_size {_shown(part_size)} is not a byte count")
    verified = line.get("verified", True)
    if not isinstance(verified, bool):
        raise ValueError(f"verified {_shown(verified)} is not true or false")
    s3_etag = _etag(line.get("s3_etag", ""), "s3_etag")
    recorded = Recorded(
        size=size,  # type: ignore[arg-type]
        etag=etag,
        mtime=float(mtime) if mtime is not None else None,
        part_size=part_size or None,
        verified=verified,
        s3_etag=s3_etag,
    )
    return key, recorded


def _inflate(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The gzip stream's bytes, step by step; ManifestError when it is not gzip, is cut short or exceeds
    `limit` inflated bytes (the whole stream is never held)."""
    inflater = zlib.decompressobj(31)
    inflated = 0
    started = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if inflater.eof:  # another gzip member follows (as `cat a.gz b.gz` makes)
                    inflater = zlib.decompressobj(31)
                started = True
                out = inflater.decompress(data, _STEP)
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
                inflated += len(out)
                if inflated > limit:
                    raise ManifestError(f"inflates to more than {limit:,} bytes")
                if out:
                    yield out
                while not inflater.eof and not data and (out := inflater.decompress(b"", _STEP)):
                    inflated += len(out)
                    if inflated > limit:
                        raise ManifestError(f"inflates to more than {limit:,} bytes")
                    yield out
    except zlib.error as exc:
        raise ManifestError(f"not a gzip stream the engine wrote ({exc})") from None
    if not started or not inflater.eof:
        raise ManifestError("truncated: the gzip stream ends early")


_SEGMENT = re.compile(rb"[^\n]+")
_BLANK = re.compile(rb"^[ \t\r\x0b\x0c]+$", re.MULTILINE)  # whitespace that makes a line look non-empty


def _lines(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each non-empty line; None instead of the bytes when it is longer than
    MAX_LINE. Empty and blank lines are counted, not visited, so a stream of them costs little."""
    pending = bytearray()
    too_long = False
    newlines = 0  # before the current line
    for inflated in _inflate(chunks, limit):
        block = _BLANK.sub(b"", inflated)  # at a block's edge this trims only whitespace around a line
        pos = 0
        for match in _SEGMENT.finditer(block):
            start, end = match.span()
            if ended := block.count(b"\n", pos, start):
                if pending or too_long:
                    yield newlines + 1, None if too_long else bytes(pending)
                    pending.clear()
                    too_long = False
                newlines += ended
            if not too_long:
                if len(pending) + end - start > MAX_LINE:
                    too_long = True
                    pending.clear()
                else:
                    pending += match[0]
            pos = end
        if ended := block.count(b"\n", pos):
            if pending or too_long:
                yield newlines + 1, None if too_long else bytes(pending)
                pending.clear()
                too_long = False
            newlines += ended
    if pending or too_long:
        yield newlines + 1, None if too_long else bytes(pending)


def read_manifest(
    chunks: Iterable[bytes] | bytes, *, wanted: tuple[str, ...] = ("",), limit: int = MAX_INFLATED
) -> Iterator[tuple[str, Recorded] | BadLine]:
    """Each entry of a manifest (whose key starts with one of `wanted`), or a BadLine for a line that
    cannot be used. Lines naming keys outside `wanted` are skipped unchecked. A ManifestError when the
    manifest as a whole cannot be read."""
    for number, raw in _lines([chunks] if isinstance(chunks, bytes) else chunks, limit):
        if raw is None:
            yield BadLine(number, f"longer than {MAX_LINE:,} bytes")
            continue
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except RecursionError:
            yield BadLine(number, "nested too deeply to be a manifest line")
            continue
        except ValueError as exc:  # not UTF-8, not JSON, a number too long to convert
            yield BadLine(number, f"not JSON ({shown_text(str(exc), 80)})")
            continue
        name = line.get("key") if isinstance(line, dict) else None
        if isinstance(name, str) and name and not name.startswith(wanted):
            continue
        try:
            yield parse_line(line)
        except ValueError as exc:
            yield BadLine(number, str(exc), object_key(line))


@dataclass(frozen=True)
class Untrusted:
    """A run report or manifest that is not used as a reference, and why (one line)."""

    key: str
    what: str  # report | manifest
    reason: str  # unnamed | future | written-early | rewritten | content | unreadable
    detail: str

    @property
    def kind(self) -> str:
        return f"untrusted-{self.what}"


@dataclass
class RunIndex:
    """What a listing of the report prefix tells without reading anything: the manifests (with their
    listed sizes and, where versions were listed, the version to read), oldest first, the run reports
    that may be read, the newest successful run, and what is not trusted."""

    manifests: list[RemoteObject] = field(default_factory=list)
    last_sync: ReportName | None = None
    reports: list[RemoteObject] = field(default_factory=list)
    untrusted: list[Untrusted] = field(default_factory=list)
    distrusted_manifests: list[RemoteObject] = field(default_factory=list)  # read only to name their keys
    versioned: bool | None = None  # None: only current objects could be listed
    note: str = ""


def _run_name(key: str) -> tuple[str, ReportName | None] | None:
    """(report | manifest, the run's name) for a key of the report prefix; None for other objects."""
    if key.endswith(MANIFEST_SUFFIX):
        return "manifest", parse_report_key(key.removesuffix(MANIFEST_SUFFIX) + ".json")
    if key.endswith(".json"):
        name = parse_report_key(key)
        return ("report", name) if name is not None else None
    return None


def _rewritten(history: KeyHistory, first: ObjectVersion, as_of: float | None) -> str:
    """How the key changed after its first version was written (empty when it did not)."""
    later = [
        v
        for v in history.upto(as_of)
        if v is not first
        and v.last_modified >= first.last_modified
        and (v.deleted or v.etag != first.etag or v.size != first.size)
    ]
    if not later:
        return ""
    changes = ", ".join(f"{'deleted' if v.deleted else 'rewritten'} {iso(v.last_modified)}" for v in reversed(later))
    return f"written {iso(first.last_modified)}, then {changes}: reports are written once, so the first version is used"


def trust_problem(name: ReportName | None, stored: float, now: float) -> tuple[str, str]:
    """(reason, detail) when a run's name cannot be believed, else empty strings. `stored` is the
    object's LastModified (S3's clock), `now` the checking clock."""
    if name is None:
        return "unnamed", "not named like a run's manifest (<start>-<run id>-<coverage>-<status>-<listing>)"
    if name.started > now + FUTURE_SKEW:
        return "future", (
            f"dated {iso(name.started)}, in the future (it is {iso(now)}; {FUTURE_SKEW / 60:.0f} minutes of clock "
            "skew are allowed)"
        )
    if name.started > stored + WRITE_SKEW:
        return "written-early", (
            f"dated {iso(name.started)}, but S3 stored it at {iso(stored)}: written before its run started "
            f"({WRITE_SKEW / 60:.0f} minutes of clock skew are allowed)"
        )
    return "", ""


def index_runs(
    store: ObjectStore,
    report_prefix: str,
    *,
    as_of: float | None = None,
    now: float | None = None,
    versions: bool = True,
) -> RunIndex:
    """One listing of the report prefix (raises StoreError, for the caller to judge).

    With `versions`, object versions are listed (falling back to current objects where they cannot be,
    unless `as_of` needs them); `as_of` hides every object written after it."""
    now = time.time() if now is None else now
    index = RunIndex()
    if versions:
        listing = VersionListing(store, report_prefix, required=as_of is not None)
        found: list[tuple[KeyHistory, ObjectVersion]] = []
        for history in listing:
            first = history.first(as_of) if _run_name(history.key) is not None else None
            if first is not None:
                found.append((history, first))
        index.versioned, index.note = listing.versioned, listing.note
    else:
        found = [
            (KeyHistory(o.key, [ObjectVersion.current(o)]), ObjectVersion.current(o))
            for o in store.list_objects(report_prefix)
            if _run_name(o.key) is not None
        ]
        index.versioned = None
    for history, first in sorted(found, key=lambda pair: pair[0].key):
        what, name = _run_name(history.key)  # type: ignore[misc]
        rewritten = _rewritten(history, first, as_of) if versions else ""
        if rewritten:
            index.untrusted.append(Untrusted(history.key, what, "rewritten", rewritten))
        if as_of is None and len(history.versions) == 1:
            # the one version there is: read as the object, so a change after the listing is still caught
            first = replace(first, version_id="")
        reason, detail = trust_problem(name, first.last_modified, now)
        if reason:
            index.untrusted.append(Untrusted(history.key, what, reason, detail))
            if what == "manifest":
                index.distrusted_manifests.append(first)
            continue
        if what == "manifest":
            index.manifests.append(first)
            continue
        index.reports.append(first)
        assert name is not None
        if name.status == "ok" and (not index.last_sync or name.started >= index.last_sync.started):
            index.last_sync = name
    return index


@dataclass
class Records:
    """Every manifest entry for the wanted keys (the newest wins), and what could not be read."""

    entries: dict[str, Recorded] = field(default_factory=dict)
    manifests: int = 0  # manifests read
    runs: int = 0  # manifests that described at least one wanted key
    unreadable: dict[str, str] = field(default_factory=dict)  # manifest key -> why
    bad_lines: int = 0  # lines skipped, in manifests that were otherwise read
    bad_examples: list[BadLine] = field(default_factory=list)  # the first BAD_EXAMPLES of them
    last_sync: ReportName | None = None
    untrusted: list[Untrusted] = field(default_factory=list)  # reports and manifests not used
    disputed: dict[str, str] = field(default_factory=dict)  # key -> the untrusted manifest that names it
    note: str = ""

    def describe(self) -> str:
        """One line on what could not be read, or empty."""
        parts = []
        if self.unreadable:
            key, why = next(reversed(self.unreadable.items()))
            if len(self.unreadable) == 1:
                parts.append(f"manifest {shown_text(key)} is unreadable and was skipped ({why})")
            else:
                parts.append(
                    f"{len(self.unreadable):,} manifests are unreadable and were skipped, "
                    f"e.g. {shown_text(key)} ({why})"
                )
        if self.bad_lines:
            what = "1 manifest line was" if self.bad_lines == 1 else f"{self.bad_lines:,} manifest lines were"
            parts.append(f"{what} unreadable and skipped, e.g. {self.bad_examples[0]}")
        if self.untrusted:
            first = self.untrusted[0]
            count = len({u.key for u in self.untrusted})
            what = "1 run report or manifest is" if count == 1 else f"{count:,} run reports or manifests are"
            parts.append(f"{what} not trusted, e.g. {shown_text(first.key)} ({first.detail})")
        return "; ".join(parts)


def _manifest_body(store: ObjectStore, obj: RemoteObject) -> Iterator[bytes]:
    """The compressed body, chunk by chunk, never more than the listing said it holds."""
    if obj.size > MAX_COMPRESSED:
        raise ManifestError(f"larger than {MAX_COMPRESSED:,} bytes ({obj.size:,}): not read")
    version = obj.get_version if isinstance(obj, ObjectVersion) else None
    with store.open_object(obj.key, version_id=version) as reader:
        if reader.head.size > obj.size:
            raise ManifestError(f"changed since the listing: {reader.head.size:,} bytes, listed {obj.size:,}")
        read = 0
        for chunk in reader.chunks(_READ):
            read += len(chunk)
            if read > obj.size:
                raise ManifestError(f"changed since the listing: more than the {obj.size:,} bytes listed")
            yield chunk


def read_records(store: ObjectStore, index: RunIndex, wanted: tuple[str, ...], *, disputes: bool = True) -> Records:
    """Read every manifest of `index`, keeping the entries whose keys start with one of `wanted`.

    An unreadable manifest is skipped and named in `unreadable`; a bad line is skipped and counted in
    `bad_lines` (both also in `note`). Untrusted manifests are read only for the keys they name
    (`disputed`). S3 transport errors propagate."""
    records = Records(last_sync=index.last_sync, untrusted=list(index.untrusted))
    for obj in index.distrusted_manifests if disputes else ():
        _disputed(store, obj, wanted, records.disputed)
    for obj in index.manifests:
        found: dict[str, Recorded] = {}
        withdrawn: set[str] = set()
        bad: list[BadLine] = []
        bad_count = 0
        limit = min(MAX_INFLATED, MAX_RATIO * obj.size + INFLATE_SLACK)
        try:
            for item in read_manifest(_manifest_body(store, obj), wanted=wanted, limit=limit):
                if isinstance(item, BadLine):
                    bad_count += 1
                    if bad_count > MAX_BAD_LINES:
                        raise ManifestError(f"more than {MAX_BAD_LINES:,} lines are unreadable (e.g. {bad[0].detail})")
                    if len(bad) < BAD_EXAMPLES:
                        bad.append(BadLine(item.number, item.why, item.key, obj.key))
                    if item.key is not None:
                        found.pop(item.key, None)
                        withdrawn.add(item.key)
                else:
                    found[item[0]] = item[1]
        except ManifestError as exc:
            records.unreadable[obj.key] = str(exc)
            continue
        except StoreError as exc:
            if exc.transport:
                raise
            records.unreadable[obj.key] = str(exc)
            continue
        records.manifests += 1
        records.runs += bool(found)
        for key in withdrawn - found.keys():
            records.entries.pop(key, None)
        records.entries.update(found)
        records.bad_lines += bad_count
        records.bad_examples.extend(bad[: BAD_EXAMPLES - len(records.bad_examples)])
    records.note = "; ".join(part for part in (records.describe(), index.note) if part)
    return records


def _disputed(store: ObjectStore, obj: RemoteObject, wanted: tuple[str, ...], into: dict[str, str]) -> None:
    """The wanted keys an untrusted manifest names; what it says of them is not used. A manifest that
    cannot be read adds nothing (it is already named as untrusted)."""
    limit = min(MAX_INFLATED, MAX_RATIO * obj.size + INFLATE_SLACK)
    try:
        for item in read_manifest(_manifest_body(store, obj), wanted=wanted, limit=limit):
            key = item.key if isinstance(item, BadLine) else item[0]
            if key is not None and key.startswith(wanted):
                into.setdefault(key, obj.key)
    except ManifestError:
        return
    except StoreError as exc:
        if exc.transport:
            raise
