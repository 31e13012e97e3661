"""The worker pool that backup and restore both feed: bounded, cancellable, and giving up on a dead S3.

One producer (the merge-join of a backup, the listing of a restore) hands items to a fixed set of worker
threads. At most `workers × 4` items are in flight, so the producer waits instead of queueing the whole
library, and memory stays flat. Workers never raise: each returns a result that the caller's `record`
counts as it arrives. The run stops early, once, for the first of these reasons: an S3 outage failed
the last `ABORT_AFTER_S3_FAILURES` items in a row (S3 unreachable, dropping connections, answering 5xx
or throttling after retries: failing every remaining file one by one would only take hours), the
caller stops it (a full disk), an S3 error escapes the producer (a listing failed), or SIGTERM/SIGINT.
S3 refusing one object (a key too long, a policy denying that key) is no outage: that item fails and
the run goes on, or one bad name would stop every file that sorts after it from ever being backed up.
Stopping sets the workers' cancel event, so in-flight work is abandoned cleanly (multipart uploads
aborted, temporary files removed); the pool then waits for the workers to return.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from sync_engine.errors import StoreError

IN_FLIGHT_PER_WORKER = 4
ABORT_AFTER_S3_FAILURES = 8

Item = TypeVar("Item")
Result = TypeVar("Result")


class WorkerPool(Generic[Item, Result]):
    """Runs `work(item)` on `workers` threads for whatever `produce` submits; see the module docstring."""

    def __init__(
        self,
        work: Callable[[Item], Result],
        record: Callable[[Result], None],
        *,
        workers: int,
        name: str,
        cancel: threading.Event,
        unit: str,
    ) -> None:
        self.work = work
        self.record = record
        self.workers = workers
        self.name = name
        self.cancel = cancel  # the workers check it between steps
        self.unit = unit  # what a failing item is called in the give-up message ("uploads", "files")
        self.submitted = 0
        self.reason = ""  # why the run stopped early; empty while it goes on
        self._in_flight = workers * IN_FLIGHT_PER_WORKER
        self._slots = threading.BoundedSemaphore(self._in_flight)
        self._lock = threading.Lock()
        self._failures = 0  # consecutive S3 outages; reset by any S3 success
        self._executor: ThreadPoolExecutor | None = None

    # -- the producer's side ---------------------------------------------------------------------------
    def run(
        self,
        produce: Callable[[WorkerPool[Item, Result]], None],
        *,
        interrupted: str,
        store_failed: Callable[[StoreError], str] = str,
    ) -> str:
        """Call `produce(pool)`, which submits items, then wait for the last result. Returns the stop
        reason, empty when the run went to the end.

        An S3 error escaping `produce` stops the run with `store_failed(exc)` (which may raise instead,
        for an error that means the run never really started); SIGTERM/SIGINT stop it with `interrupted`."""
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix=self.name) as executor:
                self._executor = executor
                try:
                    produce(self)
                    # Wait for the last items here, where an interrupt can still cancel them cleanly.
                    for _ in range(self._in_flight):
                        self._slots.acquire()
                except StoreError as exc:
                    self.stop(store_failed(exc))
                except KeyboardInterrupt:
                    self.stop(interrupted)
        except BaseException:
            self.cancel.set()
            raise
        finally:
            self._executor = None
        return self.reason

    def submit(self, item: Item) -> None:
        """Hand one item to a worker; waits while `workers × 4` items are in flight."""
        assert self._executor is not None, "submit() is for the producer that run() calls"
        self._slots.acquire()
        self.submitted += 1
        self._executor.submit(self.work, item).add_done_callback(self._done)

    @property
    def stopping(self) -> bool:
        """True once the run is stopping: the producer submits nothing more."""
        return bool(self.reason)

    # -- the results' side -----------------------------------------------------------------------------
    def _done(self, future: Future[Result]) -> None:
        try:
            result = future.result()
        finally:
            self._slots.release()
        self.record(result)

    def stop(self, reason: str) -> None:
        """Stop the run; the first reason given is the one reported."""
        with self._lock:
            if not self.reason:
                self.reason = reason
        self.cancel.set()

    def s3_failed(self, detail: str, *, outage: bool = True) -> None:
        """One more item failed in S3. An outage (`store.is_outage`) counts, and enough in a row end
        the run; a refusal of that one item neither counts nor breaks a run of outages."""
        if not outage:
            return
        with self._lock:
            self._failures += 1
            failures = self._failures
        if failures >= ABORT_AFTER_S3_FAILURES and not self.reason:
            self.stop(f"S3 keeps failing ({failures} {self.unit} in a row): {detail}")

    def s3_worked(self) -> None:
        """An item S3 served: the run of failures, if any, is broken."""
        with self._lock:
            self._failures = 0
