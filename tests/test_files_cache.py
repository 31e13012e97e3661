"""The files cache is read from the bucket: whatever it holds, a bad line costs that file a content
comparison, never a crash and never a file taken as confirmed."""

from __future__ import annotations

import gzip

from sync_engine.filescache import CHUNK, MAX_LINE, CacheWriter, read_cache
from sync_engine.models import Cached, CacheState, LocalFile


def _cached(n: int, state: CacheState = CacheState.OK) -> Cached:
    return Cached(n, n * 10, n * 20, n * 30, f"{n:032x}", 16 << 20 if n % 2 else None, state)


def test_what_a_run_writes_the_next_run_reads_back_exactly() -> None:
    writer = CacheWriter()
    names = [f'immich/media/upload/{i}/\t"odd\\ name\n\u202e.jpg' for i in range(10_000)]
    for i, key in enumerate(names):
        writer.add(key, _cached(i, CacheState.RACY if i % 3 else CacheState.OK))
    cache = read_cache(writer.finish(), "k")
    assert cache.bad_lines == 0 and len(cache.entries) == 10_000
    assert cache.get(names[7]) == _cached(7, CacheState.RACY)
    assert cache.get(names[9]).same_file(LocalFile("x", 9, 90, 180, 270))  # type: ignore[union-attr]


def test_each_bad_line_is_skipped_and_counted_and_the_rest_is_used() -> None:
    good = b'["k1",1,2,3,4,"e",0,"ok"]\n'
    bad = [
        b"not json\n",
        b'{"key": "k"}\n',
        b'["k2","1",2,3,4,"e",0,"ok"]\n',  # a string size
        b'["k3",1,2,3,4,"e",0,"maybe"]\n',  # unknown state
        b'["k4",-1,2,3,4,"e",0,"ok"]\n',
        b'["k5",1.5,2,3,4,"e",0,"ok"]\n',
        b'["k6",true,2,3,4,"e",0,"ok"]\n',
        b"[" * 50_00 + b"\n",  # deeply nested brackets
        b'["' + b"x" * (MAX_LINE + 10) + b'",1,2,3,4,"e",0,"ok"]\n',  # over-long
        b"\xff\xfe\n",  # not UTF-8
    ]
    body = good + b"".join(bad) + b'["k7",7,2,3,4,"e",0,"seen"]'  # the last line has no newline
    cache = read_cache(gzip.compress(body), "k")
    assert set(cache.entries) == {"k1", "k7"} and cache.bad_lines == len(bad)
    assert cache.get("k7").state is CacheState.SEEN  # type: ignore[union-attr]


def test_a_line_longer_than_a_chunk_is_skipped_whole() -> None:
    body = b'["a",1,2,3,4,"e",0,"ok"]\n' + b"z" * (3 * CHUNK) + b'\n["b",1,2,3,4,"e",0,"ok"]\n'
    cache = read_cache(gzip.compress(body), "k")
    assert set(cache.entries) == {"a", "b"} and cache.bad_lines == 1


def test_not_gzip_is_no_cache_at_all() -> None:
    try:
        read_cache(b"plain text", "k")
    except ValueError as exc:
        assert "not a gzip stream" in str(exc)
    else:
        raise AssertionError("accepted")


def test_a_run_that_only_carries_lines_writes_nothing_and_one_change_writes_them_all() -> None:
    first = CacheWriter()
    for i in range(5):
        first.add(f"k{i}", _cached(i))
    previous = read_cache(first.finish() or b"", "prev")
    quiet = CacheWriter()
    quiet.previous = previous
    for i in range(4):  # k4 is gone from the library: nothing to add
        quiet.carry(f"k{i}")
    assert quiet.finish() is None
    busy = CacheWriter()
    busy.previous = previous
    busy.carry("k0")
    busy.add("k9", _cached(9))
    assert read_cache(busy.finish() or b"", "new").entries == {"k0": _cached(0), "k9": _cached(9)}
