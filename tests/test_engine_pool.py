"""The worker pool backup and restore share (`sync_engine/pool.py`): bounded, stoppable, giving up on S3.

Plain threads and plain work functions: the pool is the same object under both commands, so its rules
are checked once here, and end to end by the backup and restore fault tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sync_engine.errors import SetupError, StoreError
from sync_engine.pool import ABORT_AFTER_S3_FAILURES, IN_FLIGHT_PER_WORKER, WorkerPool


def make_pool(work: Callable[[int], int], record: Callable[[int], None], workers: int = 2) -> WorkerPool[int, int]:
    return WorkerPool(work, record, workers=workers, name="test", cancel=threading.Event(), unit="items")


def test_every_item_is_recorded_and_the_run_ends_after_the_last() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def record(result: int) -> None:
        with lock:
            seen.append(result)

    pool = make_pool(lambda n: n * 2, record, workers=4)
    reason = pool.run(lambda p: [p.submit(n) for n in range(500)], interrupted="stopped")
    assert reason == "" and sorted(seen) == [n * 2 for n in range(500)] and pool.submitted == 500
    assert not pool.cancel.is_set()


def test_in_flight_items_are_bounded() -> None:
    release = threading.Event()
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        release.wait(5)
        with lock:
            in_flight -= 1
        return n

    pool = make_pool(work, lambda r: None, workers=2)
    submitted_before_release: list[int] = []

    def produce(p: WorkerPool[int, int]) -> None:
        threading.Timer(0.3, release.set).start()
        for n in range(100):
            p.submit(n)
            if not release.is_set():
                submitted_before_release.append(n)

    pool.run(produce, interrupted="stopped")
    # the producer waited: no more than workers × 4 items were handed over before any finished
    assert len(submitted_before_release) <= 2 * IN_FLIGHT_PER_WORKER
    assert peak <= 2


def test_gives_up_after_consecutive_s3_failures_and_a_success_resets_the_count() -> None:
    pool: WorkerPool[int, int]

    def record(n: int) -> None:
        if n < 0:
            pool.s3_failed(f"item {n} refused")
        else:
            pool.s3_worked()

    # failures interrupted by a success never add up to the limit
    mixed = [-1] * (ABORT_AFTER_S3_FAILURES - 1) + [1] + [-1] * (ABORT_AFTER_S3_FAILURES - 1)
    pool = make_pool(lambda n: n, record, workers=1)
    assert pool.run(lambda p: [p.submit(n) for n in mixed], interrupted="stopped") == ""

    pool = make_pool(lambda n: n, record, workers=1)

    def produce(p: WorkerPool[int, int]) -> None:
        for _ in range(1000):
            if p.stopping:
                break
            p.submit(-1)

    reason = pool.run(produce, interrupted="stopped")
    assert reason.startswith(f"S3 keeps failing ({ABORT_AFTER_S3_FAILURES} items in a row): item -1 refused")
    assert pool.cancel.is_set() and pool.submitted < 1000


def test_refusals_of_single_items_never_stop_the_run() -> None:
    """S3 refusing one object (a key too long, a policy denying it) is not an outage: however many in a
    row, the run goes on; and they do not hide an outage around them either."""
    pool: WorkerPool[int, int]

    def record(n: int) -> None:
        if n == 0:
            pool.s3_failed("refused", outage=False)
        elif n < 0:
            pool.s3_failed("unreachable", outage=True)
        else:
            pool.s3_worked()

    pool = make_pool(lambda n: n, record, workers=1)
    assert pool.run(lambda p: [p.submit(0) for _ in range(ABORT_AFTER_S3_FAILURES * 10)], interrupted="x") == ""
    assert not pool.cancel.is_set()

    outages_around_refusals = [-1] * (ABORT_AFTER_S3_FAILURES - 1) + [0] * 20 + [-1]
    pool = make_pool(lambda n: n, record, workers=1)
    reason = pool.run(lambda p: [p.submit(n) for n in outages_around_refusals], interrupted="x")
    assert reason.startswith(f"S3 keeps failing ({ABORT_AFTER_S3_FAILURES} items in a row): unreachable")


def test_the_first_stop_reason_wins() -> None:
    pool = make_pool(lambda n: n, lambda r: None)
    pool.stop("disk full")
    pool.stop("something else")
    assert pool.reason == "disk full" and pool.stopping and pool.cancel.is_set()


def test_a_listing_error_stops_the_run_or_becomes_a_setup_error() -> None:
    def failing(p: WorkerPool[int, int]) -> None:
        p.submit(1)
        raise StoreError("listing s3://b/p: connection to S3 failed", code="Connection", transport=True)

    pool = make_pool(lambda n: n, lambda r: None)
    assert pool.run(failing, interrupted="stopped", store_failed=lambda e: f"listing failed: {e}").startswith(
        "listing failed: listing s3://b/p"
    )

    def setup(exc: StoreError) -> str:
        raise SetupError(str(exc), code=exc.code, transport=exc.transport)

    pool = make_pool(lambda n: n, lambda r: None)
    with pytest.raises(SetupError):
        pool.run(failing, interrupted="stopped", store_failed=setup)
    assert pool.cancel.is_set()


def test_an_interrupt_cancels_the_workers_and_waits_for_them() -> None:
    finished: list[int] = []

    def work(n: int) -> int:
        while not pool.cancel.is_set():
            time.sleep(0.01)
        return n

    pool = make_pool(work, finished.append, workers=2)

    def produce(p: WorkerPool[int, int]) -> None:
        p.submit(1)
        p.submit(2)
        raise KeyboardInterrupt

    assert pool.run(produce, interrupted="interrupted") == "interrupted"
    assert sorted(finished) == [1, 2]  # both workers returned before run() did
