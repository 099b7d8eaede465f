"""``explain``: which layer gave a value, from where, and what it overrides (DESIGN §6).

Read from the table without a message: the layers kept there are exactly the ones the
published snapshot was built from. Values are redacted like every other output.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otpylib_config.paths import Path, parse_path
from otpylib_config.redact import REDACTED
from otpylib_config.sources.runtime import Override
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
    found = [c for c in [_runtime(table, segments)] if c is not None]
    for state in reversed(list(table.sources.values())):
        value = get_in(state.layer, segments)
        if value is not MISSING:
            shown = REDACTED if state.source.secret else table.redactor.value(path, value)
            found.append(Contribution(state.source.name, state.source.origin(segments), shown))
    value = None if effective is MISSING else table.redactor.value(path, effective)
    return Explanation(path, value, tuple(found))


def _runtime(table: ConfigTable, segments: Path) -> Contribution | None:
    node: Any = table.overrides.root
    for depth, segment in enumerate(segments, start=1):
        if not isinstance(node, Section):
            return None
        node = node.get(segment, MISSING)
        if isinstance(node, Override):
            value = get_in(node.value, segments[depth:]) if depth < len(segments) else node.value
            if value is MISSING:
                return None
            when = datetime.datetime.fromtimestamp(node.at, datetime.UTC).isoformat()
            origin = f"runtime put of {'.'.join(segments[:depth])} at {when}"
            return Contribution("runtime", origin, table.redactor.value(".".join(segments), value))
        if node is MISSING:
            return None
    return Contribution("runtime", "runtime puts below this path", None)
