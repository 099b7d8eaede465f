"""Specification of otpylib_config.patterns: the segment trie behind subscriptions."""

from __future__ import annotations

from unittest import mock

import pytest

from otpylib_config import patterns
from otpylib_config.paths import parse_path, parse_pattern
from otpylib_config.patterns import PatternIndex


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
