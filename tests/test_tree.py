"""Specification of otpylib_config.tree: pure operations on frozen configuration trees."""

from __future__ import annotations

from typing import Any

import pytest

from otpylib_config.tree import (
    MISSING,
    PathClash,
    build,
    diff,
    flatten,
    get_in,
    leaves,
    merge,
    remove_in,
    set_in,
)
from otpylib_config.values import EMPTY, Section

from .conftest import tree

# -- get_in ---------------------------------------------------------------------------------


def test_get_in_finds_leaves_and_sections() -> None:
    t = tree({"database": {"url": "pg://", "pool": {"size": 5}}})
    assert get_in(t, ("database", "url")) == "pg://"
    assert get_in(t, ("database", "pool")) == {"size": 5}
    assert get_in(t, ("database",)) is t["database"]


def test_get_in_of_empty_path_is_the_tree() -> None:
    t = tree({"a": 1})
    assert get_in(t, ()) is t


@pytest.mark.parametrize("path", [("nope",), ("a", "nope"), ("a", "b", "c"), ("s", "x")])
def test_get_in_returns_missing_for_absent_paths(path: tuple[str, ...]) -> None:
    t = tree({"a": {"b": 1}, "s": "text"})
    assert get_in(t, path) is MISSING


def test_none_is_a_value_not_missing() -> None:
    t = tree({"a": None})
    assert get_in(t, ("a",)) is None
    assert get_in(t, ("a", "b")) is MISSING
    assert repr(MISSING) == "MISSING"


# -- set_in ---------------------------------------------------------------------------------


def test_set_in_returns_a_new_tree_and_leaves_the_old_one_alone() -> None:
    old = tree({"a": {"b": 1}})
    new = set_in(old, ("a", "b"), 2)
    assert new == {"a": {"b": 2}}
    assert old == {"a": {"b": 1}}


def test_set_in_shares_every_untouched_subtree() -> None:
    old = tree({"a": {"b": 1, "keep": {"x": 1}}, "other": {"y": [1, 2]}})
    new = set_in(old, ("a", "b"), 2)
    assert new["other"] is old["other"]
    assert new["a"]["keep"] is old["a"]["keep"]
    assert new["a"] is not old["a"]
    assert type(new) is Section
    assert type(new["a"]) is Section


def test_set_in_creates_missing_sections() -> None:
    new = set_in(EMPTY, ("a", "b", "c"), 1)
    assert new == {"a": {"b": {"c": 1}}}
    assert type(new["a"]["b"]) is Section
    assert EMPTY == {}


def test_set_in_replaces_a_scalar_in_the_way_with_a_section() -> None:
    new = set_in(tree({"a": 5}), ("a", "b"), 1)
    assert new == {"a": {"b": 1}}


def test_set_in_can_replace_a_section_with_a_scalar() -> None:
    new = set_in(tree({"a": {"b": 1}}), ("a",), 7)
    assert new == {"a": 7}


def test_set_in_result_is_read_only() -> None:
    new = set_in(EMPTY, ("a",), 1)
    with pytest.raises(TypeError):
        new["a"] = 2


# -- remove_in ------------------------------------------------------------------------------


def test_remove_in_removes_a_leaf_and_shares_the_rest() -> None:
    old = tree({"a": {"b": 1, "c": 2}, "other": {"x": 1}})
    new = remove_in(old, ("a", "b"))
    assert new == {"a": {"c": 2}, "other": {"x": 1}}
    assert new["other"] is old["other"]
    assert old == {"a": {"b": 1, "c": 2}, "other": {"x": 1}}


def test_remove_in_removes_a_whole_section() -> None:
    assert remove_in(tree({"a": {"b": 1}, "c": 2}), ("a",)) == {"c": 2}


def test_remove_in_prunes_sections_left_empty() -> None:
    new = remove_in(tree({"a": {"b": {"c": 1}}, "d": 1}), ("a", "b", "c"))
    assert new == {"d": 1}


def test_remove_in_prunes_only_up_to_the_first_non_empty_ancestor() -> None:
    new = remove_in(tree({"a": {"b": {"c": 1}, "e": 2}}), ("a", "b", "c"))
    assert new == {"a": {"e": 2}}


@pytest.mark.parametrize("path", [("x",), ("a", "x"), ("a", "b", "c"), ("a", "b", "c", "d")])
def test_remove_in_of_an_absent_path_returns_the_same_tree(path: tuple[str, ...]) -> None:
    old = tree({"a": {"b": 1}})
    assert remove_in(old, path) is old


def test_removing_the_last_key_gives_an_empty_tree() -> None:
    assert remove_in(tree({"a": 1}), ("a",)) == {}


# -- merge ----------------------------------------------------------------------------------


def test_merge_higher_layer_wins_for_scalars() -> None:
    merged = merge([tree({"port": 80, "host": "a"}), tree({"port": 8080})])
    assert merged == {"port": 8080, "host": "a"}


def test_merge_last_layer_has_the_highest_priority() -> None:
    layers = [tree({"x": 1}), tree({"x": 2}), tree({"x": 3})]
    assert merge(layers) == {"x": 3}
    assert merge(list(reversed(layers))) == {"x": 1}


def test_merge_sections_merge_deeply() -> None:
    low = tree({"db": {"url": "pg://low", "pool": {"size": 5, "overflow": 2}}})
    high = tree({"db": {"pool": {"size": 20}}})
    assert merge([low, high]) == {"db": {"url": "pg://low", "pool": {"size": 20, "overflow": 2}}}


def test_merge_a_scalar_replaces_a_section() -> None:
    assert merge([tree({"db": {"url": "x"}}), tree({"db": "disabled"})]) == {"db": "disabled"}


def test_merge_a_section_replaces_a_scalar() -> None:
    assert merge([tree({"db": "disabled"}), tree({"db": {"url": "x"}})]) == {"db": {"url": "x"}}


def test_merge_a_list_replaces_a_list_rather_than_concatenating() -> None:
    assert merge([tree({"hosts": ["a", "b"]}), tree({"hosts": ["c"]})]) == {"hosts": ("c",)}


def test_merge_none_in_a_higher_layer_is_a_value_that_wins() -> None:
    assert merge([tree({"a": 1}), tree({"a": None})]) == {"a": None}


def test_merge_empty_layers_change_nothing_and_share_the_other_layer() -> None:
    only = tree({"a": {"b": 1}})
    assert merge([EMPTY, only, EMPTY]) is only
    assert merge([]) == {}
    assert merge([EMPTY, EMPTY]) == {}


def test_merge_an_empty_section_in_a_higher_layer_keeps_the_lower_section() -> None:
    assert merge([tree({"db": {"url": "x"}}), tree({"db": {}})]) == {"db": {"url": "x"}}


def test_merge_shares_subtrees_only_one_layer_has() -> None:
    low = tree({"a": {"x": 1}, "b": {"y": 1}})
    high = tree({"b": {"z": 2}, "c": {"w": 3}})
    merged = merge([low, high])
    assert merged["a"] is low["a"]
    assert merged["c"] is high["c"]
    assert type(merged["b"]) is Section


def test_merge_does_not_modify_its_layers() -> None:
    low, high = tree({"a": {"x": 1}}), tree({"a": {"y": 2}})
    merge([low, high])
    assert low == {"a": {"x": 1}}
    assert high == {"a": {"y": 2}}


# -- diff -----------------------------------------------------------------------------------


def test_diff_of_equal_trees_is_empty() -> None:
    assert diff(tree({"a": {"b": [1, 2]}}), tree({"a": {"b": [1, 2]}})) == []


def test_diff_of_the_same_object_is_empty() -> None:
    t = tree({"a": 1})
    assert diff(t, t) == []


def test_diff_reports_a_changed_leaf() -> None:
    assert diff(tree({"a": {"b": 1, "c": 1}}), tree({"a": {"b": 2, "c": 1}})) == [("a", "b")]


def test_diff_reports_an_added_leaf() -> None:
    assert diff(tree({"a": {"b": 1}}), tree({"a": {"b": 1, "c": 2}})) == [("a", "c")]


def test_diff_reports_every_leaf_of_an_added_section() -> None:
    assert diff(tree({"x": 1}), tree({"x": 1, "a": {"b": 1, "c": {"d": 2}}})) == [
        ("a", "b"),
        ("a", "c", "d"),
    ]


def test_diff_reports_a_deleted_leaf() -> None:
    assert diff(tree({"a": {"b": 1, "c": 2}}), tree({"a": {"c": 2}})) == [("a", "b")]


def test_diff_reports_every_leaf_of_a_deleted_section() -> None:
    assert diff(tree({"a": {"b": 1, "c": 2}, "x": 1}), tree({"x": 1})) == [("a", "b"), ("a", "c")]


def test_diff_section_replaced_by_scalar_reports_both_sides() -> None:
    old, new = tree({"a": {"b": 1, "c": 2}}), tree({"a": 5})
    assert sorted(diff(old, new)) == [("a",), ("a", "b"), ("a", "c")]


def test_diff_scalar_replaced_by_section_reports_both_sides() -> None:
    old, new = tree({"a": 5}), tree({"a": {"b": 1, "c": 2}})
    assert sorted(diff(old, new)) == [("a",), ("a", "b"), ("a", "c")]


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, True), (True, 1), (1, 1.0), (0, False), (1, "1"), (None, 0), ((1,), (True,))],
)
def test_diff_reports_a_type_change_as_a_change(old, new) -> None:
    assert diff(tree({"a": old}), tree({"a": new})) == [("a",)]


def test_diff_reports_a_list_change_at_the_list_path() -> None:
    assert diff(tree({"a": [1, 2]}), tree({"a": [1, 3]})) == [("a",)]


def test_diff_none_to_value_is_a_change() -> None:
    assert diff(tree({"a": None}), tree({"a": 0})) == [("a",)]


def test_diff_empty_section_appearing_is_a_change() -> None:
    assert diff(tree({"x": 1}), tree({"x": 1, "a": {}})) == [("a",)]


def test_diff_empty_section_disappearing_is_a_change() -> None:
    assert diff(tree({"x": 1, "a": {}}), tree({"x": 1})) == [("a",)]


def test_diff_empty_section_filling_up_reports_the_section_and_the_new_leaf() -> None:
    assert sorted(diff(tree({"a": {}}), tree({"a": {"b": 1}}))) == [("a",), ("a", "b")]


def test_diff_never_reports_the_root_path() -> None:
    assert diff(EMPTY, tree({"a": 1})) == [("a",)]
    assert diff(tree({"a": 1}), EMPTY) == [("a",)]
    assert diff(Section(), tree({"a": {"b": 1}})) == [("a", "b")]


def test_diff_skips_shared_subtrees_without_looking_inside() -> None:
    class Exploding(Section):
        """A section that fails if diff walks into it."""

        __slots__ = ()

        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("diff walked into a shared subtree")

        def keys(self):  # type: ignore[no-untyped-def]
            raise AssertionError("diff walked into a shared subtree")

        def items(self):  # type: ignore[no-untyped-def]
            raise AssertionError("diff walked into a shared subtree")

    shared = Exploding({"deep": 1})
    old = set_in(set_in(EMPTY, ("big",), shared), ("a",), 1)
    new = set_in(old, ("a",), 2)
    assert new["big"] is shared
    assert diff(old, new) == [("a",)]


def test_diff_uses_the_given_prefix() -> None:
    assert diff(tree({"b": 1}), tree({"b": 2}), ("a",)) == [("a", "b")]


def test_diff_lists_changes_in_tree_order() -> None:
    old = tree({"a": 1, "b": {"c": 1, "d": 1}, "e": 1})
    new = tree({"a": 2, "b": {"c": 2, "d": 1}, "e": 2})
    assert diff(old, new) == [("a",), ("b", "c"), ("e",)]


# -- leaves and flatten ---------------------------------------------------------------------


def test_leaves_yields_every_leaf_path() -> None:
    t = tree({"a": {"b": 1, "c": {"d": [1]}}, "e": {}})
    assert list(leaves(t, ())) == [("a", "b"), ("a", "c", "d"), ("e",)]


def test_leaves_of_a_scalar_is_its_prefix() -> None:
    assert list(leaves(5, ("x",))) == [("x",)]


def test_flatten_gives_dotted_keys_for_every_leaf() -> None:
    t = tree({"database": {"url": "pg://", "pool": {"size": 5}}, "debug": False, "empty": {}})
    assert flatten(t) == {
        "database.url": "pg://",
        "database.pool.size": 5,
        "debug": False,
        "empty": {},
    }


def test_flatten_of_an_empty_tree_is_empty() -> None:
    assert flatten(EMPTY) == {}


def test_flatten_keeps_lists_as_values() -> None:
    assert flatten(tree({"hosts": ["a", "b"]})) == {"hosts": ("a", "b")}


# -- build (flat sources) -----------------------------------------------------------------


def test_build_nests_flat_entries_into_a_frozen_layer() -> None:
    layer = build([("$A", ("db", "url"), "x"), ("$B", ("db", "pool"), 5), ("$C", ("name",), "s")])

    assert layer == {"db": {"url": "x", "pool": 5}, "name": "s"}
    assert isinstance(layer["db"], Section)


@pytest.mark.parametrize(
    "entries",
    [
        [("$A", ("db",), 1), ("$B", ("db", "url"), "x")],  # a value, then a section there
        [("$A", ("db", "url"), "x"), ("$B", ("db",), 1)],  # a section, then a value there
        [("$A", ("db", "url"), "x"), ("$B", ("db", "url"), "y")],  # the same path twice
    ],
)
def test_build_names_both_entries_when_paths_collide(entries: list[Any]) -> None:
    with pytest.raises(PathClash) as info:
        build(entries)

    assert (info.value.first, info.value.second) == ("$A", "$B")
    assert str(info.value).startswith("$A and $B both set db")
