"""The directory a media restore writes into: what may be restored into it, and what it must hold after.

A restore never mixes its files into an unrelated directory: the target must be empty, or hold the
progress marker of an unfinished restore of the same bucket and prefix (so re-running after an
interruption needs no `--force`). Whatever happened, Immich refuses to start unless each of its six
folders holds a `.immich` marker, so those are created at the end.

A restore never writes through a symbolic link inside the target. A target that holds one anywhere
(an Immich folder, a directory deeper down, the progress marker, an `.immich` marker, a temporary
file's name) is refused before anything is written: a link there is someone else's doing, and
following it would put the library, or overwrite files, outside the target. The target path itself
may be a link: the operator named it. A link that appears while the restore runs is not followed
either: every directory is opened component by component relative to its parent, with O_NOFOLLOW
(`open_dirs`), and every file is created with O_EXCL|O_NOFOLLOW in the directory so opened.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sync_engine import __version__
from sync_engine.config import IMMICH_FOLDERS, RestoreSettings
from sync_engine.errors import TargetError
from sync_engine.report import utc_iso
from sync_engine.scan import printable

PROGRESS_MARKER = ".immich-sync-restore.json"
IMMICH_MARKER = ".immich"
# A fresh ext4 volume is never empty: its lost+found does not make a target "not empty".
_IGNORED_IN_EMPTY_TARGET = frozenset({"lost+found"})
# Short and independent of the file's own name, so a 255-byte file name still gets a temporary file.
TEMP_NAME = re.compile(r"^\.immich-sync-[0-9a-f]{16}\.tmp$")
_MAX_MARKER = 64 * 1024

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name() -> str:
    return f".immich-sync-{secrets.token_hex(8)}.tmp"


def shown(text: str) -> str:
    """A name from disk as one printable line: undecodable bytes and control characters escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in printable(text))


class Blocked(OSError):
    """Something other than a directory is where a directory must be: a link (never followed) or a file."""

    def __init__(self, rel: str, link: bool) -> None:
        what = "a symbolic link" if link else "a file"
        super().__init__(errno.ELOOP if link else errno.ENOTDIR, f"{what} is in the way at {shown(rel)}")
        self.rel = rel
        self.link = link


def open_dirs(root_fd: int, parts: Sequence[str], *, create: bool) -> int:
    """A new descriptor of root/parts…, opened one component at a time without following links;
    missing directories are created when `create`. FileNotFoundError when one is missing otherwise;
    Blocked when a link or a file is in the way."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root_fd)
    try:
        for depth, name in enumerate(parts):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                child = _open_existing(fd, name, parts[: depth + 1])
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                raise _blocked(fd, name, parts[: depth + 1]) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_existing(fd: int, name: str, rel: Sequence[str]) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise _blocked(fd, name, rel) from None


def _blocked(fd: int, name: str, rel: Sequence[str]) -> Blocked:
    try:
        link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        link = False
    return Blocked("/".join(rel), link)


@contextlib.contextmanager
def opened_dirs(root_fd: int, parts: Sequence[str], *, create: bool) -> Iterator[int]:
    fd = open_dirs(root_fd, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class TargetState:
    """What checking the target found: whether a restore is resumed, and what a killed run left."""

    resumed: bool = False
    stale_temps: list[str] = field(default_factory=list)  # relative paths of temporary files


def check_target(settings: RestoreSettings) -> TargetState:
    """Refuse a target that would mix a restore into unrelated files or holds a link; say whether it
    resumes a restore. Nothing is written here: a refused restore leaves the target as it was."""
    target = settings.target
    if target.is_symlink() and not target.exists():
        raise TargetError(f"restore target {target} is a broken symlink")
    if not target.exists():
        return TargetState()
    if not target.is_dir():
        raise TargetError(f"restore target {target} is not a directory")
    try:
        entries = sorted(e for e in os.listdir(target) if e not in _IGNORED_IN_EMPTY_TARGET)
    except OSError as exc:
        raise TargetError(f"restore target {target} cannot be read: {exc.strerror or exc}") from None
    state = TargetState()
    if PROGRESS_MARKER in entries:
        previous = _read_marker(target)
        same = previous.get("bucket") == settings.s3.bucket and previous.get("media_prefix") == settings.media_prefix
        if not same and not settings.force:
            where = f"s3://{previous.get('bucket', '?')}/{previous.get('media_prefix', '')}"
            raise TargetError(
                f"restore target {target} holds an unfinished restore from {shown(where)}; "
                "pass --force to restore into it anyway"
            )
        state.resumed = True
    elif entries and not settings.force:
        shown_entries = ", ".join(shown(e) for e in entries[:3]) + (", …" if len(entries) > 3 else "")
        raise TargetError(
            f"restore target {target} is not empty ({len(entries)} entries: {shown_entries}); "
            "choose an empty directory or pass --force to restore into it"
        )
    if entries:
        state.stale_temps = _scan(target)
    return state


def _link_error(target: Path, rel: str) -> TargetError:
    try:
        dest = f" -> {shown(os.readlink(target / rel))}"
    except OSError:
        dest = ""
    return TargetError(
        f"restore target {target} holds a symbolic link, {shown(rel)}{dest}: a restore never writes through "
        "links; remove it or restore into another directory"
    )


def _scan(target: Path) -> list[str]:
    """The temporary files a killed run left; TargetError at the first symbolic link anywhere below."""
    temps: list[str] = []
    pending = [""]
    try:
        while pending:
            rel = pending.pop()
            with os.scandir(target / rel if rel else target) as it:
                for entry in it:
                    child = f"{rel}/{entry.name}" if rel else entry.name
                    if child in _IGNORED_IN_EMPTY_TARGET:
                        continue
                    if entry.is_symlink():
                        raise _link_error(target, child)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(child)
                    elif TEMP_NAME.match(entry.name):
                        temps.append(child)
    except OSError as exc:
        raise TargetError(f"restore target {target} cannot be read: {exc.strerror or exc}") from None
    return temps


def _read_marker(target: Path) -> dict[str, object]:
    """The progress marker's fields; an unreadable or foreign file counts as naming no restore."""
    try:
        fd = os.open(target / PROGRESS_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(target, PROGRESS_MARKER) from None
        return {}
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return {}
            previous = json.loads(fh.read(_MAX_MARKER))
    except (OSError, ValueError, RecursionError):
        return {}
    return previous if isinstance(previous, dict) else {}


def write_progress_marker(root_fd: int, settings: RestoreSettings, started: float) -> None:
    """Says "a restore is under way here", so re-running after an interruption needs no --force."""
    body = {
        "bucket": settings.s3.bucket,
        "media_prefix": settings.media_prefix,
        "folders": list(settings.folders),
        "started_at": utc_iso(started),
        "engine_version": __version__,
    }
    tmp = PROGRESS_MARKER + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=root_fd)  # a killed run's; unlink removes a link, never what it points at
    fd = os.open(tmp, NEW_FILE_FLAGS, 0o666, dir_fd=root_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, PROGRESS_MARKER, src_dir_fd=root_fd, dst_dir_fd=root_fd)


def remove_progress_marker(root_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(PROGRESS_MARKER, dir_fd=root_fd)


def remove_stale_temp_files(root_fd: int, temps: Sequence[str]) -> int:
    """Temporary files of a run that was killed (SIGKILL, node loss) before it could remove them."""
    removed = 0
    for rel in temps:
        *parents, name = rel.split("/")
        try:
            with opened_dirs(root_fd, parents, create=False) as fd:
                os.unlink(name, dir_fd=fd)
            removed += 1
        except (FileNotFoundError, Blocked):
            pass
    return removed


def ensure_immich_markers(root_fd: int) -> list[str]:
    """Immich refuses to start unless every one of its folders holds `.immich`, restored or not."""
    created = []
    for folder in IMMICH_FOLDERS:
        with opened_dirs(root_fd, [folder], create=True) as fd:
            try:
                os.close(os.open(IMMICH_MARKER, NEW_FILE_FLAGS, 0o666, dir_fd=fd))
            except FileExistsError:
                continue
        created.append(folder)
    return created
