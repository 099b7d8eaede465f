"""The runtime layer that ``Config.put`` and ``Config.delete`` write.

A put *replaces* the whole node at its path (so ``get(p)`` returns exactly what was put,
even a section or ``None``) and a delete removes the override so that lower layers show
through again. Overrides never nest: a put below an existing override edits that override's
value, a put above existing overrides absorbs them. The structure is persistent (every
operation returns a new :class:`Overrides`), so the manager can validate a change before it
commits it and a crash can never leave it half-applied.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from otpylib_config.paths import Path
from otpylib_config.sources.base import Source
from otpylib_config.tree import MISSING, get_in, remove_in, set_in
from otpylib_config.values import EMPTY, Section


class RuntimeSource(Source):
    """Marks where runtime overrides go; always the highest priority, added if omitted.

    ``path``: persist the overrides to this JSON file so they survive a restart.
    """

    name = "runtime"
    required = False

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = path

    async def load(self) -> Section:
        raise NotImplementedError("the runtime layer is held by the manager, not loaded")


@dataclass(frozen=True)
class Override:
    """One put: the value that replaces the node, and when it was made (for provenance)."""

    value: Any
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Overrides:
    """A persistent tree of sections whose leaves are :class:`Override` markers."""

    root: Section = field(default_factory=lambda: EMPTY)

    def put(self, path: Path, value: Any, at: float | None = None) -> tuple[Overrides, Path]:
        """The new overrides, and the path whose effective value must be recomputed."""
        at = time.time() if at is None else at
        above = self._override_above(path)
        if above is not None:
            holder, rest = path[:above], path[above:]
            inner = get_in(self.root, holder).value
            base = inner if isinstance(inner, Section) else EMPTY
            replaced = Override(set_in(base, rest, value), at)
            return Overrides(set_in(self.root, holder, replaced)), holder
        return Overrides(set_in(self.root, path, Override(value, at))), path

    def delete(self, path: Path) -> tuple[Overrides, Path] | None:
        """Remove the override at or inside ``path``; ``None`` if there was none."""
        above = self._override_above(path)
        if above is not None:
            holder, rest = path[:above], path[above:]
            inner = get_in(self.root, holder).value
            if not isinstance(inner, Section) or get_in(inner, rest) is MISSING:
                return None
            return Overrides(set_in(self.root, holder, Override(remove_in(inner, rest)))), holder
        if get_in(self.root, path) is MISSING:
            return None
        root = remove_in(self.root, path)
        pruned = next(d for d in range(1, len(path) + 1) if get_in(root, path[:d]) is MISSING)
        return Overrides(root), path[:pruned]

    def apply(self, base: Any, path: Path = ()) -> Any:
        """The effective value at ``path``: ``base`` (the lower layers' value there) with
        every override at or below ``path`` laid over it."""
        node = get_in(self.root, path) if path else self.root
        return _apply(base, node)

    def _override_above(self, path: Path) -> int | None:
        """Length of the strict prefix of ``path`` that holds an override, if any."""
        node: Any = self.root
        for depth, segment in enumerate(path[:-1], start=1):
            node = node.get(segment, MISSING)
            if isinstance(node, Override):
                return depth
            if not isinstance(node, Section):
                return None
        return None


def _apply(base: Any, node: Any) -> Any:
    if node is MISSING or node is EMPTY:
        return base
    if isinstance(node, Override):
        return node.value
    merged = dict(base) if isinstance(base, Section) else {}
    for key, child in node.items():
        merged[key] = _apply(merged.get(key, MISSING), child)
    return Section(merged)
