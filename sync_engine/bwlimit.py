"""A bandwidth limit, optionally on a weekly timetable, shared by every worker of one run.

A first backup of a multi-terabyte library runs for days; without a limit it fills the household's
uplink every evening. The setting takes rclone's `--bwlimit` forms so operators can reuse what they
know: a rate (`2M`, `512k`, `off`), an upload:download pair (`10M:off`), or a timetable of
`[Ddd-]HH:MM,RATE` entries (`08:00,512k 19:00,1M 23:30,off`, `Mon-08:00,512k Sat-00:00,off`), read in
the pod's local time (`TZ`). Units are rclone's: a bare number is KiB/s; B, K, M, G, T suffixes are
powers of 1024 bytes per second.

One bucket of credit is shared by all workers, handed out first come first served. A waiting worker
looks at the timetable at least every `POLL_SECONDS`, so a new entry takes effect within that time
even for requests already queued.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import threading
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_WEEK = 7 * 24 * 60
# Credit that may build up while nobody sends: a tenth of a second, so an idle moment never turns into
# a burst the line notices.
BURST_SECONDS = 0.1
POLL_SECONDS = 0.2
# A paced body goes out in pieces of about this many seconds of the rate, within these bounds.
CHUNK_SECONDS = 0.05
MIN_CHUNK = 4 * 1024
MAX_CHUNK = 256 * 1024

_RATE = re.compile(r"^(\d+(?:\.\d+)?)([bkmgt])?(?:i?b)?$", re.IGNORECASE)
_ENTRY = re.compile(r"^(?:([A-Za-z]{3})-)?(\d{1,2}):(\d{2}),(.+)$")


@dataclass(frozen=True)
class Rates:
    """Bytes per second for uploads and downloads; None means no limit."""

    up: float | None
    down: float | None

    def describe(self) -> str:
        up, down = _show(self.up), _show(self.down)
        return up if up == down else f"{up} up, {down} down"


@dataclass(frozen=True)
class Entry:
    """From `minute` of the week (Monday 00:00 is 0) until the next entry, these rates apply."""

    minute: int
    rates: Rates


@dataclass(frozen=True)
class BandwidthSchedule:
    """A parsed `--bwlimit`: one entry applies all week, several form a weekly timetable."""

    entries: tuple[Entry, ...]
    text: str
    zone: str | None = None  # the TZ the timetable is read in; None: the system's local time

    @classmethod
    def parse(cls, text: str) -> BandwidthSchedule:
        words = text.split()
        if not words:
            raise ValueError("is empty")
        if len(words) == 1 and "," not in words[0]:
            return cls((Entry(0, _rates(words[0])),), text.strip())
        entries: dict[int, Entry] = {}
        for word in words:
            for minute, rates in _timetable_entry(word):
                if minute in entries:
                    raise ValueError(f"{word!r} repeats a time already in the timetable")
                entries[minute] = Entry(minute, rates)
        return cls(tuple(entries[m] for m in sorted(entries)), " ".join(words))

    @property
    def timetable(self) -> bool:
        return len(self.entries) > 1 or self.entries[0].minute != 0

    def rates_at(self, when: dt.datetime) -> Rates:
        """The entry in force at `when` (an aware or local datetime): the last one at or before it in the
        week, or, before the week's first entry, the week's last one (the timetable wraps around)."""
        if not self.timetable:
            return self.entries[0].rates
        minute = when.weekday() * 24 * 60 + when.hour * 60 + when.minute
        current = self.entries[-1]
        for entry in self.entries:
            if entry.minute > minute:
                break
            current = entry
        return current.rates

    def now(self) -> dt.datetime:
        if self.zone is not None:
            return dt.datetime.now(zoneinfo.ZoneInfo(self.zone))
        return dt.datetime.now().astimezone()

    def describe(self) -> str:
        if not self.timetable:
            return self.entries[0].rates.describe()
        return f"timetable {self.text}"


def parse_bwlimit(text: str) -> BandwidthSchedule:
    """The settings parser: the timetable is read in the zone named by TZ (when set), checked here so
    a misspelt zone is refused up front instead of silently meaning UTC."""
    schedule = BandwidthSchedule.parse(text)
    zone = os.environ.get("TZ", "").strip().lstrip(":")
    if not schedule.timetable or not zone:
        return schedule
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"a timetable is read in local time, but TZ={zone!r} is not a known time zone") from None
    return dataclasses.replace(schedule, zone=zone)


def _timetable_entry(word: str) -> list[tuple[int, Rates]]:
    match = _ENTRY.match(word)
    if match is None:
        raise ValueError(f"timetable entry {word!r} is not HH:MM,RATE or Ddd-HH:MM,RATE (e.g. 08:00,512k)")
    day, hour, minute, rate = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
    if hour > 23 or minute > 59:
        raise ValueError(f"timetable entry {word!r}: {hour:02d}:{minute:02d} is not a time of day")
    rates = _rates(rate)
    of_day = hour * 60 + minute
    if day is None:  # every day of the week
        return [(d * 24 * 60 + of_day, rates) for d in range(7)]
    if day.lower() not in DAYS:
        raise ValueError(f"timetable entry {word!r}: {day!r} is not a day (Mon, Tue, … Sun)")
    return [(DAYS.index(day.lower()) * 24 * 60 + of_day, rates)]


def _rates(text: str) -> Rates:
    up, sep, down = text.partition(":")
    first = _rate(up)
    return Rates(first, _rate(down) if sep else first)


def _rate(text: str) -> float | None:
    word = text.strip()
    if word.lower() == "off":
        return None
    match = _RATE.match(word)
    if match is None:
        raise ValueError(f"rate {word!r} is not a number with an optional B/K/M/G/T suffix, or off")
    value = float(match.group(1)) * UNITS[(match.group(2) or "K").upper()]
    if value <= 0:
        # rclone reads 0 as "no limit"; here a zero would more likely mean "pause", so neither is guessed.
        raise ValueError(f"rate {word!r} must be more than zero (write off for no limit)")
    if value < 1024:
        raise ValueError(f"rate {word!r} is below 1K (1 KiB/s)")
    return value


def _show(rate: float | None) -> str:
    if rate is None:
        return "off"
    for unit in ("T", "G", "M", "K"):
        if rate >= UNITS[unit]:
            return f"{rate / UNITS[unit]:g}{unit}/s"
    return f"{rate:g}B/s"


class RateLimiter:
    """Paces the bytes of every worker together: each `take(n)` returns once the schedule's rate allows
    n more bytes. Waiters re-read the schedule while they wait, so a new rate applies to them too."""

    def __init__(
        self,
        rate_now: Callable[[], float | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate_now = rate_now
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._reserved = 0.0  # bytes handed out so far
        self._granted = 0.0  # bytes the rate has allowed so far
        self._last = clock()

    @classmethod
    def upload(cls, schedule: BandwidthSchedule) -> RateLimiter:
        return cls(lambda: schedule.rates_at(schedule.now()).up)

    @classmethod
    def download(cls, schedule: BandwidthSchedule) -> RateLimiter:
        return cls(lambda: schedule.rates_at(schedule.now()).down)

    def _advance(self) -> float | None:
        now = self._clock()
        elapsed, self._last = max(now - self._last, 0.0), now
        rate = self._rate_now()
        if rate is None:
            self._granted = max(self._granted, self._reserved)
        else:
            ceiling = max(self._granted, self._reserved + rate * BURST_SECONDS)
            self._granted = min(self._granted + rate * elapsed, ceiling)
        return rate

    def take(self, n: int) -> None:
        """Block until `n` more bytes may go."""
        with self._lock:
            self._advance()
            self._reserved += n
            mine = self._reserved
        while True:
            with self._lock:
                rate = self._advance()
                if rate is None or self._granted >= mine:
                    return
                wait = (mine - self._granted) / rate
            self._sleep(min(wait, POLL_SECONDS))

    @property
    def taken(self) -> int:
        """Bytes handed out so far (what went, or is going, over the wire)."""
        return int(self._reserved)

    def chunk_size(self) -> int:
        rate = self._rate_now()
        if rate is None:
            return MAX_CHUNK
        return int(min(MAX_CHUNK, max(MIN_CHUNK, rate * CHUNK_SECONDS)))

    def hold(self, n: int) -> None:
        """Pace a body a client sends in one piece (botocore's path): its bytes are taken up front, in
        pieces, so the average over a run still keeps the rate."""
        while n > 0:
            piece = min(n, self.chunk_size())
            self.take(piece)
            n -= piece
