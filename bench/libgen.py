"""Deterministic synthetic Immich libraries for the benchmark.

Libraries are generated from a seed so every run (and every machine) measures the same tree; a stamp
file next to the tree records the spec, so an unchanged library is reused instead of rewritten.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

# Immich writes a `.immich` marker into each of these; the backup must only copy the first three.
TOP_FOLDERS = ("upload", "library", "profile", "thumbs", "encoded-video", "backups")
BACKED_UP = ("upload", "library", "profile")
USERS = ("admin", "alice", "bob", "carol")
UPLOAD_YEARS = tuple(range(2019, 2025))
LIBRARY_YEARS = (2022, 2023, 2024)
# Photos cluster on "event days"; a bounded set keeps the directory count realistic for a storage template
# of `{{y}}/{{y}}-{{MM}}-{{dd}}` without one directory per file.
EVENT_DAYS_PER_YEAR = 40
MiB = 1024 * 1024


@dataclass(frozen=True)
class LibSpec:
    name: str
    seed: int
    n_files: int
    min_size: int
    max_size: int
    n_videos: int = 0
    video_size: int = 0
    n_excluded: int = 0


@dataclass(frozen=True)
class LibStats:
    """What a correct backup of the library must contain (files under upload/library/profile)."""

    files: int
    bytes: int
    per_folder: dict[str, int]


SPEC_A = LibSpec(
    "A",
    seed=20240101,
    n_files=3000,
    min_size=20_000,
    max_size=200_000,
    n_videos=4,
    video_size=40 * MiB,
    n_excluded=150,
)
SPEC_B = LibSpec("B", seed=20240202, n_files=30_000, min_size=1_000, max_size=10_000, n_excluded=300)
PLAN_DIRS = 1000
PLAN_FILES_PER_DIR = 1000


def _stamp_path(root: Path) -> Path:
    return root.with_name(root.name + ".stamp")


def _stamp_ok(root: Path, payload: dict[str, object]) -> bool:
    stamp = _stamp_path(root)
    if not root.is_dir() or not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == payload
    except ValueError:
        return False


def _reset(root: Path) -> None:
    _stamp_path(root).unlink(missing_ok=True)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _photo_path(rng: random.Random, i: int) -> str:
    roll = rng.random()
    user = rng.choice(USERS)
    if roll < 0.80:
        year = rng.choice(UPLOAD_YEARS)
        return f"upload/{user}/{year}/{rng.randint(1, 12):02d}/IMG_{i:06d}.jpg"
    if roll < 0.95:
        year = rng.choice(LIBRARY_YEARS)
        # Derive the event day from a per-(user, year) seed so days repeat across files.
        day = random.Random(f"{user}{year}{rng.randrange(EVENT_DAYS_PER_YEAR)}").randrange(365)
        month, dom = divmod(day, 28)
        month = month % 12 + 1
        return f"library/{user}/{year}/{year}-{month:02d}-{dom + 1:02d}/IMG_{i:06d}.jpg"
    return f"profile/{user}/{rng.getrandbits(64):016x}.jpg"


def _excluded_path(rng: random.Random, i: int) -> str:
    user = rng.choice(USERS)
    h = rng.getrandbits(32)
    kind = i % 3
    if kind == 0:
        return f"thumbs/{user}/{h >> 24:02x}/{(h >> 16) & 0xFF:02x}/{h:08x}-preview.webp"
    if kind == 1:
        return f"encoded-video/{user}/{h >> 24:02x}/{(h >> 16) & 0xFF:02x}/{h:08x}.mp4"
    return f"backups/immich-db-backup-{i:05d}.sql.gz"


def ensure_library(spec: LibSpec, root: Path) -> bool:
    """Create the library unless an identical one exists; returns True when it was (re)generated."""
    payload: dict[str, object] = {"kind": "library", **asdict(spec)}
    if _stamp_ok(root, payload):
        return False
    _reset(root)
    rng = random.Random(spec.seed)
    for top in TOP_FOLDERS:
        _write(root / top / ".immich", b"")
    for i in range(spec.n_files):
        rel = _photo_path(rng, i)
        _write(root / rel, rng.randbytes(rng.randint(spec.min_size, spec.max_size)))
    for i in range(spec.n_videos):
        user = USERS[i % len(USERS)]
        _write(root / f"upload/{user}/2024/06/VID_{i:04d}.mp4", rng.randbytes(spec.video_size))
    for i in range(spec.n_excluded):
        _write(root / _excluded_path(rng, i), rng.randbytes(rng.randint(spec.min_size, spec.max_size)))
    _stamp_path(root).write_text(json.dumps(payload))
    return True


def ensure_plan_tree(root: Path, dirs: int = PLAN_DIRS, files_per_dir: int = PLAN_FILES_PER_DIR) -> bool:
    """Create the zero-byte tree for the planning scale test; os.open/close keeps 1M files at ~1 minute."""
    payload: dict[str, object] = {"kind": "plan", "dirs": dirs, "files_per_dir": files_per_dir}
    if _stamp_ok(root, payload):
        return False
    _reset(root)
    for top in TOP_FOLDERS:
        (root / top).mkdir()
        (root / top / ".immich").touch()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for d in range(dirs):
        # Nest as upload/<user>/<dir> so the walk crosses several directory levels, as in a real library.
        ddir = root / "upload" / USERS[d % len(USERS)] / f"{d:04d}"
        ddir.mkdir(parents=True)
        base = str(ddir)
        for f in range(files_per_dir):
            os.close(os.open(f"{base}/IMG_{f:04d}.jpg", flags, 0o644))
    _stamp_path(root).write_text(json.dumps(payload))
    return True


def library_stats(root: Path) -> LibStats:
    files = 0
    total = 0
    per_folder: dict[str, int] = {}
    for top in BACKED_UP:
        count = 0
        for dirpath, _dirs, names in os.walk(root / top):
            for name in names:
                count += 1
                total += os.stat(os.path.join(dirpath, name)).st_size
        per_folder[top] = count
        files += count
    return LibStats(files=files, bytes=total, per_folder=per_folder)
