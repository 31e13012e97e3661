"""Check what S3 holds against what the engine recorded uploading, from listings and manifests.

No object body is downloaded: the listing's size and ETag are compared with each manifest entry
(the newest entry wins when a key was uploaded more than once). Objects that no manifest mentions,
such as those adopted from the old aws-cli loop, are counted as unrecorded, not as errors. What verify
cannot vouch for is a difference, never `ok`:

- a manifest that cannot be read, or a line of one (`bad-manifest-line`): what it recorded can no
  longer be checked (`manifests.py` says what makes either unreadable);
- a key whose newest upload S3 did not confirm (`unconfirmed-upload`): S3 committed it but answered
  another ETag than the bytes sent, so the listing agreeing with the record proves nothing;
- an SSE-KMS or DSSE-KMS object whose listing ETag is not the recorded MD5 and for which the backup
  recorded no `s3_etag` (`not-comparable`). With KMS, S3's ETag is not an MD5 of the bytes, so the
  listing cannot tell a changed object from an unchanged one. When the listing ETag differs and no
  `s3_etag` was recorded, one HEAD asks S3 for the object's encryption: without KMS the object changed
  (`etag-mismatch`); with KMS only its size was checked, which is said as such. `immich-sync restore`
  checks such objects fully: it hashes what it downloads and compares with the manifest's MD5. The
  HEADs are capped at MAX_HEADS per run; past that, such objects are `not-comparable` without asking.

A listing ETag equal to the recorded `etag` or the recorded `s3_etag` (what S3 answered at upload,
recorded when it was not the MD5) is a match.

The manifests and run reports come from the writer, whose keys may have leaked, so they are not taken at
their word either (also a difference):

- a run report or manifest that is untrusted (`manifests.index_runs`: dated in the future, written
  before its run started, not named like a run's, rewritten after it was written) or whose content
  is not a run report (larger than `report.MAX_REPORT`, not JSON, a field of the wrong type, named in the
  detail) or disagrees with itself or with S3: its `started_at` is not its name's start, its `started_at` or
  `finished_at` lies in the future, or it finished later than S3 stored it (`asof.WRITE_SKEW`). Every
  run report is read for this (one GET each). An untrusted manifest is not used as a reference, so the
  objects only it vouches for are unrecorded or differ from an older record;
- in a versioned bucket (told by the run reports' own versions: every run writes one), an original
  (upload/, library/, profile/; not Immich's XMP sidecars, which it rewrites on every metadata edit)
  that was overwritten with other bytes or deleted after its first upload, with the dates: counted in
  `overwritten`/`deleted` and named once per key, as the key's own problem (`tampered`, when the
  comparison found a difference too) or as one of kind `overwritten`/`deleted`. Immich never changes
  an original, so a later version is someone writing with the writer's keys, a file changed on the
  volume behind Immich, or an edit the backup was allowed to carry over (its report's `overwrites`):
  the listing cannot tell them apart, so each is named. The versions are listed besides the current
  objects (one ListObjectVersions per 1,000 entries), which are compared as without versions.

`as_of` verifies the bucket as it was then: each key's newest version with LastModified ≤ as_of, and
only reports and manifests whose own version is that old. In a bucket without versioning only current
objects exist, so anything written after as_of has no older bytes and counts as missing if recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sync_engine.asof import FUTURE_SKEW, WRITE_SKEW, iso, parse_report_time
from sync_engine.config import DEFAULT_FOLDERS, IMMICH_FOLDERS, SyncSettings
from sync_engine.errors import StoreError
from sync_engine.etag import is_kms
from sync_engine.manifests import MANIFEST_SUFFIX, Recorded, RunIndex, Untrusted, index_runs, read_records
from sync_engine.models import RemoteObject
from sync_engine.report import MAX_REPORT, RunReport, parse_report_key
from sync_engine.store import ObjectStore
from sync_engine.versions import KeyHistory, ObjectVersion, VersionListing

MAX_LISTED_PROBLEMS = 200
MAX_HEADS = 1000  # objects whose encryption is asked for, per run
REPORT_READERS = 8  # run reports read at once
SIDECARS = (".xmp",)  # metadata Immich rewrites in place; not originals


@dataclass
class VerifyResult:
    """The counts verify reports, and the first problems by key."""

    reports: int = 0
    recorded: int = 0
    listed: int = 0
    verified: int = 0
    unrecorded: int = 0
    missing: int = 0
    size_mismatch: int = 0
    etag_mismatch: int = 0
    unreadable_manifests: int = 0
    bad_manifest_lines: int = 0
    unconfirmed: int = 0  # the newest upload of the key was not confirmed by S3
    not_comparable: int = 0  # SSE-KMS: size matches, content could not be checked from a listing
    as_of: str = ""  # the time verified, when not now
    versioned: bool | None = None  # the bucket keeps versions; None: they could not be listed
    run_reports_read: int = 0
    untrusted_reports: int = 0  # run reports and manifests not trusted (see the module's docstring)
    overwritten: int = 0  # originals overwritten with other bytes after their first upload
    deleted: int = 0  # originals deleted after their first upload
    notes: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # S3 operations sent (the store's count)
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.size_mismatch
            or self.etag_mismatch
            or self.unreadable_manifests
            or self.bad_manifest_lines
            or self.unconfirmed
            or self.not_comparable
            or self.untrusted_reports
            or self.overwritten
            or self.deleted
        )

    def tampering(self) -> str:
        """The tampering found, as a clause of the text summary (empty when none)."""
        parts = [
            f"{self.untrusted_reports:,} run reports or manifests not trusted" if self.untrusted_reports else "",
            f"{self.overwritten:,} originals overwritten" if self.overwritten else "",
            f"{self.deleted:,} originals deleted" if self.deleted else "",
        ]
        return "; ".join(p for p in parts if p)

    def note(self, kind: str, key: str, **details: Any) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append({"kind": kind, "key": key, **details})


class _Encryption:
    """Asks S3 how an object is encrypted, at most MAX_HEADS times per run."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.asked = 0

    def of(self, key: str) -> str | None:
        """The object's ServerSideEncryption; None when not asked (cap reached) or S3 refused."""
        if self.asked >= MAX_HEADS:
            return None
        self.asked += 1
        try:
            return self.store.head_object(key).encryption
        except StoreError as exc:
            if exc.transport:
                raise
            return None


def _compare(result: VerifyResult, obj: RemoteObject, entry: Recorded, encryption: _Encryption) -> None:
    if obj.size != entry.size:
        result.size_mismatch += 1
        result.note("size-mismatch", obj.key, expected=entry.size, found=obj.size)
    elif not entry.verified:
        result.unconfirmed += 1
        result.note(
            "unconfirmed-upload",
            obj.key,
            detail="its last upload was not confirmed by S3 (S3 answered another ETag than the bytes sent); "
            "the next backup sends it again",
        )
    elif obj.etag == entry.etag or (entry.s3_etag and obj.etag == entry.s3_etag):
        result.verified += 1
    elif entry.s3_etag:
        result.etag_mismatch += 1
        result.note("etag-mismatch", obj.key, expected=entry.s3_etag, found=obj.etag)
    else:
        how = encryption.of(obj.key)
        if how is not None and not is_kms(how):
            result.etag_mismatch += 1
            result.note("etag-mismatch", obj.key, expected=entry.etag, found=obj.etag)
            return
        result.not_comparable += 1
        said = f"{how}: S3's ETag" if how else "encryption not asked (SSE-KMS?): S3's ETag"
        result.note(
            "not-comparable",
            obj.key,
            detail=f"{said} is not the recorded MD5 and the manifest recorded none of S3's own, so the "
            "listing cannot show whether the bytes changed; size matches, content not checked "
            "(`immich-sync restore` checks the MD5 of what it downloads)",
            encryption=how or "",
        )


def _report_problems(key: str, data: Any, stored: float, now: float) -> list[tuple[str, str]]:
    """(reason, detail) for each way a run report's content cannot be believed."""
    if not isinstance(data, dict):
        return [("unreadable", f"not a run report: a JSON {type(data).__name__}, not an object")]
    try:
        RunReport.from_json(data)  # every field the engine writes, of the type it writes
    except ValueError as exc:
        return [("unreadable", f"not a run report ({str(exc)[:160]})")]
    name = parse_report_key(key)
    started, finished = parse_report_time(data.get("started_at")), parse_report_time(data.get("finished_at"))
    found: list[tuple[str, str]] = []
    if name is not None and started is not None and abs(started - name.started) > 1:
        found.append(("content", f"its name says it started {iso(name.started)}, its content {iso(started)}"))
    for field_name, when in (("started_at", started), ("finished_at", finished)):
        if when is not None and when > now + FUTURE_SKEW:
            found.append(("future", f"{field_name} {iso(when)} lies in the future (it is {iso(now)})"))
            break
    if finished is not None and finished > stored + WRITE_SKEW:
        found.append(
            (
                "written-early",
                f"finished {iso(finished)} by its own account, but S3 stored it at {iso(stored)}: written before "
                f"it finished ({WRITE_SKEW / 60:.0f} minutes of clock skew are allowed)",
            )
        )
    return found


def _read_report(store: ObjectStore, obj: RemoteObject) -> Any:
    if obj.size > MAX_REPORT:
        raise ValueError(f"{obj.size:,} bytes, larger than any run report ({MAX_REPORT:,})")
    version = obj.get_version if isinstance(obj, ObjectVersion) else None
    body = bytearray()
    with store.open_object(obj.key, version_id=version) as reader:
        for chunk in reader.chunks(256 * 1024):
            body += chunk
            if len(body) > MAX_REPORT:
                raise ValueError(f"larger than any run report ({MAX_REPORT:,} bytes)")
    return json.loads(bytes(body))


def check_reports(store: ObjectStore, index: RunIndex, now: float) -> int:
    """Read every run report the index trusts by name and distrust those whose content gives them away,
    with their run's manifest (a forged report makes a forged run). Returns the reports read."""
    reports = list(index.reports)

    def judge(obj: RemoteObject) -> list[tuple[str, str]]:
        try:
            return _report_problems(obj.key, _read_report(store, obj), obj.last_modified, now)
        except StoreError as exc:
            if exc.transport:
                raise
            return [("unreadable", str(exc))]
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, too large
            return [("unreadable", f"not a run report ({str(exc)[:120]})")]

    with ThreadPoolExecutor(max_workers=max(1, min(REPORT_READERS, len(reports)))) as pool:
        verdicts = list(pool.map(judge, reports))
    bad_runs: set[str] = set()
    for obj, problems in zip(reports, verdicts, strict=True):
        for reason, detail in problems:
            index.untrusted.append(Untrusted(obj.key, "report", reason, detail))
        if problems:
            bad_runs.add(obj.key.removesuffix(".json"))
            if index.last_sync is not None and index.last_sync.key == obj.key:
                index.last_sync = None
    if bad_runs:
        keep = []
        for manifest in index.manifests:
            if manifest.key.removesuffix(MANIFEST_SUFFIX) in bad_runs:
                detail = "its run's report is not trusted"
                index.untrusted.append(Untrusted(manifest.key, "manifest", "content", detail))
                index.distrusted_manifests.append(manifest)
            else:
                keep.append(manifest)
        index.manifests = keep
    return len(reports)


def _original(key: str, media_prefix: str) -> bool:
    rel = key[len(media_prefix) :]
    return rel.split("/", 1)[0] in DEFAULT_FOLDERS and not rel.lower().endswith(SIDECARS)


def _tampered(history: KeyHistory, as_of: float | None) -> dict[str, Any] | None:
    """How an original was overwritten with other bytes, or deleted, after its first upload (None: it
    was not): the problem's kind and fields."""
    first = history.first(as_of)
    if first is None:
        return None
    changes = [
        v
        for v in reversed(history.upto(as_of))
        if v is not first
        and v.last_modified >= first.last_modified
        and (v.deleted or v.etag != first.etag or v.size != first.size)
    ]
    if not changes:
        return None
    events = [
        f"{'deleted' if v.deleted else f'overwritten ({v.size:,} bytes, ETag {v.etag})'} {iso(v.last_modified)}"
        for v in changes
    ]
    return {
        "tampered": "deleted" if history.at(as_of) is None else "overwritten",
        "first_upload": iso(first.last_modified),
        "changed": [iso(v.last_modified) for v in changes],
        "tamper_detail": f"first uploaded {iso(first.last_modified)} ({first.size:,} bytes, ETag {first.etag}), then "
        + ", ".join(events)
        + ": the first upload's bytes are a noncurrent version (`immich-sync restore --as-of` a time before)",
    }


class _Tampering:
    """Originals overwritten or deleted after their first upload, by key, until each is named: within the
    key's own problem when the comparison found one (one entry per key), else on its own."""

    def __init__(self, media_prefix: str) -> None:
        self.media_prefix = media_prefix
        self.found: dict[str, dict[str, Any]] = {}

    def look(self, result: VerifyResult, history: KeyHistory, as_of: float | None) -> None:
        if not _original(history.key, self.media_prefix):
            return
        tampering = _tampered(history, as_of)
        if tampering is None:
            return
        if tampering["tampered"] == "deleted":
            result.deleted += 1
        else:
            result.overwritten += 1
        self.found[history.key] = tampering

    def name(self, result: VerifyResult) -> None:
        for problem in result.problems:
            tampering = self.found.pop(problem["key"], None) if problem["kind"] in _COMPARED else None
            if tampering is not None:
                detail = tampering.pop("tamper_detail")
                problem.update(tampering)
                problem["detail"] = f"{problem['detail']}; {detail}" if problem.get("detail") else detail
        for key in sorted(self.found):
            tampering = self.found[key]
            detail = tampering.pop("tamper_detail")
            result.note(tampering["tampered"], key, **tampering, detail=detail)
        self.found.clear()


_COMPARED = frozenset({"missing", "size-mismatch", "etag-mismatch", "unconfirmed-upload", "not-comparable"})


def verify(settings: SyncSettings, store: ObjectStore, *, now: float | None = None) -> VerifyResult:
    """Compare one listing of the media prefix with every manifest of its runs (raises StoreError)."""
    now = time.time() if now is None else now
    as_of = settings.as_of
    result = VerifyResult(as_of=iso(as_of) if as_of is not None else "")
    # Only the engine's own keys can be recorded: the Immich folders under this media prefix.
    wanted = tuple(f"{settings.media_prefix}{folder}/" for folder in IMMICH_FOLDERS)
    index = index_runs(store, settings.report_prefix, as_of=as_of, now=now)
    result.run_reports_read = check_reports(store, index, now)
    result.untrusted_reports = len({u.key for u in index.untrusted})
    for untrusted in index.untrusted:
        result.note(untrusted.kind, untrusted.key, reason=untrusted.reason, detail=untrusted.detail)
    records = read_records(store, index, wanted, disputes=False)
    expected = records.entries
    result.reports, result.recorded = records.runs, len(expected)
    for key, why in records.unreadable.items():
        result.unreadable_manifests += 1
        result.note("unreadable-manifest", key, detail=why)
    result.bad_manifest_lines = records.bad_lines
    for bad in records.bad_examples:
        result.note("bad-manifest-line", bad.manifest, line=bad.number, detail=bad.reason)
    encryption = _Encryption(store)
    tampering = _Tampering(settings.media_prefix)
    listing = VersionListing(store, settings.media_prefix, required=as_of is not None)
    written_later: dict[str, float] = {}  # recorded keys whose every version is younger than as_of
    if as_of is None:
        # Now: the current objects as listed (what is compared, exactly as without versions), and where
        # the run reports show the bucket keeps versions (every run writes one), the versions besides.
        if index.versioned:
            for history in listing:
                tampering.look(result, history, None)
        else:
            listing = _CurrentListing(store, settings.media_prefix, index.versioned)
        current: Iterable[RemoteObject] = store.list_objects(settings.media_prefix)
    else:
        current = _as_of(listing, as_of, expected, written_later, lambda h: tampering.look(result, h, as_of))
    for obj in current:
        result.listed += 1
        entry = expected.pop(obj.key, None)
        if entry is None:
            result.unrecorded += 1
        else:
            _compare(result, obj, entry, encryption)
    result.versioned = listing.versioned
    for key in sorted(expected):
        result.missing += 1
        if key in written_later:
            result.note(
                "missing",
                key,
                detail=f"S3 holds only bytes written {iso(written_later[key])}, after {result.as_of}"
                + ("" if listing.versioned else "; the bucket keeps no versions, so older bytes cannot exist"),
            )
        else:
            result.note("missing", key)
    tampering.name(result)
    result.notes = _notes(listing, index, as_of)
    result.requests = store.request_counts()
    return result


def _as_of(
    listing: VersionListing,
    as_of: float,
    expected: dict[str, Recorded],
    written_later: dict[str, float],
    look: Callable[[KeyHistory], None],
) -> Iterator[RemoteObject]:
    """Each key as it was at `as_of` (none when deleted by then or not yet written)."""
    for history in listing:
        look(history)
        obj = history.at(as_of)
        if obj is not None:
            yield obj
        elif history.key in expected and not history.upto(as_of):
            written_later[history.key] = history.versions[-1].last_modified


class _CurrentListing(VersionListing):
    """The current objects under a prefix, as one-version histories (ListObjectsV2)."""

    def __init__(self, store: ObjectStore, prefix: str, versioned: bool | None) -> None:
        super().__init__(store, prefix, required=False)
        self.versioned = versioned

    def _pages(self) -> Iterator[list[ObjectVersion]]:
        for page in self.store.list_pages(self.prefix):
            yield [ObjectVersion.current(obj) for obj in page]


def _notes(listing: VersionListing, index: RunIndex, as_of: float | None) -> list[str]:
    notes = [n for n in (listing.note, index.note if index.note != listing.note else "") if n]
    if listing.versioned is False:
        if as_of is not None:
            notes.append(
                f"the bucket keeps no object versions: it holds current objects only, so objects written after "
                f"{iso(as_of)} are left out and older bytes of them cannot exist"
            )
        else:
            notes.append(
                "the bucket keeps no object versions, so an overwritten or deleted object cannot be seen, nor its "
                "bytes brought back (enable versioning on the bucket)"
            )
    return notes
