"""How sizes, errors and tables read, for people: one definition shared by the engine, the plugin and the TUI."""

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


def table(rows: list[list[str]], *, gap: int = 3, numbers_right: bool = False) -> str:
    """Columns padded to their widest cell, no borders, trailing spaces trimmed.

    The plugin uses kubectl's layout (three spaces, all left-aligned); the engine's summaries right-align
    their count columns under a two-space gap so the figures line up.
    """
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if numbers_right and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append((" " * gap).join(cells).rstrip())
    return "\n".join(lines)
