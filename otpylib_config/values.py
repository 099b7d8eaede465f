"""Configuration values: validation of JSON-like data, and the read-only form handed out.

Everything stored in a snapshot is frozen: mappings become :class:`Section` (a ``dict`` that
refuses mutation, so ``json.dumps`` and ``isinstance(x, dict)`` keep working) and lists become
tuples. Freezing happens once on the write side; readers get the stored objects themselves,
which is what makes a read as cheap as a dict lookup.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, SupportsIndex

from otpylib_config.errors import InvalidValueError
from otpylib_config.paths import GLOB_CHARS

#: Scalars a file may hold besides JSON's (TOML has dates and times); ``put`` refuses them.
TEMPORAL_TYPES = (datetime.datetime, datetime.date, datetime.time)
_SCALARS = (str, int, float, bool, type(None))


class Section(dict[str, Any]):
    """A read-only configuration section. Use ``thaw()`` for a mutable copy."""

    __slots__ = ()

    def _read_only(self, *_: object, **__: object) -> NoReturn:
        raise TypeError("configuration sections are read-only; change values with Config.put")

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        self._read_only()

    def __delitem__(self, key: str) -> NoReturn:
        self._read_only()

    def __ior__(self, other: object) -> NoReturn:  # type: ignore[misc]
        self._read_only()

    def clear(self) -> NoReturn:
        self._read_only()

    def pop(self, *args: object) -> NoReturn:
        self._read_only()

    def popitem(self) -> NoReturn:
        self._read_only()

    def setdefault(self, *args: object) -> NoReturn:
        self._read_only()

    def update(self, *args: object, **kwargs: object) -> NoReturn:
        self._read_only()

    def __copy__(self) -> Section:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Section:
        return self

    def __reduce__(self) -> tuple[type[Section], tuple[dict[str, Any]]]:
        return (Section, (dict(self),))


EMPTY = Section()


def freeze(value: Any, path: str = "", *, allow_temporal: bool = False) -> Any:
    """Validate ``value`` as JSON-like data and return its frozen form.

    Raises :class:`InvalidValueError` naming the path of the first offending element.
    ``allow_temporal`` admits TOML's dates and times, which files may contain.
    """
    kind = type(value)
    if kind is float and not math.isfinite(value):
        if math.isnan(value):
            raise InvalidValueError("NaN is not a valid configuration value", path)
        return value
    if kind in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return Section(_freeze_items(value.items(), path, allow_temporal))
    if kind is list or kind is tuple:
        return tuple(
            freeze(item, f"{path}[{i}]", allow_temporal=allow_temporal)
            for i, item in enumerate(value)
        )
    if allow_temporal and isinstance(value, TEMPORAL_TYPES):
        return value
    raise InvalidValueError(
        f"{kind.__name__} is not JSON-like data (expected None, bool, int, float, str, "
        f"list or dict with str keys): {_short_repr(value)}",
        path,
    )


def _freeze_items(
    items: Iterable[tuple[object, Any]], path: str, allow_temporal: bool
) -> dict[str, Any]:
    frozen: dict[str, Any] = {}
    for key, item in items:
        check_key(key, path)
        assert isinstance(key, str)
        child = f"{path}.{key}" if path else key
        frozen[key] = freeze(item, child, allow_temporal=allow_temporal)
    return frozen


def check_key(key: object, path: str) -> None:
    """Reject mapping keys that could not be addressed as one path segment."""
    where = path or "<root>"
    if not isinstance(key, str):
        raise InvalidValueError(f"mapping key {key!r} is not a str", where)
    if not key or "." in key or GLOB_CHARS.intersection(key):
        raise InvalidValueError(
            f"mapping key {key!r} cannot be a path segment (empty, '.', or glob character)",
            where,
        )


def thaw(value: Any) -> Any:
    """Return a mutable deep copy: sections become dicts, tuples become lists."""
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that also tells ``1`` from ``True`` and ``1.0``: a type change is a change."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _short_repr(value: object, limit: SupportsIndex = 80) -> str:
    text = repr(value)
    return text if len(text) <= int(limit) else text[: int(limit)] + "..."


_INT = re.compile(r"[+-]?(0|[1-9]\d*)")  # "007" and "0755" stay strings
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")


def coerce(text: str, *, structured: bool = True) -> Any:
    """Text from the environment or Consul as a value: ``true``/``false`` → bool, integers,
    floats, and (if ``structured``) JSON arrays and objects; else the string.

    Numbers with leading zeros (zip codes, file modes) stay strings, as in JSON.

    Raises ``ValueError`` for text that starts like JSON (``[`` or ``{``) but does not parse:
    that is almost always a typo that should be reported, not silently kept as a string.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    if structured and stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"looks like JSON but does not parse: {exc}") from exc
    return text
