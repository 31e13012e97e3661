"""Time parsing and the one notion of "now" every service uses (tests and snapshots freeze it)."""

from __future__ import annotations

import datetime as dt
import os


def now() -> dt.datetime:
    """`IMMICH_BACKUP_NOW` (RFC 3339) pins the clock, so frozen-clock tests and snapshots are stable."""
    return parse(os.environ.get("IMMICH_BACKUP_NOW")) or dt.datetime.now(dt.UTC)


def parse(value: object) -> dt.datetime | None:
    """Kubernetes and CNPG timestamps (`2026-11-27T02:30:00Z`, with or without fractions or offset); None for
    anything else, including a time that exists only in its own zone (it cannot be shown in UTC)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    try:
        parsed.astimezone(dt.UTC)  # 0001-01-01T00:00:00+14:00 lies before the first moment a datetime holds
    except OverflowError:
        return None
    return parsed


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def minute(value: dt.datetime | None) -> str:
    """`2026-11-27 02:30` in UTC, or "" for no time: tables line up on it, and a time that carries another
    offset is converted, never shown with its own digits under a UTC heading."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value else ""


def age_seconds(value: dt.datetime | None, reference: dt.datetime | None = None) -> float | None:
    return None if value is None else ((reference or now()) - value).total_seconds()


def ago(value: dt.datetime | None, reference: dt.datetime | None = None) -> str:
    """`3h ago`, `2d ago`, `in 5h` — compact like kubectl's AGE column."""
    if value is None:
        return "never"
    seconds = age_seconds(value, reference) or 0.0
    return f"{short(abs(seconds))} ago" if seconds >= 0 else f"in {short(-seconds)}"


def short(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        hours, rest = divmod(seconds, 3600)
        return f"{hours}h{rest // 60}m" if hours < 10 and rest >= 60 else f"{hours}h"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h" if seconds < 10 * 86400 else f"{seconds // 86400}d"
