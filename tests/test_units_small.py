"""Small pure pieces: ETag arithmetic, part sizing, the memory budget."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from sync_engine.config import MAX_PARTS, MiB
from sync_engine.etag import file_matches_etag, multipart_etag
from sync_engine.upload import ByteBudget, part_size_for


def test_part_size_grows_only_past_ten_thousand_parts():
    assert part_size_for(100 * MiB, 16 * MiB) == 16 * MiB
    huge = 200 * 1024 * MiB  # 200 GiB
    size = part_size_for(huge, 16 * MiB)
    assert size % MiB == 0 and -(-huge // size) <= MAX_PARTS and size > 16 * MiB


def test_file_matches_single_and_multipart_etags(tmp_path: Path):
    data = bytes(range(256)) * (40 * 4096)  # 40 MiB
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_matches_etag(path, hashlib.md5(data).hexdigest(), len(data))
    for part in (8 * MiB, 16 * MiB):
        digests = [hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part)]
        assert file_matches_etag(path, multipart_etag(digests), len(data))
    assert not file_matches_etag(path, hashlib.md5(data[:-1]).hexdigest(), len(data))
    assert not file_matches_etag(path, "0" * 32 + "-5", len(data))  # no part size gives 5 parts of 40 MiB
    assert not file_matches_etag(path, "kms-opaque-etag", len(data))


def test_byte_budget_caps_concurrent_holds():
    budget = ByteBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def worker(size: int) -> None:
        with budget.hold(size):
            with lock:
                held[0] += size
                peak[0] = max(peak[0], held[0])
            time.sleep(0.01)
            with lock:
                held[0] -= size

    threads = [threading.Thread(target=worker, args=(40,)) for _ in range(10)]
    threads.append(threading.Thread(target=worker, args=(500,)))  # larger than the budget: capped, not stuck
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] <= 100 + 500 - 100  # a capped hold counts as the whole budget
