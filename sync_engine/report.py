"""The run report: one new JSON object per run, stored with the gzipped manifest of what it uploaded.

Reports are append-only like the media: every run writes new keys named by start time and run id, so
the newest report is the last key of a listing and no run can overwrite another's record. They live
under REPORT_PREFIX, beside (never inside) the media folders, so a media restore never sees them.
The manifest's content is `manifests.py`'s business; this module names and stores both objects.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync_engine.etag import md5_hex
from sync_engine.models import FolderStats
from sync_engine.store import ObjectStore

REPORT_SCHEMA = 1
# A run report is JSON with at most 1,000 problems: far smaller than this. Every reader checks a report's
# listed size against it before the GET and stops reading past it, so a forged giant costs no memory.
MAX_REPORT = 16 * 1024 * 1024


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


STAMP = "%Y%m%dT%H%M%SZ"
_KEY = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]+)-([0-9a-f]{8})-(ok|partial|aborted|refused)-(full|incremental)\.json$")


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(STAMP)


def coverage(library_root: str, media_prefix: str, folders: list[str], shard: str | None) -> str:
    """What a run was responsible for; only a run with the same coverage can vouch for another
    (a run from a partial copy of the library elsewhere must not vouch for the CronJob's)."""
    text = f"{library_root}|{media_prefix}|{','.join(sorted(folders))}|{shard or ''}"
    return f"{zlib.crc32(text.encode('utf-8')):08x}"


def report_key(report_prefix: str, report: RunReport) -> str:
    """`<start>-<run id>-<coverage>-<status>-<listing>.json`: listing the prefix alone tells a later
    run when the last successful run of the same coverage started, without reading any report."""
    started = datetime.strptime(report.started_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    cov = coverage(report.library_root, report.media_prefix, report.folders, report.shard)
    return f"{report_prefix}{stamp(started)}-{report.run_id}-{cov}-{report.status}-{report.listing}.json"


@dataclass(frozen=True)
class ReportName:
    """What a report's key alone says about its run."""

    key: str
    started: float
    run_id: str
    coverage: str
    status: str
    listing: str


def parse_report_key(key: str) -> ReportName | None:
    match = _KEY.search(key)
    if not match:
        return None
    started = datetime.strptime(match[1], STAMP).replace(tzinfo=UTC).timestamp()
    return ReportName(key, started, match[2], match[3], match[4], match[5])


MANIFEST_SUFFIX = ".manifest.jsonl.gz"
FILES_SUFFIX = ".files.jsonl.gz"  # the files cache (see filescache.py)


def manifest_key(report_key_: str) -> str:
    """The manifest sits beside its report: same name, so it sorts with the run it belongs to."""
    return report_key_.removesuffix(".json") + MANIFEST_SUFFIX


@dataclass
class RunReport:
    """Everything one run did. `report_key` is where it is stored (set once written)."""

    run_id: str
    engine_version: str
    command: str
    started_at: str
    finished_at: str = ""
    duration_seconds: float = 0.0
    bucket: str = ""
    media_prefix: str = ""
    library_root: str = ""
    folders: list[str] = field(default_factory=list)
    shard: str | None = None
    dry_run: bool = False
    settle_seconds: float = 0.0
    part_size: int = 0
    multipart_threshold: int = 0
    bwlimit: str = "off"  # the bandwidth limit in force when the run started, as the operator wrote it
    versioning: str = ""  # the bucket's versioning when the run started: Enabled | Suspended | Off | unknown
    versioning_note: str = ""
    overwrites: list[dict[str, Any]] = field(default_factory=list)  # key, old/new size and ETag
    mass_change: dict[str, Any] = field(default_factory=dict)  # see overwrite.mass_change_record
    status: str = "running"  # ok | partial | aborted | refused (not an Immich library: nothing uploaded)
    exit_code: int = 0
    totals: FolderStats = field(default_factory=FolderStats)
    per_folder: dict[str, FolderStats] = field(default_factory=dict)
    folder_seconds: dict[str, float] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    list_units: int = 0  # listing units (see units.py): LISTs <= objects/1000 + units listed
    units_listed: int = 0
    units_trusted: int = 0  # skipped: nothing in them changed since `trusted_run`
    listing: str = "full"  # full | incremental (some units trusted to the previous run)
    trusted_run: str = ""  # the recent full listing that lets unchanged units go unlisted
    files_cache: str = ""  # the previous run's files cache this run compared with (see filescache.py)
    files_cache_entries_read: int = 0
    files_cache_bad_lines: int = 0
    files_cache_note: str = ""  # why there was none, or what was wrong with it
    files_cache_key: str = ""  # the files cache describing this run: its own, or the previous one unchanged
    files_cache_entries: int = 0
    orphan_uploads: dict[str, Any] = field(default_factory=dict)  # unfinished uploads of killed runs (orphans.py)
    problems: list[dict[str, str]] = field(default_factory=list)
    problems_truncated: int = 0
    error: str = ""
    report_key: str = ""
    manifest_key: str = ""
    manifest_entries: int = 0
    schema: int = REPORT_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> RunReport:
        """A report read from the bucket is untrusted: anything that does not fit is a ValueError naming
        the field; fields this version does not know are ignored (a newer engine may add some)."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        out: dict[str, Any] = {}
        for name, spec in cls.__dataclass_fields__.items():
            if name not in data:
                continue
            value = data[name]
            if name == "totals":
                out[name] = _folder_stats(value, "totals")
            elif name == "per_folder":
                if not isinstance(value, dict):
                    raise ValueError("per_folder must be an object")
                out[name] = {str(k): _folder_stats(v, f"per_folder.{k}") for k, v in value.items()}
            else:
                out[name] = _checked(name, value, cls.__dataclass_fields__[name].default, spec.type)
        for required in ("run_id", "engine_version", "command", "started_at"):
            if not isinstance(out.get(required), str):
                raise ValueError(f"{required} is missing or not text")
        return cls(**out)


def _checked(name: str, value: Any, default: Any, annotation: Any) -> Any:
    text = str(annotation)
    if text.startswith("str | None") or text == "str | None":
        ok = value is None or isinstance(value, str)
    elif text.startswith("str"):
        ok = isinstance(value, str)
    elif text.startswith("bool"):
        ok = isinstance(value, bool)
    elif text.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif text.startswith("list"):
        ok = isinstance(value, list)
    elif text.startswith("dict"):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{name}: {type(value).__name__} where {text} was expected")
    return value


def _folder_stats(value: Any, where: str) -> FolderStats:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    stats = FolderStats()
    for name, got in value.items():
        if name == "by_reason":
            if not isinstance(got, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in got.values()
            ):
                raise ValueError(f"{where}.by_reason must map reasons to counts")
            stats.by_reason = {str(k): v for k, v in got.items()}
        elif name in FolderStats.__dataclass_fields__:
            if not isinstance(got, int) or isinstance(got, bool) or got < 0:
                raise ValueError(f"{where}.{name}: {got!r} is not a count")
            setattr(stats, name, got)
        # an unknown counter (a newer engine's) is ignored
    return stats


def write_report(store: ObjectStore, key: str, report: RunReport, manifest: bytes, files: bytes | None) -> None:
    """Manifest and files cache first, then the report that names them: a report never points at a
    missing object.

    A run that uploaded nothing writes no manifest, and one that found every file as the previous files
    cache describes it writes no cache (`files` is None): a no-op night costs one PUT, the report.
    """
    if report.manifest_entries:
        report.manifest_key = manifest_key(key)
        store.put_object(report.manifest_key, manifest, bytes.fromhex(md5_hex(manifest)), None)
    if files is not None:
        report.files_cache_key = key.removesuffix(".json") + FILES_SUFFIX
        store.put_object(report.files_cache_key, files, bytes.fromhex(md5_hex(files)), None)
    report.report_key = key
    body = json.dumps(report.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
    store.put_object(key, body, bytes.fromhex(md5_hex(body)), None)


def list_report_keys(store: ObjectStore, report_prefix: str) -> list[str]:
    """Report keys oldest first (their names start with the UTC start time)."""
    return [o.key for o in store.list_objects(report_prefix) if o.key.endswith(".json")]


def load_report(store: ObjectStore, key: str) -> RunReport:
    """One run report, read up to MAX_REPORT bytes (ObjectTooLarge past it) and schema-checked (ValueError)."""
    return RunReport.from_json(json.loads(store.get_bytes(key, max_bytes=MAX_REPORT, what="run report")))
