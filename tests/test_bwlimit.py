"""`--bwlimit`: rclone's rate and timetable forms, one limit shared by every worker, new rates applied to
requests already waiting, and every byte that goes to S3 (or comes back in a restore) paced.

The limiter is driven by a virtual clock here, so rates and switch-over delays are exact figures rather
than timings; the rate measured on a real shaped link is in `bench/uplink_bench.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.bwlimit import (
    BURST_SECONDS,
    POLL_SECONDS,
    BandwidthSchedule,
    RateLimiter,
    parse_bwlimit,
)
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.conftest import SECRET, Result, list_keys

KiB, MiB = 1024, 1024 * 1024
MONDAY = dt.datetime(2026, 11, 30)  # a Monday


def at(day: int, hh: int, mm: int) -> dt.datetime:
    return MONDAY + dt.timedelta(days=day, hours=hh, minutes=mm)


@pytest.mark.parametrize(
    ("text", "up", "down"),
    [
        ("2M", 2 * MiB, 2 * MiB),
        ("512k", 512 * KiB, 512 * KiB),
        ("100", 100 * KiB, 100 * KiB),  # rclone: a bare number is KiB/s
        ("1.5M", 1.5 * MiB, 1.5 * MiB),
        ("1G", 1024 * MiB, 1024 * MiB),
        ("4096B", 4 * KiB, 4 * KiB),
        ("6MiB", 6 * MiB, 6 * MiB),
        ("off", None, None),
        ("10M:off", 10 * MiB, None),
        ("off:512k", None, 512 * KiB),
    ],
)
def test_a_single_rate_applies_all_week(text: str, up: float | None, down: float | None) -> None:
    schedule = BandwidthSchedule.parse(text)
    assert not schedule.timetable
    for when in (at(0, 0, 0), at(3, 12, 30), at(6, 23, 59)):
        rates = schedule.rates_at(when)
        assert (rates.up, rates.down) == (up, down)


def test_a_daily_timetable_wraps_around_midnight() -> None:
    schedule = BandwidthSchedule.parse("08:00,512k 19:00,1M 23:30,off")
    expect = {
        (0, 0, 0): None,  # before the first entry of the day: yesterday's last one (off)
        (0, 7, 59): None,
        (0, 8, 0): 512 * KiB,
        (2, 18, 59): 512 * KiB,
        (4, 19, 0): MiB,
        (6, 23, 29): MiB,
        (6, 23, 30): None,
    }
    for (day, hh, mm), rate in expect.items():
        assert schedule.rates_at(at(day, hh, mm)).up == rate, (day, hh, mm)
    assert schedule.describe() == "timetable 08:00,512k 19:00,1M 23:30,off"


def test_weekday_entries_and_daily_entries_mix_like_rclones() -> None:
    # rclone's own example: Monday midnight 512 KiB/s, every day at noon 1 MiB/s, Sunday 20:00 off
    schedule = BandwidthSchedule.parse("Mon-00:00,512 12:00,1M Sun-20:00,off")
    assert schedule.rates_at(at(0, 6, 0)).up == 512 * KiB
    assert schedule.rates_at(at(0, 12, 0)).up == MiB
    assert schedule.rates_at(at(3, 6, 0)).up == MiB  # Thursday morning: Wednesday noon's rate goes on
    assert schedule.rates_at(at(6, 19, 59)).up == MiB
    assert schedule.rates_at(at(6, 20, 0)).up is None
    weekend = BandwidthSchedule.parse("Sat-00:00,off Mon-07:00,2M")
    assert weekend.rates_at(at(0, 6, 59)).up is None  # Monday before 07:00 is still the weekend
    assert weekend.rates_at(at(4, 23, 59)).up == 2 * MiB


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("0", "must be more than zero (write off for no limit)"),
        ("08:00,0 20:00,1M", "must be more than zero"),
        ("100B", "below 1K"),
        ("fast", "'fast' is not a number with an optional B/K/M/G/T suffix, or off"),
        ("-1M", "is not a number"),
        ("25:00,1M", "25:00 is not a time of day"),
        ("08:61,1M", "08:61 is not a time of day"),
        ("Xyz-08:00,1M", "'Xyz' is not a day"),
        ("08:00 1M", "is not HH:MM,RATE"),
        ("08:00,1M 08:00,2M", "repeats a time"),
        ("Mon-08:00,1M 08:00,2M", "repeats a time"),
    ],
)
def test_a_bad_limit_is_refused_with_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        BandwidthSchedule.parse(text)


def test_a_timetable_is_read_in_the_zone_tz_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    schedule = parse_bwlimit("00:00,1M 12:00,2M")
    assert schedule.zone == "Europe/Berlin"
    assert schedule.now().utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))
    monkeypatch.setenv("TZ", "Europe/Berln")
    with pytest.raises(ValueError, match="TZ='Europe/Berln' is not a known time zone"):
        parse_bwlimit("00:00,1M 12:00,2M")
    assert parse_bwlimit("2M").zone is None  # a plain rate does not depend on the time of day


class VirtualTime:
    """A clock that moves only when someone sleeps; records each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_rate_holds_over_twenty_seconds() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(lambda: 2 * MiB, clock=vt.clock, sleep=vt.sleep)
    sent = 0
    while vt.now < 20.0:
        limiter.take(16_384)
        sent += 16_384
    # one burst allowance is the only credit beyond the rate, and no sleep is longer than the poll
    assert sent <= 2 * MiB * (vt.now + BURST_SECONDS)
    assert sent >= 2 * MiB * vt.now * 0.99
    assert max(vt.sleeps) <= POLL_SECONDS
    assert limiter.taken == sent


def test_a_new_rate_reaches_requests_already_waiting() -> None:
    """A worker queued behind a slow rate gets the fast rate within one poll of the switch."""
    vt = VirtualTime()
    rate = {"now": 10 * KiB}

    def sleep(seconds: float) -> None:
        vt.sleep(seconds)
        if vt.now >= 5.0:
            rate["now"] = 4 * MiB

    limiter = RateLimiter(lambda: rate["now"], clock=vt.clock, sleep=sleep)
    limiter.take(MiB)  # ~100 s at the old rate
    switched = min(t for t in _cumulative(vt.sleeps) if t >= 5.0)
    assert max(vt.sleeps) <= POLL_SECONDS
    assert vt.now <= switched + POLL_SECONDS + MiB / (4 * MiB)
    assert vt.now < 5.5


def _cumulative(sleeps: list[float]) -> list[float]:
    out, total = [], 0.0
    for s in sleeps:
        total += s
        out.append(total)
    return out


def test_off_lets_bytes_through_without_waiting_and_idle_time_does_not_bank_credit() -> None:
    vt = VirtualTime()
    rate: dict[str, float | None] = {"now": None}
    limiter = RateLimiter(lambda: rate["now"], clock=vt.clock, sleep=vt.sleep)
    limiter.take(100 * MiB)
    assert vt.sleeps == []
    rate["now"] = MiB
    vt.now += 3600  # an idle hour is not an hour of credit
    limiter.take(MiB)
    assert vt.now - 3600 >= 1.0 - BURST_SECONDS - 1e-9


class SteppedTime:
    """Virtual time that only the test moves; sleepers wake when it passes their deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cond = threading.Condition()

    def clock(self) -> float:
        with self.cond:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.cond:
            wake = self.now + seconds
            self.cond.wait_for(lambda: self.now >= wake, timeout=5)

    def step(self, seconds: float) -> None:
        with self.cond:
            self.now += seconds
            self.cond.notify_all()


def test_workers_share_one_limit() -> None:
    """Four threads pacing at once get the rate between them, not four times it."""
    vt = SteppedTime()
    rate = MiB
    limiter = RateLimiter(lambda: rate, clock=vt.clock, sleep=vt.sleep)
    released = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2 * MiB // 16_384):
            limiter.take(16_384)
            with lock:
                released[0] += 16_384

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in threads) and vt.now < 60:
        vt.step(0.01)
        time.sleep(0.001)
        with lock:
            worst = max(worst, released[0] - rate * (vt.clock() + BURST_SECONDS))
    for t in threads:
        t.join()
    assert released[0] == limiter.taken == 8 * MiB
    assert worst <= 0  # at no moment had more left than the one shared rate allows
    assert vt.now >= 8.0 - BURST_SECONDS


def store_with_limit(s3: LocalS3, bucket: str, checksum_mode: str) -> ObjectStore:
    settings = S3Settings(
        bucket=bucket,
        region="us-east-1",
        endpoint_url=s3.endpoint,
        checksum_mode=checksum_mode,
        bwlimit=BandwidthSchedule.parse("512M"),
    )
    return ObjectStore(settings, credentials=StaticCredentials("AKIATESTWRITER", SECRET))


@pytest.mark.parametrize("checksum_mode", ["when_required", "when_supported"])
def test_every_uploaded_and_downloaded_byte_is_paced(s3: LocalS3, bucket: str, checksum_mode: str) -> None:
    store = store_with_limit(s3, bucket, checksum_mode)
    bodies = {f"k/{n}": bytes([n]) * (100_000 + n) for n in range(5)}
    for key, body in bodies.items():
        store.put_object(key, body, hashlib.md5(body).digest(), None)
    upload_id = store.create_multipart("k/big", None)
    part = b"p" * (5 * MiB)
    etag = store.upload_part("k/big", upload_id, 1, part, hashlib.md5(part).digest())
    store.complete_multipart("k/big", upload_id, [etag])
    sent = sum(len(b) for b in bodies.values()) + len(part)
    assert store.paced_bytes() == (sent, 0)
    received = 0
    for key in bodies:
        with store.open_object(key) as reader:
            got = b"".join(reader.chunks(64 * KiB))
        assert got == bodies[key]
        received += len(got)
    assert store.paced_bytes() == (sent, received)


def test_backup_and_restore_with_a_limit_are_byte_for_byte(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    backed = run_sync("backup", "--bwlimit", "256M", "-o", "json")
    assert backed.code == 0, backed.err
    report = backed.json()
    assert report["bwlimit"] == "256M/s"
    assert len(list_keys(s3, bucket, "immich/media/")) == report["totals"]["uploaded"] > 0
    target = tmp_path / "restored"
    restored: Result = run_sync("restore", "--to", str(target), "--bwlimit", "off:256M", "-o", "json")
    assert restored.code == 0, restored.err
    for rel in sample.files:
        if rel.split("/", 1)[0] in ("upload", "library", "profile"):
            assert (target / rel).read_bytes() == (sample.root / rel).read_bytes()


@pytest.mark.parametrize(
    ("flag", "variable", "needle"),
    [
        (["--bwlimit", "0"], None, "--bwlimit / IMMICH_SYNC_BWLIMIT: rate '0' must be more than zero"),
        ([], "25:00,1M", "--bwlimit / IMMICH_SYNC_BWLIMIT: timetable entry '25:00,1M': 25:00 is not a time of day"),
    ],
)
def test_a_bad_limit_stops_the_run_before_any_request(
    run_sync, monkeypatch: pytest.MonkeyPatch, flag: list[str], variable: str | None, needle: str
) -> None:  # type: ignore[no-untyped-def]
    if variable is not None:
        monkeypatch.setenv("IMMICH_SYNC_BWLIMIT", variable)
    result = run_sync("backup", *flag)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.err
