"""One point in time for the whole of Immich: the database's PITR target and the media's `--as-of`.

Restored as of a time T, the media are what the newest media sync that had *finished* by T left in the
bucket: the library as it was when that sync started (every upload of a sync is stored before its run
report is). The database recovered to T may reference any photo Immich stored up to T. Photos added
between that sync's start and T are therefore in the database but not in the media: the two meet only at
the sync's start. The flow says so, and offers the point where they do meet — the database to the sync's
start, the media as of T — instead of two silently inconsistent halves.

Which sync had finished by T is read from the run reports' *listing*: a report's start comes from its
name (what the run claims) and its end from S3's LastModified (what S3 saw), so a report written after T
— a forged one too — cannot vouch for T. Only `ok` reports of the nightly's coverage count (the coverage
most `ok` reports share): an ad-hoc run of one folder does not mean the library was copied.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from immich_tui.services import clock
from sync_engine.asof import FUTURE_SKEW, WRITE_SKEW
from sync_engine.models import RemoteObject
from sync_engine.report import parse_report_key


@dataclass(frozen=True)
class SyncPoint:
    """A successful media sync as the report listing shows it."""

    key: str
    started: dt.datetime  # the run's start, from its report's name
    stored: dt.datetime  # S3's LastModified of the report: the run had finished by then
    coverage: str


@dataclass
class PointInTime:
    """What restoring Immich as of `at` gives: the media as of `at`, the database where it meets them."""

    at: dt.datetime
    sync: SyncPoint | None  # the newest successful sync finished by `at`: what the media as of `at` hold
    db_target: dt.datetime | None  # the database's target that the media as of `at` fully cover; None: none
    problems: list[str] = field(default_factory=list)  # why no such target exists (empty when one does)

    def media_line(self) -> str:
        if self.sync is None:
            return f"as of {clock.iso(self.at)}: no media sync had finished by then"
        return (
            f"as of {clock.iso(self.at)}: the library as the sync started {clock.iso(self.sync.started)} copied it "
            f"(finished by {clock.iso(self.sync.stored)})"
        )

    def gap(self, db_target: dt.datetime) -> str:
        """Why a database recovered to `db_target` may reference photos the media as of `at` lack ("" if none)."""
        if self.sync is None or db_target <= self.sync.started:
            return ""
        return (
            f"the database at {clock.iso(db_target)} may reference photos added after {clock.iso(self.sync.started)} "
            f"(the start of the newest media sync finished by {clock.iso(self.at)}), which the media as of "
            f"{clock.iso(self.at)} lack; the two meet with the database at {clock.iso(self.sync.started)}"
        )


def sync_points(listing: Iterable[RemoteObject]) -> list[SyncPoint]:
    """Successful runs of the nightly's coverage, oldest first, from a listing of the report prefix.

    A report whose name starts later than S3 stored it (beyond the clock skew allowed) lies about its
    start, so it is left out rather than believed."""
    points: list[SyncPoint] = []
    for obj in listing:
        name = parse_report_key(obj.key)
        if name is None or name.status != "ok" or name.started > obj.last_modified + WRITE_SKEW:
            continue
        started = dt.datetime.fromtimestamp(name.started, dt.UTC)
        stored = dt.datetime.fromtimestamp(obj.last_modified, dt.UTC)
        points.append(SyncPoint(obj.key, started, stored, name.coverage))
    if not points:
        return []
    nightly = Counter(p.coverage for p in points).most_common(1)[0][0]
    return sorted((p for p in points if p.coverage == nightly), key=lambda p: (p.stored, p.key))


def align(
    at: dt.datetime,
    points: list[SyncPoint],
    *,
    db_first: dt.datetime | None,
    now: dt.datetime | None = None,
    listed_since: dt.datetime | None = None,
) -> PointInTime:
    """The media as of `at` (`points`: successful syncs) and the database target that meets them: the start
    of the newest sync finished by `at`, if the recovery window (from `db_first`) reaches it. `listed_since`
    is how far back `points` reach, so "no sync" is never claimed beyond what was listed."""
    now = now or clock.now()
    finished = [p for p in points if p.stored <= at]
    sync = finished[-1] if finished else None
    when = clock.iso(at)
    problems: list[str] = []
    if at.timestamp() > now.timestamp() + FUTURE_SKEW:
        problems.append(f"{when} is in the future (it is {clock.iso(now)})")
    if sync is None:
        reach = f" (run reports listed since {clock.iso(listed_since)})" if listed_since else ""
        problems.append(f"no media sync had finished by {when}{reach}, so the media as of then are not a full copy")
    elif db_first is None:
        problems.append("the database has no recoverability point yet (no completed base backup)")
    elif sync.started < db_first:
        problems.append(
            f"the media as of {when} hold the library as of {clock.iso(sync.started)}, but the database's recovery "
            f"window starts at {clock.iso(db_first)}: the two cannot meet"
        )
    target = sync.started if sync is not None and not problems else None
    return PointInTime(at, sync, target, problems)
