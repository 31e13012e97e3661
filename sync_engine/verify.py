"""Check what S3 holds against what the engine recorded uploading, from listings and manifests only.

No object body is downloaded: the listing's size and ETag are compared with each manifest entry
(the newest entry wins when a key was uploaded more than once). Objects that no manifest mentions,
such as those adopted from the old aws-cli loop, are counted as unrecorded, not as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync_engine.config import SyncSettings
from sync_engine.report import list_report_keys, load_report, read_manifest
from sync_engine.store import ObjectStore

MAX_LISTED_PROBLEMS = 200


@dataclass
class VerifyResult:
    reports: int = 0
    recorded: int = 0
    listed: int = 0
    verified: int = 0
    unrecorded: int = 0
    missing: int = 0
    size_mismatch: int = 0
    etag_mismatch: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.etag_mismatch)

    def note(self, kind: str, key: str, **details: Any) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append({"kind": kind, "key": key, **details})


def verify(settings: SyncSettings, store: ObjectStore) -> VerifyResult:
    result = VerifyResult()
    expected: dict[str, dict[str, Any]] = {}
    for key in list_report_keys(store, settings.report_prefix):
        report = load_report(store, key)
        if report.media_prefix != settings.media_prefix or not report.manifest_key:
            continue
        result.reports += 1
        for entry in read_manifest(store.get_bytes(report.manifest_key)):
            expected[entry["key"]] = entry
    result.recorded = len(expected)
    for obj in store.list_objects(settings.media_prefix):
        result.listed += 1
        entry = expected.pop(obj.key, None)
        if entry is None:
            result.unrecorded += 1
        elif obj.size != entry["size"]:
            result.size_mismatch += 1
            result.note("size-mismatch", obj.key, expected=entry["size"], found=obj.size)
        elif obj.etag != entry["etag"]:
            result.etag_mismatch += 1
            result.note("etag-mismatch", obj.key, expected=entry["etag"], found=obj.etag)
        else:
            result.verified += 1
    for key in sorted(expected):
        result.missing += 1
        result.note("missing", key)
    return result
