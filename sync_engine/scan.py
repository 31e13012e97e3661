"""Walk the library in S3 key order without holding more than one directory listing per level.

ListObjectsV2 returns keys in UTF-8 byte order, which equals Python's code-point order for valid
UTF-8. A depth-first walk matches it only if a directory `a` sorts as `a/`: otherwise `a.jpg` (0x2E)
would come after everything under `a/` (0x2F) and the merge-join would misfire. That is the whole
trick; it is what lets the planner stream instead of loading either side into memory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sync_engine.models import LocalFile, ProblemKind, ScanProblem
from sync_engine.text import printable  # where the walk's callers have always found it


def valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# The directories being walked, outermost first, each with an iterator over its entries not yet visited:
# (sort key, entry, is a directory).
_Stack = list[tuple[str, Iterator[tuple[str, os.DirEntry[str], bool]]]]


def walk_sorted(root: Path, rel_dir: str, skip_dirs: frozenset[str] = frozenset()) -> Iterator[LocalFile | ScanProblem]:
    """Yield the regular files under `root/rel_dir` in key order, and problems where they occur.

    Subdirectories of `rel_dir` named in `skip_dirs` are left out (another listing unit walks them).
    Depth-first with an explicit stack of the directories being walked, each with its sorted entries
    not yet visited, so a tree of any depth is walked (a recursive walk stops at Python's recursion
    limit, about a thousand levels)."""
    stack: _Stack = []
    yield from _enter(root, rel_dir, stack)
    while stack:
        here, entries = stack[-1]
        step = next(entries, None)
        if step is None:
            stack.pop()
            continue
        _, entry, is_dir = step
        rel = f"{here}/{entry.name}"
        if is_dir:
            if len(stack) > 1 or entry.name not in skip_dirs:
                yield from _enter(root, rel, stack)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            yield ScanProblem(rel, ProblemKind.VANISHED, "deleted during the scan")
            continue
        except OSError as exc:
            yield ScanProblem(rel, ProblemKind.UNREADABLE, exc.strerror or str(exc))
            continue
        if stat.S_ISLNK(st.st_mode):
            target = _link_target(entry.path)
            yield ScanProblem(rel, ProblemKind.SYMLINK, f"symlink to {target} not followed")
        elif not stat.S_ISREG(st.st_mode):
            yield ScanProblem(rel, ProblemKind.SPECIAL_FILE, "not a regular file")
        else:
            yield LocalFile(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _enter(root: Path, rel_dir: str, stack: _Stack) -> Iterator[ScanProblem]:
    """List one directory onto the stack, in key order; its problems come first, as they are found."""
    try:
        with os.scandir(os.path.join(root, rel_dir)) as it:
            entries = list(it)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield ScanProblem(rel_dir, ProblemKind.UNREADABLE, exc.strerror or str(exc))
        return

    keyed: list[tuple[str, os.DirEntry[str], bool]] = []
    for entry in entries:
        if not valid_utf8(entry.name):
            yield ScanProblem(f"{rel_dir}/{entry.name}", ProblemKind.INVALID_NAME, "name is not valid UTF-8")
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        keyed.append((f"{entry.name}/" if is_dir else entry.name, entry, is_dir))
    keyed.sort(key=lambda t: t[0])
    stack.append((rel_dir, iter(keyed)))


def _link_target(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        return "?"
    return printable(target) + ("" if os.path.exists(path) else " (broken)")


def walk_unit(root: Path, rel_dir: str, covered: frozenset[str]) -> Iterator[LocalFile | ScanProblem]:
    """Walk one listing unit. A top-level folder that is a symlink is reported, not followed."""
    if "/" not in rel_dir and (root / rel_dir).is_symlink():
        yield ScanProblem(rel_dir, ProblemKind.SYMLINK, "top-level folder is a symlink, not followed")
        return
    yield from walk_sorted(root, rel_dir, covered)


def walk_folder(root: Path, folder: str) -> Iterator[LocalFile | ScanProblem]:
    """Walk one whole top-level Immich folder; a missing folder is simply empty."""
    return walk_unit(root, folder, frozenset())
