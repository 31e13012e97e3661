"""The settings each `immich-sync` command runs with, built from flags and the environment.

Each setting is declared once, in `settings.py` (variable, flag, default, parser, bounds); this module
resolves them for a command and adds the checks that involve more than one setting or the file system
(the multipart threshold against the part size, the memory budget against the threshold, the library
root, the secrets directory). Credentials are never stored in the settings: the environment's stay with
botocore's own provider chain, and a secrets directory's are read here as text only to be handed to the
store by the command line (`cli.py`), never put into `os.environ`. Anything missing or malformed is a
`ConfigError` whose one-line message names the flag and the variable (and the file it came from), so a
CronJob log says exactly what to fix; a file's content is never part of a message.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_engine.bwlimit import BandwidthSchedule
from sync_engine.errors import ConfigError
from sync_engine.models import Shard
from sync_engine.overwrite import OverwritePolicy
from sync_engine.settings import (
    CHECKSUM_MODES,
    DEFAULT_FOLDERS,
    DEFAULT_RESTORE_DAYS,
    DEFAULT_RESTORE_TIER,
    FILE_VARIABLES,
    IMMICH_FOLDERS,
    MAX_PARTS,
    MIN_PART_SIZE,
    NO_FILES,
    SETTING,
    STORAGE_CLASSES,
    MiB,
    SecretFiles,
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
    "secret_files",
    "sync_settings",
]

# A Secret holds at most 1 MiB in all; no value of ours comes near this (a session token is a few KiB), and
# a larger file is a wrong mount, not a key.
MAX_SECRET_FILE = 64 * 1024


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


def library_root(args: object, env: Mapping[str, str], files: SecretFiles = NO_FILES) -> Path:
    """The library root, which must be an existing directory: an unmounted volume is not an empty library."""
    root: Path = value("library_root", args, env, files)
    if not root.exists():
        raise SETTING["library_root"].error(f"{root} does not exist")
    if not root.is_dir():
        raise SETTING["library_root"].error(f"{root} is not a directory")
    return root


def _read_secret_file(path: Path) -> str:
    """One file of a secrets directory as text: at most MAX_SECRET_FILE bytes of UTF-8, one trailing newline
    (an editor's, kept by `kubectl create secret --from-file`) taken off, no control character left. Every
    problem names the path and never the content."""
    error = SETTING["secrets_dir"].error
    try:
        # One open, following the kubelet's links (KEY -> ..data/KEY -> ..<timestamp>/KEY), non-blocking so
        # that a FIFO cannot hang the run; what was opened is then judged by its descriptor, not its name.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device, a directory: no value
            raise error(f"{path} is not a regular file")
        chunks: list[bytes] = []
        left = MAX_SECRET_FILE + 1  # one byte more than allowed tells a file that is too large
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_SECRET_FILE:
        raise error(f"{path} is larger than {MAX_SECRET_FILE // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    for position, char in enumerate(text, start=1):
        if unicodedata.category(char) == "Cc":  # a second newline, a NUL, an escape sequence
            raise error(f"{path} holds a control character at position {position}")
    return text


def secret_files(args: object, env: Mapping[str, str] | None = None) -> SecretFiles:
    """The secrets directory named by `--secrets-dir` or IMMICH_SYNC_SECRETS_DIR (never by a file), read
    once: a file for each variable it holds (see `settings.FILE_VARIABLES`; other files are left alone).
    No directory given: nothing. A directory given that is missing or unreadable stops the run (exit 2):
    it is a mount that failed, and running on without it would use whatever else happens to be set."""
    env = os.environ if env is None else env
    directory: Path | None = value("secrets_dir", args, env)
    if directory is None:
        return NO_FILES
    error = SETTING["secrets_dir"].error
    if not directory.exists():
        raise error(f"{directory} does not exist")
    if not directory.is_dir():
        raise error(f"{directory} is not a directory")
    try:
        present = set(os.listdir(directory))
    except OSError as exc:
        raise error(f"{directory} cannot be read ({exc.strerror})") from None
    values = {name: _read_secret_file(directory / name) for name in FILE_VARIABLES if name in present}
    return SecretFiles(directory, values)


def _prefixes(args: object, env: Mapping[str, str], files: SecretFiles) -> tuple[str, str]:
    media_prefix: str = value("prefix", args, env, files)
    report_prefix: str | None = value("report_prefix", args, env, files)
    return media_prefix, report_prefix or default_report_prefix(media_prefix)


def s3_settings(
    args: object,
    env: Mapping[str, str],
    files: SecretFiles = NO_FILES,
    *,
    workers: int = 64,
    bwlimit: BandwidthSchedule | None = None,
) -> S3Settings:
    """How to reach the bucket, from flags (`args`, may be None), variables and the secrets directory."""
    return S3Settings(
        bucket=value("bucket", args, env, files),
        region=value("region", args, env, files),
        endpoint_url=value("endpoint_url", args, env, files),
        path_style=value("path_style", args, env, files),
        checksum_mode=value("checksum_mode", args, env, files),
        max_attempts=value("max_attempts", args, env, files),
        max_connections=max(workers, 4),
        bwlimit=bwlimit,
    )


def sync_settings(args: object, env: Mapping[str, str] | None = None, files: SecretFiles = NO_FILES) -> SyncSettings:
    """Build settings for backup, plan and verify from parsed CLI arguments, the environment and the
    secrets directory's files (`secret_files`), in that order."""
    env = os.environ if env is None else env

    def get(name: str) -> Any:
        return value(name, args, env, files)

    root = library_root(args, env, files)
    media_prefix, report_prefix = _prefixes(args, env, files)
    if media_prefix and report_prefix.startswith(media_prefix) and _in_selected(report_prefix, media_prefix):
        raise SETTING["report_prefix"].error(
            f"{report_prefix} must not be inside an Immich folder of the media prefix {media_prefix}"
        )
    workers: int = get("workers")
    part_mib: int = get("part_size_mib")
    threshold_mib: int = get("multipart_threshold_mib")
    if threshold_mib < part_mib:
        raise SETTING["multipart_threshold_mib"].error(
            f"must be at least the part size ({part_mib} MiB), got {threshold_mib}"
        )
    memory_mib: int = get("memory_mib")
    if memory_mib < threshold_mib:
        raise SETTING["memory_mib"].error(
            f"must be at least the multipart threshold ({threshold_mib} MiB), got {memory_mib}"
        )
    return SyncSettings(
        library_root=root,
        media_prefix=media_prefix,
        report_prefix=report_prefix,
        s3=s3_settings(args, env, files, workers=workers, bwlimit=get("bwlimit")),
        folders=parse_folders(getattr(args, "include", None), getattr(args, "only", None)),
        storage_class=get("storage_class"),
        workers=workers,
        part_size=part_mib * MiB,
        multipart_threshold=threshold_mib * MiB,
        memory_budget=memory_mib * MiB,
        full_listing_days=get("full_listing_days"),
        settle_seconds=get("settle_seconds"),
        shard=get("shard"),
        overwrite=OverwritePolicy(
            allow_overwrite=bool(get("allow_overwrite")),
            accept_mass_change=bool(get("accept_mass_change")),
            max_percent=get("mass_change_percent"),
            min_files=get("mass_change_min_files"),
        ),
        as_of=get("as_of"),
    )


def restore_settings(
    args: object, env: Mapping[str, str] | None = None, files: SecretFiles = NO_FILES
) -> RestoreSettings:
    """The same variables, files and flags as the other commands; the credentials should be the restorer's."""
    env = os.environ if env is None else env

    def get(name: str) -> Any:
        return value(name, args, env, files)

    target: Path = get("to")
    media_prefix, report_prefix = _prefixes(args, env, files)
    workers: int = get("workers")
    return RestoreSettings(
        target=target,
        media_prefix=media_prefix,
        report_prefix=report_prefix,
        # + the listing and the manifest reads
        s3=s3_settings(args, env, files, workers=workers + 2, bwlimit=get("bwlimit")),
        folders=parse_restore_folders(
            getattr(args, "include", None), getattr(args, "only", None), getattr(args, "exclude", None)
        ),
        workers=workers,
        overwrite=get("overwrite"),
        force=get("force"),
        restore_days=get("restore_days"),
        restore_tier=get("restore_tier"),
        as_of=get("as_of"),
    )


def _in_selected(report_prefix: str, media_prefix: str) -> bool:
    rest = report_prefix[len(media_prefix) :]
    return rest.split("/", 1)[0] in IMMICH_FOLDERS
