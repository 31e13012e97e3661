"""A bounded, follow-capable pod-log viewer for the Jobs pane.

A sync pod can print for hours and thousands of lines a second, so the view keeps only the newest
`max_lines` lines (older ones are counted in `dropped`), renders through Textual's line API so a frame
costs what is visible rather than what is held, and receives streamed lines in batches from a thread
that never touches the widget's state directly.
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from typing import ClassVar, Protocol

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import Worker

__all__ = ["LineSource", "LogView", "compile_filter"]

DEFAULT_MAX_LINES = 10_000
DEFAULT_MAX_LINE_LENGTH = 4_096
BATCH_SECONDS = 0.05  # a stream's lines reach the view at most this often...
BATCH_LINES = 1_000  # ...unless this many are already waiting
TAB_SIZE = 8

# Control characters a terminal would act on; shown as U+FFFD so a log line cannot move the cursor,
# clear the screen or ring the bell. Tab and ESC are handled separately (expanded / decoded as SGR).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")
_NEEDS_CARE = re.compile("[\x00-\x1f\x7f]")


class LineSource(Protocol):
    """What `LogView.attach` reads: `immich_tui.services.media.LogStream` is the production one."""

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


def _normalise(line: str, limit: int) -> str:
    """The part of a raw line worth keeping: what a terminal leaves after `\\r` rewrites, capped in length
    so one runaway line cannot defeat the memory bound the line cap promises."""
    line = line.rstrip("\r")
    if "\r" in line:
        line = line.rsplit("\r", 1)[1]
    if len(line) > limit:
        line = f"{line[:limit]}… [{len(line) - limit:,} more characters]"
    return line


def _styled(line: str) -> Text:
    """The line as it is drawn: SGR colours kept, tabs expanded, other control codes neutralised.

    `Text` never parses Rich markup, so `[bold]` in a pod's output stays literal text.
    """
    if "\x1b" not in line:
        return Text(_plain(line), no_wrap=True, end="")
    text = Text.from_ansi(_CONTROL.sub("\ufffd", line), no_wrap=True, end="", tab_size=TAB_SIZE)
    text.expand_tabs(TAB_SIZE)
    if "\x1b" in text.plain:  # an escape the decoder did not recognise; same length, so spans stay valid
        text.plain = text.plain.replace("\x1b", "\ufffd")
    return text


def _plain(line: str) -> str:
    """Exactly the characters `_styled` draws, so wrapping and filtering agree with what is on screen."""
    if "\x1b" in line:
        return _styled(line).plain
    if "\t" in line:
        line = line.expandtabs(TAB_SIZE)
    return _CONTROL.sub("\ufffd", line)


def _width(line: str) -> int:
    """Cells the line occupies; plain ASCII (the common case) is measured without building a `Text`."""
    if line.isascii() and not _NEEDS_CARE.search(line):
        return len(line)
    return cell_len(_plain(line))


def _searchable(line: str) -> str:
    return (_plain(line) if "\x1b" in line else line).lower()


def compile_filter(text: str) -> tuple[re.Pattern[str] | None, str]:
    """The pattern a typed filter means, and why it is not the regex typed (empty when it is).

    Operators type regexes (`error|warn`, `^2026-11`) as readily as plain words; a half-typed or invalid
    regex (`[a-`) must still filter something while it is typed, so it falls back to the literal text and
    says so instead of failing. Matching ignores case, as `kubectl logs | grep -i` users expect.
    """
    if not text:
        return None, ""
    try:
        return re.compile(text, re.IGNORECASE), ""
    except re.error as exc:
        return re.compile(re.escape(text), re.IGNORECASE), f"not a regex ({exc.msg}): plain text"


def _rows(width: int, wrap_width: int) -> int:
    if wrap_width <= 0:  # not laid out yet: one row each until the width is known
        return 1
    return max(1, -(-width // wrap_width))


def _transport_error(exc: BaseException) -> str:
    """A broken stream raises its transport's exceptions (urllib3, sockets), not ours: name the type too."""
    detail = " ".join(str(exc).split())
    message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return message if len(message) <= 200 else f"{message[:199]}…"


class _Feed:
    """One attached stream and the lines read from it that the UI thread has not taken yet.

    The inbox is itself capped at the view's line cap: if the UI thread stalls, lines that would be
    evicted on arrival anyway are dropped (and counted) here instead of piling up in memory.
    """

    def __init__(self, stream: LineSource, cap: int) -> None:
        self.stream = stream
        self.inbox: deque[str] = deque(maxlen=cap)
        self.lock = threading.Lock()
        self.overflow = 0
        self.wake_pending = False
        self.detached = False
        self.worker: Worker[None] | None = None

    def put(self, line: str) -> bool:
        """Queue a line; `True` when the UI thread should be woken to collect the queue."""
        with self.lock:
            if len(self.inbox) == self.inbox.maxlen:
                self.overflow += 1
            self.inbox.append(line)
            if self.wake_pending and len(self.inbox) != BATCH_LINES:
                return False
            self.wake_pending = True
            return True

    def take(self) -> tuple[list[str], int]:
        with self.lock:
            lines, overflow = list(self.inbox), self.overflow
            self.inbox.clear()
            self.overflow = 0
            self.wake_pending = False
        return lines, overflow


class _Arrived(Message, bubble=False):
    """Lines are waiting in a feed's inbox (posted by the reader thread at most once per collection)."""

    def __init__(self, feed: _Feed) -> None:
        super().__init__()
        self.feed = feed


class _Finished(Message, bubble=False):
    """The reader thread stopped: the stream ended (`error` empty) or raised."""

    def __init__(self, feed: _Feed, error: str) -> None:
        super().__init__()
        self.feed = feed
        self.error = error


class LogView(ScrollView, can_focus=True):
    """A pod log that follows like `tail -f`, holds at most `max_lines` lines, wraps and filters on demand."""

    ALLOW_SELECT = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("w", "toggle_wrap", "Wrap"),
        Binding("G", "scroll_end", "End", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"logview--match"}

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        color: $text;
        overflow-y: scroll;
        overflow-x: auto;
        &:focus {
            background-tint: $foreground 5%;
        }
        & > .logview--match {
            background: $warning 40%;
        }
    }
    """

    follow: reactive[bool] = reactive(True, repaint=False, init=False)
    """Keep the newest line in view as lines arrive; scrolling up turns it off."""
    wrap: reactive[bool] = reactive(False, repaint=False, init=False)
    """Wrap long lines to the width instead of scrolling horizontally."""
    filter_text: reactive[str] = reactive("", repaint=False, init=False)
    """Show only lines matching this regex, or containing this text when it is not one (any case)."""

    class Lines(Message):
        """A batch from the attached stream is now in the view: the moment to refresh a status line."""

        def __init__(self, log_view: LogView, added: int) -> None:
            super().__init__()
            self.log_view = log_view
            self.added = added

        @property
        def control(self) -> LogView:
            return self.log_view

    class Ended(Message):
        """The attached stream ended by itself (the pod finished); every line it sent is in the view."""

        def __init__(self, log_view: LogView) -> None:
            super().__init__()
            self.log_view = log_view

        @property
        def control(self) -> LogView:
            return self.log_view

    class Failed(Message):
        """The attached stream broke; `message` is one line, fit for a status bar."""

        def __init__(self, log_view: LogView, message: str) -> None:
            super().__init__()
            self.log_view = log_view
            self.message = message

        @property
        def control(self) -> LogView:
            return self.log_view

    def __init__(
        self,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        follow: bool = True,
        wrap: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        if max_lines < 1 or max_line_length < 1:
            raise ValueError("max_lines and max_line_length must be positive")
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.max_lines = max_lines
        self.max_line_length = max_line_length
        self.dropped = 0
        """Lines discarded to respect `max_lines` since the last `clear()`."""
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._widths: deque[int] = deque(maxlen=max_lines)  # cells per held line, parallel to `_lines`
        self._next = 0  # sequence number the next held line gets; `_lines[0]` is `_next - len(_lines)`
        # The shown lines: every held line, or (with a filter) the sequence numbers of those that match.
        self._needle = ""
        self._pattern: re.Pattern[str] | None = None
        self.filter_problem = ""  # why the filter is matched as plain text, when it is
        self._matches: deque[int] | None = None
        # With wrap on: the first virtual row of each shown line (absolute, so evicting needs no rewrite).
        self._row_starts: deque[int] | None = None
        self._row_end = 0
        self._wrap_width = 0
        self._max_width = 0
        self._strips: LRUCache[int, Strip] = LRUCache(1024)
        self._feed: _Feed | None = None
        self._last_take = 0.0
        self._take_timer_due = False
        self.set_reactive(LogView.follow, follow)
        self.set_reactive(LogView.wrap, wrap)

    # What a status line shows --------------------------------------------------------------------
    @property
    def line_count(self) -> int:
        """Lines held (at most `max_lines`), whether or not the filter shows them."""
        return len(self._lines)

    @property
    def shown_count(self) -> int:
        """Lines the current filter lets through."""
        return len(self._matches) if self._matches is not None else len(self._lines)

    @property
    def lines(self) -> list[str]:
        """A copy of the held lines, oldest first (normalised: `\\r` rewrites applied, length capped)."""
        return list(self._lines)

    @property
    def last_line(self) -> str | None:
        """The newest held line, without copying the rest (a status line or a probe can poll it cheaply)."""
        return self._lines[-1] if self._lines else None

    @property
    def streaming(self) -> bool:
        """A stream is attached and has neither ended nor failed."""
        return self._feed is not None

    # Content ------------------------------------------------------------------------------------
    def append_lines(self, lines: Iterable[str]) -> None:
        """Add lines (UI thread only); embedded newlines split a string into several lines."""
        limit = self.max_line_length
        prepared: list[str] = []
        for line in lines:
            if "\n" in line:
                prepared.extend(_normalise(part, limit) for part in line.split("\n"))
            else:
                prepared.append(_normalise(line, limit))
        if not prepared:
            return
        cap, held = self.max_lines, len(self._lines)
        overflow = max(0, held + len(prepared) - cap)
        self.dropped += overflow
        if len(prepared) > cap:  # these would be evicted by their own batch: skip them
            self._next += len(prepared) - cap
            prepared = prepared[-cap:]
        evicted = min(held, overflow)
        start = self._next
        widths = [_width(line) for line in prepared]
        self._lines.extend(prepared)
        self._widths.extend(widths)
        self._next += len(prepared)

        if self._matches is not None:
            first, matches = self._first, self._matches
            evicted = 0
            while matches and matches[0] < first:
                matches.popleft()
                evicted += 1
            hits = [i for i, line in enumerate(prepared) if self._hit(line)]
            matches.extend(start + i for i in hits)
            widths = [widths[i] for i in hits]
        removed_rows = evicted
        if self._row_starts is not None:
            starts = self._row_starts
            top = starts[0] if starts else self._row_end
            for _ in range(min(evicted, len(starts))):
                starts.popleft()
            removed_rows = (starts[0] if starts else self._row_end) - top
            wrap_width, end = self._wrap_width, self._row_end
            for width in widths:
                starts.append(end)
                end += _rows(width, wrap_width)
            self._row_end = end
        if widths:
            self._max_width = max(self._max_width, max(widths))
        self._update_virtual_size()
        if self.follow:
            self._stick_to_end()
        elif removed_rows:  # keep the lines being read where they are while older ones are evicted
            self.scroll_to(y=max(0, self.scroll_y - removed_rows), animate=False)
        self.refresh()

    def clear(self) -> None:
        """Forget every line and the dropped count; an attached stream keeps feeding the view."""
        self._lines.clear()
        self._widths.clear()
        self._next = 0
        self.dropped = 0
        self._max_width = 0
        self._strips.clear()
        if self._matches is not None:
            self._matches.clear()
        if self._row_starts is not None:
            self._row_starts.clear()
            self._row_end = 0
        self._update_virtual_size()
        self.scroll_to(x=0, y=0, animate=False)
        self.refresh()

    def set_filter(self, text: str) -> None:
        """Show only lines matching `text` (a regex, or plain text when it is not one; any case); an empty
        string shows everything again."""
        self.filter_text = text

    def _hit(self, line: str) -> bool:
        return self._pattern is not None and self._pattern.search(_searchable(line)) is not None

    # Streaming ----------------------------------------------------------------------------------
    def attach(self, stream: LineSource, *, clear: bool = True) -> Worker[None]:
        """Read `stream` in a thread and show its lines as they arrive; a previous stream is closed first.
        With `clear` (the default: a different pod) the view starts empty and following.

        The thread only queues lines; the UI thread collects them at most every `BATCH_SECONDS` (sooner
        once `BATCH_LINES` are waiting), so a pod printing thousands of lines a second costs a handful of
        messages and repaints a second, not one per line.
        """
        self.detach()
        if clear:  # another pod: start from its newest line, whatever the previous one was scrolled to
            self.clear()
            self.follow = True
        feed = _Feed(stream, self.max_lines)
        self._feed = feed
        feed.worker = self.run_worker(
            lambda: self._read(feed),
            name="logview-reader",
            group="logview",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )
        return feed.worker

    def detach(self) -> None:
        """Stop reading the attached stream (closing it ends a never-ending follow); lines already
        received stay in the view. No `Ended` or `Failed` follows a detach."""
        feed, self._feed = self._feed, None
        if feed is None:
            return
        self._collect(feed)
        self._close(feed)

    def _close(self, feed: _Feed) -> None:
        feed.detached = True
        try:
            feed.stream.close()
        except Exception as exc:  # closing is best effort: the connection may already be gone
            self.log.warning(f"closing the log stream failed: {_transport_error(exc)}")

    def _read(self, feed: _Feed) -> None:
        """The reader thread: the only place the stream is iterated; it never touches widget state."""
        error = ""
        try:
            for line in feed.stream:
                if feed.detached:
                    return
                if feed.put(line):
                    self.post_message(_Arrived(feed))
        except Exception as exc:  # a broken stream raises whatever its transport raises (urllib3, sockets)
            if not feed.detached:
                error = _transport_error(exc)
        if not feed.detached:
            self.post_message(_Finished(feed, error))

    @on(_Arrived)
    def _arrived(self, message: _Arrived) -> None:
        feed = message.feed
        if feed is not self._feed:
            return
        wait = self._last_take + BATCH_SECONDS - time.monotonic()
        if wait <= 0 or len(feed.inbox) >= BATCH_LINES:
            self._collect(feed)
        elif not self._take_timer_due:
            self._take_timer_due = True
            self.set_timer(wait, self._collect_later)

    def _collect_later(self) -> None:
        self._take_timer_due = False
        if self._feed is not None:
            self._collect(self._feed)

    def _collect(self, feed: _Feed) -> None:
        lines, overflow = feed.take()
        self._last_take = time.monotonic()
        self.dropped += overflow
        if lines:
            self.append_lines(lines)
            self.post_message(self.Lines(self, len(lines)))

    @on(_Finished)
    def _finished(self, message: _Finished) -> None:
        feed = message.feed
        if feed is not self._feed:
            return
        self._collect(feed)
        self._feed = None
        if message.error:
            self.post_message(self.Failed(self, message.error))
        else:
            self.post_message(self.Ended(self))

    def on_unmount(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:  # a follow never ends by itself: its HTTP connection must not outlive the view
            self._close(feed)

    # Key actions --------------------------------------------------------------------------------
    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    def action_scroll_end(self) -> None:
        self.follow = True
        self._stick_to_end()

    def action_scroll_home(self) -> None:
        self.follow = False
        super().action_scroll_home()

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    # Reactive watchers --------------------------------------------------------------------------
    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._stick_to_end()

    def watch_wrap(self, wrap: bool) -> None:
        top = self._top_line()
        self._row_starts = None
        if wrap:
            self._rewrap()
        self._update_virtual_size()
        self._reposition(top)

    def watch_filter_text(self, text: str) -> None:
        top = self._top_line()
        self._needle = text.lower()
        self._pattern, self.filter_problem = compile_filter(text)
        if self._needle:
            first = self._first
            self._matches = deque(first + i for i, line in enumerate(self._lines) if self._hit(line))
        else:
            self._matches = None
        self._strips.clear()  # matches are highlighted
        self._max_width = max(self._shown_widths(), default=0)
        if self._row_starts is not None:
            self._row_starts = None
            self._rewrap()
        self._update_virtual_size()
        self._reposition(top)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Moving away from the end (a wheel, a scrollbar drag) is reading back: stop following. A clamp
        # after the content shrank lands exactly on the end and is not.
        if self.follow and new_value < old_value and round(new_value) < self.max_scroll_y:
            self.follow = False

    def watch_show_horizontal_scrollbar(self, shown: bool) -> None:
        if self.follow:  # the scrollbar took a row from the view: the newest line must stay visible
            self.call_after_refresh(self._stick_to_end)

    def on_resize(self, event: events.Resize) -> None:
        if self.wrap and self.scrollable_content_region.width != self._wrap_width:
            top = self._top_line()
            self._rewrap()
            self._update_virtual_size()
            self._reposition(top)
        elif self.follow:
            self._stick_to_end()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # Geometry -----------------------------------------------------------------------------------
    @property
    def _first(self) -> int:
        return self._next - len(self._lines)

    def _line_at(self, index: int) -> int:
        """Sequence number of the `index`-th shown line."""
        return self._matches[index] if self._matches is not None else self._first + index

    def _shown_widths(self) -> Iterator[int]:
        if self._matches is None:
            yield from self._widths
            return
        wanted = iter(self._matches)
        number = next(wanted, None)
        for seq, width in enumerate(self._widths, self._first):
            if seq == number:
                yield width
                number = next(wanted, None)

    def _rewrap(self) -> None:
        """Rows per shown line at the current width, from the cached cell widths (no re-measuring)."""
        wrap_width = self.scrollable_content_region.width
        starts: deque[int] = deque()
        end = 0
        for width in self._shown_widths():
            starts.append(end)
            end += _rows(width, wrap_width)
        self._wrap_width, self._row_starts, self._row_end = wrap_width, starts, end

    def _update_virtual_size(self) -> None:
        if self._row_starts is not None:
            top = self._row_starts[0] if self._row_starts else self._row_end
            self.virtual_size = Size(self._wrap_width, self._row_end - top)
        else:
            self.virtual_size = Size(self._max_width, self.shown_count)

    def _stick_to_end(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _top_line(self) -> int | None:
        """Sequence number of the line at the top of the view, to keep it there across a re-layout."""
        if self.follow or not self.shown_count:
            return None
        row = round(self.scroll_y)
        if self._row_starts is not None:
            starts = self._row_starts
            index = bisect_right(starts, starts[0] + row) - 1
        else:
            index = row
        return self._line_at(min(max(index, 0), self.shown_count - 1))

    def _reposition(self, top: int | None) -> None:
        if self.follow:
            self._stick_to_end()
        elif top is not None and self.shown_count:
            index = bisect_left(self._matches, top) if self._matches is not None else top - self._first
            index = min(max(index, 0), self.shown_count - 1)
            row = index if self._row_starts is None else self._row_starts[index] - self._row_starts[0]
            self.scroll_to(y=row, animate=False)
        self.refresh()

    # Rendering ----------------------------------------------------------------------------------
    def _strip(self, number: int, style: Style) -> Strip:
        """The whole line, rendered once and cached by sequence number (stable while lines are evicted)."""
        strip = self._strips.get(number)
        if strip is None:
            text = _styled(self._lines[number - self._first])
            text.stylize_before(style)
            if self._pattern is not None:
                text.highlight_regex(self._pattern, self.get_component_rich_style("logview--match"))
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._strips[number] = strip
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        style = self.rich_style
        starts = self._row_starts
        if starts is None:
            if row >= self.shown_count:
                return Strip.blank(width, style)
            return self._strip(self._line_at(row), style).crop_extend(scroll_x, scroll_x + width, style)
        if not starts or starts[0] + row >= self._row_end:
            return Strip.blank(width, style)
        target = starts[0] + row
        index = bisect_right(starts, target) - 1
        wrap_width = self._wrap_width
        left = (target - starts[index]) * wrap_width
        strip = self._strip(self._line_at(index), style).crop_extend(left, left + wrap_width, style)
        return strip.extend_cell_length(width, style)
