"""The Jobs pane's pod-log view, driven through Textual's Pilot in a headless app.

Streaming tests follow a real pod log over HTTP: the Kubernetes emulator serves `pods/log?follow=true`
and the production `LogStream` reads it, exactly as the TUI does against a cluster.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from textual.app import App, ComposeResult
from textual.message import Message

from immich_tui.demo.emulator import EmulatorServer, PodLog
from immich_tui.demo.fixtures import World, seed
from immich_tui.services.status import Services, Target
from immich_tui.widgets.logview import LogView

SIZE = (100, 30)
NS = "immich"


class LogApp(App[None]):
    """Hosts one LogView and records the messages it sends its parent, as the Jobs pane would."""

    def __init__(self, **options: int | bool) -> None:
        super().__init__()
        self.options = options
        self.received: list[Message] = []

    def compose(self) -> ComposeResult:
        yield LogView(**self.options)  # type: ignore[arg-type]

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def on_log_view_lines(self, message: LogView.Lines) -> None:
        self.received.append(message)

    def on_log_view_ended(self, message: LogView.Ended) -> None:
        self.received.append(message)

    def on_log_view_failed(self, message: LogView.Failed) -> None:
        self.received.append(message)

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.received if isinstance(m, kind)]


def row_text(view: LogView, y: int) -> str:
    return view.render_line(y).text.rstrip()


def visible_text(view: LogView) -> list[str]:
    return [row_text(view, y) for y in range(view.scrollable_content_region.height)]


async def settle(pilot: object, until: Callable[[], bool], attempts: int = 400) -> None:
    """Let the app process messages until `until()` holds; the bound only stops a broken test hanging."""
    for _ in range(attempts):
        if until():
            return
        await pilot.pause(0.025)  # type: ignore[attr-defined]
    raise AssertionError("the condition never held")


# Bounded memory -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_line_cap_keeps_the_newest_lines_and_counts_the_rest() -> None:
    app = LogApp(max_lines=10_000)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines([f"line {n}" for n in range(50_000)])
        await pilot.pause()
        assert view.line_count == 10_000
        assert view.dropped == 40_000
        assert view.lines[0] == "line 40000"
        assert view.lines[-1] == "line 49999"
        assert view.virtual_size.height == 10_000
        assert visible_text(view)[-1] == "line 49999"


@pytest.mark.asyncio
async def test_the_cap_holds_across_many_small_batches() -> None:
    app = LogApp(max_lines=1_000)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        for batch in range(37):
            view.append_lines([f"{batch}:{n}" for n in range(100)])
        await pilot.pause()
        assert (view.line_count, view.dropped) == (1_000, 2_700)
        assert view.lines[0] == "27:0" and view.lines[-1] == "36:99"
        view.clear()
        assert (view.line_count, view.dropped, view.virtual_size.height) == (0, 0, 0)


@pytest.mark.asyncio
async def test_an_endless_line_is_capped_too() -> None:
    app = LogApp(max_lines=10, max_line_length=100)
    async with app.run_test(size=SIZE):
        view = app.view
        view.append_lines(["x" * 1_000_000])
        assert len(view.lines[0]) < 150
        assert view.lines[0].endswith("[999,900 more characters]")


# Follow ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_follow_keeps_the_end_in_view_until_the_user_scrolls_up() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.focus()
        view.append_lines([f"line {n}" for n in range(200)])
        await pilot.pause()
        assert view.follow
        assert view.scroll_y == view.max_scroll_y > 0
        assert visible_text(view)[-1] == "line 199"

        view.append_lines([f"line {n}" for n in range(200, 300)])
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        assert visible_text(view)[-1] == "line 299"

        await pilot.press("up")
        await pilot.pause()
        assert not view.follow
        reading = view.scroll_y
        view.append_lines([f"line {n}" for n in range(300, 400)])
        await pilot.pause()
        assert view.scroll_y == reading < view.max_scroll_y, "the view stays where the user is reading"

        await pilot.press("G")
        await pilot.pause()
        assert view.follow
        assert view.scroll_y == view.max_scroll_y
        assert visible_text(view)[-1] == "line 399"


@pytest.mark.asyncio
async def test_any_scroll_away_from_the_end_stops_following_and_end_or_f_resumes() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.focus()
        view.append_lines([f"line {n}" for n in range(500)])
        await pilot.pause()
        view.scroll_to(y=10, animate=False)  # what a scrollbar drag or the mouse wheel does
        await pilot.pause()
        assert not view.follow
        await pilot.press("end")
        assert view.follow and view.scroll_y == view.max_scroll_y

        await pilot.press("pageup")
        assert not view.follow
        await pilot.press("f")
        await pilot.pause()
        assert view.follow and view.scroll_y == view.max_scroll_y
        await pilot.press("f")
        assert not view.follow
        await pilot.press("home")
        await pilot.pause()
        assert view.scroll_y == 0 and not view.follow


@pytest.mark.asyncio
async def test_a_reader_stays_on_the_same_lines_while_old_ones_are_evicted() -> None:
    app = LogApp(max_lines=1_000)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.focus()
        view.append_lines([f"line {n}" for n in range(1_000)])
        await pilot.pause()
        view.follow = False
        view.scroll_to(y=500, animate=False)
        await pilot.pause()
        assert row_text(view, 0) == "line 500"
        view.append_lines([f"line {n}" for n in range(1_000, 1_100)])
        await pilot.pause()
        assert row_text(view, 0) == "line 500"
        assert view.scroll_y == 400


@pytest.mark.asyncio
async def test_shrinking_content_does_not_stop_following() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines([f"{'ERROR' if n % 10 == 0 else 'INFO'} {n}" for n in range(400)])
        await pilot.pause()
        view.set_filter("error")
        await pilot.pause()
        assert view.follow
        await pilot.resize_terminal(100, 40)
        await pilot.pause()
        assert view.follow
        assert view.scroll_y == view.max_scroll_y


# Wrap -----------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_w_wraps_long_lines_into_several_rows() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.focus()
        width = view.scrollable_content_region.width
        long_line = "".join(str(n % 10) for n in range(width * 2 + 5))
        view.append_lines(["short", long_line, "after"])
        await pilot.pause()
        assert view.virtual_size.height == 3
        assert view.virtual_size.width == len(long_line)

        await pilot.press("w")
        await pilot.pause()
        assert view.wrap
        assert view.virtual_size.height == 1 + 3 + 1
        assert view.max_scroll_x == 0
        assert visible_text(view)[:5] == [
            "short",
            long_line[:width],
            long_line[width : 2 * width],
            long_line[2 * width :],
            "after",
        ]

        await pilot.resize_terminal(SIZE[0] + 20, SIZE[1])
        await pilot.pause()
        assert view.scrollable_content_region.width == width + 20
        assert view.virtual_size.height == 1 + 2 + 1, "rows are recomputed for the new width"

        await pilot.press("w")
        await pilot.pause()
        assert not view.wrap
        assert view.virtual_size.height == 3


@pytest.mark.asyncio
async def test_wrapped_rows_follow_appends_evictions_and_the_filter() -> None:
    app = LogApp(max_lines=100, wrap=True)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        await pilot.pause()
        width = view.scrollable_content_region.width
        view.append_lines([("x" * (width + 1)) if n % 2 else f"short {n}" for n in range(150)])
        await pilot.pause()
        assert view.line_count == 100
        assert view.virtual_size.height == 50 * 1 + 50 * 2
        assert view.scroll_y == view.max_scroll_y
        view.set_filter("short")
        await pilot.pause()
        assert view.virtual_size.height == 50
        assert visible_text(view)[-1] == "short 148"


# Filter ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_filter_shows_only_matching_lines_and_clearing_it_restores_all() -> None:
    app = LogApp(max_lines=50)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines(["INFO starting", "ERROR bucket unreachable", "info retrying", "error again", "done"])
        view.set_filter("Error")
        await pilot.pause()
        assert view.filter_text == "Error"
        assert view.shown_count == 2
        assert view.virtual_size.height == 2
        assert visible_text(view)[:3] == ["ERROR bucket unreachable", "error again", ""]

        view.append_lines(["no match here", "late ERROR"])
        await pilot.pause()
        assert view.shown_count == 3
        assert visible_text(view)[2] == "late ERROR"

        view.set_filter("")
        await pilot.pause()
        assert view.shown_count == view.line_count == 7
        assert visible_text(view)[:7] == [
            "INFO starting",
            "ERROR bucket unreachable",
            "info retrying",
            "error again",
            "done",
            "no match here",
            "late ERROR",
        ]


@pytest.mark.asyncio
async def test_the_filter_is_a_regex_and_an_invalid_one_filters_as_plain_text() -> None:
    app = LogApp(max_lines=50)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines(["INFO start", "WARN slow [retry 1]", "ERROR gone", "info done", "uploaded 12 files"])
        view.set_filter("^(warn|error)")
        await pilot.pause()
        assert view.filter_problem == ""
        assert visible_text(view)[:3] == ["WARN slow [retry 1]", "ERROR gone", ""]
        view.set_filter("[0-9]+ files")
        await pilot.pause()
        assert view.shown_count == 1 and visible_text(view)[0] == "uploaded 12 files"
        view.set_filter("[retry")  # not a regex: the literal text, said so
        await pilot.pause()
        assert "not a regex" in view.filter_problem
        assert view.shown_count == 1 and visible_text(view)[0] == "WARN slow [retry 1]"
        view.append_lines(["WARN slow [retry 2]"])
        await pilot.pause()
        assert view.shown_count == 2


@pytest.mark.asyncio
async def test_filtered_lines_are_evicted_with_the_cap() -> None:
    app = LogApp(max_lines=100)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.set_filter("hit")
        view.append_lines([f"hit {n}" if n % 3 == 0 else f"miss {n}" for n in range(1_000)])
        await pilot.pause()
        assert view.line_count == 100
        assert view.shown_count == len([n for n in range(900, 1_000) if n % 3 == 0])
        assert visible_text(view)[-1] == "hit 999"


# Safe rendering -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_markup_escapes_tabs_and_control_codes_are_rendered_safely() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines(
            [
                "[bold red]not markup[/] [link=http://x]y[/link]",
                "\x1b[31mred\x1b[0m\tafter tab",
                "bell\x07 and clear\x1b[2J screen",
                "progress 10%\rprogress 20%\rprogress 100%",
                "crlf line\r",
            ]
        )
        await pilot.pause()
        rows = visible_text(view)
        assert rows[0] == "[bold red]not markup[/] [link=http://x]y[/link]"
        assert rows[1] == "red     after tab"
        red = next(iter(view.render_line(1)))
        assert red.text == "red" and red.style is not None and red.style.color is not None
        assert red.style.color.number == 1, "the SGR colour is kept (ANSI red)"
        assert "\x07" not in rows[2] and "\x1b" not in rows[2]
        assert rows[3] == "progress 100%"
        assert rows[4] == "crlf line"
        assert view.virtual_size.width == len("[bold red]not markup[/] [link=http://x]y[/link]")


# Streaming a real pod log ---------------------------------------------------------------------------
@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[EmulatorServer, Services, str]]:
    server = EmulatorServer().start()
    try:
        seed(server, World())
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        services = Services(Target(kubeconfig=str(kubeconfig)), env={})
        _job, pod = services.media.newest_job_pod(None)
        yield server, services, pod
        services.close()
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_a_followed_pod_log_streams_into_the_view_until_the_pod_finishes(
    cluster: tuple[EmulatorServer, Services, str],
) -> None:
    server, services, pod = cluster
    log = PodLog(lines=["starting sync", "listing bucket"])
    server.emulator.pod_logs[(NS, pod)] = log
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.append_lines(["from an earlier pod"])
        worker = view.attach(services.media.logs(pod, follow=True))
        assert view.streaming
        assert view.line_count == 0, "attaching starts from an empty view"
        await settle(pilot, lambda: view.line_count == 2)
        assert view.lines == ["starting sync", "listing bucket"]

        for n in range(3_000):
            log.write(f"uploaded {n}")
        await settle(pilot, lambda: view.line_count == 3_002)
        assert view.lines[-1] == "uploaded 2999"
        assert not app.of(LogView.Ended)

        log.write("sync finished")
        log.finish()
        await settle(pilot, lambda: bool(app.of(LogView.Ended)))
        await asyncio.wait_for(worker.wait(), 10)
        assert view.lines[-1] == "sync finished"
        assert view.line_count == 3_003
        assert not view.streaming
        assert not app.of(LogView.Failed)
        batches = app.of(LogView.Lines)
        assert sum(m.added for m in batches) == 3_003  # type: ignore[attr-defined]
        assert len(batches) < 3_003 / 10, "lines arrive in batches, not one message each"
        assert visible_text(view)[-1] == "sync finished"


@pytest.mark.asyncio
async def test_detach_stops_a_follow_that_would_never_end(cluster: tuple[EmulatorServer, Services, str]) -> None:
    server, services, pod = cluster
    log = PodLog(lines=["one", "two"])  # never finished: a pod still running
    server.emulator.pod_logs[(NS, pod)] = log
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        worker = view.attach(services.media.logs(pod, follow=True))
        await settle(pilot, lambda: view.line_count == 2)
        view.detach()
        assert not view.streaming
        await asyncio.wait_for(worker.wait(), 10)  # the reader thread returned: the HTTP follow is closed
        log.write("three")
        await pilot.pause(0.2)
        assert view.lines == ["one", "two"]
        assert not app.of(LogView.Ended) and not app.of(LogView.Failed), "a detach is not the pod finishing"


@pytest.mark.asyncio
async def test_attaching_another_pod_closes_the_previous_follow(
    cluster: tuple[EmulatorServer, Services, str],
) -> None:
    server, services, pod = cluster
    first = PodLog(lines=["first pod"])
    second = PodLog(lines=["second pod"], finished=True)
    server.emulator.pod_logs[(NS, pod)] = first
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        old = view.attach(services.media.logs(pod, follow=True))
        await settle(pilot, lambda: view.line_count == 1)
        server.emulator.pod_logs[(NS, pod)] = second
        view.follow = False
        view.attach(services.media.logs(pod, follow=True))
        assert view.follow, "another pod's log starts at its newest line"
        await settle(pilot, lambda: bool(app.of(LogView.Ended)))
        assert old.is_cancelled
        first.write("late line from the first pod")
        await pilot.pause(0.2)
        assert view.lines == ["second pod"]
        assert len(app.of(LogView.Ended)) == 1


# Streaming: the source side only --------------------------------------------------------------------
class Source:
    """A line source whose failure is scripted; the view treats it exactly like a `LogStream`."""

    def __init__(self, lines: list[str], error: Exception | None = None) -> None:
        self._lines = lines
        self._error = error
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        yield from self._lines
        if self._error is not None:
            raise self._error
        self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


@pytest.mark.asyncio
async def test_a_broken_stream_is_reported_in_one_line_and_keeps_what_arrived() -> None:
    app = LogApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        error = ConnectionResetError("Connection broken:\n  peer reset\n  while reading chunk")
        view.attach(Source(["before the break"], error))
        await settle(pilot, lambda: bool(app.of(LogView.Failed)))
        failed = app.of(LogView.Failed)[0]
        assert failed.message == "ConnectionResetError: Connection broken: peer reset while reading chunk"  # type: ignore[attr-defined]
        assert view.lines == ["before the break"]
        assert not view.streaming
        assert not app.of(LogView.Ended)


@pytest.mark.asyncio
async def test_a_flood_is_delivered_whole_in_few_batches_and_the_cap_bounds_it() -> None:
    app = LogApp(max_lines=5_000)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        source = Source([f"flood {n}" for n in range(100_000)])
        view.attach(source)
        await settle(pilot, lambda: view.line_count + view.dropped == 100_000)
        assert view.line_count == 5_000
        assert view.lines[-1] == "flood 99999"
        assert len(app.of(LogView.Lines)) < 1_000
        view.detach()
        assert source.closed.is_set()


@pytest.mark.asyncio
async def test_unmounting_the_view_closes_its_stream() -> None:
    app = LogApp()
    source = Source(["a line"])
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        worker = view.attach(source)
        await settle(pilot, lambda: view.line_count == 1)
        await view.remove()
        assert source.closed.is_set()
        await pilot.pause()
        assert worker.is_finished
