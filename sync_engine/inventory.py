"""Local library statistics per Immich folder, for `immich-sync inventory` and the operator tools."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sync_engine.config import IMMICH_FOLDERS
from sync_engine.models import LocalFile
from sync_engine.scan import walk_folder

MARKER = ".immich"


@dataclass
class FolderInventory:
    """One Immich folder as found on disk: counts, newest file, marker, and whether backup takes it."""

    folder: str
    backed_up: bool
    exists: bool
    marker: bool
    files: int = 0
    bytes: int = 0
    newest_mtime: float | None = None
    problems: int = 0


def inventory(root: Path, selected: tuple[str, ...]) -> list[FolderInventory]:
    rows = []
    for folder in IMMICH_FOLDERS:
        path = root / folder
        row = FolderInventory(folder, folder in selected, path.is_dir(), (path / MARKER).is_file())
        for entry in walk_folder(root, folder):
            if isinstance(entry, LocalFile):
                row.files += 1
                row.bytes += entry.size
                mtime = entry.mtime_ns / 1e9
                if row.newest_mtime is None or mtime > row.newest_mtime:
                    row.newest_mtime = mtime
            else:
                row.problems += 1
        rows.append(row)
    return rows


def unusable_folders(root: Path, folders: tuple[str, ...]) -> list[str]:
    """Why each selected folder cannot be backed up as Immich's, one line each (empty: all fine).

    Immich writes `.immich` into each of its folders and refuses to start without it. A folder without
    it is a volume that is not mounted, mounted at the wrong path, or not Immich's: backing up "nothing"
    from it and saying ok would hide exactly the failure a backup exists for. A symlinked folder is
    refused too: following it could back up another tree under Immich's keys."""
    problems = []
    for folder in folders:
        path = root / folder
        if path.is_symlink():
            problems.append(f"{folder}/ is a symlink (not followed)")
        elif not path.is_dir():
            problems.append(f"{folder}/ does not exist")
        elif not (path / MARKER).is_file():
            problems.append(f"{folder}/{MARKER} is missing")
    return problems
