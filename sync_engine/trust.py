"""When a directory may skip its S3 listing: nothing in it changed since a run that verified it.

An append-only backup only needs the listing to learn what S3 already holds. If the last successful
run of the same coverage (same prefix, folders and shard) started at T, every file whose mtime and
ctime are both older than T (minus the settle window) was uploaded or found unchanged by that run —
a deferred, unstable, failed or unreadable file would have been newer or made that run unsuccessful.
A directory whose own mtime/ctime are older too has had no file added, removed, renamed or moved in
since then (moves update ctime). Such a listing unit is taken as unchanged without asking S3.

What this cannot see is an object deleted from the bucket behind the engine's back, so a full
listing is made whenever the last successful full listing is older than `full_listing_days` (7 by
default); `verify` finds such gaps at any time. The anchor is found from report key names alone (a
LIST of the report prefix), so the writer needs no read permission.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_engine.report import ReportName, parse_report_key, stamp
from sync_engine.store import ObjectStore

DAY = 86_400.0
# Run start times and file times share the node clock; the margin covers coarse (10 ms) file times.
MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class Anchor:
    """The run a listing unit may be trusted to, and the time before which changes are covered by it."""

    run: ReportName
    cutoff_ns: int  # files and directories changed before this are covered by `run`


def find_anchor(
    store: ObjectStore,
    report_prefix: str,
    coverage: str,
    now: float,
    full_listing_days: float,
    settle_seconds: float,
) -> Anchor | None:
    """The latest successful run of this coverage, if a successful full listing is recent enough."""
    if full_listing_days <= 0:
        return None
    window_start = now - full_listing_days * DAY
    runs: list[ReportName] = []
    for obj in store.list_objects(report_prefix, start_after=f"{report_prefix}{stamp(window_start)}"):
        name = parse_report_key(obj.key)
        if name and name.coverage == coverage and name.status == "ok" and name.started < now:
            runs.append(name)
    if not any(run.listing == "full" for run in runs):
        return None
    latest = max(runs, key=lambda run: run.started)
    cutoff = latest.started - max(settle_seconds, 0.0) - MARGIN_SECONDS
    return Anchor(latest, int(cutoff * 1e9))
