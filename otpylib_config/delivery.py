"""The queue from the manager to the notifier: published changes on their way to events.

It lives in the table, not in the notifier's mailbox, so that it outlives a crash of either
process: a change the manager published is delivered even if the notifier dies before it
has turned it into events. It has two ends, both on the one event loop, and no method
awaits, so each call is atomic with respect to the other end:

* the **manager** (the producer) calls :meth:`Delivery.hand_over` when it publishes, and
  sends the notifier a ``Wake`` if it returns ``True``;
* the **notifier** (the consumer) calls everything else: it starts deliveries for what the
  manager expanded, yields, then expands the rest of the queued changes into each
  subscription's pending events a slice at a time, starting deliveries after each slice,
  and counts what its callbacks did.

The manager expands a change itself, whole leaves only, up to ``INLINE_WORK`` units
(:meth:`Subscriptions.expand`: a leaf looked up, a subscription matched), so that a put no
subscription matches costs no message; the first leaf that does not fit, the rest of the
change, and every change behind one still queued (order matters) wait for the notifier. So
a put into a path 10,000 subscriptions watch costs the manager a lookup in the pattern
index and one message.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field

from otpylib_config.subscriptions import Change, Subscription, Subscriptions

INLINE_WORK = 16
"""How much of a change the manager itself turns into events (leaves looked up plus
subscriptions matched) before it leaves the rest to the notifier: a few microseconds."""
SLICE_WORK = 2048
"""How much the notifier expands before it yields to the loop: about a millisecond."""


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
        """Queue ``change``'s events (the manager's end): the whole leaves that fit in
        ``INLINE_WORK`` now, unless earlier changes are still queued, which must go first.
        Returns whether the notifier must be woken."""
        if not self.changes:
            touched = subscriptions.expand(change, INLINE_WORK, whole=True)
            self.ready.update(sub for sub in touched if sub.pending and sub.task is None)
        if change.cursor < len(change.changed):
            self.changes.append(change)
        if (self.ready or self.changes) and not self.wake_sent:
            self.wake_sent = True
            return True
        return False

    def expand(self, subscriptions: Subscriptions, work: int = SLICE_WORK) -> bool:
        """Expand ``work`` units of the oldest queued change (the notifier's end); returns
        whether changes remain queued."""
        if not self.changes:
            return False
        change = self.changes[0]
        touched = subscriptions.expand(change, work)
        self.ready.update(sub for sub in touched if sub.pending and sub.task is None)
        if change.cursor >= len(change.changed):
            self.changes.popleft()
        return bool(self.changes)
