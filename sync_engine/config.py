"""The settings each `immich-sync` command runs with, built from flags and the environment.

Each setting is declared once, in `settings.py` (variable, flag, default, parser, bounds); this module
resolves them for a command and adds the checks that involve more than one setting or the file system
(the multipart threshold against the part size, the memory budget against the threshold, the library
root). Credentials stay with botocore's own provider chain and are never read or stored here. Anything
missing or malformed is a `ConfigError` whose one-line message names the flag and the variable, so a
CronJob log says exactly what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sync_engine.bwlimit import BandwidthSchedule
from sync_engine.errors import ConfigError
from sync_engine.models import Shard
from sync_engine.overwrite import OverwritePolicy
from sync_engine.settings import (
    CHECKSUM_MODES,
    DEFAULT_FOLDERS,
    DEFAULT_RESTORE_DAYS,
    DEFAULT_RESTORE_TIER,
    IMMICH_FOLDERS,
    MAX_PARTS,
    MIN_PART_SIZE,
    SETTING,
    STORAGE_CLASSES,
    MiB,
    value,
)
from sync_engine.values import normalize_prefix

__all__ = [
    "CHECKSUM_MODES",
    "DEFAULT_FOLDERS",
    "IMMICH_FOLDERS",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "STORAGE_CLASSES",
    "ConfigError",
    "MiB",
    "RestoreSettings",
    "S3Settings",
    "Shard",
    "SyncSettings",
    "default_report_prefix",
    "library_root",
    "normalize_prefix",
    "parse_folders",
    "parse_restore_folders",
    "restore_settings",
    "s3_settings",
    "sync_settings",
]


@dataclass(frozen=True)
class S3Settings:
    """How to reach the bucket. Credentials stay with botocore's own provider chain and are never stored."""

    bucket: str
    region: str
    endpoint_url: str | None = None
    path_style: bool = False
    checksum_mode: str = "when_required"
    max_attempts: int = 6
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_connections: int = 16
    bwlimit: BandwidthSchedule | None = None  # None: no limit


@dataclass(frozen=True)
class SyncSettings:
    """Everything a backup, plan or verify run needs besides credentials."""

    library_root: Path
    media_prefix: str
    report_prefix: str
    s3: S3Settings
    folders: tuple[str, ...] = DEFAULT_FOLDERS
    storage_class: str | None = None
    workers: int = 64
    part_size: int = 16 * MiB
    multipart_threshold: int = 64 * MiB
    memory_budget: int = 256 * MiB
    full_listing_days: float = 7.0
    settle_seconds: float = 60.0
    max_change_retries: int = 2
    shard: Shard | None = None
    as_of: float | None = None  # verify: the bucket as it was then (epoch seconds)
    overwrite: OverwritePolicy = field(default_factory=OverwritePolicy)


@dataclass(frozen=True)
class RestoreSettings:
    """Everything a media restore needs besides credentials (which should be the restorer's)."""

    target: Path
    media_prefix: str
    report_prefix: str
    s3: S3Settings
    folders: tuple[str, ...] = IMMICH_FOLDERS
    workers: int = 64
    overwrite: bool = False
    force: bool = False
    restore_days: int = DEFAULT_RESTORE_DAYS
    restore_tier: str = DEFAULT_RESTORE_TIER
    as_of: float | None = None  # the bucket as it was then (epoch seconds)


def default_report_prefix(media_prefix: str) -> str:
    """Reports live beside the media prefix, never inside it, so a restore of the prefix skips them."""
    parent = media_prefix.rstrip("/").rpartition("/")[0]
    return f"{parent}/sync-reports/" if parent else "immich-sync-reports/"


def _names(text: str | None) -> list[str]:
    return [f.strip().strip("/") for f in (text or "").split(",") if f.strip().strip("/")]


def _check_known(chosen: list[str], flags: str) -> None:
    unknown = [f for f in chosen if f not in IMMICH_FOLDERS]
    if unknown:
        raise ConfigError(f"{flags}: unknown folder(s) {', '.join(unknown)}: choose from {', '.join(IMMICH_FOLDERS)}")


def parse_folders(include: str | None, only: str | None) -> tuple[str, ...]:
    """`--only` replaces the default selection; `--include` adds opt-in folders to it."""
    chosen = list(DEFAULT_FOLDERS)
    if only:
        chosen = [f.strip() for f in only.split(",") if f.strip()]
    if include:
        chosen += [f.strip() for f in include.split(",") if f.strip()]
    _check_known(chosen, "--only / --include")
    return tuple(f for f in IMMICH_FOLDERS if f in chosen)


def parse_restore_folders(include: str | None, only: str | None, exclude: str | None) -> tuple[str, ...]:
    """All six folders unless `--only` narrows them; `--include` adds to `--only`, `--exclude` removes.

    The flags mean what they mean for `backup`; only the default differs, because a restore should
    bring back whatever the bucket holds."""
    chosen = _names(only) or list(IMMICH_FOLDERS)
    chosen += _names(include)
    dropped = _names(exclude)
    _check_known(chosen + dropped, "--only / --include / --exclude")
    folders = tuple(f for f in IMMICH_FOLDERS if f in chosen and f not in dropped)
    if not folders:
        raise ConfigError("--only / --exclude: no folder left to restore")
    return folders


def library_root(args: object, env: Mapping[str, str]) -> Path:
    """The library root, which must be an existing directory: an unmounted volume is not an empty library."""
    root: Path = value("library_root", args, env)
    if not root.exists():
        raise SETTING["library_root"].error(f"{root} does not exist")
    if not root.is_dir():
        raise SETTING["library_root"].error(f"{root} is not a directory")
    return root


def _prefixes(args: object, env: Mapping[str, str]) -> tuple[str, str]:
    media_prefix: str = value("prefix", args, env)
    report_prefix: str | None = value("report_prefix", args, env)
    return media_prefix, report_prefix or default_report_prefix(media_prefix)


def s3_settings(
    args: object, env: Mapping[str, str], *, workers: int = 64, bwlimit: BandwidthSchedule | None = None
) -> S3Settings:
    """How to reach the bucket, from flags (`args`, may be None) and variables."""
    return S3Settings(
        bucket=value("bucket", args, env),
        region=value("region", args, env),
        endpoint_url=value("endpoint_url", args, env),
        path_style=value("path_style", args, env),
        checksum_mode=value("checksum_mode", args, env),
        max_attempts=value("max_attempts", args, env),
        max_connections=max(workers, 4),
        bwlimit=bwlimit,
    )


def sync_settings(args: object, env: Mapping[str, str] | None = None) -> SyncSettings:
    """Build settings for backup, plan and verify from parsed CLI arguments and the environment."""
    env = os.environ if env is None else env
    root = library_root(args, env)
    media_prefix, report_prefix = _prefixes(args, env)
    if media_prefix and report_prefix.startswith(media_prefix) and _in_selected(report_prefix, media_prefix):
        raise SETTING["report_prefix"].error(
            f"{report_prefix} must not be inside an Immich folder of the media prefix {media_prefix}"
        )
    workers: int = value("workers", args, env)
    part_mib: int = value("part_size_mib", args, env)
    threshold_mib: int = value("multipart_threshold_mib", args, env)
    if threshold_mib < part_mib:
        raise SETTING["multipart_threshold_mib"].error(
            f"must be at least the part size ({part_mib} MiB), got {threshold_mib}"
        )
    memory_mib: int = value("memory_mib", args, env)
    if memory_mib < threshold_mib:
        raise SETTING["memory_mib"].error(
            f"must be at least the multipart threshold ({threshold_mib} MiB), got {memory_mib}"
        )
    return SyncSettings(
        library_root=root,
        media_prefix=media_prefix,
        report_prefix=report_prefix,
        s3=s3_settings(args, env, workers=workers, bwlimit=value("bwlimit", args, env)),
        folders=parse_folders(getattr(args, "include", None), getattr(args, "only", None)),
        storage_class=value("storage_class", args, env),
        workers=workers,
        part_size=part_mib * MiB,
        multipart_threshold=threshold_mib * MiB,
        memory_budget=memory_mib * MiB,
        full_listing_days=value("full_listing_days", args, env),
        settle_seconds=value("settle_seconds", args, env),
        shard=value("shard", args, env),
        overwrite=OverwritePolicy(
            allow_overwrite=bool(value("allow_overwrite", args, env)),
            accept_mass_change=bool(value("accept_mass_change", args, env)),
            max_percent=value("mass_change_percent", args, env),
            min_files=value("mass_change_min_files", args, env),
        ),
        as_of=value("as_of", args, env),
    )


def restore_settings(args: object, env: Mapping[str, str] | None = None) -> RestoreSettings:
    """The same variables and flags as the other commands; the credentials should be the restorer's."""
    env = os.environ if env is None else env
    target: Path = value("to", args, env)
    media_prefix, report_prefix = _prefixes(args, env)
    workers: int = value("workers", args, env)
    return RestoreSettings(
        target=target,
        media_prefix=media_prefix,
        report_prefix=report_prefix,
        # + the listing and the manifest reads
        s3=s3_settings(args, env, workers=workers + 2, bwlimit=value("bwlimit", args, env)),
        folders=parse_restore_folders(
            getattr(args, "include", None), getattr(args, "only", None), getattr(args, "exclude", None)
        ),
        workers=workers,
        overwrite=value("overwrite", args, env),
        force=value("force", args, env),
        restore_days=value("restore_days", args, env),
        restore_tier=value("restore_tier", args, env),
        as_of=value("as_of", args, env),
    )


def _in_selected(report_prefix: str, media_prefix: str) -> bool:
    rest = report_prefix[len(media_prefix) :]
    return rest.split("/", 1)[0] in IMMICH_FOLDERS
