"""Specification of otpylib_config.snapshot: the published immutable view and its read cache."""

from __future__ import annotations

import datetime

import pytest

from otpylib_config.errors import InvalidPathError
from otpylib_config.snapshot import Snapshot
from otpylib_config.tree import MISSING, diff, get_in, set_in
from otpylib_config.values import EMPTY, freeze

from .conftest import tree

BASE = {
    "database": {"url": "pg://a", "pool": {"size": 5, "overflow": 2}},
    "server": {"port": 80},
    "debug": False,
}


def warmed(snapshot: Snapshot, *paths: str) -> Snapshot:
    for path in paths:
        snapshot.lookup(path)
    return snapshot


def test_a_new_snapshot_is_empty_version_zero() -> None:
    snapshot = Snapshot()
    assert snapshot.tree == {}
    assert snapshot.version == 0
    assert snapshot.cache == {}
    assert snapshot.lookup("a") is MISSING


def test_lookup_returns_leaves_and_sections() -> None:
    snapshot = Snapshot(tree(BASE), version=1)
    assert snapshot.lookup("database.url") == "pg://a"
    assert snapshot.lookup("database.pool") == {"size": 5, "overflow": 2}
    assert snapshot.lookup("database") is snapshot.tree["database"]


def test_lookup_fills_the_cache_with_the_stored_object() -> None:
    snapshot = Snapshot(tree(BASE), version=1)
    value = snapshot.lookup("database.pool")
    assert snapshot.cache == {"database.pool": value}
    assert snapshot.cache["database.pool"] is snapshot.tree["database"]["pool"]


def test_lookup_of_a_missing_path_is_missing_and_not_cached() -> None:
    snapshot = Snapshot(tree(BASE), version=1)
    assert snapshot.lookup("database.nope") is MISSING
    assert snapshot.lookup("debug.deeper") is MISSING
    assert snapshot.cache == {}


def test_lookup_caches_none_values() -> None:
    snapshot = Snapshot(tree({"a": None}), version=1)
    assert snapshot.lookup("a") is None
    assert snapshot.cache == {"a": None}


@pytest.mark.parametrize("bad", ["", "a..b", "a.*", None])
def test_lookup_rejects_invalid_paths(bad) -> None:
    with pytest.raises(InvalidPathError):
        Snapshot(tree(BASE)).lookup(bad)


def test_successor_has_the_next_version_and_the_new_tree() -> None:
    old = Snapshot(tree(BASE), version=7)
    new_tree = set_in(old.tree, ("debug",), True)
    new = old.successor(new_tree, diff(old.tree, new_tree))
    assert new.version == 8
    assert new.tree is new_tree
    assert old.version == 7


def test_successor_looks_up_again_exactly_the_cached_ancestors_or_self_of_changed_leaves() -> None:
    old = warmed(
        Snapshot(tree(BASE), version=1),
        "database",
        "database.pool",
        "database.pool.size",
        "database.pool.overflow",
        "database.url",
        "server",
        "server.port",
        "debug",
    )
    new_tree = set_in(old.tree, ("database", "pool", "size"), 20)
    changed = diff(old.tree, new_tree)
    assert changed == [("database", "pool", "size")]

    old_cache = dict(old.cache)
    new = old.successor(new_tree, changed)

    assert set(new.cache) == set(old_cache)  # every entry kept
    unchanged = {"database.pool.overflow", "database.url", "server", "server.port", "debug"}
    for key in unchanged:
        assert new.cache[key] is old_cache[key]  # the very objects: nothing walked again
    for key in {"database", "database.pool", "database.pool.size"}:  # the changed nodes
        assert new.cache[key] is get_in(new_tree, tuple(key.split(".")))  # looked up anew
    assert new.cache["database.pool.size"] == 20


def test_successor_serves_new_values_after_invalidation() -> None:
    old = warmed(Snapshot(tree(BASE), version=1), "database.pool", "database.pool.size")
    new_tree = set_in(old.tree, ("database", "pool", "size"), 20)
    new = old.successor(new_tree, diff(old.tree, new_tree))
    assert new.lookup("database.pool.size") == 20
    assert new.lookup("database.pool") == {"size": 20, "overflow": 2}


def test_successor_drops_the_cache_of_a_replaced_sections_old_leaves() -> None:
    old = warmed(Snapshot(tree(BASE), version=1), "database.pool.size", "database.pool", "debug")
    new_tree = set_in(old.tree, ("database", "pool"), "disabled")
    new = old.successor(new_tree, diff(old.tree, new_tree))
    assert new.cache == {"database.pool": "disabled", "debug": old.tree["debug"]}
    assert new.lookup("database.pool") == "disabled"
    assert new.lookup("database.pool.size") is MISSING


def test_successor_with_no_changes_keeps_the_whole_cache() -> None:
    old = warmed(Snapshot(tree(BASE), version=1), "database", "debug")
    new = old.successor(old.tree, [])
    assert set(new.cache) == {"database", "debug"}


def test_the_old_snapshot_hands_its_cache_over_and_still_answers_correctly() -> None:
    old = warmed(Snapshot(tree(BASE), version=1), "database.pool.size", "server.port")
    new_tree = set_in(old.tree, ("database", "pool", "size"), 20)
    new = old.successor(new_tree, diff(old.tree, new_tree))

    assert old.cache == {}
    assert old.lookup("database.pool.size") == 5
    assert old.lookup("server.port") == 80
    assert new.lookup("database.pool.size") == 20
    assert "database.pool.size" in old.cache  # re-filled, and separate from the new cache
    assert new.cache is not old.cache


def test_config_hash_is_equal_for_equal_trees() -> None:
    a = Snapshot(tree({"a": 1, "b": {"c": [1, 2]}}), version=1)
    b = Snapshot(tree({"b": {"c": [1, 2]}, "a": 1}), version=99)
    assert a.config_hash == b.config_hash
    assert len(a.config_hash) == 64
    int(a.config_hash, 16)


@pytest.mark.parametrize(
    "other",
    [
        {"a": 2, "b": {"c": [1, 2]}},
        {"a": 1, "b": {"c": [1, 2, 3]}},
        {"a": 1},
        {"a": True, "b": {"c": [1, 2]}},
        {"a": "1", "b": {"c": [1, 2]}},
        {"a": 1.5, "b": {"c": [1, 2]}},
        {"a": 1, "b": {"c": [1, 2]}, "d": None},
    ],
)
def test_config_hash_differs_for_different_trees(other) -> None:
    base = Snapshot(tree({"a": 1, "b": {"c": [1, 2]}}))
    assert base.config_hash != Snapshot(tree(other)).config_hash


def test_config_hash_of_the_empty_tree_is_stable() -> None:
    assert Snapshot().config_hash == Snapshot(EMPTY, version=3).config_hash


def test_config_hash_handles_temporal_values() -> None:
    when = datetime.datetime(2024, 1, 1, 12, 0)
    a = Snapshot(freeze({"t": when}, allow_temporal=True))
    b = Snapshot(freeze({"t": when + datetime.timedelta(seconds=1)}, allow_temporal=True))
    assert a.config_hash != b.config_hash
