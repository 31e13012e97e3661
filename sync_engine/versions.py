"""Object versions: what a versioned bucket kept of each key, and the bucket as it was at a given time.

A versioned bucket never loses bytes to an overwrite: the old bytes stay as a noncurrent version, and a
delete only adds a delete marker. `ListObjectVersions` lists every version under a prefix, 1,000 per
page, keys in order and each key's versions newest first; botocore hands versions and delete markers
over as two lists, which `page_versions` merges back into that order (the entry S3 marks as latest
first, then by LastModified; entries of one key within the same second keep S3's order).

`KeyHistory.at(t)` is the key as it was at time t: its newest version with LastModified ≤ t, or nothing
when that is a delete marker or every version is younger. A bucket without versioning lists each
object once with version ID `null`: it holds current objects only, so nothing older than an overwrite
can be brought back (`KeyHistory.keeps_versions` tells, per key).

`VersionListing` lists a prefix this way. Credentials without s3:ListBucketVersions, or a server that
cannot list versions, fall back to ListObjectsV2 (current objects only) with a note, unless versions are
required (`--as-of`), which then fails with one line that names the permission.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync_engine.errors import StoreError
from sync_engine.models import RemoteObject

DENIED = frozenset({"AccessDenied", "403"})
UNSUPPORTED = frozenset({"NotImplemented", "501", "MethodNotAllowed", "405", "XNotImplemented"})


@dataclass(frozen=True, slots=True)
class ObjectVersion(RemoteObject):
    """One version of an object, or a delete marker (`deleted`, size 0, no ETag)."""

    version_id: str = ""  # "null" (or empty): written while the bucket kept no versions
    latest: bool = False
    deleted: bool = False

    @property
    def versioned(self) -> bool:
        return bool(self.version_id) and self.version_id != "null"

    @property
    def get_version(self) -> str | None:
        """The VersionId a GET names, or None for the one (null) version of an unversioned object."""
        return self.version_id if self.versioned else None

    @classmethod
    def current(cls, obj: RemoteObject) -> ObjectVersion:
        """A listed current object, where no versions could be listed."""
        return cls(obj.key, obj.size, obj.last_modified, obj.etag, obj.storage_class, latest=True)


def _seconds(value: Any) -> float:
    return value if isinstance(value, int | float) else float(value.timestamp())


def page_versions(page: dict[str, Any]) -> list[ObjectVersion]:
    """One ListObjectVersions page as S3 orders it: by key, each key's newest entry first."""
    found: list[ObjectVersion] = []
    for item in page.get("Versions") or ():
        found.append(
            ObjectVersion(
                key=str(item["Key"]),
                size=int(item.get("Size") or 0),
                last_modified=_seconds(item["LastModified"]),
                etag=str(item.get("ETag", "")).strip('"').lower(),
                storage_class=item.get("StorageClass") or "STANDARD",
                version_id=str(item.get("VersionId") or ""),
                latest=bool(item.get("IsLatest")),
            )
        )
    for item in page.get("DeleteMarkers") or ():
        found.append(
            ObjectVersion(
                key=str(item["Key"]),
                size=0,
                last_modified=_seconds(item["LastModified"]),
                etag="",
                version_id=str(item.get("VersionId") or ""),
                latest=bool(item.get("IsLatest")),
                deleted=True,
            )
        )
    # stable: at equal keys and times, versions stay before delete markers and in S3's own order
    found.sort(key=lambda v: (v.key, not v.latest, -v.last_modified))
    return found


@dataclass
class KeyHistory:
    """Every version of one key that was listed, newest first."""

    key: str
    versions: list[ObjectVersion] = field(default_factory=list)

    def upto(self, as_of: float | None) -> list[ObjectVersion]:
        """The versions that existed at `as_of` (all of them for None), newest first."""
        if as_of is None:
            return list(self.versions)
        return [v for v in self.versions if v.last_modified <= as_of]

    def at(self, as_of: float | None) -> ObjectVersion | None:
        """The object as it was at `as_of` (now, for None); None when it did not exist then."""
        for version in self.versions:
            if as_of is None or version.last_modified <= as_of:
                return None if version.deleted else version
        return None

    def first(self, as_of: float | None = None) -> ObjectVersion | None:
        """The oldest version that was not a delete marker, as of `as_of`."""
        for version in reversed(self.upto(as_of)):
            if not version.deleted:
                return version
        return None

    @property
    def keeps_versions(self) -> bool:
        """False when S3 kept only the current object of this key (written without versioning)."""
        return any(v.versioned or v.deleted for v in self.versions)


def histories(pages: Iterable[list[ObjectVersion]]) -> Iterator[KeyHistory]:
    """Group the listed versions by key; a key's versions may run on over several pages."""
    current: KeyHistory | None = None
    for page in pages:
        for version in page:
            if current is None or version.key != current.key:
                if current is not None:
                    yield current
                current = KeyHistory(version.key)
            current.versions.append(version)
    if current is not None:
        yield current


class VersionLister(Protocol):
    def list_versions(self, prefix: str, *, page_size: int = 1000) -> Iterator[list[ObjectVersion]]: ...

    def list_pages(
        self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None
    ) -> Iterator[list[RemoteObject]]: ...


class VersionListing:
    """The histories of every key under a prefix: iterate once, then read `versioned` and `note`.

    `versioned` is True once a listed entry shows the bucket keeps versions, False while none has (an
    unversioned bucket, or one whose objects all predate versioning: either way nothing older exists),
    None when only current objects could be listed."""

    def __init__(self, store: VersionLister, prefix: str, *, required: bool, page_size: int = 1000) -> None:
        self.store = store
        self.prefix = prefix
        self.required = required
        self.page_size = page_size
        self.versioned: bool | None = False
        self.note = ""

    def __iter__(self) -> Iterator[KeyHistory]:
        return histories(self._pages())

    def _pages(self) -> Iterator[list[ObjectVersion]]:
        pages = self.store.list_versions(self.prefix, page_size=self.page_size)
        try:
            first = next(pages, None)
        except StoreError as exc:
            if exc.code not in DENIED | UNSUPPORTED:
                raise
            if exc.code in DENIED and self.required:
                raise StoreError(
                    f"{exc}: --as-of lists object versions, which needs s3:ListBucketVersions "
                    "(deploy/iam/restorer.json grants it)",
                    code=exc.code,
                ) from None
            if exc.code in DENIED:
                self.versioned = None
                self.note = (
                    "object versions could not be listed (access denied: grant s3:ListBucketVersions), so "
                    "overwritten or deleted objects cannot be seen; only current objects were checked"
                )
            else:
                self.note = "the S3 server does not list object versions: it keeps current objects only"
            for page in self.store.list_pages(self.prefix):
                yield [ObjectVersion.current(obj) for obj in page]
            return
        if first is None:
            return
        self._saw(first)
        yield first
        for page in pages:
            self._saw(page)
            yield page

    def _saw(self, page: list[ObjectVersion]) -> None:
        if self.versioned is False and any(v.versioned or v.deleted for v in page):
            self.versioned = True
