"""The runtime overrides that ``Config.put``, ``put_many`` and ``Config.delete`` write.

A put *replaces* the whole node at its path (so ``get(p)`` returns exactly what was put,
even a section or ``None``) and a delete removes the override so that lower layers show
through again. Overrides never nest: a put below an existing override edits that override's
value, a put above existing overrides absorbs them. The structure is persistent (every
operation returns a new :class:`Overrides`), so the manager can validate a change before it
commits it and a crash can never leave it half-applied. Each :class:`Overrides` made by
``put`` or ``delete`` also says which operation made it from which predecessor
(:class:`Change`): that is what the journal of :mod:`otpylib_config.persistence` appends, so
persisting a put costs the size of that put, not of all the overrides.

Everything else reads the structure through two questions asked here, never by walking it
itself: which override covers a path (:meth:`Overrides.covering`: provenance, and put and
delete inside an override) and which overrides lie at or below one (:meth:`Overrides.items`:
provenance and the persisted snapshot).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from otpylib_config.paths import Path
from otpylib_config.tree import MISSING, get_in, remove_in, set_in
from otpylib_config.values import EMPTY, Section


@dataclass(frozen=True)
class Override:
    """One put: the value that replaces the node, and when it was made (for provenance)."""

    value: Any
    at: float = field(default_factory=time.time)


class Change(NamedTuple):
    """The put or delete that made an :class:`Overrides` from its predecessor.

    Replaying it (``put(path, value, at)`` or ``delete(path, at)``) on the predecessor gives
    the same overrides again, which is what restoring a journal does. ``parent`` is a weak
    reference, so that a chain of versions is never kept alive; it lets the journal check
    that it is appending to the state it holds.
    """

    path: Path
    value: Any  # what was put; None for a delete; the ``(path, value)`` pairs of a batch
    at: float
    deleted: bool
    parent: weakref.ref[Overrides]
    batch: bool = False  # ``put_many``: ``value`` holds every put, applied in order


@dataclass(frozen=True)
class Overrides:
    """A persistent tree of sections whose leaves are :class:`Override` markers."""

    root: Section = field(default_factory=lambda: EMPTY)
    change: Change | None = field(default=None, compare=False, repr=False)
    """How this version was made from the previous one; ``None`` if it was built directly."""

    def put(self, path: Path, value: Any, at: float | None = None) -> tuple[Overrides, Path]:
        """The new overrides, and the path whose effective value must be recomputed."""
        at = time.time() if at is None else at
        change = Change(path, value, at, False, weakref.ref(self))
        above = self.covering(path[:-1])
        if above is not None:
            holder, held = above
            rest = path[len(holder) :]
            inner = held.value
            base = inner if isinstance(inner, Section) else EMPTY
            replaced = Override(set_in(base, rest, value), at)
            return Overrides(set_in(self.root, holder, replaced), change), holder
        return Overrides(set_in(self.root, path, Override(value, at)), change), path

    def put_many(
        self, items: Sequence[tuple[Path, Any]], at: float | None = None
    ) -> tuple[Overrides, list[Path]]:
        """Every put of ``items`` in order, as ONE change (one journal record, so a crash
        keeps all of them or none), and the paths whose effective values must be
        recomputed."""
        at = time.time() if at is None else at
        overrides, roots = self, []
        for path, value in items:
            overrides, root = overrides.put(path, value, at)
            roots.append(root)
        change = Change((), tuple(items), at, False, weakref.ref(self), batch=True)
        return Overrides(overrides.root, change), roots

    def delete(self, path: Path, at: float | None = None) -> tuple[Overrides, Path] | None:
        """Remove the override at or inside ``path``; ``None`` if there was none.

        ``at``: when, which becomes the time of an override edited by a delete inside it.
        """
        at = time.time() if at is None else at
        change = Change(path, None, at, True, weakref.ref(self))
        above = self.covering(path[:-1])
        if above is not None:
            holder, held = above
            rest = path[len(holder) :]
            inner = held.value
            if not isinstance(inner, Section) or get_in(inner, rest) is MISSING:
                return None
            edited = Override(remove_in(inner, rest), at)
            return Overrides(set_in(self.root, holder, edited), change), holder
        if get_in(self.root, path) is MISSING:
            return None
        root = remove_in(self.root, path)
        pruned = next(d for d in range(1, len(path) + 1) if get_in(root, path[:d]) is MISSING)
        return Overrides(root, change), path[:pruned]

    def apply(self, base: Any, path: Path = ()) -> Any:
        """The effective value at ``path``: ``base`` (the lower layers' value there) with
        every override at or below ``path`` laid over it."""
        node = get_in(self.root, path) if path else self.root
        return _apply(base, node)

    def covering(self, path: Path) -> tuple[Path, Override] | None:
        """The override that gives the value at ``path``: the one put at ``path`` itself or
        at one of its ancestors (overrides never nest, so there is at most one), with the
        path it was put at; ``None`` if the value there is not one put's."""
        node: Any = self.root
        for depth, segment in enumerate(path, start=1):
            node = node.get(segment, MISSING)
            if isinstance(node, Override):
                return path[:depth], node
            if not isinstance(node, Section):
                return None
        return None

    def items(self, path: Path = ()) -> Iterator[tuple[Path, Override]]:
        """Every override put at ``path`` or below it, with the path it was put at, in tree
        order (a section's keys in their order, depth first), as a snapshot lists them.
        An override *above* ``path`` is not below it: ask :meth:`covering` for that one.
        Iterative, as the tree may be deep and wide."""
        node = get_in(self.root, path) if path else self.root
        if isinstance(node, Override):
            yield path, node
        if not isinstance(node, Section):
            return
        stack: list[tuple[Path, Iterator[tuple[str, Any]]]] = [(path, iter(node.items()))]
        while stack:  # each section's children, resumed where a section inside it began
            prefix, children = stack[-1]
            for key, child in children:
                if isinstance(child, Override):
                    yield (*prefix, key), child
                else:
                    stack.append(((*prefix, key), iter(child.items())))
                    break
            else:
                stack.pop()


def _apply(base: Any, node: Any) -> Any:
    if node is MISSING or node is EMPTY:
        return base
    if isinstance(node, Override):
        return node.value
    merged = dict(base) if isinstance(base, Section) else {}
    for key, child in node.items():
        merged[key] = _apply(merged.get(key, MISSING), child)
    return Section(merged)
