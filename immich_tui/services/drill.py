"""The restore drill's own judgement: does the restored database match the offsite media, do sampled
objects come back intact, and what the drill report says, stored and read back.

The orchestration (a scratch CNPG Cluster, the probe Jobs) lives in `drill_run.py`; everything here works
on a `ProbeResult` and the bucket alone, so it can be checked against a real S3 endpoint without a cluster.

Originals. Immich keeps the files its assets point at (`originalPath`) in two library folders: `upload`
(uploads) and `library` (storage-template layout). `profile` holds profile pictures, which no asset
references, and `thumbs`/`encoded-video` are derived and regenerated: none of them can be an orphan or a
missing original. Sidecars (`.xmp`) and the folders' `.immich` markers are not assets either.

Cross-check. The database is checked against the media a restore would pair it with: the offsite copy
as of the target time, or for a latest-point drill the newest copy (`DrillReport.media_as_of`). An asset
is *missing* when its original is not in that copy although it was created before the start of the last
media sync that had finished by then: that sync should have
copied it. One created later (or when no sync had finished at all) is *not yet offsite*: the two halves
simply meet at the sync's start, and the advice is to recover the database to a target before it. An
asset without a creation time cannot be shown to be new, so it counts as missing.

Drill reports. They are stored under `<REPORT_PREFIX>drills/<UTC start>.json`. The run-report listers
take a key for a run report only when it is named like one (`<start>-<run id>-<coverage>-<status>-
<listing>.json`, `report.parse_report_key`), so a drill report is never read as a run report nor flagged
by `immich-sync verify` as a forged one. A drill report is read back as untrusted input: capped at
MAX_DRILL_REPORT before the GET and while reading, every field schema-checked, and dated by S3's
LastModified (a report stored in the future is ignored), never by what it says of itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from immich_tui.services.errors import ServiceError
from immich_tui.services.immich_schema import ProbeResult, media_relative_path
from immich_tui.services.offsite import Reader
from sync_engine.asof import FUTURE_SKEW, WRITE_SKEW
from sync_engine.config import DEFAULT_FOLDERS, RestoreSettings
from sync_engine.download import ARCHIVED_CLASSES, Downloader, local_parts
from sync_engine.errors import ObjectTooLarge, StoreError
from sync_engine.etag import md5_hex
from sync_engine.manifests import shown_text
from sync_engine.models import Fate
from sync_engine.report import stamp
from sync_engine.restore import load_records
from sync_engine.store import ObjectStore
from sync_engine.target import open_dirs
from sync_engine.verify import SIDECARS
from sync_engine.versions import ObjectVersion, VersionListing

# The sync engine's original folders (DEFAULT_FOLDERS) minus `profile`: the ones asset originals live in.
ASSET_FOLDERS: tuple[str, ...] = tuple(f for f in DEFAULT_FOLDERS if f in ("upload", "library"))
MARKER = ".immich"
EXAMPLES = 10  # examples kept per kind of finding
DRILLS = "drills/"  # under the report prefix
MAX_DRILL_REPORT = 1024 * 1024  # a drill report holds a few figures and at most a few hundred lines
MAX_SKIPPED = 10  # unbelievable drill reports passed over before giving up on an older good one
MAX_TEXT = 2000  # one problem line or example in a drill report
MAX_ITEMS = 200  # problems or examples in a drill report
SAMPLE_WORKERS = 8
OUTCOMES = ("ok", "failed", "error")


class DrillReportError(ServiceError):
    """A drill report that is not one: the message says which field is wrong."""


# -- which keys are asset originals ------------------------------------------------------------------


def is_original(key: str, media_prefix: str) -> bool:
    """An object an asset's `originalPath` can name: in an asset folder, not a sidecar, not a marker."""
    if not key.startswith(media_prefix) or key.endswith("/"):
        return False
    rel = key[len(media_prefix) :]
    folder, _, rest = rel.partition("/")
    return folder in ASSET_FOLDERS and bool(rest) and rest != MARKER and not rel.lower().endswith(SIDECARS)


def _listed_as_of(store: ObjectStore, media_prefix: str, as_of: dt.datetime | None) -> Iterator[ObjectVersion]:
    """Every original as the bucket held it at `as_of` (now, for None): per key, the newest version
    written by then that is not a delete marker (`versions.KeyHistory.at`, as restore and verify judge)."""
    when = as_of.timestamp() if as_of is not None else None
    for folder in ASSET_FOLDERS:
        # as of a past time, versions are needed (a missing permission is one clear error, not a guess)
        listing = VersionListing(store, f"{media_prefix}{folder}/", required=as_of is not None)
        for history in listing:
            obj = history.at(when)
            if obj is not None and is_original(obj.key, media_prefix):
                yield obj


def offsite_keys_as_of(store: ObjectStore, media_prefix: str, as_of: dt.datetime) -> set[str]:
    """The keys of the originals offsite as of `as_of`."""
    return {obj.key for obj in _listed_as_of(store, media_prefix, as_of)}


# -- cross-check -----------------------------------------------------------------------------------


@dataclass
class CrossCheck:
    """The restored database against the offsite media, as of the database's recovery point."""

    assets: int
    offsite_originals: int
    missing: int
    missing_examples: list[str]
    not_yet_offsite: int
    not_yet_offsite_examples: list[str]
    orphans: int
    orphan_examples: list[str]
    external: int


def _examples(items: Iterable[str]) -> list[str]:
    return sorted(shown_text(i) for i in items)[:EXAMPLES]


def cross_check(
    probe: ProbeResult, offsite_keys: Iterable[str], media_prefix: str, last_sync_start: dt.datetime | None
) -> CrossCheck:
    """Every asset original against the offsite keys; offsite originals no asset references.

    `last_sync_start`: the start of the newest media sync that had finished by the recovery point."""
    offsite = {k for k in offsite_keys if is_original(k, media_prefix)}
    referenced: set[str] = set()
    missing: list[str] = []
    not_yet: list[str] = []
    external = 0
    for row in probe.rows:
        rel = media_relative_path(row.original_path, probe.media_location)
        if rel is None:
            external += 1  # an external library: Immich reads it in place, the sync does not copy it
            continue
        key = f"{media_prefix}{rel}"
        referenced.add(key)
        if key in offsite:
            continue
        created = row.created if row.created is None or row.created.tzinfo else row.created.replace(tzinfo=dt.UTC)
        if last_sync_start is not None and (created is None or created <= last_sync_start):
            missing.append(rel)
        else:
            not_yet.append(rel)
    orphans = sorted(offsite - referenced)
    return CrossCheck(
        assets=probe.assets,
        offsite_originals=len(offsite),
        missing=len(missing),
        missing_examples=_examples(missing),
        not_yet_offsite=len(not_yet),
        not_yet_offsite_examples=_examples(not_yet),
        orphans=len(orphans),
        orphan_examples=_examples(k[len(media_prefix) :] for k in orphans),
        external=external,
    )


# -- media sample ----------------------------------------------------------------------------------


@dataclass
class SampleResult:
    """Sampled originals brought back and verified; `failed` holds one line per object that was not."""

    requested: int
    verified: int
    failed: list[str]
    bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _choose(
    objects: list[ObjectVersion], sample: int, newer_than: dt.datetime | None, rng: random.Random
) -> list[ObjectVersion]:
    """Every object newer than the last drill, plus `sample` others drawn at random."""
    objects.sort(key=lambda o: o.key)  # the same rng seed draws the same sample whatever the listing order
    cutoff = newer_than.timestamp() if newer_than is not None else None
    new = [o for o in objects if cutoff is not None and o.last_modified > cutoff]
    rest = [o for o in objects if cutoff is None or o.last_modified <= cutoff]
    return new + rng.sample(rest, min(sample, len(rest)))


def _remove(root_fd: int, rel: str) -> None:
    """Delete one verified file from the scratch directory (not through a link: `target.open_dirs`)."""
    parts = local_parts(rel)
    try:
        parent = open_dirs(root_fd, parts[:-1], create=False)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)


def _prune(scratch: Path) -> None:
    """Remove the directories the sample left empty, deepest first."""
    for folder in ASSET_FOLDERS:
        top = scratch / folder
        if not top.is_dir() or top.is_symlink():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def sample_media(
    reader: Reader,
    media_prefix: str,
    scratch: Path,
    *,
    sample: int,
    newer_than: dt.datetime | None,
    as_of: dt.datetime | None,
    rng: random.Random,
    monotonic: Callable[[], float] = time.monotonic,
) -> SampleResult:
    """Restore a random sample of originals as of `as_of` (plus every one written after `newer_than`) into
    `scratch` with `reader`'s keys (the restorer's), each verified by the restore's own downloader against
    the ETag its run manifest recorded, and deleted once verified so the scratch directory stays small.

    Archived objects (Glacier, Deep Archive) are not sampled: reading them takes a restore request and
    hours. Raises StoreError when the originals cannot be listed."""
    start = monotonic()
    store = reader.store()
    candidates = list(_listed_as_of(store, media_prefix, as_of))
    archived = [o for o in candidates if o.storage_class in ARCHIVED_CLASSES]
    readable = [o for o in candidates if o.storage_class not in ARCHIVED_CLASSES]
    chosen = _choose(readable, max(0, sample), newer_than, rng)
    notes: list[str] = []
    if archived:
        notes.append(f"{len(archived):,} archived original(s) (Glacier/Deep Archive) were not sampled")
    scratch.mkdir(parents=True, exist_ok=True)
    settings = RestoreSettings(
        target=scratch,
        media_prefix=media_prefix,
        report_prefix=reader.report_prefix,
        s3=reader.settings,
        folders=ASSET_FOLDERS,
        as_of=as_of.timestamp() if as_of is not None else None,
    )
    records = load_records(store, settings)
    if records.note:
        notes.append(records.note)
    unrecorded = sum(1 for o in chosen if o.key not in records.entries)
    if unrecorded:
        notes.append(f"{unrecorded:,} sampled object(s) have no manifest record: checked against S3's ETag only")
    distrusted = {u.key: u.detail for u in records.untrusted if u.what == "manifest"}
    root_fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        downloader = Downloader(settings, store, records.entries, root_fd, disputed=records.disputed, why=distrusted)

        def one(obj: ObjectVersion) -> tuple[bool, str, int]:
            result = downloader.restore(obj)
            rel = obj.key[len(media_prefix) :]
            with contextlib.suppress(OSError, ValueError):
                _remove(root_fd, rel)
            if result.fate in (Fate.DOWNLOADED, Fate.ALREADY_THERE):
                return True, "", result.size
            return False, f"{result.path}: {result.detail or result.fate.value}", 0

        with ThreadPoolExecutor(max_workers=SAMPLE_WORKERS) as pool:
            outcomes = list(pool.map(one, chosen))
    finally:
        os.close(root_fd)
    _prune(scratch)
    return SampleResult(
        requested=len(chosen),
        verified=sum(1 for ok, _, _ in outcomes if ok),
        failed=sorted(line for ok, line, _ in outcomes if not ok),
        bytes=sum(size for _, _, size in outcomes),
        seconds=round(monotonic() - start, 3),
        notes=notes,
    )


# -- the drill report ------------------------------------------------------------------------------


@dataclass
class DrillReport:
    """What one drill found; stored as JSON under the report prefix, read back by `status`."""

    started: dt.datetime
    cluster: str = ""  # the scratch Cluster
    source_cluster: str = ""
    finished: dt.datetime | None = None
    target: dt.datetime | None = None  # the recovery target asked for (None: the latest point)
    recovery_point: dt.datetime | None = None
    recovery_point_basis: str = ""  # where the recovery point comes from, and whether it is a bound
    media_as_of: dt.datetime | None = None  # the offsite copy checked: the target, or the newest (latest point)
    db_ready_seconds: float | None = None
    probe_layout: str = ""
    probe_assets: int | None = None
    immich_version: str | None = None
    last_sync_start: dt.datetime | None = None  # of the newest media sync finished by `media_as_of`
    cross_check: CrossCheck | None = None
    sample: SampleResult | None = None
    rpo_db_seconds: float | None = None
    rpo_media_seconds: float | None = None
    rto_db_seconds: float | None = None
    media_seconds_per_gib: float | None = None
    library_bytes: int | None = None
    rto_media_seconds_estimate: float | None = None
    outcome: str = "error"  # ok | failed | error
    problems: list[str] = field(default_factory=list)
    kept: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": 1}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.datetime):
                value = _iso(value)
            elif isinstance(value, CrossCheck | SampleResult):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif isinstance(value, list):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Any) -> DrillReport:
        """A report read from the bucket, every field checked; DrillReportError names the first bad one."""
        if not isinstance(data, dict):
            raise DrillReportError(f"not a drill report: a JSON {type(data).__name__}, not an object")
        if data.get("schema") != 1:
            raise DrillReportError("not a drill report: schema is not 1")
        values: dict[str, Any] = {}
        for f in fields(cls):
            check = _FIELDS[f.name]
            if f.name not in data:
                if f.name == "started":
                    raise DrillReportError("not a drill report: no started")
                continue
            values[f.name] = check(data[f.name], f.name)
        report = cls(**values)
        if report.outcome not in OUTCOMES:
            raise DrillReportError(
                f"outcome {shown_text(str(report.outcome), 40)!r} is not one of {', '.join(OUTCOMES)}"
            )
        return report


def _iso(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bad(name: str, value: object, what: str) -> DrillReportError:
    shown = shown_text(repr(value), 40) if not isinstance(value, list | dict) else type(value).__name__
    return DrillReportError(f"not a drill report: {name} {shown} is not {what}")


def _time(value: object, name: str) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise _bad(name, value, "a time")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _bad(name, value, "a time") from None
    if when.tzinfo is None:
        raise _bad(name, value, "a time with its zone")
    return when.astimezone(dt.UTC)


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _bad(name, value, f"text of at most {MAX_TEXT} characters")
    return value


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(name, value, "a count")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _bad(name, value, "a number of seconds or more")
    return float(value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, value, "true or false")
    return value


def _lines(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _bad(name, value, f"a list of at most {MAX_ITEMS} lines")
    return [_text(item, name) for item in value]


def _optional(check: Callable[[object, str], Any]) -> Callable[[object, str], Any]:
    return lambda value, name: None if value is None else check(value, name)


def _record(kind: type[Any], checks: dict[str, Callable[[object, str], Any]]) -> Callable[[object, str], Any]:
    def parse(value: object, name: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _bad(name, value, "an object")
        missing = [k for k in checks if k not in value and k != "notes"]
        if missing:
            raise DrillReportError(f"not a drill report: {name} has no {missing[0]}")
        return kind(**{k: check(value[k], f"{name}.{k}") for k, check in checks.items() if k in value})

    return parse


_CROSS_CHECK = _record(
    CrossCheck,
    {
        "assets": _count,
        "offsite_originals": _count,
        "missing": _count,
        "missing_examples": _lines,
        "not_yet_offsite": _count,
        "not_yet_offsite_examples": _lines,
        "orphans": _count,
        "orphan_examples": _lines,
        "external": _count,
    },
)
_SAMPLE = _record(
    SampleResult,
    {
        "requested": _count,
        "verified": _count,
        "failed": _lines,
        "bytes": _count,
        "seconds": _number,
        "notes": _lines,
    },
)
_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "started": _time,
    "cluster": _text,
    "source_cluster": _text,
    "finished": _optional(_time),
    "target": _optional(_time),
    "recovery_point": _optional(_time),
    "recovery_point_basis": _text,
    "media_as_of": _optional(_time),
    "db_ready_seconds": _optional(_number),
    "probe_layout": _text,
    "probe_assets": _optional(_count),
    "immich_version": _optional(_text),
    "last_sync_start": _optional(_time),
    "cross_check": _CROSS_CHECK,
    "sample": _SAMPLE,
    "rpo_db_seconds": _optional(_number),
    "rpo_media_seconds": _optional(_number),
    "rto_db_seconds": _optional(_number),
    "media_seconds_per_gib": _optional(_number),
    "library_bytes": _optional(_count),
    "rto_media_seconds_estimate": _optional(_number),
    "outcome": _text,
    "problems": _lines,
    "kept": _flag,
}


def drill_report_key(report_prefix: str, started: dt.datetime) -> str:
    """`<report prefix>drills/<UTC start>.json`: not named like a run report, so no run-report lister
    takes it for one."""
    return f"{report_prefix}{DRILLS}{stamp(started.timestamp())}.json"


def write_drill_report(store: ObjectStore, report_prefix: str, report: DrillReport) -> str:
    key = drill_report_key(report_prefix, report.started)
    body = json.dumps(report.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_DRILL_REPORT:
        raise DrillReportError(f"the drill report is {len(body):,} bytes, over the {MAX_DRILL_REPORT:,}-byte cap")
    store.put_object(key, body, bytes.fromhex(md5_hex(body)), None)
    return key


@dataclass
class IgnoredDrill:
    """A drill report that vouches for nothing, and why."""

    key: str
    reason: str


@dataclass
class LatestDrill:
    """The newest believable drill report (`report` None when none could be believed), when it was stored
    (S3's LastModified: what the drill's age is counted from), and the newer ones passed over."""

    key: str
    stored: dt.datetime | None
    report: DrillReport | None
    ignored: list[IgnoredDrill] = field(default_factory=list)


def _read_drill(store: ObjectStore, key: str, size: int, stored: float) -> DrillReport:
    if size > MAX_DRILL_REPORT:
        raise DrillReportError(f"{size:,} bytes, over the {MAX_DRILL_REPORT:,}-byte cap for a drill report: not read")
    try:
        body = store.get_bytes(key, max_bytes=MAX_DRILL_REPORT, what="drill report")
    except ObjectTooLarge:
        raise DrillReportError(f"larger than the {MAX_DRILL_REPORT:,}-byte cap for a drill report") from None
    try:
        data = json.loads(body)
    except RecursionError:
        raise DrillReportError("not a drill report: nested too deeply") from None
    except ValueError as exc:
        raise DrillReportError(f"not a drill report: not JSON ({shown_text(str(exc), 80)})") from None
    report = DrillReport.from_json(data)
    if report.started.timestamp() > stored + WRITE_SKEW:
        raise DrillReportError(
            f"it says it started {_iso(report.started)}, but S3 stored it at "
            f"{_iso(dt.datetime.fromtimestamp(stored, dt.UTC))}: written before its drill started"
        )
    if report.finished is not None and report.finished.timestamp() > stored + WRITE_SKEW:
        raise DrillReportError(
            f"it says it finished {_iso(report.finished)}, but S3 stored it at "
            f"{_iso(dt.datetime.fromtimestamp(stored, dt.UTC))}: written before its drill finished"
        )
    return report


def latest_drill(store: ObjectStore, report_prefix: str, now: dt.datetime) -> LatestDrill | None:
    """The newest drill report that can be believed; None when there is no drill report at all. Raises
    StoreError when the prefix cannot be listed."""
    prefix = f"{report_prefix}{DRILLS}"
    listing = [o for o in store.list_objects(prefix) if o.key.endswith(".json")]
    if not listing:
        return None
    listing.sort(key=lambda o: (o.last_modified, o.key), reverse=True)
    horizon = now.timestamp() + FUTURE_SKEW
    ignored: list[IgnoredDrill] = []
    for obj in listing:
        if len(ignored) >= MAX_SKIPPED:
            break
        if obj.last_modified > horizon:
            ignored.append(IgnoredDrill(obj.key, "stored in the future by S3's date"))
            continue
        try:
            report = _read_drill(store, obj.key, obj.size, obj.last_modified)
        except DrillReportError as exc:
            ignored.append(IgnoredDrill(obj.key, shown_text(str(exc), 160)))
            continue
        except StoreError as exc:
            if exc.transport:
                raise
            ignored.append(IgnoredDrill(obj.key, shown_text(str(exc), 160)))
            continue
        return LatestDrill(obj.key, dt.datetime.fromtimestamp(obj.last_modified, dt.UTC), report, ignored)
    return LatestDrill(ignored[0].key, None, None, ignored)
