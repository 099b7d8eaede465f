"""Specification of otpylib_config.patterns: the one glob matcher, behind subscriptions, glob
validators and secret globs (docs/matching.md)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from otpylib_config import patterns
from otpylib_config.paths import parse_path, parse_pattern
from otpylib_config.patterns import PatternIndex
from otpylib_config.values import freeze


def index_of(*entries: tuple[str, str]) -> PatternIndex[str]:
    index: PatternIndex[str] = PatternIndex()
    for pattern, item in entries:
        index.add(parse_pattern(pattern), item)
    return index


def matches(index: PatternIndex[str], leaf: str) -> dict[str, int]:
    return index.deepest_matches(parse_path(leaf))


def test_an_empty_index_matches_nothing() -> None:
    assert matches(PatternIndex(), "a.b") == {}


# -- exact paths ----------------------------------------------------------------------------


def test_exact_pattern_matches_the_same_leaf() -> None:
    assert matches(index_of(("database.url", "s")), "database.url") == {"s": 2}


@pytest.mark.parametrize("leaf", ["database.port", "database", "other.url", "databasex.url"])
def test_exact_pattern_does_not_match_other_paths(leaf: str) -> None:
    assert matches(index_of(("database.url", "s")), leaf) == {}


def test_segments_are_compared_case_sensitively() -> None:
    assert matches(index_of(("Database.url", "s")), "database.url") == {}


# -- section subscription -------------------------------------------------------------------


def test_pattern_shorter_than_the_leaf_matches_at_the_pattern_length() -> None:
    index = index_of(("database", "s"))
    assert matches(index, "database.url") == {"s": 1}
    assert matches(index, "database.pool.size") == {"s": 1}


def test_pattern_deeper_than_the_leaf_does_not_match() -> None:
    assert matches(index_of(("database.pool.size", "s")), "database.pool") == {}
    assert matches(index_of(("a.*", "s")), "a") == {}


# -- `*` and in-segment globs ---------------------------------------------------------------


def test_star_matches_exactly_one_segment() -> None:
    index = index_of(("queuemizer.tc_rules.*", "s"))
    assert matches(index, "queuemizer.tc_rules.eth0") == {"s": 3}
    assert matches(index, "queuemizer.tc_rules.eth0.rate") == {"s": 3}
    assert matches(index, "queuemizer.tc_rules") == {}
    assert matches(index, "queuemizer.other.eth0") == {}


def test_star_in_the_middle() -> None:
    index = index_of(("rate_limits.*.burst", "s"))
    assert matches(index, "rate_limits.api.burst") == {"s": 3}
    assert matches(index, "rate_limits.api.rate") == {}
    assert matches(index, "rate_limits.api.v2.burst") == {}


@pytest.mark.parametrize(
    ("pattern", "leaf", "expected"),
    [
        ("q.tc_*", "q.tc_eth0", {"s": 2}),
        ("q.tc_*", "q.tc_", {"s": 2}),
        ("q.tc_*", "q.rules", {}),
        ("q.eth?", "q.eth0", {"s": 2}),
        ("q.eth?", "q.eth10", {}),
        ("q.[ab]", "q.a", {"s": 2}),
        ("q.[ab]", "q.b.x", {"s": 2}),
        ("q.[ab]", "q.c", {}),
        ("q.[!ab]", "q.c", {"s": 2}),
        ("q.[!]]", "q.c", {"s": 2}),  # ']' first in a set is a member, as in fnmatch
        ("q.[a-c]x", "q.bx", {"s": 2}),
        ("q.*_limit", "q.rate_limit", {"s": 2}),
        ("*.port", "server.port", {"s": 2}),
    ],
)
def test_fnmatch_globs_work_inside_one_segment(pattern: str, leaf: str, expected) -> None:
    assert matches(index_of((pattern, "s")), leaf) == expected


def test_in_segment_globs_are_case_sensitive() -> None:
    assert matches(index_of(("q.TC_*", "s")), "q.tc_eth0") == {}


def test_a_glob_never_matches_across_a_dot() -> None:
    assert matches(index_of(("a.*", "s")), "a.b.c") == {"s": 2}
    assert matches(index_of(("a.*.c", "s")), "a.c") == {}


# -- `**` -----------------------------------------------------------------------------------


def test_globstar_matches_the_section_itself_and_everything_below() -> None:
    index = index_of(("a.**", "s"))
    assert matches(index, "a") == {"s": 1}
    assert matches(index, "a.b") == {"s": 2}
    assert matches(index, "a.b.c.d") == {"s": 4}
    assert matches(index, "b.a") == {}


def test_globstar_alone_matches_every_leaf_at_its_full_depth() -> None:
    index = index_of(("**", "s"))
    assert matches(index, "x") == {"s": 1}
    assert matches(index, "x.y.z") == {"s": 3}


def test_leading_globstar_matches_at_any_depth() -> None:
    index = index_of(("**.port", "s"))
    assert matches(index, "port") == {"s": 1}
    assert matches(index, "server.port") == {"s": 2}
    assert matches(index, "a.b.c.port") == {"s": 4}
    assert matches(index, "server.host") == {}


def test_globstar_below_a_leaf_match_keeps_the_deepest_matching_prefix() -> None:
    index = index_of(("**.port", "s"))
    assert matches(index, "server.port.extra") == {"s": 2}


def test_globstar_in_the_middle_matches_zero_or_more_segments() -> None:
    index = index_of(("a.**.c", "s"))
    assert matches(index, "a.c") == {"s": 2}
    assert matches(index, "a.b.c") == {"s": 3}
    assert matches(index, "a.b.b.b.c") == {"s": 5}
    assert matches(index, "a.b") == {}


def test_consecutive_globstars_behave_like_one() -> None:
    assert matches(index_of(("a.**.**", "s")), "a.b.c") == {"s": 3}


# -- several patterns and items -------------------------------------------------------------


def test_each_item_gets_its_own_deepest_match() -> None:
    index = index_of(
        ("queuemizer", "whole"),
        ("queuemizer.tc_rules.*", "per_if"),
        ("queuemizer.**", "leaves"),
        ("other", "unrelated"),
    )
    assert matches(index, "queuemizer.tc_rules.eth0.rate") == {
        "whole": 1,
        "per_if": 3,
        "leaves": 4,
    }


def test_several_patterns_on_one_item_give_the_deepest_of_them() -> None:
    index = index_of(("a", "s"), ("a.b.*", "s"), ("a.*", "s"))
    assert matches(index, "a.b.c.d") == {"s": 3}
    assert matches(index, "a.x.y") == {"s": 2}
    assert matches(index, "a") == {"s": 1}


def test_several_items_on_one_pattern_all_match() -> None:
    index = index_of(("a.*", "s1"), ("a.*", "s2"))
    assert matches(index, "a.b") == {"s1": 2, "s2": 2}


def test_literal_and_glob_patterns_at_the_same_level_both_match() -> None:
    index = index_of(("a.b", "lit"), ("a.*", "star"), ("a.[b]", "cls"))
    assert matches(index, "a.b") == {"lit": 2, "star": 2, "cls": 2}
    assert matches(index, "a.c") == {"star": 2}


# -- remove and len -------------------------------------------------------------------------


def test_len_counts_added_entries() -> None:
    index = index_of(("a", "s1"), ("a.*", "s1"), ("b.**", "s2"))
    assert len(index) == 3


def test_remove_makes_the_item_stop_matching() -> None:
    index = index_of(("a.*", "s1"), ("a.*", "s2"))
    index.remove(parse_pattern("a.*"), "s1")
    assert matches(index, "a.b") == {"s2": 2}
    assert len(index) == 1


@pytest.mark.parametrize(
    "pattern", ["a.b.c", "a.*", "a.**", "**", "**.x", "a.tc_*.**.x", "a.[ab].?"]
)
def test_after_removing_the_only_pattern_nothing_matches_and_the_trie_is_pruned(
    pattern: str,
) -> None:
    index = index_of((pattern, "s"))
    index.remove(parse_pattern(pattern), "s")
    assert len(index) == 0
    for leaf in ["a", "a.b", "a.b.c", "a.a.x", "x", "a.tc_1.q.x"]:
        assert matches(index, leaf) == {}
    assert index._root.is_empty()


def test_removing_one_pattern_keeps_a_sibling_pattern_that_shares_a_prefix() -> None:
    index = index_of(("a.b.c", "s1"), ("a.b", "s2"), ("a.**", "s3"))
    index.remove(parse_pattern("a.b.c"), "s1")
    assert matches(index, "a.b.c") == {"s2": 2, "s3": 3}
    index.remove(parse_pattern("a.**"), "s3")
    assert matches(index, "a.b.c") == {"s2": 2}


@pytest.mark.parametrize(
    ("pattern", "item"), [("x.y", "s"), ("a.b", "other"), ("a", "s"), ("a.b.c", "s"), ("*", "s")]
)
def test_removing_an_absent_entry_is_a_no_op(pattern: str, item: str) -> None:
    index = index_of(("a.b", "s"))
    index.remove(parse_pattern(pattern), item)
    assert len(index) == 1
    assert matches(index, "a.b") == {"s": 2}


def test_adding_the_same_entry_twice_counts_once() -> None:
    index = index_of(("a.b", "s"), ("a.b", "s"))
    assert len(index) == 1
    index.remove(parse_pattern("a.b"), "s")
    assert len(index) == 0


# -- cost does not depend on non-matching patterns ------------------------------------------


def test_ten_thousand_non_matching_literal_patterns_are_never_visited() -> None:
    index = index_of(*((f"service_{i}.tc_*", f"s{i}") for i in range(10_000)))
    index.add(parse_pattern("target.tc_*"), "hit")
    with mock.patch.object(patterns, "fnmatchcase", wraps=patterns.fnmatchcase) as spy:
        assert matches(index, "target.tc_eth0.rate") == {"hit": 2}
    assert spy.call_count == 1


def test_non_matching_literal_patterns_under_a_shared_prefix_are_not_visited() -> None:
    index = index_of(*((f"app.k{i}.[ab]", f"s{i}") for i in range(10_000)))
    with mock.patch.object(patterns, "fnmatchcase", wraps=patterns.fnmatchcase) as spy:
        assert matches(index, "app.other.a") == {}
        assert matches(index, "app.k7.a") == {"s7": 3}
    assert spy.call_count == 1


# -- the one rule, asked of a path and of a tree ----------------------------------------------
# Subscriptions ask which prefix of a changed leaf a pattern matches (deepest_matches), glob
# validators which nodes of a tree it matches (nodes_in), secret globs whether a segment does
# (matches). Each rule below holds for every one of these questions.


def whole_path_matches(pattern: str, path: str, fold_case: bool = False) -> tuple[bool, bool]:
    """Whether ``pattern`` matches the whole of ``path``, asked of the path itself and of a
    tree holding it: the two answers always agree."""
    segments = parse_path(path)
    index: PatternIndex[str] = PatternIndex(fold_case=fold_case)
    index.add(parse_pattern(pattern), "s")
    by_path = index.deepest_matches(segments).get("s") == len(segments)
    tree: Any = 1
    for segment in reversed(segments):
        tree = {segment: tree}
    in_tree = segments in [found for found, _, _ in index.nodes_in(freeze(tree))]
    return by_path, in_tree


@pytest.mark.parametrize(
    ("path", "expected"), [("db.url", True), ("db.URL", False), ("db.urls", False)]
)
def test_rule_a_literal_segment_matches_that_segment_only_case_sensitively(
    path: str, expected: bool
) -> None:
    assert whole_path_matches("db.url", path) == (expected, expected)


@pytest.mark.parametrize(("path", "expected"), [("a.b", True), ("a.b.c", False), ("a", False)])
def test_rule_star_matches_exactly_one_segment(path: str, expected: bool) -> None:
    assert whole_path_matches("a.*", path) == (expected, expected)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("q.tc_*", "q.tc_eth0", True),
        ("q.eth?", "q.eth0", True),
        ("q.eth?", "q.eth10", False),
        ("q.[ab]", "q.b", True),
        ("q.[!ab]", "q.b", False),
        ("q.tc_*", "q.tc_.x", False),  # never across a dot
    ],
)
def test_rule_globs_inside_a_segment_are_fnmatch_within_that_segment(
    pattern: str, path: str, expected: bool
) -> None:
    assert whole_path_matches(pattern, path) == (expected, expected)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("a.**", "a", True),  # zero segments: the node itself, section or leaf
        ("a.**", "a.b.c", True),
        ("a.**.c", "a.c", True),
        ("a.**.c", "a.b.b.c", True),
        ("**.port", "port", True),
        ("**.port", "server.port.x", False),
    ],
)
def test_rule_globstar_matches_zero_or_more_segments(
    pattern: str, path: str, expected: bool
) -> None:
    assert whole_path_matches(pattern, path) == (expected, expected)


@pytest.mark.parametrize(
    ("pattern", "path"), [("DB.*_KEY", "db.api_key"), ("db.[p]*", "DB.Password")]
)
def test_rule_fold_case_compares_lower_cased_segments_and_patterns(pattern: str, path: str) -> None:
    assert whole_path_matches(pattern, path) == (False, False)
    assert whole_path_matches(pattern, path, fold_case=True) == (True, True)


def test_rule_a_node_that_matches_in_several_ways_matches_once() -> None:
    index = index_of(("a.**.**", "s"), ("**.a.**", "t"))
    found = index.nodes_in(freeze({"a": {"a": {"b": 1}}}))
    assert [(path, set(items)) for path, _, items in found] == [
        (("a",), {"s", "t"}),
        (("a", "a"), {"s", "t"}),
        (("a", "a", "b"), {"s", "t"}),
    ]
    assert matches(index, "a.a.b") == {"s": 3, "t": 3}


# -- nodes_in: the nodes of a tree that a pattern matches -------------------------------------


def test_nodes_in_gives_each_matching_node_with_its_value_in_tree_order() -> None:
    index = index_of(("**.n", "s"))
    tree = freeze({"b": {"n": 3}, "a": {"x": {"n": 1}, "y": {"n": 2}}, "n": {"m": 0}})
    assert [(path, value) for path, value, _ in index.nodes_in(tree)] == [
        (("b", "n"), 3),
        (("a", "x", "n"), 1),
        (("a", "y", "n"), 2),
        (("n",), {"m": 0}),
    ]


def test_nodes_in_matches_whole_paths_not_prefixes() -> None:
    """Unlike deepest_matches, where a leaf below ``a.*`` counts for ``a.*``."""
    index = index_of(("a.*", "s"))
    found = index.nodes_in(freeze({"a": {"x": {"deep": 1}}}))
    assert [path for path, _, _ in found] == [("a", "x")]


def test_nodes_in_reaches_the_root_only_with_a_pattern_of_globstars() -> None:
    tree = freeze({"a": 1})
    assert [path for path, _, _ in index_of(("**", "s")).nodes_in(tree)] == [(), ("a",)]
    assert [path for path, _, _ in index_of(("*", "s")).nodes_in(tree)] == [("a",)]


def test_nodes_in_does_not_look_inside_lists() -> None:
    tree = freeze({"users": [{"name": "alice"}]})
    assert [path for path, _, _ in index_of(("**", "s")).nodes_in(tree)] == [(), ("users",)]


def test_nodes_in_tells_which_items_match_each_node() -> None:
    index = index_of(("a.*", "star"), ("a.x", "literal"), ("b", "other"))
    found = index.nodes_in(freeze({"a": {"x": 1, "y": 2}, "b": 3}))
    assert [(path, set(items)) for path, _, items in found] == [
        (("a", "x"), {"star", "literal"}),
        (("a", "y"), {"star"}),
        (("b",), {"other"}),
    ]


def test_nodes_in_visits_only_the_keys_a_literal_pattern_names() -> None:
    index = index_of(("db.url", "s"))
    tree = freeze({"db": {"url": "u", "pool": 1}, **{f"k{i}": {"url": i} for i in range(10_000)}})
    with mock.patch.object(patterns, "_step", wraps=patterns._step) as spy:
        assert [path for path, _, _ in index.nodes_in(tree)] == [("db", "url")]
    assert spy.call_count == 2


def test_nodes_in_walks_a_tree_again_without_matching_its_keys_again() -> None:
    index = index_of(("rules.*.rate", "s"))
    tree = freeze({"rules": {f"eth{i}": {"rate": i, "burst": 1} for i in range(100)}})
    first = index.nodes_in(tree)
    with mock.patch.object(patterns, "fnmatchcase", wraps=patterns.fnmatchcase) as spy:
        assert index.nodes_in(tree) == first
    assert spy.call_count == 0


def test_nodes_in_remembers_at_most_max_moves_keys_per_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(patterns, "MAX_MOVES", 10)
    index = index_of(("rules.*", "s"))
    tree = freeze({"rules": {f"eth{i}": i for i in range(100)}})
    assert len(index.nodes_in(tree)) == 100
    assert all(len(state.moves) <= 10 for state in index._states.values())


def test_nodes_in_sees_patterns_added_and_removed_after_a_walk() -> None:
    index = index_of(("a", "s"))
    tree = freeze({"a": 1, "b": 2})
    assert [path for path, _, _ in index.nodes_in(tree)] == [("a",)]
    index.add(parse_pattern("b"), "t")
    assert [path for path, _, _ in index.nodes_in(tree)] == [("a",), ("b",)]
    index.remove(parse_pattern("a"), "s")
    assert [path for path, _, _ in index.nodes_in(tree)] == [("b",)]


# -- matches: does any pattern match a path or one of its ancestors? --------------------------


@pytest.mark.parametrize(
    ("path", "expected"), [("vault", True), ("vault.db.user", True), ("db.vault", False)]
)
def test_matches_is_true_at_and_below_a_matching_node(path: str, expected: bool) -> None:
    assert index_of(("vault", "s")).matches(parse_path(path)) is expected


def test_matches_agrees_with_deepest_matches() -> None:
    index = index_of(("a.*.c", "s"), ("**.x", "t"))
    for leaf in ["a", "a.b", "a.b.c", "a.b.c.d", "x", "q.x.y", "q.y"]:
        assert index.matches(parse_path(leaf)) is bool(matches(index, leaf))


def test_an_empty_index_matches_no_path() -> None:
    assert PatternIndex[str]().matches(("a",)) is False


def test_deepest_groups_gives_each_matching_pattern_once_with_its_items_and_deepest_length() -> (
    None
):
    index = index_of(("a.*", "x"), ("a.*", "y"), ("a.**", "z"), ("a.b.c", "w"), ("q", "v"))

    groups = index.deepest_groups(parse_path("a.b.c"))

    as_sets = sorted((sorted(items), depth) for items, depth in groups)
    assert as_sets == [(["w"], 3), (["x", "y"], 2), (["z"], 3)]
    assert matches(index, "a.b.c") == {"x": 2, "y": 2, "z": 3, "w": 3}  # the same, per item
