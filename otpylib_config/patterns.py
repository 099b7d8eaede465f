"""Glob patterns over paths, indexed in a trie of segments
(docs/architecture.md, Paths, patterns and events).

``*`` matches exactly one segment, ``**`` zero or more, and ``?``, ``[abc]`` or ``tc_*`` work
inside one segment (fnmatch rules, case-sensitive). Matching a changed leaf walks the trie
once; patterns whose literal segments differ from the leaf's are never looked at, so the
cost of a change does not grow with the number of subscriptions it does not concern.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from otpylib_config.paths import GLOB_CHARS, Path

T = TypeVar("T", bound=Hashable)

GLOBSTAR = "**"


class _Node(Generic[T]):
    __slots__ = ("globs", "globstar", "items", "literal", "loops")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node[T]] = {}
        self.globs: dict[str, _Node[T]] = {}
        self.globstar: _Node[T] | None = None
        self.items: set[T] = set()
        self.loops = loops  # a ``**`` node consumes any number of segments

    def is_empty(self) -> bool:
        return not (self.literal or self.globs or self.globstar or self.items)


class PatternIndex(Generic[T]):
    """Maps patterns to items and answers: which items match which prefix of a path?"""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: Path, item: T) -> None:
        node = self._root
        for segment in pattern:
            node = _child(node, segment, create=True)  # type: ignore[assignment]
        if item not in node.items:
            node.items.add(item)
            self._count += 1

    def remove(self, pattern: Path, item: T) -> None:
        trail = [self._root]
        for segment in pattern:
            child = _child(trail[-1], segment, create=False)
            if child is None:
                return
            trail.append(child)
        if item not in trail[-1].items:
            return
        trail[-1].items.discard(item)
        self._count -= 1
        _prune(trail, pattern)

    def deepest_matches(self, path: Path) -> dict[T, int]:
        """For each item matching an ancestor-or-self of ``path``: the deepest such length."""
        found: dict[T, int] = {}
        states = _closure([self._root])
        for depth, segment in enumerate(path, start=1):
            states = _closure(_step(states, segment))
            if not states:
                break
            for node in states:
                for item in node.items:
                    found[item] = depth
        return found


def _child(node: _Node[T], segment: str, create: bool) -> _Node[T] | None:
    if segment == GLOBSTAR:
        if node.globstar is None and create:
            node.globstar = _Node(loops=True)
        return node.globstar
    table = node.globs if GLOB_CHARS.intersection(segment) else node.literal
    child = table.get(segment)
    if child is None and create:
        child = table[segment] = _Node()
    return child


def _prune(trail: list[_Node[T]], pattern: Path) -> None:
    for depth in range(len(pattern), 0, -1):
        node, parent, segment = trail[depth], trail[depth - 1], pattern[depth - 1]
        if not node.is_empty():
            return
        if segment == GLOBSTAR:
            parent.globstar = None
        elif GLOB_CHARS.intersection(segment):
            del parent.globs[segment]
        else:
            del parent.literal[segment]


def _step(states: Iterable[_Node[T]], segment: str) -> list[_Node[T]]:
    nxt: list[_Node[T]] = []
    for node in states:
        child = node.literal.get(segment)
        if child is not None:
            nxt.append(child)
        for glob, glob_child in node.globs.items():
            if glob == "*" or fnmatchcase(segment, glob):
                nxt.append(glob_child)
        if node.loops:
            nxt.append(node)
    return nxt


def _closure(states: list[_Node[T]]) -> list[_Node[T]]:
    """Add the ``**`` children reachable without consuming a segment; no duplicates."""
    seen: dict[int, _Node[T]] = {}
    pending = list(states)
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if node.globstar is not None:
            pending.append(node.globstar)
    return list(seen.values())
