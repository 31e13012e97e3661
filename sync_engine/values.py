"""How a setting's text becomes a value: whole and finite numbers within bounds, choices, switches,
bucket names, URLs, key prefixes and shards.

Flags and variables both arrive as text and go through the same parser, so a value is refused with the
same words wherever it came from. A parser's ValueError says only what is wrong with the value
(`must be between 5 and 5120, got 9999`); the settings table puts the flag and the variable in front.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync_engine.models import Shard

Parser = Callable[[str], Any]  # text -> value; raises ValueError with the problem, without the name


def text(value: str) -> str:
    return value.strip()


def integer(low: int | None = None, high: int | None = None) -> Parser:
    """A whole number within [low, high]."""

    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
        _check_bounds(number, low, high)
        return number

    return parse


def number(low: float | None = None, high: float | None = None) -> Parser:
    """A finite number within [low, high] (NaN and infinity are refused)."""

    def parse(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
        if not math.isfinite(result):
            raise ValueError(f"must be a finite number, got {value.strip()!r}")
        _check_bounds(result, low, high)
        return result

    return parse


def _check_bounds(value: float, low: float | None, high: float | None) -> None:
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"must be between {low:g} and {high:g}, got {shown}")
    if low == 0 and high is None and value < 0:
        raise ValueError(f"must not be negative, got {shown}")
    if low is not None and high is None and value < low:
        raise ValueError(f"must be at least {low:g}, got {shown}")


def choice(options: tuple[str, ...], *, ignore_case: bool = False) -> Parser:
    """One of `options`; with `ignore_case`, spelled in any case but returned as listed."""

    def parse(value: str) -> str:
        wanted = value.strip()
        for option in options:
            if option == wanted or (ignore_case and option.lower() == wanted.lower()):
                return option
        raise ValueError(f"must be one of {', '.join(options)}, got {wanted!r}")

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, got {value.strip()!r}")


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def bucket_name(value: str) -> str:
    name = value.strip()
    if not _BUCKET_RE.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not a valid S3 bucket name")
    return name


def http_url(value: str) -> str:
    url = value.strip()
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


def normalize_prefix(prefix: str) -> str:
    """`immich/media`, `/immich/media/` and `immich/media/` all mean keys under `immich/media/`."""
    prefix = prefix.strip().lstrip("/")
    return f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""


def shard(value: str) -> Shard:
    return Shard.parse(value)


def path(value: str) -> Path:
    return Path(value).expanduser()
