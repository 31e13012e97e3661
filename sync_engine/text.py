"""How sizes and errors read, for people: one definition shared by the engine, the plugin and the TUI."""

from __future__ import annotations

import humanize


def size(n: int | None) -> str:
    """Binary units with one decimal (`4.4 MiB`), the way every table and log line of the project says it."""
    return "-" if n is None else humanize.naturalsize(n, binary=True, format="%.1f")


def one_line(error: BaseException | str) -> str:
    """The first line of an error's message: banners and log lines hold one line, never a traceback."""
    text = str(error).strip().splitlines()
    if text:
        return text[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
