"""A restore never writes through a symbolic link, wherever in the target the link is.

Every shape a link can take in a target (a top-level Immich folder, a directory deeper down, the
progress marker or its temporary file, an `.immich` marker, a name the restore uses for its temporary
files) is refused before anything is written, with one line and exit 2, and the directory the link
points to stays empty. A link that appears while the restore runs is not followed either: the files
below it fail, one by one, and nothing lands outside the target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from sync_engine.target import PROGRESS_MARKER
from tests.conftest import Result
from tests.s3proxy import Proxy, Request, hold

RunSync = Callable[..., Result]
PREFIX = "immich/media/"


@pytest.fixture
def backed_up(run_sync: RunSync, sample: SampleLibrary) -> SampleLibrary:
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    return sample


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "restored"
    path.mkdir()
    return path


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def restore(run_sync: RunSync, target: Path, *args: str) -> Result:
    return run_sync("restore", "--to", str(target), "-o", "json", *args)


def everything_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def assert_refused(result: Result, link: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.out + result.err
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert lines[0].startswith("immich-sync: error: ") and "symbolic link" in lines[0], lines[0]
    assert link in lines[0], lines[0]
    assert result.out == ""


def _marker_of_this_restore(bucket: str) -> str:
    return json.dumps({"bucket": bucket, "media_prefix": PREFIX})


# Each shape: the link's path in the target, whether it points at a directory, and any file it points at.
SHAPES = {
    "top-level-folder": ("library", True),
    "intermediate-directory": ("library/7f3c2a10-admin/2024", True),
    "progress-marker": (PROGRESS_MARKER, False),
    "progress-marker-tmp": (PROGRESS_MARKER + ".tmp", False),
    "immich-marker": ("thumbs/.immich", False),
    "temp-file-name": ("library/.immich-sync-0123456789abcdef.tmp", False),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_link_anywhere_in_the_target_is_refused_and_nothing_is_written_through_it(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, elsewhere: Path, bucket: str, shape: str
) -> None:
    rel, is_dir = SHAPES[shape]
    link = target / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    pointed = elsewhere if is_dir else elsewhere / "file"
    if rel == PROGRESS_MARKER:
        # a marker that names this very restore: read through the link, it would let the restore in
        pointed.write_text(_marker_of_this_restore(bucket))
    os.symlink(pointed, link)
    before = everything_under(elsewhere)
    result = restore(run_sync, target, "--force")
    assert everything_under(elsewhere) == before
    assert_refused(result, rel)
    assert os.path.islink(link)


def test_the_progress_marker_is_never_read_through_a_link_on_resume(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, elsewhere: Path, bucket: str
) -> None:
    """Without --force: only a real marker of this restore lets a run into a non-empty target."""
    (elsewhere / "marker.json").write_text(_marker_of_this_restore(bucket))
    os.symlink(elsewhere / "marker.json", target / PROGRESS_MARKER)
    result = restore(run_sync, target)
    assert everything_under(elsewhere) == ["marker.json"]
    assert everything_under(target) == [PROGRESS_MARKER]
    assert_refused(result, PROGRESS_MARKER)


def test_a_link_that_appears_during_the_restore_is_not_followed(
    run_sync: RunSync, backed_up: SampleLibrary, target: Path, elsewhere: Path, proxy: Proxy, monkeypatch
) -> None:
    """While the first photo of a month downloads, its directory is swapped for a link to elsewhere."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    monkeypatch.setenv("IMMICH_SYNC_WORKERS", "1")
    month = target / "library/7f3c2a10-admin/2024/01"
    first = PREFIX + "library/7f3c2a10-admin/2024/01/IMG_0001.jpg"

    def swap(_: Request) -> None:
        month.rename(month.with_name("01.real"))
        os.symlink(elsewhere, month)

    proxy.rules.append(hold(lambda r: r.op == "GetObject" and r.key == first, swap))
    result = restore(run_sync, target, "--only", "library")
    assert "Traceback" not in result.err
    assert result.code == 1, result.out + result.err
    assert everything_under(elsewhere) == []
    report = result.json()
    failed = [p for p in report["problems"] if p["path"].startswith("library/7f3c2a10-admin/2024/01/")]
    assert len(failed) == 5  # the other five photos of that month
    assert all(p["kind"] == "local-error" and "symbolic link" in p["detail"] for p in failed)
    # the photo in flight went where its directory went, inside the target
    assert (month.with_name("01.real") / "IMG_0001.jpg").read_bytes() == (
        backed_up.root / "library/7f3c2a10-admin/2024/01/IMG_0001.jpg"
    ).read_bytes()
    assert report["totals"]["downloaded"] == report["totals"]["objects"] - 5
