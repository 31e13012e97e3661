"""Multipart uploads left open by a run that was killed (SIGKILL, OOM, a node lost): find and abort them.

A run that is stopped by a signal aborts its own multipart uploads (see pool.py), but one killed outright
cannot, and S3 keeps billing the parts it received until the upload is aborted, forever unless the
bucket has an AbortIncompleteMultipartUpload lifecycle rule. So a run begins by listing the open uploads
under the media prefix and aborting those started more than `older_than_seconds` before S3's own clock
says it is now; younger ones may belong to a run still going (another shard, an overlapping manual
run) and are only counted. Age is always S3's `Date` minus S3's `Initiated`: the pod's clock is never
compared with S3's. The check is a courtesy, never a reason to fail the backup: whatever goes wrong
becomes a note or one line per upload in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sync_engine.store import ObjectStore, StoreError, is_outage
from sync_engine.text import one_line

NOT_GRANTED = "s3:ListBucketMultipartUploads not granted: orphaned uploads not checked"
NO_CLOCK = "S3 did not say its time (no Date header): open uploads found but none aborted"
DENIED = frozenset({"AccessDenied", "403"})


@dataclass
class OrphanReport:
    """What the check found: `found` = `aborted` + `kept_recent` + `gone` + `len(errors)`, unless `note`
    says why some or all were not judged."""

    found: int = 0  # open uploads under the prefix (of this shard)
    aborted: int = 0
    kept_recent: int = 0  # younger than the limit, or of unknown age: may belong to a run still going
    gone: int = 0  # finished or aborted by someone else between the listing and our abort
    errors: list[str] = field(default_factory=list)  # one line per upload that could not be aborted
    note: str = ""  # why the uploads were not checked, or not judged


def abort_orphans(
    store: ObjectStore,
    prefix: str,
    older_than_seconds: float,
    *,
    owns: Callable[[str], bool] | None = None,
) -> OrphanReport:
    """Abort the open multipart uploads under `prefix` that S3 says began more than `older_than_seconds`
    ago. With `owns`, only keys it accepts are considered (a shard leaves the others' to them).
    Never raises for an S3 error: the report says what happened."""
    report = OrphanReport()
    try:
        listing = store.list_multipart_uploads(prefix)
    except StoreError as exc:
        report.note = NOT_GRANTED if exc.code in DENIED else f"orphaned uploads not checked: {one_line(exc)}"
        return report
    uploads = [u for u in listing.uploads if owns is None or owns(u.key)]
    report.found = len(uploads)
    if listing.server_time is None:
        report.kept_recent = len(uploads)
        if uploads:
            report.note = NO_CLOCK
        return report
    cutoff = listing.server_time - older_than_seconds
    for n, upload in enumerate(uploads):
        if upload.initiated is None or upload.initiated > cutoff:
            report.kept_recent += 1
            continue
        try:
            store.abort_multipart(upload.key, upload.upload_id)
        except StoreError as exc:
            if exc.code in ("NoSuchUpload", "404"):
                report.gone += 1
                continue
            report.errors.append(one_line(exc))
            if is_outage(exc):
                # S3 is down: the backup itself finds out next; one line says so, not one per upload.
                report.note = f"stopped by an S3 outage: {len(uploads) - n - 1} open uploads not judged"
                return report
            continue
        report.aborted += 1
    return report
