"""Objects read from the Kubernetes API, checked field by field as they are read.

The API server validates what it stores against each kind's schema, but the tools must not rely on it:
a CRD installed without its schema, an aggregated API, an emulator or a proxy in between can hand over
anything, and a `Job` whose `status.conditions` is a string must not become a traceback. Every field is
read through a `View`, which returns it in the type the schema gives it or raises `InvalidObject`, whose
one-line message names the object (`Job immich/nightly-1`) and the field (`status.conditions[0].type`).
A field that is absent or null reads as its default, as in the API's own conventions; a field of the
wrong type is an error, never silently a default, since it means the object is not what it claims to be.
The status command turns the error into its section's error, so the other sections still answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from immich_tui.services import clock
from immich_tui.services.errors import InvalidData

_SHOWN = 40  # characters of a wrong value quoted in a message


class InvalidObject(InvalidData):
    """An API object that does not fit its kind's schema; the message names the object and the field."""


def _printable(text: str, limit: int = 100) -> str:
    """A name from the API as one printable line: it may hold anything, a newline included."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


def describe(value: object) -> str:
    """A wrong value as a message shows it: short values quoted (escaped, cut), containers by their type."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN else value[: _SHOWN - 1] + "…"
        return f"{text!a} (text)" if not text.isprintable() else f"{text!r} (text)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    return type(value).__name__


@dataclass(frozen=True)
class View:
    """A read-only view of one mapping inside an API object: `what` names the object, `path` the mapping."""

    what: str
    data: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""

    @classmethod
    def of(cls, kind: str, obj: object, *, namespace: str = "") -> View:
        """The view of a whole object: it must be a mapping with `metadata.name` text."""
        if not isinstance(obj, dict):
            raise InvalidObject(f"a {kind} from the API is {describe(obj)}, not an object")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidObject(f"a {kind} from the API has metadata that is {describe(meta)}, not an object")
        meta = meta or {}
        name, ns = meta.get("name"), meta.get("namespace") or namespace
        if not isinstance(name, str) or not name:
            raise InvalidObject(f"a {kind} from the API has no metadata.name (got {describe(name)})")
        if not isinstance(ns, str):
            raise InvalidObject(f"{kind} {_printable(name)}: metadata.namespace is {describe(ns)}, not text")
        shown = _printable(f"{ns}/{name}" if ns else name)
        return cls(f"{kind} {shown}", obj)

    # -- what is wrong ---------------------------------------------------------------------------------------
    def at(self, key: str) -> str:
        key = _printable(key, 60)
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, value: object, expected: str) -> NoReturn:
        raise InvalidObject(f"{self.what}: {self.at(key)} is {describe(value)}, not {expected}")

    # -- fields ----------------------------------------------------------------------------------------------
    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def map(self, key: str) -> View:
        """A nested object; absent or null reads as an empty one."""
        value = self.data.get(key)
        if value is None:
            return View(self.what, {}, self.at(key))
        if not isinstance(value, dict):
            self.fail(key, value, "an object")
        return View(self.what, value, self.at(key))

    def maps(self, key: str) -> list[View]:
        """A list of objects; absent or null reads as an empty list."""
        return list(self._maps(key))

    def _maps(self, key: str) -> Iterator[View]:
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(key, value, "a list")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{key}[{i}]", item, "an object")
            yield View(self.what, item, self.at(f"{key}[{i}]"))

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(key, value, "text")
        return value

    def text_map(self, key: str) -> dict[str, str]:
        """A map of text to text (labels, annotations, Secret data); absent or null reads as empty."""
        value = self.map(key)
        for name, item in value.data.items():
            if not isinstance(item, str):
                value.fail(str(name), item, "text")
        return dict(value.data)

    def count(self, key: str, default: int = 0) -> int:
        """A whole number of at least 0 (replicas, instances, exit codes are checked by their callers)."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.fail(key, value, "a whole number of at least 0")
        return value

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, value, "a whole number")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, value, "true or false")
        return value

    def time(self, key: str) -> dt.datetime | None:
        """An RFC 3339 time. Text that is not one reads as unknown (None): some CRDs declare these fields as
        plain strings, and an odd format is not worth losing the rest of the object over; a value that is
        not text at all is an error."""
        return clock.parse(self.text(key))
