"""The delivery queue between the manager and the notifier, as a specification: the
manager's end (``hand_over``) and the notifier's (``expand``), and where its counters go."""

from __future__ import annotations

from typing import Any

from otpylib_config import Config, DefaultsSource
from otpylib_config.client import current_table
from otpylib_config.delivery import INLINE_WORK, Delivery
from otpylib_config.paths import Path, parse_pattern
from otpylib_config.subscriptions import Change, Subscription, Subscriptions
from otpylib_config.values import freeze

from .conftest import Recorder, StartTree, eventually


def subscriptions(*patterns: str) -> tuple[Subscriptions, list[Subscription]]:
    subs = Subscriptions()
    made = [
        Subscription(i, pattern, parse_pattern(pattern), lambda *_: None)
        for i, pattern in enumerate(patterns, start=1)
    ]
    for sub in made:
        subs.add(sub)
    return subs, made


def change(version: int, old: dict[str, Any], new: dict[str, Any]) -> Change:
    """A change of every top-level key that differs between ``old`` and ``new``."""
    keys = [k for k in {**old, **new} if old.get(k) != new.get(k)]
    leaves: list[Path] = [(k,) for k in keys]
    return Change(version, leaves, freeze(old), freeze(new))


def wide_change(version: int, leaves: int) -> Change:
    """A change of ``leaves`` leaves ``k0``, ``k1``, ... from 0 to 1."""
    old = {f"k{i}": 0 for i in range(leaves)}
    return change(version, old, {k: 1 for k in old})


# -- the manager's end --------------------------------------------------------------------


def test_hand_over_expands_inline_when_the_queue_is_empty() -> None:
    subs, (sub,) = subscriptions("a")
    delivery = Delivery()

    wake = delivery.hand_over(subs, change(2, {"a": 1}, {"a": 2}))

    assert wake is True
    assert dict(sub.pending) == {"a": (1, 2)}
    assert not delivery.changes  # nothing left for the notifier to expand
    assert delivery.ready == {sub} and delivery.wake_sent


def test_hand_over_asks_for_one_wake_until_the_notifier_takes_it() -> None:
    subs, (sub,) = subscriptions("a")
    delivery = Delivery()

    wakes = [delivery.hand_over(subs, change(v, {"a": v - 1}, {"a": v})) for v in (2, 3, 4)]

    assert wakes == [True, False, False]
    assert dict(sub.pending) == {"a": (1, 4)}  # expanded inline each time, coalesced
    delivery.wake_sent = False  # what the notifier does when it takes the Wake
    assert delivery.hand_over(subs, change(5, {"a": 4}, {"a": 5})) is True


def test_hand_over_of_a_change_nobody_watches_asks_for_no_wake() -> None:
    subs, (sub,) = subscriptions("other")
    delivery = Delivery()

    assert delivery.hand_over(subs, change(2, {"a": 1}, {"a": 2})) is False
    assert not delivery.changes and not delivery.ready and not delivery.wake_sent
    assert not sub.pending


def test_hand_over_leaves_a_leaf_that_does_not_fit_its_budget_to_the_notifier() -> None:
    subs, made = subscriptions(*["a"] * INLINE_WORK, "b")
    delivery = Delivery()
    both = change(2, {"a": 1, "b": 1}, {"a": 2, "b": 2})
    both.changed.reverse()  # "b" first: one subscription, it fits

    assert delivery.hand_over(subs, both) is True

    assert dict(made[-1].pending) == {"b": (1, 2)}  # the leaf that fitted, expanded inline
    assert not any(sub.pending for sub in made[:-1])  # "a" has 16: none of it inline
    assert list(delivery.changes) == [both] and both.cursor == 1 and both.matches is None
    assert delivery.expand(subs) is False
    assert all(dict(sub.pending) == {"a": (1, 2)} for sub in made[:-1])  # each exactly once


def test_hand_over_of_a_change_that_only_unwatched_leaves_make_asks_for_no_wake() -> None:
    subs, made = subscriptions(*["other"] * (INLINE_WORK * 4))
    delivery = Delivery()

    assert delivery.hand_over(subs, wide_change(2, INLINE_WORK - 1)) is False

    assert not delivery.changes and not any(sub.pending for sub in made)


def test_a_change_behind_a_queued_one_is_queued_not_expanded() -> None:
    subs, (sub,) = subscriptions("*")
    delivery = Delivery()
    first = change(2, {"a": 1}, {"a": 2})
    delivery.changes.append(first)  # still waiting for the notifier
    second = change(3, {"b": 1}, {"b": 2})

    assert delivery.hand_over(subs, second) is True

    assert list(delivery.changes) == [first, second]
    assert second.cursor == 0 and not sub.pending  # it must not overtake the first
    assert delivery.expand(subs) is True
    assert delivery.expand(subs) is False
    assert list(sub.pending) == ["a", "b"]  # in the order they were published


# -- the notifier's end -------------------------------------------------------------------


def test_expand_of_an_empty_queue_does_nothing() -> None:
    subs, (sub,) = subscriptions("*")
    delivery = Delivery()

    assert delivery.expand(subs) is False
    assert not sub.pending and not delivery.ready


def test_expand_pops_a_change_once_its_cursor_reaches_the_end() -> None:
    subs, (sub,) = subscriptions("*")
    delivery = Delivery()
    wide = wide_change(2, 130)
    delivery.changes.append(wide)

    progress = []
    for _ in range(10):  # bounded: 130 leaves of 2 units each (the lookup, the match)
        more = delivery.expand(subs, 100)
        progress.append((wide.cursor, more, len(delivery.changes)))
        if not more:
            break

    assert progress == [(50, True, 1), (100, True, 1), (130, False, 0)]
    assert len(sub.pending) == 130
    assert delivery.ready == {sub}


def test_expand_resumes_from_the_cursor() -> None:
    subs, (sub,) = subscriptions("*")
    delivery = Delivery()
    resumed = change(2, {"a": 1, "b": 1, "c": 1}, {"a": 2, "b": 2, "c": 2})
    resumed.cursor = 1  # a notifier killed after it had queued "a"'s event
    delivery.changes.append(resumed)

    assert delivery.expand(subs) is False

    assert list(sub.pending) == ["b", "c"]  # "a" is neither lost nor repeated here
    assert not delivery.changes


def test_expand_resumes_inside_a_leaf_where_its_last_slice_stopped() -> None:
    subs, made = subscriptions(*["a"] * 10)
    delivery = Delivery()
    one = change(2, {"a": 1}, {"a": 2})
    delivery.changes.append(one)

    assert delivery.expand(subs, 4) is True  # the lookup and 3 subscriptions
    assert (one.cursor, one.match_cursor) == (0, 3)
    assert sum(bool(sub.pending) for sub in made) == 3
    assert delivery.expand(subs, 4) is True
    assert delivery.expand(subs, 4) is False
    assert all(dict(sub.pending) == {"a": (1, 2)} for sub in made)


def test_the_event_of_a_node_is_built_once_for_every_subscription_that_gets_it() -> None:
    subs, made = subscriptions(*["s"] * 5)
    delivery = Delivery()
    delivery.changes.append(change(2, {"s": {"x": 1}}, {"s": {"x": 2}}))

    delivery.expand(subs)

    events = [next(iter(sub.pending.items())) for sub in made]
    assert all(event == ("s", (events[0][1])) for event in events)
    (first_old, first_new), *rest = [pair for _, pair in events]
    assert all(old is first_old and new is first_new for old, new in rest)


def test_expand_does_not_mark_a_subscription_with_a_running_task_ready() -> None:
    subs, (busy, idle) = subscriptions("a", "b")
    busy.task = object()  # type: ignore[assignment]  # its delivery task picks the events up
    delivery = Delivery()
    delivery.changes.append(change(2, {"a": 1, "b": 1}, {"a": 2, "b": 2}))

    delivery.expand(subs)

    assert busy.pending and idle.pending
    assert delivery.ready == {idle}


# -- counters -----------------------------------------------------------------------------


async def test_the_notifier_counts_in_delivery_counters_and_status_shows_them(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 0, "b": 0})])
    table = current_table()
    recorder = Recorder()

    def broken(path: str, old: Any, new: Any) -> None:
        raise RuntimeError("subscriber bug")

    await Config.subscribe("a", recorder)
    await Config.subscribe("b", broken)
    await Config.put("a", 1)
    await Config.put("b", 1)

    await eventually(lambda: table.delivery.counters["subscriber_errors"] == 1)
    await eventually(lambda: table.delivery.counters["events_delivered"] == 1)
    assert recorder.events == [("a", 0, 1)]
    assert table.delivery.counters["events_delivered"] == 1
    assert "events_delivered" not in table.counters  # the manager's Counter is its own
    assert "subscriber_errors" not in table.counters
    counters = (await Config.status()).counters
    assert counters["events_delivered"] == 1 and counters["subscriber_errors"] == 1
    assert counters["puts"] == 2  # the manager's, in the same mapping
