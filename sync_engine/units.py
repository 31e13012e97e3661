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
from collections.abc import Iterator
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

    @property
    def folder(self) -> str:
        return self.rel_dir.split("/", 1)[0]


@dataclass
class _Dir:
    """A directory being counted: its subdirectories still to count, and what the counted ones gave."""

    rel_dir: str
    direct: int
    subdirs: Iterator[str]
    children: list[tuple[str, int, list[ListUnit]]] = field(default_factory=list)

    @classmethod
    def open(cls, root: Path, rel_dir: str) -> _Dir:
        direct = 0
        subdirs: list[str] = []
        try:
            with os.scandir(os.path.join(root, rel_dir)) as it:
                for entry in it:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir and valid_utf8(entry.name):
                        subdirs.append(entry.name)
                    else:
                        direct += 1
        except OSError:
            pass  # the walk reports it; one unit is enough to do so
        subdirs.sort(key=lambda name: f"{name}/")  # units in key order, whatever order the disk lists
        return cls(rel_dir, direct, iter(subdirs))

    def units(self, limit: int) -> tuple[int, list[ListUnit]]:
        """(files in the subtree, its units), once every child is counted."""
        total = self.direct + sum(count for _, count, _ in self.children)
        if total <= limit:
            return total, [ListUnit(self.rel_dir)]
        units = [unit for _, _, child_units in self.children for unit in child_units]
        covered = frozenset(name for name, *_ in self.children)
        units.append(ListUnit(self.rel_dir, direct_only=True, covered=covered))
        return total, units


def _units(root: Path, rel_dir: str, limit: int) -> list[ListUnit]:
    """Count the tree bottom-up with an explicit stack (any depth; a recursive count stops at Python's
    recursion limit). Each directory is listed once and closed before its subdirectories are opened, so
    a deep tree holds no more than one open directory."""
    stack = [_Dir.open(root, rel_dir)]
    while True:
        top = stack[-1]
        name = next(top.subdirs, None)
        if name is not None:
            stack.append(_Dir.open(root, f"{top.rel_dir}/{name}"))
            continue
        stack.pop()
        counted = top.units(limit)
        if not stack:
            return counted[1]
        stack[-1].children.append((top.rel_dir.rsplit("/", 1)[1], *counted))


def list_units(root: Path, folder: str, limit: int = UNIT_FILES) -> list[ListUnit]:
    """Units covering every file of `folder`; a missing folder is one (empty) unit."""
    if not (root / folder).is_dir() or (root / folder).is_symlink():
        return [ListUnit(folder)]
    return _units(root, folder, limit)
