"""Split each folder into listing units: key ranges small enough to list in about one page each.

Only keys that exist locally can matter to an append-only backup, so the engine lists the S3 prefixes
of local directories, not the whole media prefix. A quick count of the local tree (directory entries
only, no stat) picks, top-down, the largest directories holding at most `limit` files; a directory
that is split also gets a delimiter listing for the files directly inside it. The request count stays
at about one LIST per 1,000 objects plus one per unit, the units can be listed ahead in parallel, and a
server never has to page through a huge prefix to answer for a small directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sync_engine.scan import valid_utf8

UNIT_FILES = 10_000


@dataclass(frozen=True)
class ListUnit:
    """Keys under `rel_dir/`; with `direct_only`, just the files directly in it (the subdirectories
    named in `covered` are units of their own)."""

    rel_dir: str
    direct_only: bool = False
    covered: frozenset[str] = field(default_factory=frozenset)
    dirs_changed_ns: int = 0  # newest mtime/ctime of the directories this unit walks (see trust.py)

    @property
    def folder(self) -> str:
        return self.rel_dir.split("/", 1)[0]


def _changed_ns(path: Path) -> int:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return 1 << 62  # unknown: never trusted
    return max(st.st_mtime_ns, st.st_ctime_ns)


def _units(root: Path, rel_dir: str, limit: int) -> tuple[int, list[ListUnit], int]:
    direct = 0
    children: list[tuple[str, int, list[ListUnit], int]] = []
    own_changed = _changed_ns(root / rel_dir)
    try:
        with os.scandir(root / rel_dir) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir and valid_utf8(entry.name):
                    total, units, changed = _units(root, f"{rel_dir}/{entry.name}", limit)
                    children.append((entry.name, total, units, changed))
                else:
                    direct += 1
    except OSError:
        pass  # the walk reports it; one unit is enough to do so
    total = direct + sum(count for _, count, _, _ in children)
    subtree_changed = max([own_changed, *(changed for *_, changed in children)])
    if total <= limit:
        return total, [ListUnit(rel_dir, dirs_changed_ns=subtree_changed)], subtree_changed
    units = [unit for _, _, child_units, _ in children for unit in child_units]
    covered = frozenset(name for name, *_ in children)
    units.append(ListUnit(rel_dir, direct_only=True, covered=covered, dirs_changed_ns=own_changed))
    return total, units, subtree_changed


def list_units(root: Path, folder: str, limit: int = UNIT_FILES) -> list[ListUnit]:
    """Units covering every file of `folder`; a missing folder is one (empty) unit."""
    if not (root / folder).is_dir() or (root / folder).is_symlink():
        return [ListUnit(folder, dirs_changed_ns=1 << 62)]
    return _units(root, folder, limit)[1]
