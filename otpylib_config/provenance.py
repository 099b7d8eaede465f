"""``explain``: which layer gave a value, from where, and what it overrides
(docs/architecture.md, Data flow).

Read from the table without a message: the layers kept there are exactly the ones the
published snapshot was built from. Values are redacted like every other output.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otpylib_config.errors import ValidationError
from otpylib_config.overrides import Overrides
from otpylib_config.paths import Path, parse_path
from otpylib_config.redact import REDACTED
from otpylib_config.schema_view import schema_origin
from otpylib_config.tree import MISSING, get_in
from otpylib_config.values import Section

if TYPE_CHECKING:
    from otpylib_config.table import ConfigTable


@dataclass(frozen=True)
class Contribution:
    """One layer's value at a path: ``source`` name, ``origin`` (file and key, variable, put)."""

    source: str
    origin: str
    value: Any


@dataclass(frozen=True)
class Explanation:
    """The effective value at ``path`` and every layer that has one, highest priority first.

    For a leaf the first contribution wins and the others are overridden; for a section the
    layers are merged, so each contributes the keys that no higher layer has.
    """

    path: str
    value: Any
    contributions: tuple[Contribution, ...]

    @property
    def source(self) -> str | None:
        return self.contributions[0].source if self.contributions else None

    @property
    def origin(self) -> str | None:
        return self.contributions[0].origin if self.contributions else None

    @property
    def overridden(self) -> tuple[Contribution, ...]:
        return self.contributions[1:]

    def __str__(self) -> str:
        if not self.contributions:
            return f"{self.path}: not set"
        lines = [f"{self.path} = {self.value!r}  from {self.origin}"]
        lines += [f"  overrides {c.origin}: {c.value!r}" for c in self.overridden]
        return "\n".join(lines)


def explain(table: ConfigTable, path: str) -> Explanation:
    segments = parse_path(path)
    assert table.snapshot is not None
    effective = get_in(table.snapshot.tree, segments)
    found = [c for c in [_runtime(table, segments, table.overrides)] if c is not None]
    for state in reversed(list(table.sources.values())):
        value = get_in(state.layer, segments)
        if value is not MISSING:
            shown = REDACTED if state.source.secret else table.redactor.value(path, value)
            found.append(Contribution(state.source.name, state.source.origin(segments), shown))
    value = None if effective is MISSING else table.redactor.value(path, effective)
    if not found and effective is not MISSING:  # no source has it: the schema gave it
        origin = schema_origin(table.snapshot.model, segments) or "schema"
        found.append(Contribution("schema", origin, value))
    return Explanation(path, value, tuple(found))


def origin_of(
    table: ConfigTable,
    segments: Path,
    loaded: Mapping[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> str | None:
    """Where the value at ``segments`` of a candidate configuration comes from: the
    highest layer that has it, among ``loaded`` (fresh layers) over the sources' last good
    ones, under ``overrides``; ``None`` if no layer has a value there."""
    runtime = _runtime(table, segments, overrides or table.overrides)
    if runtime is not None and runtime.value is not None:
        return runtime.origin
    fresh = loaded or {}
    for name, state in reversed(list(table.sources.items())):
        layer = fresh.get(name, state.layer)
        if get_in(layer, segments) is not MISSING:  # the source names its origin in that layer
            return state.source.origin(segments, layer if name in fresh else None)
    return None


def with_origins(
    error: ValidationError,
    table: ConfigTable,
    loaded: Mapping[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> ValidationError:
    """``error`` with each problem saying where its value came from, so an operator knows
    which file, variable or put to fix."""
    problems = []
    for path, message in error.problems:
        segments = tuple(s for s in _INDEX.sub("", path).split(".") if s)
        origin = origin_of(table, segments, loaded, overrides) if segments else None
        problems.append((path, f"{message} (from {origin})" if origin else message))
    return ValidationError(problems)


_INDEX = re.compile(r"\[\d+\]")


def _runtime(table: ConfigTable, segments: Path, overrides: Overrides) -> Contribution | None:
    """The runtime layer's part in the value at ``segments``: the put that gives it, or,
    with puts only below it, a contribution without a value of its own."""
    covering = overrides.covering(segments)
    if covering is None:
        if next(overrides.items(segments), None) is None:
            return None
        return Contribution("runtime", "runtime puts below this path", None)
    holder, override = covering
    value = get_in(override.value, segments[len(holder) :])  # the value itself at the holder
    if value is MISSING:
        return None
    when = datetime.datetime.fromtimestamp(override.at, datetime.UTC).isoformat()
    origin = f"runtime put of {'.'.join(holder)} at {when}"
    return Contribution("runtime", origin, table.redactor.value(".".join(segments), value))
