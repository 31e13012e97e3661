"""A listing that a background thread keeps a few pages ahead of its consumer.

The merge-join of a backup and the producer of a restore read a listing key by key; S3 answers a page
of 1,000 keys per request. Paging in a thread of its own, a bounded few pages ahead, keeps the consumer
from ever waiting on a round trip while memory stays at a few pages, however large the prefix.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from sync_engine.models import RemoteObject

_DONE = object()


class PrefetchedListing:
    """Iterates a listing that a background thread keeps a few pages ahead of the consumer."""

    def __init__(self, source: Iterator[list[RemoteObject]], capacity: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True, name="s3-listing")
        self._thread.start()

    def _fill(self, source: Iterator[list[RemoteObject]]) -> None:
        try:
            for page in source:
                if not self._put(page):
                    return
            self._put(_DONE)
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[RemoteObject]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
