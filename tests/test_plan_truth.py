"""`plan` predicts `backup` file for file, and the live progress counts what is really sent.

Every scenario runs `plan` and then `backup` on the same state, through a counting proxy in front of
moto's HTTP server: the plan's "to upload" figure and bytes must equal what the backup then uploads
(by its report and by the PUTs the proxy saw), and the plan itself must never write to the media prefix.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import time
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.backup import run
from sync_engine.cli import build_parser
from sync_engine.config import sync_settings
from sync_engine.output import LineLog, ProgressDisplay
from sync_engine.store import ObjectStore
from tests.s3proxy import Proxy

PREFIX = "immich/media/"
VIDEO = "library/b41e9d22-anna/2024/05/VID_0002.mp4"  # 18 MiB: a multipart object (two 16 MiB parts)
WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


@pytest.fixture
def via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    return proxy


def _media_writes(proxy: Proxy) -> list[str]:
    return [r.key for op in WRITES for r in proxy.ops(op) if r.key.startswith(PREFIX)]


def _photos(sample: SampleLibrary, count: int) -> list[str]:
    """`count` backed-up files of at least 1 byte, the multipart video first."""
    rels = sorted(
        rel for rel, size in sample.files.items() if rel.startswith(("upload/", "library/")) and size and rel != VIDEO
    )
    return [VIDEO, *rels[: count - 1]]


def _touch(sample: SampleLibrary, rels: list[str]) -> None:
    now = time.time()
    for rel in rels:
        os.utime(sample.root / rel, (now, now))


def _flip_first_byte(sample: SampleLibrary, rels: list[str]) -> int:
    """Same size, other bytes, written in place; returns the bytes now to be sent."""
    total = 0
    for rel in rels:
        path = sample.root / rel
        with path.open("r+b") as fh:
            first = fh.read(1)
            fh.seek(0)
            fh.write(bytes([first[0] ^ 0xFF]))
        total += path.stat().st_size
    return total


def _plan(run_sync: Any, proxy: Proxy, *args: str) -> dict[str, Any]:
    proxy.reset()
    result = run_sync("plan", "-o", "json", *args)
    assert result.code == 0, result.err
    assert _media_writes(proxy) == []  # a plan reads; it never writes
    assert proxy.counts["PutObject"] == proxy.counts["DeleteObject"] == 0
    return result.json()  # type: ignore[no-any-return]


def _backup(run_sync: Any, proxy: Proxy, *args: str) -> tuple[dict[str, Any], list[str]]:
    proxy.reset()
    result = run_sync("backup", "-o", "json", *args)
    assert result.code in (0, 1), result.err
    return result.json(), _media_writes(proxy)


def test_touched_files_are_checked_by_etag_in_plan_and_not_uploaded(
    run_sync: Any, via_proxy: Proxy, sample: SampleLibrary
) -> None:
    time.sleep(2.1)  # older than the racy window: the first run confirms every file as `ok`
    assert run_sync("backup").code == 0
    touched = _photos(sample, 6)
    _touch(sample, touched)

    plan = _plan(run_sync, via_proxy)
    assert (plan["totals"]["uploaded"], plan["totals"]["uploaded_bytes"]) == (0, 0)
    assert plan["totals"]["same_content"] == len(touched)
    assert plan["totals"]["by_reason"]["changed"] == len(touched)
    text = run_sync("plan")
    assert "0 files to upload (0 Bytes)" in text.out
    assert f"{len(touched)} checked by ETag: same content, not uploaded" in text.out

    report, writes = _backup(run_sync, via_proxy)
    assert (report["totals"]["uploaded"], report["totals"]["same_content"]) == (0, len(touched))
    assert writes == []


def test_changed_bytes_are_what_plan_and_backup_both_count(
    run_sync: Any, via_proxy: Proxy, s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    time.sleep(2.1)
    assert run_sync("backup").code == 0
    files = _photos(sample, 7)
    changed, touched = files[:3], files[3:]
    _touch(sample, touched)
    sent = _flip_first_byte(sample, changed)

    plan = _plan(run_sync, via_proxy)
    assert (plan["totals"]["uploaded"], plan["totals"]["uploaded_bytes"]) == (3, sent)
    assert plan["totals"]["same_content"] == len(touched)
    assert sorted(o["key"] for o in plan["overwrites"]) == sorted(PREFIX + rel for rel in changed)
    listed = run_sync("plan", "--files", "-o", "json").json()["files"]
    assert sorted(f["path"] for f in listed) == sorted(changed)

    report, writes = _backup(run_sync, via_proxy)
    assert (report["totals"]["uploaded"], report["totals"]["uploaded_bytes"]) == (3, sent)
    assert sorted(set(writes)) == sorted(PREFIX + rel for rel in changed)
    assert via_proxy.counts["CreateMultipartUpload"] == 1  # the video, as in the plan: one object each
    stored = s3.client().get_object(Bucket=bucket, Key=PREFIX + changed[1])["Body"].read()
    assert stored == (sample.root / changed[1]).read_bytes()


@pytest.mark.parametrize("allow", [False, True], ids=["originals-kept", "allow-overwrite"])
def test_without_versioning_plan_predicts_kept_originals(
    run_sync: Any, via_proxy: Proxy, unversioned_bucket: str, sample: SampleLibrary, allow: bool
) -> None:
    """Without versioning a changed file is kept unless overwrites are allowed: plan says the same."""
    assert run_sync("backup").code == 0
    changed = _photos(sample, 2)
    sent = _flip_first_byte(sample, changed)
    flags = ("--allow-overwrite",) if allow else ()

    plan = _plan(run_sync, via_proxy, *flags)
    report, writes = _backup(run_sync, via_proxy, *flags)
    expected = (2, sent, 0) if allow else (0, 0, 2)
    for doc in (plan, report):
        assert (doc["totals"]["uploaded"], doc["totals"]["uploaded_bytes"], doc["totals"]["kept"]) == expected
    assert len(set(writes)) == expected[0]


def test_plan_right_after_a_sync_has_nothing_to_upload(run_sync: Any, via_proxy: Proxy, sample: SampleLibrary) -> None:
    """Files read within the racy window are compared by content again: equal, so not uploads."""
    assert run_sync("backup").code == 0  # the copy is seconds old: its files are confirmed as racy
    plan = _plan(run_sync, via_proxy)
    assert plan["totals"]["by_reason"].get("recheck", 0) > 0
    assert (plan["totals"]["uploaded"], plan["totals"]["uploaded_bytes"]) == (0, 0)
    assert plan["totals"]["same_content"] == plan["totals"]["by_reason"]["recheck"]
    report, writes = _backup(run_sync, via_proxy)
    assert report["totals"]["uploaded"] == 0 and writes == []


# -- the live progress display ------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _settings(command: str) -> Any:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sync_settings(action.choices[command].parse_args([]), os.environ)


def _watched_run(command: str) -> tuple[Any, ProgressDisplay, str]:
    """A run with the live display on a terminal-like console; the display's last frame as text."""
    rich_console = pytest.importorskip("rich.console")
    buffer = io.StringIO()
    console = rich_console.Console(file=buffer, force_terminal=True, width=200)
    display = ProgressDisplay.open(LineLog("text", io.StringIO()), dry_run=command == "plan", console=console)
    assert display is not None
    settings = _settings(command)
    with display:
        report = run(settings, ObjectStore(settings.s3), dry_run=command == "plan", observer=display)
    lines = [line.strip() for line in re.split(r"[\r\n]", ANSI.sub("", buffer.getvalue())) if line.strip()]
    upload = [line for line in lines if line.startswith(("upload", "to upload"))]
    assert upload, lines
    return report, display, upload[-1]


def _figures(line: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+)/(\d+) files (?:uploaded|to upload), (\d+) same content", line)
    assert match, line
    return int(match[1]), int(match[2]), int(match[3])


def test_progress_counts_uploads_apart_from_checked_files_and_ends_at_the_summary(
    run_sync: Any, sync_env: dict[str, str], s3: LocalS3, bucket: str, sample: SampleLibrary
) -> None:
    time.sleep(2.1)
    assert run_sync("backup").code == 0
    files = _photos(sample, 9)
    changed, touched = files[1:2], [files[0], *files[2:]]
    sent = _flip_first_byte(sample, changed)
    _touch(sample, touched)

    for command in ("plan", "backup"):
        report, display, last = _watched_run(command)
        totals = report.totals
        assert (totals.uploaded, totals.uploaded_bytes, totals.same_content) == (1, sent, len(touched))
        assert _figures(last) == (1, 1, len(touched)), last
        assert (display.counts.sent, display.counts.sent_bytes) == (totals.uploaded, totals.uploaded_bytes)
        assert display.counts.same == totals.same_content
        bar = display.progress.tasks[1]
        assert bar.completed == bar.total == totals.uploaded_bytes  # the bytes column: what was sent
