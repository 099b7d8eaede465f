"""Configuration values: validation of JSON-like data, and the read-only form handed out.

Everything stored in a snapshot is frozen: mappings become :class:`Section` (a ``dict`` that
refuses mutation, so ``json.dumps`` and ``isinstance(x, dict)`` keep working) and lists become
tuples. Freezing happens once on the write side; readers get the stored objects themselves,
which is what makes a read as cheap as a dict lookup.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from otpylib_config.errors import InvalidValueError
from otpylib_config.paths import GLOB_CHARS, MAX_PATH_LENGTH, MAX_SEGMENTS

#: Scalars a file may hold besides JSON's (TOML has dates and times); ``put`` refuses them.
TEMPORAL_TYPES = (datetime.datetime, datetime.date, datetime.time)


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

# -- limits: what freeze refuses, so that nothing stored can break a reader later ----------

MAX_DEPTH = MAX_SEGMENTS
"""The deepest a value may nest: no node's path may have more than this many segments
(list indices count as one). Counted from the root of the document, so a put at a 3-segment
path leaves its value ``MAX_DEPTH - 3`` levels. Every reader (merge, diff, ``dump``,
``explain``, ``json.dumps``) recurses, and this keeps them far from the recursion limit."""

MAX_STRING_LENGTH = 1 << 20
"""The longest string, in characters (1 Mi). Generous for certificates and templates,
small enough that one put cannot make every ``dump`` and telemetry event enormous."""

MAX_ITEMS = 1 << 20
"""The most entries one mapping or list may have (1 Mi, 1,048,576): above the million keys
of one flat section that the benchmarks load, and a bound on what one value may allocate."""

MAX_INT_DIGITS = 4300
"""The most decimal digits an integer may have: CPython's default limit for int↔str
conversion. A longer int freezes fine but ``str()``, ``json.dumps`` and every status or dump
that shows it would then raise ``ValueError``."""

_INT_MAX = 10**MAX_INT_DIGITS - 1  # |n| <= this ⟺ at most MAX_INT_DIGITS digits; no str()
_INT_MIN = -_INT_MAX

_NOT_JSON_LIKE = (
    "is not JSON-like data (expected None, bool, int, float, str, list or dict with str keys)"
)


def freeze(
    value: Any, path: str = "", allow_temporal: bool = False, depth: int | None = None
) -> Any:
    """Validate ``value`` as JSON-like data within the limits above; return its frozen form.

    Raises :class:`InvalidValueError` naming the path of the first offending element, its
    type and the limit it breaks, never the value: it may be a secret, and the message
    reaches logs and telemetry. ``allow_temporal`` admits TOML's dates and times, which
    files may contain. ``depth``: how deep ``path`` already is, its number of segments;
    counted from the dots of ``path`` when omitted (callers that have parsed the path pass
    ``len(segments)`` and skip the count). Nesting is bounded by this explicit counter, so
    a deep value is refused by the limit, never by a ``RecursionError``.

    Pass ``allow_temporal`` and ``depth`` by keyword. They are not keyword-only because
    keyword-only defaults cost a dict lookup per call, a third of the time of freezing a
    scalar, on the put path.
    """
    kind = type(value)
    if kind is str:
        if len(value) > MAX_STRING_LENGTH:
            raise InvalidValueError(f"str longer than {MAX_STRING_LENGTH} characters", path)
        return value
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise InvalidValueError(
            f"int with more than {MAX_INT_DIGITS} digits (it could not be shown as text)", path
        )
    if kind is float:
        if value != value:  # NaN, the one float unequal to itself
            raise InvalidValueError("NaN is not a valid configuration value", path)
        return value
    if kind is bool or value is None:
        return value
    if depth is None:
        depth = path.count(".") + 1 if path else 0
    if kind is dict or kind is Section or isinstance(value, Mapping):
        _check_container(kind, len(value), path, depth)
        return Section(_freeze_items(value.items(), path, depth + 1, allow_temporal))
    if kind is list or kind is tuple:
        _check_container(kind, len(value), path, depth)
        inner = depth + 1
        return tuple(
            freeze(item, f"{path}[{i}]", allow_temporal, inner) for i, item in enumerate(value)
        )
    if allow_temporal and isinstance(value, TEMPORAL_TYPES):
        return value
    raise InvalidValueError(f"{kind.__name__} {_NOT_JSON_LIKE}", path)


def _check_container(kind: type, size: int, path: str, depth: int) -> None:
    if size > MAX_ITEMS:
        raise InvalidValueError(f"{kind.__name__} with more than {MAX_ITEMS} entries", path)
    if size and depth >= MAX_DEPTH:
        raise InvalidValueError(
            f"nested deeper than {MAX_DEPTH} levels from the root", path or "<root>"
        )


def _freeze_items(
    items: Iterable[tuple[object, Any]], path: str, depth: int, allow_temporal: bool
) -> dict[str, Any]:
    frozen: dict[str, Any] = {}
    for key, item in items:
        check_key(key, path)
        assert isinstance(key, str)
        child = f"{path}.{key}" if path else key
        if len(child) > MAX_PATH_LENGTH:
            raise InvalidValueError(
                f"key {_head(key)} makes a path longer than {MAX_PATH_LENGTH} characters",
                path or "<root>",
            )
        frozen[key] = freeze(item, child, allow_temporal, depth)
    return frozen


def check_key(key: object, path: str) -> None:
    """Reject mapping keys that could not be addressed as one path segment.

    A key that is not a ``str`` is named by its type only: it is part of the value, which
    may be a secret (and a huge int could not even be shown).
    """
    where = path or "<root>"
    if not isinstance(key, str):
        raise InvalidValueError(f"mapping key of type {type(key).__name__} is not a str", where)
    if not key or "." in key or not GLOB_CHARS.isdisjoint(key):
        raise InvalidValueError(
            f"mapping key {_head(key)} cannot be a path segment (empty, '.', or glob character)",
            where,
        )


def _head(key: str, limit: int = 40) -> str:
    """A key as quoted in messages: its repr, cut short so a huge key stays a short line."""
    return repr(key) if len(key) <= limit else repr(key[:limit]) + "..."


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


_INT = re.compile(r"[+-]?(0|[1-9]\d*)")  # "007" and "0755" stay strings
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")


def coerce(text: str, *, structured: bool = True) -> Any:
    """Text from the environment or Consul as a value: ``true``/``false`` → bool, integers,
    floats, and (if ``structured``) JSON arrays and objects; else the string.

    Numbers with leading zeros (zip codes, file modes) stay strings, as in JSON.

    Raises ``ValueError`` for text that starts like JSON (``[`` or ``{``) but does not parse
    (or nests too deeply to): that is almost always a typo that should be reported, not
    silently kept as a string; and for an integer too long to convert (its message gives
    the digit count, not the digits).
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
        except RecursionError:
            raise ValueError("looks like JSON but is nested too deeply to parse") from None
    return text
