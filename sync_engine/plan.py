"""Decide, from a local walk and an S3 listing alone, what to upload and why.

Both inputs arrive sorted by key, so the plan is a streaming merge-join (as s5cmd does it): memory
stays flat however large the library is, and the first upload can start while the listing is still
being paged in. No HEAD or GET is ever needed; the rule is aws s3 sync's, with two refinements that
only ever make it safer:

* mtime newer but same size: the listing's ETag is compared with the local bytes before uploading
  again, so `touch` or a metadata-only rewrite costs a local read instead of an upload;
* an object whose LastModified lies within the settle window after the file's mtime may hold bytes
  read while the file was being rewritten (the classic aws-cli corruption, never retried because the
  object then looks newer). Such objects get the same ETag check and are replaced if they differ.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sync_engine.config import Shard
from sync_engine.models import LocalFile, PlanItem, Reason, RemoteObject, ScanProblem

# Objects written this soon after the file's mtime get an ETag check even when the settle window is 0.
MIN_RACE_WINDOW = 2.0


@dataclass(frozen=True)
class Rule:
    """The upload rule of one run: aws s3 sync's, with the settle window and the race check."""

    settle_seconds: float
    now: float

    def decide(self, local: LocalFile, remote: RemoteObject | None) -> tuple[Reason, bool]:
        """Return the reason and whether the local bytes must be compared with the ETag first."""
        mtime = local.mtime_ns / 1e9
        if remote is None:
            reason, check = Reason.MISSING, False
        elif remote.size != local.size:
            reason, check = Reason.SIZE, False
        elif int(mtime) > int(remote.last_modified):
            reason, check = Reason.NEWER, True
        elif remote.last_modified - mtime < max(self.settle_seconds, MIN_RACE_WINDOW):
            reason, check = Reason.RACED, True
        else:
            return Reason.UNCHANGED, False
        if self.settle_seconds > 0 and self.now - mtime < self.settle_seconds:
            return Reason.SETTLING, False
        return reason, check


def shard_of(key: str, count: int) -> int:
    """Stable across runs, machines and Python versions (unlike hash())."""
    return zlib.crc32(key.encode("utf-8")) % count


def merge_join(
    local: Iterable[LocalFile | ScanProblem],
    remote: Iterable[RemoteObject],
    *,
    key_prefix: str,
    rule: Rule,
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
        reason, check = rule.decide(entry, match)
        yield PlanItem(entry, key, reason, match, check)


def trusted_items(
    local: Iterable[LocalFile | ScanProblem], *, key_prefix: str, shard: Shard | None = None
) -> Iterator[PlanItem | ScanProblem]:
    """A unit nothing has changed in since a verified run: every file is unchanged, no listing needed."""
    for entry in local:
        if isinstance(entry, ScanProblem):
            yield entry
            continue
        key = key_prefix + entry.rel
        if shard is not None and shard_of(key, shard.count) != shard.index:
            continue
        yield PlanItem(entry, key, Reason.TRUSTED)
