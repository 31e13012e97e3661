"""Plain data passed between scan, plan, upload, download and report. No I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


@dataclass(frozen=True)
class Shard:
    """One of N deterministic slices of the key space, for a Kubernetes Indexed Job."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N`; a ValueError says what is wrong (the caller names the setting)."""
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match:
            raise ValueError(f"must look like I/N (e.g. 0/4), got {text.strip()!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise ValueError(f"need 0 <= I < N, got {text.strip()}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file found by the walk; `rel` is the path under the library root, `/`-separated."""

    rel: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    ino: int = 0

    @property
    def folder(self) -> str:
        return self.rel.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One entry of a ListObjectsV2 page: all the engine ever learns about an object."""

    key: str
    size: int
    last_modified: float  # epoch seconds
    etag: str  # without quotes
    storage_class: str = "STANDARD"


class ProblemKind(StrEnum):
    """Why the walk could not back up an entry."""

    SYMLINK = "symlink"
    INVALID_NAME = "invalid-name"
    UNREADABLE = "unreadable"
    SPECIAL_FILE = "special-file"
    VANISHED = "vanished"


# Problems that a later run cannot fix by itself: the operator must act, so the run is partial.
BLOCKING_PROBLEMS = frozenset({ProblemKind.INVALID_NAME, ProblemKind.UNREADABLE})


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """Something under the library root that is not backed up, and why."""

    rel: str
    kind: ProblemKind
    detail: str = ""


class Reason(StrEnum):
    """Why the planner uploads a file, compares it with S3 first, or leaves it alone (see plan.py)."""

    MISSING = "missing"  # no object under its key
    SIZE = "size-differs"
    RETRY = "unconfirmed-upload"  # the last upload was not confirmed by S3: sent again until it is
    CHANGED = "changed"  # size, mtime, ctime or inode differ from the confirmed look: bytes compared first
    UNKNOWN = "not-in-files-cache"  # no earlier run confirmed this file: bytes compared first
    RECHECK = "recheck"  # confirmed, but racy or S3 now shows another ETag: bytes compared first
    UNCHANGED = "unchanged"
    SETTLING = "settling"  # still being written (changed since the last look, recently): deferred
    TRUSTED = "unchanged-since-last-run"  # every file of its directory is as confirmed: not even listed


UPLOAD_REASONS = frozenset({Reason.MISSING, Reason.SIZE, Reason.RETRY, Reason.CHANGED, Reason.UNKNOWN, Reason.RECHECK})
CHECK_REASONS = frozenset({Reason.CHANGED, Reason.UNKNOWN, Reason.RECHECK})


class CacheState(StrEnum):
    """A files-cache line's state (see filescache.py)."""

    OK = "ok"
    RACY = "racy"
    SEEN = "seen"
    FAILED = "failed"


class Cached(NamedTuple):
    """One file as a previous run left it: the look it confirmed (or deferred), and what S3 held.

    A tuple because a run reads one per file of the library: it is built far faster than a dataclass."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    etag: str  # as listings show it (lower case, no quotes); empty for `seen`
    part_size: int | None
    state: CacheState

    def same_file(self, local: LocalFile) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino) == (
            local.size,
            local.mtime_ns,
            local.ctime_ns,
            local.ino,
        )


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One local file paired with its object (if any) and its files-cache line, and the decision."""

    local: LocalFile
    key: str
    reason: Reason
    remote: RemoteObject | None = None
    cached: Cached | None = None
    overwrite: bool = False  # the run decided that this file's changed content may replace its object

    @property
    def uploads(self) -> bool:
        return self.reason in UPLOAD_REASONS

    @property
    def check_content(self) -> bool:
        """Compare the local bytes with the listing's ETag before uploading."""
        return self.reason in CHECK_REASONS and self.remote is not None


class Outcome(StrEnum):
    """What an upload worker did with one plan item."""

    UPLOADED = "uploaded"
    SAME_CONTENT = "same-content"  # the ETag check proved the object already holds these bytes
    DEFERRED = "deferred"  # changed again since the scan and is inside the settle window
    UNSTABLE = "unstable"  # kept changing while read: not committed, a later run takes it
    VANISHED = "vanished"
    FAILED = "failed"
    HELD = "held"  # its changed content would replace an object: decided once the whole run is compared
    WOULD_UPLOAD = "would-upload"  # a plan's prediction: `backup` would send this file (see Uploader.predict)


@dataclass(frozen=True, slots=True)
class UploadResult:
    """One plan item after its upload worker: counted by the run, recorded in the manifest when uploaded."""

    item: PlanItem
    outcome: Outcome
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    etag: str = ""
    part_size: int | None = None
    attempts: int = 1
    error: str = ""
    s3_failure: bool = False  # S3 refused or was unreachable (as opposed to a local problem)
    s3_outage: bool = False  # S3 unreachable, 5xx or throttling (not a refusal of this object): may abort the run
    s3_etag: str = ""  # the ETag S3 reported when it is not `etag`'s MD5 form (SSE-KMS): what listings show
    unconfirmed: bool = False  # committed, but S3 answered an ETag other than the bytes sent: not verified
    racy: bool = False  # the file may change without its size/mtime/ctime showing it: re-check next run


@dataclass
class FolderStats:
    """Counters for one top-level folder; the report and the text summary are built from these."""

    files: int = 0
    bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    unchanged: int = 0
    unchanged_bytes: int = 0
    same_content: int = 0  # of the unchanged: read and proven equal to the object by its ETag this run
    same_content_bytes: int = 0
    deferred: int = 0
    deferred_bytes: int = 0
    unstable: int = 0
    vanished: int = 0
    failed: int = 0
    failed_bytes: int = 0
    kept: int = 0  # changed content not uploaded: the original in S3 was kept (see overwrite.py)
    skipped: int = 0  # symlinks, special files, invalid names, unreadable
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: FolderStats) -> None:
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


class Fate(StrEnum):
    """What a restore did with one object."""

    DOWNLOADED = "downloaded"
    ALREADY_THERE = "already-there"  # same size and ETag: left untouched
    CONFLICT = "conflict"  # a local file differs and --overwrite was not given
    FAILED = "failed"
    PENDING = "pending"  # archived: S3 is restoring it
    CANCELLED = "cancelled"  # the run was stopped before this file was done


@dataclass(frozen=True, slots=True)
class FileResult:
    """One restored (or not restored) object, as the restore counts it and the log shows it."""

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
    s3_outage: bool = False  # S3 unreachable, 5xx or throttling (not a refusal of this object): may abort the run
    fatal: bool = False  # the target file system cannot take more (full, read-only): stop the run
