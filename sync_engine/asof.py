"""Times the restore and verify judge by: `--as-of`, and how far a run's own clock may be off.

`--as-of TIME` is an ISO 8601 time with an offset or `Z` (`2026-11-27T02:30:00Z`,
`2026-11-27T03:30:00+01:00`). A time without one is refused rather than guessed: read in the wrong zone
it would move the restore point by hours, and a restore point an hour late may already hold the
attacker's bytes. A time in the future is refused too: it would quietly mean now.

A run report and its manifest are named by the run's start on the pod's clock and stored with S3's
LastModified on S3's clock. Two tolerances allow for the two clocks disagreeing:

- FUTURE_SKEW (15 minutes): a report or manifest whose time (its name's start, its content's
  `started_at`/`finished_at`) lies further than this ahead of the clock checking it is dated in the
  future, so it was not written by a run that happened;
- WRITE_SKEW (15 minutes): a run writes its manifest and report after it started and after it finished;
  one whose time lies further than this after its own object's LastModified was written before the run
  it describes started or finished, which no run can do.

15 minutes is S3's own limit: it refuses a request signed by a clock further off than that
(RequestTimeTooSkewed), so a run that could write at all kept time within it.
"""

from __future__ import annotations

import datetime as dt
import time

FUTURE_SKEW = 900.0
WRITE_SKEW = 900.0
_EXAMPLE = "e.g. 2026-11-27T02:30:00Z or 2026-11-27T03:30:00+01:00"


def parse_as_of(value: str) -> float:
    """Epoch seconds of an ISO 8601 time that carries its offset; a ValueError says what is wrong."""
    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 time with an offset or Z ({_EXAMPLE}), got {text!r}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"has no offset, so its zone is unknown: add Z or an offset ({_EXAMPLE}), got {text!r}")
    now = time.time()
    if when.timestamp() > now + FUTURE_SKEW:
        # as of a time not reached yet is now: a mistyped year would restore what an attack left
        raise ValueError(f"is in the future (it is {iso(now)}); leave --as-of out to mean now, got {text!r}")
    return when.timestamp()


def iso(ts: float) -> str:
    """UTC, to the second, as reports and summaries show times."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (epoch seconds)"


def parse_report_time(value: object) -> float | None:
    """A report's `started_at`/`finished_at` (`2026-11-27T02:30:00Z`); None when it is not such a time."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
