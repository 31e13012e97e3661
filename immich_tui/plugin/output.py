"""Tables for people, JSON and YAML for machines; the same data either way.

The plugin's few formatting primitives (kubectl-style tables, ages, durations), kept apart from the
renderers so `setup` and every command format alike. Sizes read as everywhere else in the project:
`sync_engine.text.size`. Ages read exactly as kubectl's AGE column does, so an operator who knows
`kubectl get` reads ours without thinking.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import yaml

from immich_tui.services import clock
from sync_engine.text import table as text_table

WIDTH = 120  # a default table fits a 120-column terminal; `-o wide` lifts the limit
TABLE_FORMATS = ("table", "wide")  # what people read; json/yaml/name are for machines


@dataclass(frozen=True)
class View:
    """How a table reads: `-o wide` adds full timestamps and more columns, `--no-headers` keeps only rows
    (no header line, no summary around the table), for `| wc -l` and `| awk`."""

    wide: bool = False
    headers: bool = True

    @property
    def width(self) -> int | None:
        return None if self.wide else WIDTH


def plain(value: Any) -> Any:
    """Dataclasses, datetimes and nested containers as JSON-ready values (times in RFC 3339, UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr and f.name != "raw"}
    if isinstance(value, dt.datetime):
        return clock.iso(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def dump(data: Any, fmt: str) -> str:
    """`-o json` or `-o yaml`: the data as `plain` makes it, keys in their declared order."""
    if fmt == "json":
        return json.dumps(plain(data), indent=2, sort_keys=False)
    return yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True).rstrip("\n")


def table(headers: list[str], rows: list[list[Any]], view: View | None = None) -> str:
    """kubectl's layout: upper-case headers, columns padded by three spaces, no borders.

    Within the view's width the last column (a reason, an error: free text) is cut with `…` rather than
    wrapped, which would break every column below it; `-o wide` and `-o json` keep it whole."""
    view = view or View()
    cells = [["-" if c in (None, "") else str(c) for c in row] for row in rows]
    if view.headers:
        cells.insert(0, [str(h) for h in headers])
    if not cells:
        return ""
    text = text_table(cells)
    if view.width is None or max(len(line) for line in text.splitlines()) <= view.width:
        return text
    start = sum(max(len(row[i]) for row in cells) + 3 for i in range(len(cells[0]) - 1))
    room = max(view.width - start, 8)
    for row in cells:
        if len(row[-1]) > room:
            row[-1] = row[-1][: room - 1] + "…"
    return text_table(cells)


def human_duration(seconds: float) -> str:
    """kubectl's own duration format (k8s.io/apimachinery `duration.HumanDuration`): `45s`, `5m30s`,
    `42m`, `3h38m`, `17h`, `5d2h`, `30d`, `2y45d`. Two units at most, and the second only while it matters."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(value: dt.datetime | None) -> str:
    """The AGE column: how long ago, by the one clock every service uses (`IMMICH_BACKUP_NOW` pins it);
    a time still ahead reads `in 7h14m`; `-` when unknown."""
    if value is None:
        return "-"
    seconds = clock.age_seconds(value) or 0.0
    return human_duration(seconds) if seconds >= -1 else f"in {human_duration(-seconds)}"


def ago(value: dt.datetime | None) -> str:
    """An age in a sentence: `16h ago`, `in 7h14m`, `never`."""
    if value is None:
        return "never"
    text = age(value)
    return text if text.startswith("in ") else f"{text} ago"


def when(value: dt.datetime | None) -> str:
    """A moment in RFC 3339 (UTC) with its age, for summaries and `-o wide` (`… (3h38m ago)`); `-` when unknown."""
    if value is None:
        return "-"
    return f"{clock.iso(value)} ({ago(value)})"


def stamp(value: dt.datetime | None, view: View) -> str:
    """A time in a table: its age by default, the full timestamp under `-o wide`."""
    return (clock.iso(value) or "-") if view.wide else age(value)


def duration(seconds: float | None) -> str:
    """A span as kubectl shows one (`90s`, `5m30s`, `3h38m`); `-` when unknown."""
    return "-" if seconds is None else human_duration(seconds)
