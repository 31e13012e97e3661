"""Decide, from a local walk, an S3 listing and the previous run's files cache, what to upload and why.

Both the walk and the listing arrive sorted by key, so the plan is a streaming merge-join (as s5cmd
does it): the first upload can start while the listing is still being paged in. No HEAD or GET of
media is ever needed. The rule, per file (see filescache.py for the cache):

1. still being written → deferred (`settling`): its ctime is recent by the pod's clock — or in the
   future, which the pod cannot judge — AND it differs from the look the previous run recorded. A
   file that looks exactly as it did last run is not being written, whatever its times say, so a
   deferral lasts at most until the next run that finds it unchanged. mtime is never consulted: a
   phone with a wrong clock sets it to anything;
2. no object → upload (`missing`); an object of another size → upload (`size-differs`);
   the last upload of this key was not confirmed by S3 → upload again (`unconfirmed-upload`);
3. exactly as confirmed (size, mtime, ctime, inode) and S3 shows the confirmed ETag → `unchanged`;
4. anything else — no cache line, the file changed in any of the four, a racy confirmation, another
   ETag in S3 — → the local bytes are compared with the listing's ETag (with the part size the cache
   recorded); the upload happens only if they differ.

No step compares a file time with another machine's clock to decide that a file needs no upload.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sync_engine.config import Shard
from sync_engine.filescache import FilesCache
from sync_engine.models import Cached, CacheState, LocalFile, PlanItem, Reason, RemoteObject, ScanProblem


@dataclass(frozen=True)
class Rule:
    """The upload rule of one run (see the module docstring)."""

    settle_seconds: float
    now: float

    def settling(self, local: LocalFile, cached: Cached | None) -> bool:
        if self.settle_seconds <= 0 or (cached is not None and cached.same_file(local)):
            return False
        return self.now - local.ctime_ns / 1e9 < self.settle_seconds  # a future ctime counts as recent

    def decide(self, local: LocalFile, remote: RemoteObject | None, cached: Cached | None) -> Reason:
        if self.settling(local, cached):
            return Reason.SETTLING
        if remote is None:
            return Reason.MISSING
        if remote.size != local.size:
            return Reason.SIZE
        if cached is None or cached.state is CacheState.SEEN:
            return Reason.UNKNOWN
        if cached.state is CacheState.FAILED:
            return Reason.RETRY
        if not cached.same_file(local):
            return Reason.CHANGED
        if cached.state is CacheState.RACY or cached.etag != remote.etag:
            return Reason.RECHECK
        return Reason.UNCHANGED


def trusted(local: LocalFile, cached: Cached | None) -> bool:
    """A file that needs no listing: exactly as a run confirmed it."""
    return cached is not None and cached.state is CacheState.OK and cached.same_file(local)


def shard_of(key: str, count: int) -> int:
    """Stable across runs, machines and Python versions (unlike hash())."""
    return zlib.crc32(key.encode("utf-8")) % count


def merge_join(
    local: Iterable[LocalFile | ScanProblem],
    remote: Iterable[RemoteObject],
    *,
    key_prefix: str,
    rule: Rule,
    cache: FilesCache | None = None,
    shard: Shard | None = None,
) -> Iterator[PlanItem | ScanProblem]:
    """Pair each local file with the object of the same key, if any, and decide."""
    remote_it = iter(remote)
    current = next(remote_it, None)
    for entry in local:
        if isinstance(entry, ScanProblem):
            yield entry
            continue
        key = key_prefix + entry.rel
        while current is not None and current.key < key:
            current = next(remote_it, None)  # only in S3: never deleted, nothing to do
        match = current if current is not None and current.key == key else None
        if shard is not None and shard_of(key, shard.count) != shard.index:
            continue
        cached = cache.get(key) if cache is not None else None
        yield PlanItem(entry, key, rule.decide(entry, match, cached), match, cached)


def trusted_items(
    local: Iterable[LocalFile | ScanProblem], *, key_prefix: str, cache: FilesCache, shard: Shard | None = None
) -> Iterator[PlanItem | ScanProblem]:
    """A unit whose every file is as confirmed (see `trusted`): no listing needed."""
    for entry in local:
        if isinstance(entry, ScanProblem):
            yield entry
            continue
        key = key_prefix + entry.rel
        if shard is not None and shard_of(key, shard.count) != shard.index:
            continue
        yield PlanItem(entry, key, Reason.TRUSTED, cached=cache.get(key))
