"""Subscriptions: which changes each subscriber gets, and its queue of pending events.

Matching: for each changed leaf, a subscription gets one event for the deepest
ancestor-or-self of the leaf that its pattern matches, deduplicated per node, with the
whole old and new value at that node. Pending events are coalesced per path (first
``old``, last ``new``; dropped if they cancel out), so a slow subscriber holds at most one
event per path it watches, however many changes arrive.

The manager turns at most ``INLINE_WORK`` units of a published :class:`Change` into events
itself (``delivery.py``) and leaves the rest to the notifier, which goes on with
:meth:`Subscriptions.expand` a slice at a time, so that neither a change of 200,000 leaves nor
one leaf that 10,000 subscriptions watch holds the event loop (or the manager) for long, while
a small change that concerns nobody costs no message. A change's cursors record how far it
got (which leaf, and which of that leaf's matching subscriptions), so a notifier restarted
mid-way resumes without losing or repeating an event. The event for one node is the same for
every subscription that gets it, so it is built once per change.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from otpylib_config.paths import Path
from otpylib_config.patterns import PatternIndex
from otpylib_config.tree import value_at
from otpylib_config.values import Section, same

Callback = Callable[[str, Any, Any], Awaitable[None] | None]
Event = tuple[str, Any, Any]


@dataclass(eq=False)
class Subscription:
    """One ``subscribe`` call. Compared and hashed by identity."""

    id: int
    pattern: str
    segments: Path
    callback: Callback
    owner: Any = None  # the otpylib Pid that subscribed, if any
    pending: OrderedDict[str, tuple[Any, Any]] = field(default_factory=OrderedDict)
    """Events in delivery order; an ``OrderedDict`` so taking the first is O(1)."""
    task: asyncio.Task[None] | None = None
    active: bool = True
    since: int = 0  # the snapshot version when it was made: older changes are not its
    failures: int = 0  # callback failures not yet logged
    logged_at: float | None = None  # when a failure was last logged (monotonic)

    def enqueue(self, events: Iterable[Event]) -> None:
        for path, old, new in events:
            queued = self.pending.get(path)
            if queued is None:
                self.pending[path] = (old, new)
            elif same(queued[0], new):
                del self.pending[path]  # the changes cancelled out
            else:
                self.pending[path] = (queued[0], new)  # keeps its place in the queue

    def requeue(self, path: str, old: Any, new: Any) -> None:
        """Put back an event whose delivery was interrupted, first in line, folded with
        whatever arrived for ``path`` meanwhile (first ``old``, last ``new``)."""
        if not self.active:
            return
        queued = self.pending.pop(path, None)
        latest = new if queued is None else queued[1]
        if same(old, latest):
            return
        self.pending[path] = (old, latest)
        self.pending.move_to_end(path, last=False)


@dataclass(eq=False)
class Change:
    """One published change, waiting to be turned into events (see :meth:`Subscriptions.expand`)."""

    version: int
    changed: list[Path]
    old: Section
    new: Section
    cursor: int = 0  # leaves of ``changed`` already turned into events
    matches: list[tuple[Subscription, int]] | None = None
    """The subscriptions that match leaf ``cursor`` and their depth, while it is being
    expanded; ``match_cursor`` of them are done."""
    match_cursor: int = 0
    emitted: set[tuple[int, Path]] = field(default_factory=set)
    """``(subscription id, node)`` of section events already queued: a node above several
    changed leaves gets one event."""
    built: dict[Path, Event] = field(default_factory=dict)
    """The event of each node, built once for all the subscriptions that get it."""

    def event(self, node: Path) -> Event:
        event = self.built.get(node)
        if event is None:
            event = (".".join(node), value_at(self.old, node), value_at(self.new, node))
            self.built[node] = event
        return event


@dataclass(frozen=True)
class SubscriptionHandle:
    """What ``subscribe`` returns; pass it to ``unsubscribe``."""

    id: int
    pattern: str


class Subscriptions:
    """All subscriptions of one tree, indexed by pattern, id and owner."""

    def __init__(self) -> None:
        self.index: PatternIndex[Subscription] = PatternIndex()
        self.by_id: dict[int, Subscription] = {}
        self.by_owner: dict[Any, dict[int, Subscription]] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, sub: Subscription) -> bool:
        """Add ``sub``; ``False`` if its id is already there (a retried request)."""
        if sub.id in self.by_id:
            return False
        self.by_id[sub.id] = sub
        self.index.add(sub.segments, sub)
        if sub.owner is not None:
            self.by_owner.setdefault(sub.owner, {})[sub.id] = sub
        return True

    def remove(self, sub_id: int) -> Subscription | None:
        sub = self.by_id.pop(sub_id, None)
        if sub is not None:
            self.index.remove(sub.segments, sub)
            owned = self.by_owner.get(sub.owner, {})
            owned.pop(sub.id, None)
            if not owned:
                self.by_owner.pop(sub.owner, None)
            sub.active = False
            sub.pending.clear()
        return sub

    def owned_by(self, owner: Any) -> list[Subscription]:
        return list(self.by_owner.get(owner, {}).values())

    def owners(self) -> set[Any]:
        return set(self.by_owner)

    def events(
        self, changed: Iterable[Path], old: Section, new: Section
    ) -> dict[Subscription, list[Event]]:
        """The events each matching subscription gets for one change, all at once."""
        change = Change(sys.maxsize, list(changed), old, new)
        found: dict[Subscription, list[Event]] = {}
        for leaf in change.changed:
            for sub, event in self._leaf_events(change, leaf):
                found.setdefault(sub, []).append(event)
        return found

    def expand(self, change: Change, budget: int, *, whole: bool = False) -> set[Subscription]:
        """Queue the events of ``change`` on the subscriptions it concerns, from where its
        cursors are, until done or ``budget`` units of work are spent (a leaf looked up in
        the index is one, a subscription it matches another). ``whole``: only whole leaves,
        stopping before one whose subscriptions do not fit (the manager's way: it never
        keeps a leaf's matches). Returns the subscriptions that got events; the cursors say
        how far it got."""
        touched: set[Subscription] = set()
        changed = change.changed
        while change.cursor < len(changed) and budget > 0:
            leaf = changed[change.cursor]
            if change.matches is None:
                groups = self.index.deepest_groups(leaf)
                budget -= 1
                if whole and sum(len(subs) for subs, _ in groups) > budget:
                    break
                change.matches = _flat(groups)
                change.match_cursor = 0
            matches, start = change.matches, change.match_cursor
            end = min(len(matches), start + budget)
            for sub, depth in matches[start:end]:
                event = self._event(change, sub, leaf, depth)
                if event is not None:
                    sub.enqueue((event,))
                    touched.add(sub)
            budget -= end - start
            change.match_cursor = end
            if end == len(matches):
                change.matches = None
                change.cursor += 1
        return touched

    def _leaf_events(self, change: Change, leaf: Path) -> Iterator[tuple[Subscription, Event]]:
        for sub, depth in _flat(self.index.deepest_groups(leaf)):
            event = self._event(change, sub, leaf, depth)
            if event is not None:
                yield sub, event

    @staticmethod
    def _event(change: Change, sub: Subscription, leaf: Path, depth: int) -> Event | None:
        """The event ``sub`` gets for ``leaf`` (its pattern matched ``depth`` segments of
        it), or ``None``: it was made after the change, or already has its section's."""
        if not sub.active or sub.since >= change.version:
            return None
        node = leaf[:depth]
        if depth < len(leaf):  # a section above the leaf: once per change
            if (sub.id, node) in change.emitted:
                return None
            change.emitted.add((sub.id, node))
        return change.event(node)


def _flat(groups: list[tuple[AbstractSet[Subscription], int]]) -> list[tuple[Subscription, int]]:
    """Each subscription of ``deepest_groups`` with its depth (each has one pattern, so
    one group)."""
    return [(sub, depth) for subs, depth in groups for sub in subs]
