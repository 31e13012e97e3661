"""The Barman Cloud catalog read straight from the object store, for when the cluster and its CNPG objects are gone.

Layout written by `barman-cloud-backup` and `barman-cloud-wal-archive` (what CNPG runs, in-tree or through the
Barman Cloud plugin):

    <destinationPath>/<serverName>/base/<backupId>/backup.info      (+ data.tar[.gz|…], <tablespace oid>.tar…)
    <destinationPath>/<serverName>/wals/<timeline+log>/<WAL segment>[.gz|.bz2|.xz|.snappy|.zst|.lz4]
    <destinationPath>/<serverName>/wals/<timeline+log>/<WAL segment>.<offset>.backup   (backup label)
    <destinationPath>/<serverName>/wals/<timeline+log>/<WAL segment>.partial
    <destinationPath>/<serverName>/wals/<timeline>.history

The request count does not grow with the archive beyond what listing needs: one delimited LIST per 1,000
backups, one GET per `backup.info`, and one paginated LIST of `wals/` (1,000 names per request). The
archive is read from the bucket, so it is untrusted: a `backup.info` larger than MAX_BACKUP_INFO stops the
catalog with one line naming it, and a destinationPath that is not `s3://bucket/path` is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from immich_tui.services.errors import ServiceError
from sync_engine.store import ObjectStore, StoreError

DONE = "DONE"
# backup.info is a few dozen `key=value` lines (a few KiB with tablespaces and copy statistics). No listing
# sizes it (the backups are found as folders), so the cap is enforced while reading: a forged giant costs
# at most this much memory and is named with the cap.
MAX_BACKUP_INFO = 1024 * 1024
# Compression suffixes barman-cloud-wal-archive may append to a WAL name (barman/cloud.py ALLOWED_COMPRESSIONS).
WAL_COMPRESSIONS = (".gz", ".bz2", ".xz", ".snappy", ".zst", ".lz4")
# Same grammar as barman/xlog.py: a segment, optionally a backup label or a partial segment, or a history file.
_XLOG_RE = re.compile(
    r"^(?P<tli>[0-9A-Fa-f]{8})"
    r"(?:(?P<log>[0-9A-Fa-f]{8})(?P<seg>[0-9A-Fa-f]{8})(?P<kind>\.[0-9A-Fa-f]{8}\.backup|\.partial)?|\.history)$"
)
# A bucket name as S3 and the S3-compatible servers allow one (older S3 buckets may hold capitals and `_`).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_ACCESS_CODES = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


class CatalogError(ServiceError):
    """The archive cannot be read as asked; the message is one line that says what to fix."""


@dataclass
class BaseBackup:
    backup_id: str
    status: str  # DONE | FAILED | STARTED | WAITING_FOR_WALS | EMPTY | …, as barman wrote it
    begin_time: dt.datetime | None
    end_time: dt.datetime | None
    begin_wal: str
    end_wal: str
    timeline: int | None
    size: int | None
    systemid: str
    server_name: str


@dataclass
class WalRange:
    """Full WAL segments in the archive. Backup labels, `.partial` segments and history files are not counted
    (recovery never asks for them by segment name), but history files do add their timeline."""

    first: str | None
    last: str | None
    count: int
    timelines: list[int] = field(default_factory=list)
    # When S3 stored the last segment: no commit replayed from this archive can be later (a restore to the
    # latest point ends in that segment), so it bounds a latest-point recovery from above.
    last_stored: dt.datetime | None = None


@dataclass
class Catalog:
    destination_path: str
    server_name: str
    backups: list[BaseBackup]  # oldest first
    wal: WalRange
    first_recoverability_point: dt.datetime | None
    last_backup: dt.datetime | None


def parse_destination(destination_path: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix/`); keys below it are built exactly as barman's
    `os.path.join(path, server, …)` builds them, so a trailing slash or none means the same folder."""
    shown = repr(destination_path if len(destination_path) <= 80 else destination_path[:80] + "…")
    try:
        parsed = urllib.parse.urlsplit(destination_path.strip())
    except ValueError:  # `s3://[::1`: not even a URL
        parsed = None
    if parsed is None or parsed.scheme != "s3" or not _BUCKET.fullmatch(parsed.netloc) or parsed.query:
        raise CatalogError(f"destinationPath must look like s3://bucket/path, got {shown}")
    path = parsed.path.lstrip("/")
    return parsed.netloc, f"{path.rstrip('/')}/" if path.strip("/") else ""


def _url(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


def _catalog_error(exc: StoreError, bucket: str, prefix: str) -> CatalogError:
    if exc.code == "NoSuchBucket":
        return CatalogError(f"bucket {bucket} does not exist (destinationPath {_url(bucket, prefix)})")
    if exc.code in _ACCESS_CODES:
        return CatalogError(f"access denied to {_url(bucket, prefix)}: the credentials may not list or read it")
    return CatalogError(str(exc))  # already one line naming the bucket and key


def _folders(store: ObjectStore, prefix: str, *, first_page_only: bool = False) -> Iterator[str]:
    """Folder names under `prefix`, with the store's errors turned into catalog errors."""
    try:
        yield from store.list_folders(prefix, first_page_only=first_page_only)
    except StoreError as err:
        raise _catalog_error(err, store.bucket, prefix) from None


def _store_prefix(store: ObjectStore, destination_path: str) -> str:
    bucket, prefix = parse_destination(destination_path)
    if bucket != store.bucket:
        raise CatalogError(f"{destination_path} is in bucket {bucket}, but this store reads bucket {store.bucket}")
    return prefix


def list_servers(store: ObjectStore, destination_path: str) -> list[str]:
    """serverName folders under the destination: those holding a `base/` or `wals/` folder, so media or other
    data kept beside the archive in the same bucket is not mistaken for a server. One LIST for the folders, then
    one per folder found."""
    prefix = _store_prefix(store, destination_path)
    servers = []
    for name in _folders(store, prefix):
        if {"base", "wals"} & set(_folders(store, f"{prefix}{name}/", first_page_only=True)):
            servers.append(name)
    return sorted(servers)


def _utc(text: str) -> dt.datetime | None:
    """barman writes `str(datetime)` with the PostgreSQL session's offset; a time without an offset is taken as
    UTC, the zone CNPG's instance pods run in."""
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_backup_info(body: bytes, backup_id: str, server_name: str) -> BaseBackup:
    """`key=value` lines as `barman.infofile.FieldListFile.save` writes them; `None` means unset. Unknown keys
    (copy_stats, tablespaces, …) are ignored and a malformed line is skipped rather than losing the backup."""
    info: dict[str, str] = {}
    for line in body.decode("utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value != "None":
            info[key.strip()] = value
    return BaseBackup(
        backup_id=backup_id,
        status=info.get("status", "EMPTY"),
        begin_time=_utc(info.get("begin_time", "")),
        end_time=_utc(info.get("end_time", "")),
        begin_wal=info.get("begin_wal", ""),
        end_wal=info.get("end_wal", ""),
        timeline=_int(info.get("timeline", "")),
        size=_int(info.get("size", "")),
        systemid=info.get("systemid", ""),
        # barman-cloud-backup writes `server_name=cloud` whatever the archive's name; the folder is what counts
        server_name=server_name,
    )


def _wal_name(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    for suffix in WAL_COMPRESSIONS:
        if name.endswith(suffix) and _XLOG_RE.match(name[: -len(suffix)]):
            return name[: -len(suffix)]
    return name


def wal_range(objects: Iterable[tuple[str, float]]) -> WalRange:
    """Segments are ordered by position in the WAL stream, then timeline, so `first`/`last` stay right across a
    promotion (plain name order would put every segment of timeline 2 after all of timeline 1). `objects`
    are (key, S3 LastModified as a POSIX time)."""
    segments: dict[str, float] = {}
    timelines: set[int] = set()
    for key, stored in objects:
        match = _XLOG_RE.match(_wal_name(key))
        if not match:
            continue
        timelines.add(int(match["tli"], 16))
        if match["log"] and not match["kind"]:
            name = match.group(0).upper()
            segments[name] = max(segments.get(name, 0.0), stored)
    ordered = sorted(segments, key=lambda name: (name[8:], name[:8]))
    last_stored = segments[ordered[-1]] if ordered else 0.0
    return WalRange(
        first=ordered[0] if ordered else None,
        last=ordered[-1] if ordered else None,
        count=len(ordered),
        timelines=sorted(timelines),
        last_stored=dt.datetime.fromtimestamp(last_stored, dt.UTC) if last_stored > 0 else None,
    )


def read_wal_range(
    store: ObjectStore, destination_path: str, server_name: str, stored_by: dt.datetime | None = None
) -> WalRange:
    """The archive's WAL segments alone: what a latest-point recovery replays, without the base backups;
    with `stored_by`, only the segments S3 had stored by then (what a replay that ended then could read)."""
    prefix = _store_prefix(store, destination_path)
    if not server_name or "/" in server_name:
        raise CatalogError(f"serverName must be a single folder name, got {server_name!r}")
    wals = f"{prefix}{server_name}/wals/"
    until = stored_by.timestamp() if stored_by is not None else float("inf")
    try:
        return wal_range(
            (obj.key, obj.last_modified)
            for page in store.list_pages(wals)
            for obj in page
            if obj.last_modified <= until
        )
    except StoreError as exc:
        raise _catalog_error(exc, store.bucket, wals) from None


def read_catalog(store: ObjectStore, destination_path: str, server_name: str) -> Catalog:
    """What can be restored from the bucket alone: every base backup with its backup.info, and the WAL range."""
    prefix = _store_prefix(store, destination_path)
    if not server_name or "/" in server_name:
        raise CatalogError(f"serverName must be a single folder name, got {server_name!r}")
    server_prefix = f"{prefix}{server_name}/"
    backups: list[BaseBackup] = []
    for backup_id in _folders(store, f"{server_prefix}base/"):
        key = f"{server_prefix}base/{backup_id}/backup.info"
        try:
            body = store.get_bytes(key, max_bytes=MAX_BACKUP_INFO, what="backup.info")
        except StoreError as exc:
            if exc.code in ("NoSuchKey", "404"):
                continue  # still uploading, or half-deleted: barman's own catalog skips it too
            raise _catalog_error(exc, store.bucket, key) from None
        backups.append(parse_backup_info(body, backup_id, server_name))
    wal = read_wal_range(store, destination_path, server_name)
    if not backups and not wal.count and not wal.timelines:
        _no_server(store, destination_path, server_name)
    backups.sort(key=lambda b: (b.begin_time or b.end_time or dt.datetime.min.replace(tzinfo=dt.UTC), b.backup_id))
    done = [b.end_time for b in backups if b.status == DONE and b.end_time]
    return Catalog(
        destination_path=destination_path,
        server_name=server_name,
        backups=backups,
        wal=wal,
        first_recoverability_point=min(done) if done else None,
        last_backup=max(done) if done else None,
    )


def _no_server(store: ObjectStore, destination_path: str, server_name: str) -> None:
    """Nothing under the server's folder: say whether the path holds other servers or no archive at all."""
    servers = list_servers(store, destination_path)
    if server_name in servers:
        return  # folders exist but are empty: an archive that has not stored anything yet
    if not servers:
        raise CatalogError(f"no Barman Cloud archive at {destination_path}: no server folder with base/ or wals/ there")
    raise CatalogError(f"no server {server_name!r} at {destination_path}; servers there: {', '.join(servers)}")


def base_backup_for(catalog: Catalog, target: dt.datetime) -> BaseBackup | None:
    """The newest completed backup that ended before `target`: PostgreSQL can only stop replay at a time after
    the backup became consistent, and the newest such backup leaves the least WAL to replay."""
    if target.tzinfo is None:
        raise ValueError("the recovery target needs a time zone")
    candidates = [b for b in catalog.backups if b.status == DONE and b.end_time and b.end_time < target]
    return max(candidates, key=lambda b: (b.end_time, b.backup_id), default=None)
