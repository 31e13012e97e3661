"""The home-uplink bench's shaping proxy and its arithmetic.

The proxy must relay S3 traffic byte for byte (SigV4 signs the Host header and the payload, so any
rewrite would show as a signature error or a corrupt object) and count what crossed it; the floor and
rate computations are what the bench's verdicts rest on, so they are checked with exact numbers.
Nothing here asserts a duration: the shared CI machine makes wall-clock assertions flaky.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import uplink_bench as ub  # noqa: E402
from servers import ShapingProxy  # noqa: E402
from shaper import Sample, read_stats  # noqa: E402


def test_objects_round_trip_through_the_shaper_and_are_counted(s3: LocalS3, bucket: str, tmp_path: Path) -> None:
    stats = tmp_path / "shaper.stats"
    payloads = {"a/empty.jpg": b"", "a/small.jpg": os.urandom(1_000), "b/big.mp4": os.urandom(2 * 1024 * 1024 + 7)}
    with ShapingProxy(s3.port, stats, rtt_ms=2, up_mbit=2000, down_mbit=0, stats_interval=0.05) as proxy:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            region_name="us-east-1",
            aws_access_key_id=DEMO_KEY_ID,
            aws_secret_access_key=DEMO_SECRET,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        for key, body in payloads.items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
        got = {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in payloads}
        listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert got == payloads
    assert listed == set(payloads)
    samples = read_stats(stats)
    assert len(samples) >= 2  # the first line at start, the last one written on SIGTERM
    last = samples[-1]
    total = sum(len(b) for b in payloads.values())
    assert last.up >= total
    assert last.down >= total
    assert last.connections >= 1
    assert all(b.up >= a.up and b.down >= a.down for a, b in itertools.pairwise(samples))


def test_floor_is_payload_over_bandwidth_plus_three_round_trips() -> None:
    # 6.25 MB at 50 Mbit/s is exactly one second; three 40 ms round trips on top.
    assert ub.floor_s(6_250_000, 50, 40) == pytest.approx(1.12, abs=1e-12)
    # Library A's 472.1 MiB at the default link: 79.2 s of bytes + 0.12 s.
    assert ub.floor_s(495_026_176, 50, 40) == pytest.approx(79.20418816 + 0.12, abs=1e-9)
    assert ub.wire_floor_s(12_500_000, 100) == pytest.approx(1.0, abs=1e-12)


SAMPLES = [Sample(10.0, 0, 0), Sample(11.0, 1000, 10), Sample(12.0, 3000, 30), Sample(13.0, 6000, 60)]


def test_rate_over_a_window_interpolates_between_stats_lines() -> None:
    assert ub.cumulative_at(SAMPLES, 10.5) == 500
    assert ub.cumulative_at(SAMPLES, 9.0) == 0  # clamped before the first line
    assert ub.cumulative_at(SAMPLES, 99.0) == 6000  # and after the last
    assert ub.rate_between(SAMPLES, 10.5, 12.5) == 2000  # (4500 - 500) / 2
    assert ub.rate_between(SAMPLES, 10.0, 13.0, "down") == 20
    assert ub.window_rates(SAMPLES, 10.0, 13.0) == [(11.0, 1000), (12.0, 2000), (13.0, 3000)]
    with pytest.raises(ValueError):
        ub.rate_between(SAMPLES, 12.0, 12.0)


def test_settle_time_is_when_the_rate_enters_the_band_for_good() -> None:
    rates = [(9.0, 1.0), (10.5, 2.0), (11.0, 3.9), (11.5, 4.5), (12.0, 4.1), (12.5, 3.7), (13.0, 4.0)]
    # 11.0 enters the ±10% band around 4 but 11.5 leaves it; from 12.0 on every window stays in.
    assert ub.settle_time(rates, 10.0, 4.0, 0.10) == 2.0
    assert ub.settle_time([*rates, (13.5, 2.0)], 10.0, 4.0, 0.10) is None


def test_rates_and_timetable_use_rclone_units_and_whole_minutes() -> None:
    assert ub.rate_bytes("2M") == 2 * 1024 * 1024
    assert ub.rate_bytes("512k") == 512 * 1024
    assert ub.rate_bytes("100") == 100 * 1024
    utc = dt.UTC
    now = dt.datetime(2026, 3, 1, 12, 0, 40, tzinfo=utc)
    assert ub.next_boundary(now, 25) == dt.datetime(2026, 3, 1, 12, 2, tzinfo=utc)
    assert ub.next_boundary(now, 20) == dt.datetime(2026, 3, 1, 12, 1, tzinfo=utc)
    late = dt.datetime(2026, 3, 1, 23, 59, 40, tzinfo=utc)
    boundary = ub.next_boundary(late, 25)
    assert ub.timetable(late, boundary, "1M", "4M") == "23:59,1M 00:01,4M"
