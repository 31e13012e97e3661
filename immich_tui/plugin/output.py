"""Tables for people, JSON and YAML for machines; the same data either way.

The plugin's few formatting primitives (kubectl-style tables, times with their age, durations), kept apart
from the renderers so `setup` and every command format alike. Sizes read as everywhere else in the project:
`sync_engine.text.size`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import yaml

from immich_tui.services import clock
from sync_engine.text import table as text_table


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


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """kubectl's layout: upper-case headers, columns padded by three spaces, no borders."""
    cells = [[str(h) for h in headers]] + [["-" if c in (None, "") else str(c) for c in row] for row in rows]
    return text_table(cells)


def when(value: dt.datetime | None) -> str:
    """A moment in RFC 3339 (UTC) with its age, kubectl-style (`3h ago`, `in 5h`); `-` when unknown."""
    if value is None:
        return "-"
    return f"{clock.iso(value)} ({clock.ago(value)})"


def duration(seconds: float | None) -> str:
    """A span as kubectl shows ages (`90s`, `42m`, `5h`); `-` when unknown."""
    return "-" if seconds is None else clock.short(seconds)
