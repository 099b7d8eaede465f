"""The queue from the manager to the notifier: published changes on their way to events.

It lives in the table, not in the notifier's mailbox, so that it outlives a crash of either
process: a change the manager published is delivered even if the notifier dies before it
has turned it into events. It has two ends, both on the one event loop, and no method
awaits, so each call is atomic with respect to the other end:

* the **manager** (the producer) calls :meth:`Delivery.hand_over` when it publishes, and
  sends the notifier a ``Wake`` if it returns ``True``;
* the **notifier** (the consumer) calls everything else: it expands queued changes into
  each subscription's pending events a slice at a time, starts one delivery task per ready
  subscription, and counts what its callbacks did.

A change that concerns few subscriptions is expanded by the manager itself, for at most
``INLINE_EXPAND_S``, so that a put no subscription matches costs no message; the rest, and
every change behind one still being expanded (order matters), waits for the notifier.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from otpylib_config.subscriptions import Change, Subscription, Subscriptions

INLINE_EXPAND_S = 0.001
"""How long the manager itself turns a change into events before it leaves the rest to the
notifier (the clock is read every 64 leaves, so it may overrun by that many)."""


@dataclass(eq=False)
class Delivery:
    changes: deque[Change] = field(default_factory=deque)
    """Published changes not yet fully expanded into events, oldest first; each keeps a
    cursor, so a notifier killed mid-way resumes where it was. Manager appends, notifier
    pops."""
    ready: set[Subscription] = field(default_factory=set)
    """Subscriptions with pending events and no delivery task. Written by both ends."""
    wake_sent: bool = False
    """A ``Wake`` is on its way: no need for another. Manager sets, notifier clears."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """The notifier's running delivery tasks (for ``shutdown``). Notifier only."""
    counters: Counter[str] = field(default_factory=Counter)
    """``events_delivered``, ``subscriber_errors`` (:mod:`otpylib_config.counters`).
    Notifier only."""

    def hand_over(self, subscriptions: Subscriptions, change: Change) -> bool:
        """Queue ``change``'s events (the manager's end): as much as fits in
        ``INLINE_EXPAND_S`` now, unless earlier changes are still queued, which must go
        first. Returns whether the notifier must be woken."""
        if not self.changes:
            touched = subscriptions.expand(change, time.monotonic() + INLINE_EXPAND_S)
            self.ready.update(sub for sub in touched if sub.pending and sub.task is None)
        if change.cursor < len(change.changed):
            self.changes.append(change)
        if (self.ready or self.changes) and not self.wake_sent:
            self.wake_sent = True
            return True
        return False

    def expand(self, subscriptions: Subscriptions, slice_s: float) -> bool:
        """Expand the oldest queued change for up to ``slice_s`` (the notifier's end);
        returns whether changes remain queued."""
        if not self.changes:
            return False
        change = self.changes[0]
        touched = subscriptions.expand(change, time.monotonic() + slice_s)
        self.ready.update(sub for sub in touched if sub.pending and sub.task is None)
        if change.cursor >= len(change.changed):
            self.changes.popleft()
        return bool(self.changes)
