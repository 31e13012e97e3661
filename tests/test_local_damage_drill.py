"""The local-damage drill: a tenth of the library truncated or scrambled in place (a failing disk,
ransomware on the node) must not reach the offsite copy, and every original must stay restorable.

On a versioned bucket, as shipped: the breaker holds every damaged file (`suspicious-mass-change`, exit
1) while new photos still go up, the current objects stay the good ones, and a restore as of the last
good night brings back every original byte for byte."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from tests.conftest import list_keys

PREFIX = "immich/media/"
ORIGINALS = ("upload", "library", "profile")


def damage(paths: list[Path]) -> None:
    for n, path in enumerate(paths):
        if n % 2:
            path.write_bytes(b"")  # truncated
        else:
            st = path.stat()
            data = bytearray(path.read_bytes())
            data[: min(256, len(data))] = os.urandom(min(256, len(data)))
            path.write_bytes(bytes(data))  # scrambled, same size and mtime
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_tenth_of_the_library_damaged_trips_the_breaker_and_every_original_restores(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    good = {rel: (sample.root / rel).read_bytes() for rel in sample.files if rel.split("/", 1)[0] in ORIGINALS}
    first = run_sync("backup", "-o", "json")
    assert first.code == 0, first.err
    good_etags = {k: v["ETag"] for k, v in list_keys(s3, bucket, PREFIX).items()}
    time.sleep(2.2)  # ctimes older than the racy window
    before_attack = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    time.sleep(1.1)  # S3 times have whole seconds: the attack lands strictly after the mark
    victims = sorted(rel for rel in good if good[rel])[::10]  # a tenth of the originals
    damage([sample.root / rel for rel in victims])

    night = run_sync("backup", "-o", "json")
    assert night.code == 1, night.err
    report = night.json()
    assert report["mass_change"]["tripped"] is True
    assert report["mass_change"]["changed"] == len(victims)
    now = {k: v["ETag"] for k, v in list_keys(s3, bucket, PREFIX).items()}
    assert {k: now[k] for k in good_etags} == good_etags  # not one good object replaced

    target = tmp_path / "restored"
    restored = run_sync("restore", "--to", str(target), "--only", ",".join(ORIGINALS), "--as-of", before_attack)
    assert restored.code == 0, restored.err
    for rel, data in good.items():
        assert (target / rel).read_bytes() == data, rel
