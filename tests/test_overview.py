"""The Overview tab with Pilot on the real app: the recent runs as a table and a bar chart that shows small
nights next to big ones, a layout that holds at 80×24 and uses 200×60, and a cluster that cannot be
reached (a closed port, or an address that accepts connections and never answers) ending in one line
naming the problem instead of "loading…" for ever."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.pilot import Pilot
from textual.widgets import Static

from immich_tui.app import ImmichApp
from immich_tui.demo.fixtures import BUCKET, REPORT_PREFIX, history_reports
from immich_tui.demo.s3 import free_port
from immich_tui.demo.world import Sandbox
from immich_tui.services import clock
from immich_tui.services.kube import context_name
from immich_tui.services.status import Services, Target
from immich_tui.widgets.overview import RecentRuns
from sync_engine.models import FolderStats
from sync_engine.report import report_key, write_report
from sync_engine.text import size
from tests.test_tui_actions import run
from tests.tui import PinnedClock, make_app, start_sandbox

BARS = "█▏▎▍▌▋▊▉"
HUGE = 50 * 1024**3  # one night that uploaded a whole phone's worth of video


def body(app: ImmichApp) -> str:
    return str(app.screen.query_one("#overview-body", Static).render())


def runs_lines(app: ImmichApp) -> list[str]:
    return str(app.screen.query_one("#overview-runs", RecentRuns).render()).splitlines()


def screen_lines(app: ImmichApp) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


def bucket_reports(box: Sandbox) -> list[dict[str, Any]]:
    """The run reports as the bucket holds them, newest first: what the table must show, read without
    the services that the app reads them with."""
    s3 = box.s3.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=REPORT_PREFIX).get("Contents", [])]
    bodies = [json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys if k.endswith(".json")]
    return sorted(bodies, key=lambda b: b["started_at"], reverse=True)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox whose newest night uploaded 50 GiB, next to the seeded nights of a few hundred KiB."""
    with PinnedClock():
        box = start_sandbox(tmp_path_factory.mktemp("overview"))
        try:
            seeded = history_reports(1, (), clock.now())[0]
            big = dataclasses.replace(
                seeded,
                run_id="0000b16b",
                started_at="2026-11-27T03:00:00Z",
                finished_at="2026-11-27T04:10:00Z",
                duration_seconds=4200.0,
                totals=FolderStats(files=40_200, bytes=HUGE * 2, uploaded=40_000, uploaded_bytes=HUGE),
            )
            write_report(box.store(), report_key(REPORT_PREFIX, big), big, b"", None)
            yield box
        finally:
            box.stop()


def test_the_runs_table_shows_each_run_with_its_date_and_counts(sandbox: Sandbox) -> None:
    app = make_app(sandbox)
    expected = bucket_reports(sandbox)[:12]  # the Overview is given the twelve newest

    async def scenario(pilot: Pilot[Any]) -> None:
        lines = runs_lines(app)
        assert lines[0].split()[:3] == ["started", "(UTC)", "outcome"]
        rows = lines[1:]
        assert len(rows) == 12
        for row, report in zip(rows, expected, strict=True):
            started = dt.datetime.fromisoformat(report["started_at"].replace("Z", "+00:00"))
            assert row.startswith(f" {started:%Y-%m-%d %H:%M}  {report['status']}")
            assert f" {report['totals']['uploaded']:,} " in row
            assert f" {size(report['totals']['uploaded_bytes'])} " in row
        aborted = [row for row in rows if "aborted" in row]
        assert len(aborted) == 1 and "0 Bytes  S3 unreachable after 8" in aborted[0]
        # the table is on screen under the verdict, not scrolled away at 120×40
        shown = screen_lines(app)
        assert any(line.startswith(rows[-1].rstrip()[:40]) for line in shown)
        assert "Immich is safe offsite." in body(app)

    run(app, scenario)


def test_a_small_night_has_a_visible_bar_next_to_a_huge_one(sandbox: Sandbox) -> None:
    app = make_app(sandbox)

    async def scenario(pilot: Pilot[Any]) -> None:
        rows = runs_lines(app)[1:]
        huge = next(row for row in rows if size(HUGE) in row)
        small = [row for row in rows if "KiB" in row]
        assert small, rows
        bar_start = huge.index("█")
        assert huge.rstrip().endswith("█")  # the largest night spans the whole bar width
        for row in small:  # a few hundred KiB beside 50 GiB: a linear scale would draw nothing
            bar = row[bar_start:].strip()
            assert bar and set(bar) <= set(BARS), row

    run(app, scenario)


def test_at_80x24_the_headline_stays_and_nothing_overflows(sandbox: Sandbox) -> None:
    app = make_app(sandbox)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert body(app).startswith(" Immich is safe offsite.")
        runs = app.screen.query_one("#overview-runs", RecentRuns)
        lines = runs_lines(app)
        assert len(lines) == 13
        assert all(len(line) <= runs.size.width for line in lines)
        assert "listing" not in lines[0] and "pending" not in lines[0]  # the optional columns make room
        bars = [row for row in lines[1:] if set(row) & set(BARS)]
        assert len(bars) == 11  # still a bar on every night but the aborted one
        assert any("Immich is safe offsite." in line for line in screen_lines(app))

    run(app, scenario, size=(80, 24))


def test_at_200x60_every_column_is_shown(sandbox: Sandbox) -> None:
    app = make_app(sandbox)

    async def scenario(pilot: Pilot[Any]) -> None:
        header = runs_lines(app)[0].split()
        assert {"files", "took", "listing", "pending", "uploaded"} <= set(header)
        shown = screen_lines(app)
        assert sum(1 for line in shown if line.startswith(" 2026-11-")) == 12

    run(app, scenario, size=(200, 60))


# Unreachable clusters ------------------------------------------------------------------------------
def kubeconfig(tmp_path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class SilentServer:
    """An address that accepts TCP connections and never answers: a hung API server, or a proxy in front
    of one. It counts the connections it was asked for."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.sock.accept()
                self.accepted.append(conn)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_the_context_is_named_from_the_kubeconfig_before_any_request(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert context_name(str(path)) == "gone"
    assert context_name(str(path), "other") == "other"
    assert context_name(str(tmp_path / "missing")) == ""


def test_a_closed_port_ends_loading_with_the_problem_and_what_to_check(tmp_path: Path) -> None:
    port = free_port()
    path = kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    app = ImmichApp(Services(Target(kubeconfig=str(path)), env={}), tick_seconds=3600, cursor_blink=False)

    async def scenario(pilot: Pilot[Any]) -> None:
        text = body(app)
        assert "loading" not in text
        lines = text.splitlines()
        assert lines[0] == " The backup state cannot be read."
        assert len(lines) == 2
        assert lines[1].startswith(f" ✖ cannot reach the cluster at http://127.0.0.1:{port}: Connection refused — ")
        assert "check that the API server of context 'gone' is up" in lines[1]
        assert "unreachable" in str(app.screen.query_one("#verdict", Static).render())
        assert not any("loading" in line for line in screen_lines(app))
        assert "gone" in str(app.screen.query_one("#app-context", Static).render())  # the context is named

    run(app, scenario)


def test_an_address_that_never_answers_ends_loading_after_one_timeout_per_section(tmp_path: Path) -> None:
    server = SilentServer()
    try:
        path = kubeconfig(tmp_path, server.url)
        services = Services(Target(kubeconfig=str(path)), env={})
        services.kube.timeout = (2.0, 0.5)  # the read timeout an operator would wait 30 s for
        app = ImmichApp(services, tick_seconds=3600, cursor_blink=False)

        async def scenario(pilot: Pilot[Any]) -> None:
            text = body(app)
            assert "loading" not in text
            assert f"cannot reach the cluster at {server.url}: no answer within 0.5s" in text
            # the CronJob, the CNPG Cluster and the reader Secret: one request each, none retried
            assert len(server.accepted) == 3

        run(app, scenario)
    finally:
        server.close()
