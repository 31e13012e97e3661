"""File names that try to drive the terminal: every human-readable output shows them escaped.

A file name may hold any byte but `/` and NUL, so an upload from a phone or a share can carry ESC
sequences (set the window title, clear the screen, OSC 8 links), a carriage return that hides the
start of a line, C1 controls that some terminals obey as ESC sequences, or Unicode bidi overrides that
make `gpj.exe` read as `exe.jpg`. The line log, the progress display, the summaries and the problem
lists must print them escaped (`\\x1b`, `\\u202e`); JSON keeps every string exact, escaping the same
characters as JSON `\\u` escapes so a terminal showing the raw log is safe too.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.models import LocalFile, Outcome, PlanItem, ProblemKind, Reason, ScanProblem, UploadResult
from sync_engine.output import LineLog
from sync_engine.scan import printable
from tests.conftest import Result, list_keys
from tests.s3proxy import Proxy, fail

PREFIX = "immich/media/"
RunSync = Callable[..., Result]

# Every character a terminal may act on instead of showing: C0 (newline only between lines), DEL, C1,
# and the bidi embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE = {
    "upload/!odd/title\x1b]0;pwned\x07.jpg": "upload/!odd/title\\x1b]0;pwned\\x07.jpg",
    "upload/!odd/clear\x1b[2J\x1b[H.jpg": "upload/!odd/clear\\x1b[2J\\x1b[H.jpg",
    "upload/!odd/cr\rOK looks fine.jpg": "upload/!odd/cr\\rOK looks fine.jpg",
    "upload/!odd/c1\x9b31mred.jpg": "upload/!odd/c1\\x9b31mred.jpg",
    "upload/!odd/bidi\u202egpj.exe": "upload/!odd/bidi\\u202egpj.exe",
    "upload/!odd/isolate\u2066x\u2069.jpg": "upload/!odd/isolate\\u2066x\\u2069.jpg",
    "upload/!odd/tab\there.jpg": "upload/!odd/tab\\there.jpg",
    "upload/!odd/new\nline.jpg": "upload/!odd/new\\nline.jpg",
    "upload/!odd/del\x7f.jpg": "upload/!odd/del\\x7f.jpg",
    "upload/!odd/bell\x07.jpg": "upload/!odd/bell\\x07.jpg",
}
REFUSED = "upload/!odd/title\x1b]0;pwned\x07.jpg"
# The local S3 server cannot route a key holding a newline (AWS stores it): it fails there, escaped too.
LOCAL_S3_CANNOT = "upload/!odd/new\nline.jpg"


def assert_safe(text: str, where: str) -> None:
    """Nothing a terminal acts on, except the newlines between lines."""
    found = UNSAFE.search(text)
    assert found is None, f"{where}: raw {found.group()!r} in …{text[max(0, found.start() - 60) : found.end() + 20]!r}"


@pytest.fixture
def hostile(sample: SampleLibrary) -> dict[str, str]:
    old = time.time() - 3600
    (sample.root / "upload/!odd").mkdir()
    for rel in HOSTILE:
        path = sample.root / rel
        path.write_bytes(f"photo {rel!r}".encode())
        os.utime(path, (old, old))
    return HOSTILE


def test_printable_escapes_what_a_terminal_acts_on() -> None:
    for raw, shown in HOSTILE.items():
        assert printable(raw) == shown
        assert printable(shown) == shown  # escaping twice changes nothing
    assert printable("upload/bad\udcff.jpg") == "upload/bad\\xff.jpg"  # a byte that is not UTF-8
    plain = "library/u/2024/06/Café – Zürich 😀 👩‍👩‍👧 日本 עברית.jpg"  # emoji with ZWJ, RTL letters
    assert printable(plain) == plain


def test_plan_files_and_its_summary_print_names_escaped(run_sync: RunSync, hostile: dict[str, str]) -> None:
    result = run_sync("plan", "--files", "--settle-seconds", "0")
    assert result.code == 0, result.err[-2000:]
    assert_safe(result.out, "plan --files stdout")
    assert_safe(result.err, "plan --files stderr")
    for shown in hostile.values():
        assert shown in result.out


def test_plan_files_json_keeps_exact_names(run_sync: RunSync, hostile: dict[str, str]) -> None:
    result = run_sync("plan", "--files", "-o", "json", "--settle-seconds", "0")
    assert result.code == 0, result.err[-2000:]
    assert_safe(result.out, "plan -o json stdout")
    keys = {f["key"] for f in result.json()["files"]}
    assert {PREFIX + rel for rel in hostile} <= keys  # machines get the exact key


@pytest.fixture
def one_refused(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str]) -> Proxy:
    """One hostile name is refused by S3, so it shows in the failure lines, the problem list and the
    run's summary, with S3's error message (which names the key) as the detail."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    proxy.rules.append(
        fail(lambda r: r.op == "PutObject" and r.key == PREFIX + REFUSED, ("error", (400, "InvalidArgument")))
    )
    return proxy


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_backup_logs_and_summary_print_names_escaped(
    run_sync: RunSync, one_refused: Proxy, hostile: dict[str, str], s3: LocalS3, bucket: str, log_format: str
) -> None:
    result = run_sync("backup", "--settle-seconds", "0", "--log-format", log_format)
    assert result.code == 1, result.err[-2000:]
    assert_safe(result.out, "backup summary")
    assert_safe(result.err, f"backup {log_format} log")
    assert "title\\x1b]0;pwned\\x07.jpg" in result.out  # in the problem list
    stored = set(list_keys(s3, bucket, PREFIX))
    assert {PREFIX + rel for rel in hostile if rel not in (REFUSED, LOCAL_S3_CANNOT)} <= stored  # stored exactly
    if log_format == "text":
        for rel, shown in hostile.items():
            assert shown in result.err, rel
        return
    records = [json.loads(line) for line in result.err.splitlines()]
    uploaded = {r["key"] for r in records if r["event"] == "uploaded"}
    assert {PREFIX + rel for rel in hostile if rel not in (REFUSED, LOCAL_S3_CANNOT)} <= uploaded  # exact again
    (failed,) = [r for r in records if r["event"] == "failed" and r["path"] == hostile[REFUSED]]
    assert PREFIX + REFUSED in failed["error"]


def test_backup_json_report_is_safe_to_print(run_sync: RunSync, one_refused: Proxy, hostile: dict[str, str]) -> None:
    result = run_sync("backup", "-o", "json", "--settle-seconds", "0", "--log-format", "json")
    assert result.code == 1
    assert_safe(result.out, "backup -o json stdout")
    assert_safe(result.err, "backup json log")
    failed = {p["path"]: p["detail"] for p in result.json()["problems"] if p["kind"] == "failed"}
    assert PREFIX + REFUSED in failed[hostile[REFUSED]]  # the path shown escaped, S3's error with the exact key


def test_an_aborted_run_names_the_key_escaped(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, proxy: Proxy, sync_env: dict[str, str], hostile: Any
) -> None:
    """The abort reason quotes the last failure, key and all, on stderr. The odd names sort first, so
    they are the failures that stop the run."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    proxy.rules.append(fail(lambda r: r.op in ("PutObject", "UploadPart"), ("error", (503, "SlowDown"))))
    result = run_sync("backup", "--settle-seconds", "0", "--max-attempts", "1", "--workers", "1", "--only", "upload")
    assert result.code == 3
    assert_safe(result.out, "aborted summary")
    assert_safe(result.err, "aborted log")


def test_the_progress_display_prints_problems_escaped() -> None:
    rich_console = pytest.importorskip("rich.console")
    from rich.progress import Progress

    from sync_engine.output import ProgressDisplay

    buffer = io.StringIO()
    console = rich_console.Console(file=buffer, force_terminal=True, width=120)
    raw = "upload/title\x1b]0;pwned\x07.jpg"
    item = PlanItem(LocalFile(raw, 10, 0), PREFIX + raw, Reason.MISSING)
    with ProgressDisplay(LineLog("text"), console, Progress(console=console)) as display:
        display.folder_started("upload")
        display.planned(item)
        display.problem(ScanProblem(raw, ProblemKind.SYMLINK, "symlink to /x\x1b[2J not followed"))
        display.finished(
            UploadResult(item, Outcome.FAILED, error=f"uploading {PREFIX + raw}: refused (InvalidArgument)")
        )
    shown = buffer.getvalue()
    assert "\x1b]0;pwned" not in shown and "\x1b[2J" not in shown  # the display's own styling is ESC too
    assert shown.count("upload/title\\x1b]0;pwned\\x07.jpg") == 3


def test_line_log_escapes_any_message() -> None:
    """Whatever reaches a log line (a key inside S3's error text, a symlink's target) is escaped too."""
    for fmt in ("text", "json"):
        stream = io.StringIO()
        log = LineLog(fmt, stream)
        log.emit("error", "failed", "failed upload/\u202egpj.exe: S3 said \x9b2J", key="upload/\u202egpj.exe\x9b")
        line = stream.getvalue()
        assert_safe(line.rstrip("\n"), fmt)
        if fmt == "json":
            assert json.loads(line)["key"] == "upload/\u202egpj.exe\x9b"
        else:
            assert "upload/\\u202egpj.exe: S3 said \\x9b2J" in line
