"""What a run may take from earlier runs: their files cache, and whether a listing may be skipped.

An append-only backup needs a listing only to learn what S3 holds. A listing unit whose every file is
exactly as a previous run confirmed it (see `filescache.py`: size, mtime, ctime and inode all equal)
needs none: those bytes were checked offsite, and nothing about the files says they changed. The
decision is per file and compares the file with itself, so no clock is involved: not the pod's, not
the NFS server's, not S3's. A file added to the unit has no cache line, so the unit is listed.

What this cannot see is an object deleted from the bucket behind the engine's back, so every directory
is listed whenever no run of the same coverage made a full listing within `full_listing_days` (7 by
default); `verify` finds such gaps at any time. The age of that listing compares the start times of
runs, which come from the pods' own clocks (cluster nodes keep NTP time): a skew there moves the next
full listing by that skew, it cannot hide a file.

The writer reads its own previous cache (s3:GetObject on the report prefix only, never on media). A
writer that may not read it, or a cache that cannot be parsed, just means every file already in S3 is
compared by content: slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_engine.errors import ObjectTooLarge, StoreError
from sync_engine.filescache import MAX_COMPRESSED, FilesCache, read_cache
from sync_engine.report import FILES_SUFFIX, ReportName, parse_report_key
from sync_engine.store import ObjectStore

DAY = 86_400.0


@dataclass
class History:
    """What the report prefix says about earlier runs of this coverage."""

    cache: FilesCache | None = None
    full_listing_run: ReportName | None = None  # a recent run that listed every directory
    note: str = ""  # why there is no cache, when there is none

    @property
    def may_skip_listings(self) -> bool:
        return self.cache is not None and self.full_listing_run is not None


def _cache_name(key: str) -> ReportName | None:
    if not key.endswith(FILES_SUFFIX):
        return None
    return parse_report_key(key.removesuffix(FILES_SUFFIX) + ".json")


def load_history(
    store: ObjectStore, report_prefix: str, coverage: str, now: float, full_listing_days: float
) -> History:
    """One LIST of the report prefix and, if there is one, one GET of the newest files cache.

    An AccessDenied on the LIST means nothing can be known: no cache, every directory listed."""
    history = History()
    caches: list[tuple[ReportName, int]] = []
    window_start = now - full_listing_days * DAY
    try:
        for obj in store.list_objects(report_prefix):
            cache_name = _cache_name(obj.key)
            if cache_name is not None and cache_name.coverage == coverage:
                caches.append((cache_name, obj.size))
                continue
            name = parse_report_key(obj.key)
            if (
                name is not None
                and full_listing_days > 0
                and name.coverage == coverage
                and name.listing == "full"
                and name.status in ("ok", "partial")
                and window_start <= name.started
                and (history.full_listing_run is None or name.started > history.full_listing_run.started)
            ):
                history.full_listing_run = name
    except StoreError as exc:
        if exc.code != "AccessDenied":
            raise
        history.note = "the report prefix may not be listed, so no earlier run is known"
        return history
    if not caches:
        history.note = "no earlier run of this library left a files cache"
        return history
    newest, size = max(caches, key=lambda c: (c[0].started, c[0].key))
    if size > MAX_COMPRESSED:
        history.note = f"files cache {newest.key} is {size:,} bytes, over the {MAX_COMPRESSED:,}-byte cap"
        return history
    key = newest.key.removesuffix(".json") + FILES_SUFFIX
    try:
        # the listing's size was checked above; the cap holds while reading too, should the object have grown
        history.cache = read_cache(store.get_bytes(key, max_bytes=MAX_COMPRESSED, what="files cache"), key)
    except ObjectTooLarge as exc:
        history.note = str(exc)
    except StoreError as exc:
        if exc.code not in ("AccessDenied", "NoSuchKey", "404", "403"):
            raise
        history.note = f"files cache {key} could not be read ({exc.code}): grant s3:GetObject on the report prefix"
    except ValueError as exc:
        history.note = f"files cache {key} is unreadable ({exc})"
    if history.cache is not None and history.cache.bad_lines:
        history.note = f"files cache {key}: {history.cache.bad_lines} bad lines skipped"
    return history
