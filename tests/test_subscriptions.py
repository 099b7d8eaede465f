"""Specification of otpylib_config.subscriptions: which events a change gives each pattern,
and how a subscriber's pending events coalesce.

An event has the granularity of its pattern: one per changed leaf, at the deepest
ancestor-or-self of the leaf that the pattern matches, with the whole old and new value
there (``None`` where absent). While a subscriber is busy its pending events coalesce per
path, first ``old`` and last ``new``, and changes that cancel out send nothing (README.md,
Paths, patterns and events; docs/architecture.md, Paths, patterns and events)."""

from __future__ import annotations

from itertools import count
from typing import Any

from otpylib_config.paths import parse_pattern
from otpylib_config.subscriptions import Subscription, Subscriptions
from otpylib_config.tree import diff, set_in

from .conftest import tree

_ids = count(1)


def sub(pattern: str, owner: Any = None, sub_id: int | None = None) -> Subscription:
    return Subscription(
        id=next(_ids) if sub_id is None else sub_id,
        pattern=pattern,
        segments=parse_pattern(pattern),
        callback=lambda path, old, new: None,
        owner=owner,
    )


def events_for(pattern: str, old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
    """The events one subscription to ``pattern`` gets when ``old`` becomes ``new``."""
    subs = Subscriptions()
    s = sub(pattern)
    subs.add(s)
    old_tree, new_tree = tree(old), tree(new)
    return subs.events(diff(old_tree, new_tree), old_tree, new_tree).get(s, [])


QUEUEMIZER_OLD = {
    "queuemizer": {
        "tc_rules": {
            "eth0": {"rate": "1mbit", "burst": "32k"},
            "eth1": {"rate": "1mbit", "burst": "32k"},
            "eth2": {"rate": "5mbit"},
        },
        "interval": 5,
    }
}


# -- granularity ----------------------------------------------------------------------------


def test_star_pattern_gets_one_event_per_interface_with_its_whole_rules() -> None:
    new = {
        "queuemizer": {
            "tc_rules": {
                "eth0": {"rate": "2mbit", "burst": "64k"},
                "eth1": {"rate": "3mbit", "burst": "32k"},
                "eth2": {"rate": "5mbit"},
            },
            "interval": 5,
        }
    }
    assert events_for("queuemizer.tc_rules.*", QUEUEMIZER_OLD, new) == [
        (
            "queuemizer.tc_rules.eth0",
            {"rate": "1mbit", "burst": "32k"},
            {"rate": "2mbit", "burst": "64k"},
        ),
        (
            "queuemizer.tc_rules.eth1",
            {"rate": "1mbit", "burst": "32k"},
            {"rate": "3mbit", "burst": "32k"},
        ),
    ]


def test_star_pattern_ignores_changes_outside_its_section() -> None:
    new = {"queuemizer": {**QUEUEMIZER_OLD["queuemizer"], "interval": 10}}
    assert events_for("queuemizer.tc_rules.*", QUEUEMIZER_OLD, new) == []


def test_a_new_interface_is_an_event_with_old_none() -> None:
    new = set_in(tree(QUEUEMIZER_OLD), ("queuemizer", "tc_rules", "eth3"), tree({"rate": "9mbit"}))
    assert events_for("queuemizer.tc_rules.*", QUEUEMIZER_OLD, new) == [
        ("queuemizer.tc_rules.eth3", None, {"rate": "9mbit"})
    ]


def test_a_removed_interface_is_an_event_with_new_none() -> None:
    new = {
        "queuemizer": {
            "tc_rules": {"eth0": {"rate": "1mbit", "burst": "32k"}, "eth2": {"rate": "5mbit"}},
            "interval": 5,
        }
    }
    assert events_for("queuemizer.tc_rules.*", QUEUEMIZER_OLD, new) == [
        ("queuemizer.tc_rules.eth1", {"rate": "1mbit", "burst": "32k"}, None)
    ]


def test_rate_limits_star_gets_the_changed_limit_section() -> None:
    old = {"rate_limits": {"api": {"rps": 100, "burst": 10}, "web": {"rps": 50}}}
    new = {"rate_limits": {"api": {"rps": 200, "burst": 10}, "web": {"rps": 50}}}
    assert events_for("rate_limits.*", old, new) == [
        ("rate_limits.api", {"rps": 100, "burst": 10}, {"rps": 200, "burst": 10})
    ]


def test_a_section_pattern_gets_the_whole_old_and_new_section() -> None:
    old = {"database": {"url": "pg://a", "pool_size": 5}, "debug": False}
    new = {"database": {"url": "pg://b", "pool_size": 10}, "debug": True}
    assert events_for("database", old, new) == [
        ("database", {"url": "pg://a", "pool_size": 5}, {"url": "pg://b", "pool_size": 10})
    ]


def test_a_section_pattern_gets_one_event_however_many_leaves_changed() -> None:
    old = {"database": {"a": 1, "b": 1, "c": {"d": 1, "e": 1}}}
    new = {"database": {"a": 2, "b": 2, "c": {"d": 2, "e": 2}, "f": 1}}
    [(path, _, _)] = events_for("database", old, new)
    assert path == "database"


def test_event_values_are_the_frozen_stored_objects() -> None:
    old_tree = tree({"database": {"url": "a"}})
    new_tree = tree({"database": {"url": "b"}})
    subs = Subscriptions()
    s = sub("database")
    subs.add(s)
    [(_, old, new)] = subs.events(diff(old_tree, new_tree), old_tree, new_tree)[s]
    assert old is old_tree["database"]
    assert new is new_tree["database"]


def test_globstar_gets_one_event_per_changed_leaf() -> None:
    old = {"a": {"x": 1, "b": {"y": 1, "z": 1}}, "other": 1}
    new = {"a": {"x": 2, "b": {"y": 2, "z": 1}, "n": 3}, "other": 2}
    assert events_for("a.**", old, new) == [("a.x", 1, 2), ("a.b.y", 1, 2), ("a.n", None, 3)]


def test_globstar_sees_a_section_replaced_by_a_scalar_on_both_sides() -> None:
    old = {"a": {"b": {"c": 1}}}
    new = {"a": {"b": 5}}
    assert sorted(events_for("a.**", old, new)) == [("a.b", {"c": 1}, 5), ("a.b.c", 1, None)]


def test_exact_leaf_pattern_gets_only_its_leaf() -> None:
    old = {"database": {"url": "a", "pool_size": 5}}
    assert events_for("database.url", old, {"database": {"url": "b", "pool_size": 5}}) == [
        ("database.url", "a", "b")
    ]
    assert events_for("database.url", old, {"database": {"url": "a", "pool_size": 6}}) == []


def test_a_leaf_pattern_below_a_section_replaced_by_a_scalar_sees_a_deletion() -> None:
    old = {"database": {"url": "a"}}
    new = {"database": "disabled"}
    assert events_for("database.url", old, new) == [("database.url", "a", None)]


def test_deleting_a_whole_section_is_an_event_with_new_none() -> None:
    old = {"database": {"url": "a", "pool": 5}, "debug": True}
    assert events_for("database", old, {"debug": True}) == [
        ("database", {"url": "a", "pool": 5}, None)
    ]
    assert events_for("database.url", old, {"debug": True}) == [("database.url", "a", None)]


def test_a_value_set_to_none_is_reported_with_new_none() -> None:
    assert events_for("a", {"a": 1}, {"a": None}) == [("a", 1, None)]


def test_type_change_is_an_event() -> None:
    assert events_for("flag", {"flag": 1}, {"flag": True}) == [("flag", 1, True)]


def test_several_changes_in_one_diff_reach_every_matching_subscription() -> None:
    old = tree({"database": {"url": "a"}, "rate_limits": {"api": 1, "web": 1}, "debug": False})
    new = tree({"database": {"url": "b"}, "rate_limits": {"api": 2, "web": 2}, "debug": True})
    subs = Subscriptions()
    db, limits, everything, unrelated = sub("database"), sub("rate_limits.*"), sub("**"), sub("x")
    for s in (db, limits, everything, unrelated):
        subs.add(s)

    events = subs.events(diff(old, new), old, new)

    assert events[db] == [("database", {"url": "a"}, {"url": "b"})]
    assert events[limits] == [("rate_limits.api", 1, 2), ("rate_limits.web", 1, 2)]
    assert events[everything] == [
        ("database.url", "a", "b"),
        ("rate_limits.api", 1, 2),
        ("rate_limits.web", 1, 2),
        ("debug", False, True),
    ]
    assert unrelated not in events


def test_events_are_deduplicated_per_node_in_order_of_first_change() -> None:
    old = {"r": {"b": {"x": 1, "y": 1}, "a": {"x": 1}}}
    new = {"r": {"b": {"x": 2, "y": 2}, "a": {"x": 2}}}
    assert [path for path, _, _ in events_for("r.*", old, new)] == ["r.b", "r.a"]


def test_no_changes_give_no_events() -> None:
    t = tree(QUEUEMIZER_OLD)
    subs = Subscriptions()
    subs.add(sub("**"))
    assert subs.events(diff(t, t), t, t) == {}


def test_no_subscriptions_give_no_events() -> None:
    old, new = tree({"a": 1}), tree({"a": 2})
    assert Subscriptions().events(diff(old, new), old, new) == {}


# -- Subscription.enqueue: coalescing -------------------------------------------------------


def test_enqueue_queues_events_by_path() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 1, 2), ("a.y", None, 3)])
    assert s.pending == {"a.x": (1, 2), "a.y": (None, 3)}


def test_enqueue_coalesces_per_path_keeping_first_old_and_last_new() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 1, 2)])
    s.enqueue([("a.x", 2, 3)])
    s.enqueue([("a.x", 3, 4)])
    assert s.pending == {"a.x": (1, 4)}


def test_a_change_and_its_reversal_cancel_out() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 1, 2), ("a.y", 1, 2)])
    s.enqueue([("a.x", 2, 1)])
    assert s.pending == {"a.y": (1, 2)}


def test_an_addition_and_a_deletion_cancel_out() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", None, {"k": 1})])
    s.enqueue([("a.x", {"k": 1}, None)])
    assert s.pending == {}


def test_a_reversal_to_a_value_of_another_type_does_not_cancel() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 1, 2)])
    s.enqueue([("a.x", 2, True)])
    assert s.pending == {"a.x": (1, True)}
    assert type(s.pending["a.x"][1]) is bool


def test_cancelled_sections_compare_deeply() -> None:
    s = sub("db")
    s.enqueue([("db", tree({"url": "a"}), tree({"url": "b"}))])
    s.enqueue([("db", tree({"url": "b"}), tree({"url": "a"}))])
    assert s.pending == {}


def test_pending_events_keep_the_order_of_their_paths() -> None:
    s = sub("a.*")
    s.enqueue([("a.c", 0, 1), ("a.a", 0, 1)])
    s.enqueue([("a.b", 0, 1)])
    assert list(s.pending) == ["a.c", "a.a", "a.b"]


def test_coalescing_keeps_the_order_of_first_occurrence() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 0, 1), ("a.y", 0, 1)])
    s.enqueue([("a.x", 1, 2)])
    assert list(s.pending.items()) == [("a.x", (0, 2)), ("a.y", (0, 1))]


def test_a_path_that_changes_again_after_cancelling_out_is_queued_anew() -> None:
    s = sub("a.*")
    s.enqueue([("a.x", 1, 2), ("a.y", 1, 2)])
    s.enqueue([("a.x", 2, 1)])
    s.enqueue([("a.x", 1, 5)])
    assert list(s.pending.items()) == [("a.y", (1, 2)), ("a.x", (1, 5))]


def test_pending_holds_at_most_one_event_per_path_however_many_changes() -> None:
    s = sub("a.*")
    for i in range(1000):
        s.enqueue([("a.x", i, i + 1), ("a.y", -i, -i - 1)])
    assert s.pending == {"a.x": (0, 1000), "a.y": (0, -1000)}


# -- Subscriptions: add, remove, owners -----------------------------------------------------


def test_add_indexes_the_subscription_and_is_idempotent_by_id() -> None:
    subs = Subscriptions()
    first = sub("a", sub_id=42)
    retried = sub("b", sub_id=42)
    assert subs.add(first) is True
    assert subs.add(retried) is False
    assert len(subs) == 1
    assert subs.by_id[42] is first
    old, new = tree({"a": 1, "b": 1}), tree({"a": 2, "b": 2})
    assert list(subs.events(diff(old, new), old, new)) == [first]


def test_remove_returns_the_subscription_deactivates_it_and_stops_its_events() -> None:
    subs = Subscriptions()
    s = sub("a", sub_id=7)
    subs.add(s)
    s.enqueue([("a", 1, 2)])
    assert subs.remove(7) is s
    assert s.active is False
    assert s.pending == {}
    assert len(subs) == 0
    old, new = tree({"a": 1}), tree({"a": 2})
    assert subs.events(diff(old, new), old, new) == {}


def test_remove_of_an_unknown_id_returns_none() -> None:
    subs = Subscriptions()
    subs.add(sub("a", sub_id=1))
    assert subs.remove(2) is None
    assert len(subs) == 1


def test_removing_one_of_two_subscriptions_on_a_pattern_keeps_the_other() -> None:
    subs = Subscriptions()
    s1, s2 = sub("a.*"), sub("a.*")
    subs.add(s1)
    subs.add(s2)
    subs.remove(s1.id)
    old, new = tree({"a": {"x": 1}}), tree({"a": {"x": 2}})
    assert list(subs.events(diff(old, new), old, new)) == [s2]


def test_owned_by_and_owners() -> None:
    subs = Subscriptions()
    a1, a2, b1, anonymous = (
        sub("x", owner="pid-a"),
        sub("y", owner="pid-a"),
        sub("x", owner="pid-b"),
        sub("x"),
    )
    for s in (a1, a2, b1, anonymous):
        subs.add(s)
    assert subs.owned_by("pid-a") == [a1, a2]
    assert subs.owned_by("pid-b") == [b1]
    assert subs.owned_by("pid-c") == []
    assert subs.owners() == {"pid-a", "pid-b"}
    subs.remove(b1.id)
    assert subs.owners() == {"pid-a"}


def test_subscriptions_compare_by_identity() -> None:
    s1, s2 = sub("a", sub_id=1), sub("a", sub_id=1)
    assert s1 != s2
    assert len({s1, s2}) == 2
