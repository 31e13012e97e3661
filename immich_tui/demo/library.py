"""The sample Immich library the sandbox backs up: all six folders, realistic layouts, awkward names."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sync_engine.config import IMMICH_FOLDERS, MiB

USERS = ("7f3c2a10-admin", "b41e9d22-anna")


@dataclass
class SampleLibrary:
    root: Path
    files: dict[str, int] = field(default_factory=dict)  # rel path -> size

    def folder_files(self, folder: str) -> dict[str, int]:
        return {k: v for k, v in self.files.items() if k.startswith(f"{folder}/")}


def _write(lib: SampleLibrary, rel: str, data: bytes, when: datetime) -> None:
    path = lib.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ts = when.timestamp()
    os.utime(path, (ts, ts))
    lib.files[rel] = len(data)


def make_sample_library(
    root: Path,
    *,
    seed: int = 7,
    photos_per_month: int = 6,
    months: int = 8,
    big_files: tuple[int, ...] = (3 * MiB, 6 * MiB, 18 * MiB),
) -> SampleLibrary:
    """A small but realistic library: all six folders with `.immich` markers, year/month nesting,
    storage-template and upload layouts, a few multi-MB videos (one above the multipart threshold),
    names with spaces and non-ASCII letters, and an empty file. File times lie in the past."""
    rng = random.Random(seed)
    lib = SampleLibrary(root)
    root.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    for folder in IMMICH_FOLDERS:
        _write(lib, f"{folder}/.immich", b"", start)
    n = 0
    for user in USERS:
        for month in range(months):
            when = start.replace(year=2024 + month // 12, month=month % 12 + 1)
            for _ in range(photos_per_month):
                n += 1
                body = rng.randbytes(rng.randint(20_000, 300_000))
                name = f"IMG_{n:04d}.jpg"
                _write(lib, f"library/{user}/{when:%Y}/{when:%m}/{name}", body, when)
                uid = f"{rng.getrandbits(64):016x}"
                _write(lib, f"upload/{user}/{uid[:2]}/{uid[2:4]}/{uid}.jpg", body[:50_000], when)
                _write(lib, f"thumbs/{user}/{uid[:2]}/{uid[2:4]}/{uid}-thumbnail.webp", body[:8_000], when)
        _write(lib, f"profile/{user}/avatar.jpg", rng.randbytes(40_000), start)
    odd = start.replace(month=6)
    _write(lib, f"library/{USERS[0]}/2024/06/Holiday photo (1).jpg", rng.randbytes(90_000), odd)
    _write(lib, f"library/{USERS[0]}/2024/06/Café – Zürich.jpg", rng.randbytes(70_000), odd)
    _write(lib, f"library/{USERS[1]}/2024/06/empty.jpg", b"", odd)
    for i, size in enumerate(big_files):
        when = start.replace(month=3 + i)
        _write(lib, f"library/{USERS[1]}/{when:%Y}/{when:%m}/VID_{i:04d}.mp4", rng.randbytes(size), when)
        _write(lib, f"encoded-video/{USERS[1]}/{i:02d}/VID_{i:04d}.mp4", rng.randbytes(200_000), when)
    _write(lib, "backups/immich-db-backup-20240801T020000.sql.gz", rng.randbytes(120_000), start)
    return lib
