"""Check what S3 holds against what the engine recorded uploading, from listings and manifests only.

No object body is downloaded: the listing's size and ETag are compared with each manifest entry
(the newest entry wins when a key was uploaded more than once). Objects that no manifest mentions,
such as those adopted from the old aws-cli loop, are counted as unrecorded, not as errors. A manifest
that cannot be read is a difference too: what it recorded can no longer be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync_engine.config import IMMICH_FOLDERS, SyncSettings
from sync_engine.manifests import index_runs, read_records
from sync_engine.store import ObjectStore

MAX_LISTED_PROBLEMS = 200


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
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.etag_mismatch or self.unreadable_manifests)

    def note(self, kind: str, key: str, **details: Any) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append({"kind": kind, "key": key, **details})


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
    for obj in store.list_objects(settings.media_prefix):
        result.listed += 1
        entry = expected.pop(obj.key, None)
        if entry is None:
            result.unrecorded += 1
        elif obj.size != entry.size:
            result.size_mismatch += 1
            result.note("size-mismatch", obj.key, expected=entry.size, found=obj.size)
        elif obj.etag != entry.etag:
            result.etag_mismatch += 1
            result.note("etag-mismatch", obj.key, expected=entry.etag, found=obj.etag)
        else:
            result.verified += 1
    for key in sorted(expected):
        result.missing += 1
        result.note("missing", key)
    return result
