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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync_engine.config import IMMICH_FOLDERS, SyncSettings
from sync_engine.errors import StoreError
from sync_engine.etag import is_kms
from sync_engine.manifests import Recorded, index_runs, read_records
from sync_engine.models import RemoteObject
from sync_engine.store import ObjectStore

MAX_LISTED_PROBLEMS = 200
MAX_HEADS = 1000  # objects whose encryption is asked for, per run


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
        )

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


def verify(settings: SyncSettings, store: ObjectStore) -> VerifyResult:
    """Compare one listing of the media prefix with every manifest of its runs (raises StoreError)."""
    result = VerifyResult()
    # Only the engine's own keys can be recorded: the Immich folders under this media prefix.
    wanted = tuple(f"{settings.media_prefix}{folder}/" for folder in IMMICH_FOLDERS)
    records = read_records(store, index_runs(store, settings.report_prefix), wanted)
    expected = records.entries
    result.reports, result.recorded = records.runs, len(expected)
    for key, why in records.unreadable.items():
        result.unreadable_manifests += 1
        result.note("unreadable-manifest", key, detail=why)
    result.bad_manifest_lines = records.bad_lines
    for bad in records.bad_examples:
        result.note("bad-manifest-line", bad.manifest, line=bad.number, detail=bad.reason)
    encryption = _Encryption(store)
    for obj in store.list_objects(settings.media_prefix):
        result.listed += 1
        entry = expected.pop(obj.key, None)
        if entry is None:
            result.unrecorded += 1
        else:
            _compare(result, obj, entry, encryption)
    for key in sorted(expected):
        result.missing += 1
        result.note("missing", key)
    return result
