"""S3 ETags computed locally, so integrity can be checked from a listing or a PUT response alone.

Single-part PUT (no SSE-KMS/SSE-C): ETag = hex MD5 of the body. Multipart: hex MD5 of the
concatenated binary MD5s of the parts, then `-N`. The part size must be known, so the engine records
it in its manifest; for objects written by other tools a few common part sizes are tried. A download
computes the same ETag over the bytes as they stream past (`StreamingEtag`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sync_engine.settings import MiB

# aws-cli's default (8 MiB), the original CronJob's setting (64 MiB) and the engine's default (16 MiB).
COMMON_PART_SIZES: tuple[int, ...] = (8 * MiB, 16 * MiB, 64 * MiB)
READ_CHUNK = 1 * MiB


def md5_hex(data: bytes | memoryview) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def multipart_etag(part_digests: Iterable[bytes]) -> str:
    digests = list(part_digests)
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


_MULTIPART = re.compile(r"^[0-9a-f]{32}-(\d{1,5})$")


def is_multipart_etag(etag: str) -> bool:
    return "-" in etag


def etag_part_count(etag: str) -> int:
    """Parts of a multipart ETag; 0 for anything that is not one (SSE-C, other servers' formats)."""
    match = _MULTIPART.match(etag)
    return int(match[1]) if match else 0


def is_kms(encryption: str) -> bool:
    """SSE-KMS (`aws:kms`) or DSSE-KMS (`aws:kms:dsse`), from `x-amz-server-side-encryption`: S3's ETag
    for such an object is not an MD5 of its bytes."""
    return encryption == "aws:kms" or encryption.startswith("aws:kms:")


def file_matches_etag(path: Path | int, etag: str, size: int, part_sizes: Iterable[int] = COMMON_PART_SIZES) -> bool:
    """True when the local file's bytes provably equal the object with this listing ETag.

    Used when a file's mtime moved but its size did not (touch, metadata rewrite): reading locally is
    far cheaper than uploading again. An ETag that is not an MD5 (SSE-KMS) never matches, so the file
    is uploaded as before. `path` may be an open descriptor (a restore opens files without following
    links): it is read from the start and left open.
    """
    etag = etag.strip('"').lower()
    if not is_multipart_etag(etag):
        if len(etag) != 32:
            return False
        digest = hashlib.md5(usedforsecurity=False)
        with _reader(path) as fh:
            while chunk := fh.read(READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == etag
    parts = etag_part_count(etag)
    if not parts:
        return False
    for part_size in part_sizes:
        if -(-size // part_size) != parts:
            continue
        digests = []
        with _reader(path) as fh:
            while True:
                part = hashlib.md5(usedforsecurity=False)
                remaining = part_size
                while remaining and (chunk := fh.read(min(READ_CHUNK, remaining))):
                    part.update(chunk)
                    remaining -= len(chunk)
                if remaining == part_size:
                    break
                digests.append(part.digest())
        if multipart_etag(digests) == etag:
            return True
    return False


def _reader(path: Path | int) -> BinaryIO:
    if isinstance(path, int):
        fh = os.fdopen(os.dup(path), "rb")
        fh.seek(0)
        return fh
    return path.open("rb")


class StreamingEtag:
    """The ETag S3 computes, over bytes as they stream past: MD5, or MD5 of the parts' MD5s + `-N`."""

    def __init__(self, part_size: int | None) -> None:
        self.part_size = part_size
        self._current = hashlib.md5(usedforsecurity=False)
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, chunk: bytes) -> None:
        if self.part_size is None:
            self._current.update(chunk)
            return
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._in_part)
            self._current.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._in_part = 0

    def hexdigest(self) -> str:
        if self.part_size is None:
            return self._current.hexdigest()
        digests = self._digests + ([self._current.digest()] if self._in_part else [])
        return multipart_etag(digests)
