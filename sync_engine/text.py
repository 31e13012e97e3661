"""How sizes, errors and tables read, for people: one definition shared by the engine, the plugin and the TUI."""

from __future__ import annotations

import json
import re
from typing import Any

import humanize

# Characters a terminal may act on instead of showing, in a file name or in an error that quotes one:
# C0 controls (ESC starts title, clear-screen and hyperlink sequences; CR hides the start of a line),
# DEL, C1 controls (0x9B is a one-byte CSI to some terminals), the bidi marks, embeddings, overrides
# and isolates (U+202E makes `gpj.exe` read `exe.jpg`), and the line and paragraph separators. Lone
# surrogates are bytes of a name that is not UTF-8 (Python's surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# The same, less what json.dumps already escapes (C0) and the surrogates it writes as they are.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # the undecodable byte itself
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Text as a terminal can show it: every character it might act on written as an escape (`\\x1b`,
    `\\u202e`, `\\n`; an undecodable byte of a name as `\\xff`). Backslashes are left alone, so
    escaping twice changes nothing and a name already shown escaped reads the same."""
    return _UNSAFE.sub(_escaped, text)


def printable_lines(text: str) -> str:
    """`printable` for each line of a multi-line summary: the newlines between lines stay."""
    return "\n".join(printable(line) for line in text.split("\n"))


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON as `json.dumps(ensure_ascii=False)` writes it, but with the characters a terminal acts on
    that it leaves raw (DEL, C1, bidi controls, separators, lone surrogates) as `\\u` escapes: the
    strings decode to exactly what they were, and `kubectl logs` shows them safely."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def size(n: int | None) -> str:
    """Binary units with one decimal (`4.4 MiB`), the way every table and log line of the project says it."""
    return "-" if n is None else humanize.naturalsize(n, binary=True, format="%.1f")


def one_line(error: BaseException | str) -> str:
    """The first line of an error's message, printable: banners and log lines hold one line, never a
    traceback, and never a control character from a file name the error quotes."""
    text = str(error).strip().splitlines()
    if text:
        return printable(text[0])
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
