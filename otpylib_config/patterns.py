"""The one glob matcher over dotted paths: subscriptions, glob validators and secret globs
all ask it (docs/matching.md; docs/architecture.md, Paths, patterns and events).

``*`` matches exactly one segment, ``**`` zero or more, and ``?``, ``[abc]`` or ``tc_*`` work
inside one segment (fnmatch rules, case-sensitive unless the index folds case). Patterns are
kept in a trie of segments, which is a state machine: matching walks it along a path (or down
a tree) once, carrying the set of trie nodes reached. Patterns whose literal segments differ
from the path's are never looked at, so the cost of a change does not grow with the number of
subscriptions it does not concern, and a pattern that matches a node in several ways (``a.**.**``)
still matches it once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from collections.abc import Set as AbstractSet
from fnmatch import fnmatchcase
from typing import Any, Generic, TypeVar

from otpylib_config.paths import GLOB_CHARS, Path
from otpylib_config.values import Section

T = TypeVar("T", bound=Hashable)

GLOBSTAR = "**"

MAX_MOVES = 4096
"""The most keys one state of a tree walk remembers where they lead."""


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


class _State(Generic[T]):
    """A state of a tree walk: the trie nodes that the same segments reach, with what the
    walk asks of them worked out once, and the moves made from it so far."""

    __slots__ = ("items", "literal", "live", "moves", "nodes", "open")

    def __init__(self, nodes: list[_Node[T]], fold_case: bool) -> None:
        self.nodes = nodes
        self.items = _items(nodes)
        self.literal = tuple(dict.fromkeys(key for node in nodes for key in node.literal))
        """The literal children's keys: all that a walk visits unless a node is open. Their
        order changes no item's order: with no glob or ``**`` on the way, each item has at
        most one node here, and one literal child of it leads on to the item."""
        self.open = any(node.globs or node.loops for node in nodes) or (
            fold_case and bool(self.literal)
        )
        """Any key may lead on (a glob, a ``**``, or literals to compare in lower case)."""
        self.live = self.open or bool(self.literal)
        self.moves: dict[str, _State[T] | None] = {}


class PatternIndex(Generic[T]):
    """Maps patterns to items and answers, for a path or for every node of a tree, which
    items' patterns match.

    ``fold_case``: compare lower-cased segments with lower-cased patterns, as secret globs
    are (``*PASSWORD*`` hides ``Db_Password``); paths and subscriptions are case-sensitive.
    """

    def __init__(self, *, fold_case: bool = False) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0
        self.fold_case = fold_case
        # the states of tree walks (nodes_in), made as walks need them; any change of the
        # trie drops them all
        self._start: _State[T] | None = None
        self._states: dict[frozenset[int], _State[T]] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: Path, item: T) -> None:
        self._forget_states()
        node = self._root
        for segment in self._folded(pattern):
            node = _child(node, segment, create=True)  # type: ignore[assignment]
        if item not in node.items:
            node.items.add(item)
            self._count += 1

    def remove(self, pattern: Path, item: T) -> None:
        self._forget_states()
        pattern = self._folded(pattern)
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
        """For each item matching an ancestor-or-self of ``path``: the deepest such length.

        What a subscription needs: one event at the deepest node its pattern matches. The
        root (length 0) is not an ancestor here: a changed leaf is never the whole tree.
        """
        found: dict[T, int] = {}
        for items, depth in self.deepest_groups(path):
            for item in items:
                found[item] = max(depth, found.get(item, 0))
        return found

    def deepest_groups(self, path: Path) -> list[tuple[AbstractSet[T], int]]:
        """:meth:`deepest_matches` by pattern: the items of each pattern that matches an
        ancestor-or-self of ``path``, with the deepest length it matches. Its cost grows
        with the patterns, not with the items: what a change's expansion needs to know how
        much work a leaf is before doing it. The sets are the index's own: read them now."""
        found: dict[_Node[T], int] = {}
        states = _closure([self._root])
        segments = self._folded(path) if self.fold_case else path
        for depth, segment in enumerate(segments, start=1):
            states = _closure(_step(states, segment))
            if not states:
                break
            for node in states:
                if node.items:
                    found[node] = depth
        return [(node.items, depth) for node, depth in found.items()]

    def matches(self, path: Path) -> bool:
        """Whether any pattern matches an ancestor-or-self of ``path``: below a matching
        section everything matches too, which is what makes a secret section hide all it
        holds. ``bool(deepest_matches(path))``, without finding the deepest."""
        if not self._count:
            return False
        states = (self._start or self._walk_start()).nodes
        for segment in map(str.lower, path) if self.fold_case else path:
            states = _closure(_step(states, segment))
            if not states:
                return False
            for node in states:
                if node.items:
                    return True
        return False

    def nodes_in(self, tree: Any) -> list[tuple[Path, Any, AbstractSet[T]]]:
        """Every node of ``tree`` whose whole path a pattern matches, the root ``()``
        included (only a pattern of ``**`` alone reaches it), with the items of the
        patterns that match it. Each item's nodes come in tree order: a node before the
        nodes inside it, keys in the order of their section. Lists are values, not
        sections: nothing inside one is a node.

        What a glob validator needs: each matching node once, with its own path. Only the
        keys that a pattern can still match are visited, so ``database.url`` costs its two
        lookups, whatever the size of the tree; and the moves are remembered (until the
        next ``add`` or ``remove``), so that validating a tree with the same keys again,
        as every put does, costs one dict lookup per key visited.
        """
        found: list[tuple[Path, Any, AbstractSet[T]]] = []
        self._visit((), tree, self._walk_start(), found)
        return found

    def _walk_start(self) -> _State[T]:
        if self._start is None:
            self._start = self._state(_closure([self._root]))
        return self._start

    def _visit(
        self,
        path: Path,
        value: Any,
        state: _State[T],
        found: list[tuple[Path, Any, AbstractSet[T]]],
    ) -> None:
        """Recursive, as values nest at most ``values.MAX_DEPTH`` deep; a plain call costs
        less than a generator or an explicit stack, and this runs for every key visited."""
        if state.items:
            found.append((path, value, state.items))
        if not state.live or not isinstance(value, Section):
            return
        moves = state.moves
        if state.open:
            for key, child in value.items():
                try:
                    move = moves[key]
                except KeyError:
                    move = self._move(state, key)
                if move is not None:
                    self._visit((*path, key), child, move, found)
        else:  # only literal children: their order does not matter (see _State.literal)
            for key in state.literal:
                if key in value:
                    try:
                        move = moves[key]
                    except KeyError:
                        move = self._move(state, key)
                    if move is not None:
                        self._visit((*path, key), value[key], move, found)

    def _move(self, state: _State[T], key: str) -> _State[T] | None:
        """Where ``key`` leads from ``state`` (``None``: nowhere), worked out the first
        time and remembered, unless the state already remembers :data:`MAX_MOVES` keys (keys
        come from data)."""
        nodes = _closure(_step(state.nodes, key.lower() if self.fold_case else key))
        move = self._state(nodes) if nodes else None
        if len(state.moves) < MAX_MOVES:
            state.moves[key] = move
        return move

    def _state(self, nodes: list[_Node[T]]) -> _State[T]:
        """The one state of these nodes, so that siblings reaching the same nodes (every
        key under a ``*``) share what each of them learns about the keys below."""
        key = frozenset(map(id, nodes))
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(nodes, self.fold_case)
        return state

    def _forget_states(self) -> None:
        if self._start is not None:
            self._start = None
            self._states.clear()

    def _folded(self, segments: Path) -> Path:
        return tuple(map(str.lower, segments)) if self.fold_case else segments


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
    """The states reached by consuming ``segment``: the one rule for a single segment (a
    literal is compared whole, ``*`` takes anything, other globs are fnmatch's)."""
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
    """Add the ``**`` children reachable without consuming a segment; no duplicates.

    ``states`` never holds one node twice (a trie node is reached from its one parent, or
    from itself if it loops), so without a ``**`` child there is nothing to add or remove:
    the list comes back as is, in the order the general case would give (reversed)."""
    for node in states:
        if node.globstar is not None:
            break
    else:
        return states if len(states) < 2 else states[::-1]
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


def _items(states: list[_Node[T]]) -> AbstractSet[T]:
    """The items of every accepting state; one state's own set when only it accepts."""
    accepting = [node.items for node in states if node.items]
    if len(accepting) == 1:
        return accepting[0]
    return set().union(*accepting)
