"""Specification of otpylib_config.values: freezing JSON-like data, Section, thaw, same."""

from __future__ import annotations

import copy
import datetime
import json
import math
import pickle
from collections import OrderedDict
from types import MappingProxyType

import pytest

from otpylib_config.errors import ConfigError, InvalidValueError
from otpylib_config.paths import MAX_PATH_LENGTH, MAX_SEGMENTS
from otpylib_config.values import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_ITEMS,
    MAX_STRING_LENGTH,
    Section,
    coerce,
    freeze,
    same,
    thaw,
)

from .conftest import nested

# -- freeze: what is accepted ---------------------------------------------------------------


@pytest.mark.parametrize(
    "scalar", [None, True, False, 0, 1, -7, 10**30, 1.5, -0.25, "", "text", "ünïcode"]
)
def test_json_scalars_are_returned_unchanged(scalar) -> None:
    frozen = freeze(scalar)
    assert frozen is scalar


def test_infinity_is_accepted_because_toml_allows_it() -> None:
    assert freeze(math.inf) == math.inf
    assert freeze(-math.inf) == -math.inf


def test_dict_becomes_section() -> None:
    frozen = freeze({"a": 1, "b": "x"})
    assert type(frozen) is Section
    assert frozen == {"a": 1, "b": "x"}


def test_list_and_tuple_become_tuples() -> None:
    assert freeze([1, 2, 3]) == (1, 2, 3)
    assert type(freeze([1, 2])) is tuple
    assert freeze((1, "a")) == (1, "a")
    assert freeze([]) == ()


def test_nested_structures_are_frozen_all_the_way_down() -> None:
    frozen = freeze({"db": {"hosts": [{"name": "a", "ports": [1, 2]}], "opts": {}}})
    assert type(frozen["db"]) is Section
    assert type(frozen["db"]["hosts"]) is tuple
    assert type(frozen["db"]["hosts"][0]) is Section
    assert frozen["db"]["hosts"][0]["ports"] == (1, 2)
    assert type(frozen["db"]["opts"]) is Section


def test_any_mapping_with_str_keys_is_accepted() -> None:
    assert freeze(OrderedDict(a=1)) == {"a": 1}
    assert type(freeze(MappingProxyType({"a": {"b": 2}}))["a"]) is Section


def test_freeze_does_not_alias_the_input() -> None:
    original = {"a": {"b": [1, 2]}}
    frozen = freeze(original)
    original["a"]["b"].append(3)
    original["a"]["c"] = 4
    assert frozen == {"a": {"b": (1, 2)}}


def test_freezing_a_frozen_value_again_gives_an_equal_frozen_value() -> None:
    frozen = freeze({"a": {"b": 1}, "c": [1, 2]})
    again = freeze(frozen)
    assert again == frozen
    assert type(again["a"]) is Section and again["c"] == (1, 2)


def test_a_hand_built_section_is_still_validated_and_frozen() -> None:
    frozen = freeze(Section({"a": {"b": [1]}}))
    assert type(frozen["a"]) is Section
    assert frozen["a"]["b"] == (1,)
    with pytest.raises(InvalidValueError, match=r"s: set"):
        freeze(Section({"s": {1, 2}}))


# -- freeze: what is rejected, and where ----------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (b"bytes", "bytes"),
        (bytearray(b"x"), "bytearray"),
        (Thing(), "Thing"),
        (1 + 2j, "complex"),
        (datetime.date(2024, 1, 1), "date"),
    ],
)
def test_non_json_values_are_rejected_naming_their_type(bad, type_name: str) -> None:
    with pytest.raises(InvalidValueError, match=type_name):
        freeze(bad)


def test_nan_is_rejected() -> None:
    with pytest.raises(InvalidValueError, match="NaN"):
        freeze(math.nan)


def test_invalid_value_error_is_a_value_error_and_a_config_error() -> None:
    assert issubclass(InvalidValueError, ValueError)
    assert issubclass(InvalidValueError, ConfigError)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": {"b": [1, 2, {3}]}}, "a.b[2]"),
        ({"a": {"b": [1, 2, math.nan]}}, "a.b[2]"),
        ({"x": [[1], [2, b"no"]]}, "x[1][1]"),
        ({"db": {"pool": object()}}, "db.pool"),
        ([{"ok": 1}, {"bad": {1}}], "[1].bad"),
    ],
)
def test_error_names_the_path_of_the_offending_element(value, where: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        freeze(value)
    assert info.value.path == where
    assert str(info.value).startswith(f"{where}: ")


def test_error_path_starts_at_the_given_path() -> None:
    with pytest.raises(InvalidValueError) as info:
        freeze({"b": {1}}, "feature_flags")
    assert info.value.path == "feature_flags.b"


@pytest.mark.parametrize(
    ("value", "where", "key_repr"),
    [
        ({1: "a"}, "<root>", "key of type int"),
        ({"a": {None: 1}}, "a", "key of type NoneType"),
        ({"a": {("t",): 1}}, "a", "key of type tuple"),
        ({"a.b": 1}, "<root>", "'a.b'"),
        ({"a": {"": 1}}, "a", "''"),
        ({"a": {"tc_*": 1}}, "a", "'tc_*'"),
        ({"a": {"x?": 1}}, "a", "'x?'"),
        ({"a": {"[ab]": 1}}, "a", "'[ab]'"),
    ],
)
def test_keys_that_cannot_be_path_segments_are_rejected(value, where: str, key_repr: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        freeze(value)
    assert info.value.path == where
    assert key_repr in str(info.value)


@pytest.mark.parametrize(
    "temporal",
    [
        datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        datetime.datetime(2024, 5, 1, 12, 30),
        datetime.date(2024, 5, 1),
        datetime.time(12, 30),
    ],
)
def test_temporal_values_need_allow_temporal(temporal) -> None:
    with pytest.raises(InvalidValueError):
        freeze({"when": temporal})
    assert freeze({"when": temporal}, allow_temporal=True)["when"] is temporal


def test_allow_temporal_applies_inside_lists() -> None:
    day = datetime.date(2024, 1, 2)
    assert freeze({"days": [day]}, allow_temporal=True) == {"days": (day,)}


# -- freeze: limits, so that nothing stored can break a reader later -------------------------


def test_the_limits_are_the_documented_numbers() -> None:
    assert MAX_DEPTH == MAX_SEGMENTS == 64
    assert MAX_INT_DIGITS == 4300
    assert MAX_STRING_LENGTH == 1 << 20
    assert MAX_ITEMS == 1 << 20
    assert MAX_ITEMS >= 1_000_000  # one flat section of a million keys must load


def test_nesting_up_to_max_depth_is_accepted() -> None:
    frozen = freeze(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        frozen = frozen["a"]
    assert frozen == 1
    assert freeze(nested(MAX_DEPTH, {})) is not None  # an empty section is a leaf


def test_nesting_deeper_than_max_depth_is_refused_naming_the_path() -> None:
    with pytest.raises(InvalidValueError, match=f"deeper than {MAX_DEPTH} levels") as info:
        freeze(nested(MAX_DEPTH + 1))
    assert info.value.path == ".".join(["a"] * MAX_DEPTH)


def test_depth_counts_from_the_root_of_the_document() -> None:
    value = nested(MAX_DEPTH - 2)
    assert freeze(value, "x.y", depth=2) is not None
    with pytest.raises(InvalidValueError, match="deeper than"):
        freeze(value, "x.y.z", depth=3)
    with pytest.raises(InvalidValueError, match="deeper than"):
        freeze(value, "x.y.z")  # without depth=, counted from the path's segments


def test_lists_count_as_levels() -> None:
    value: object = 1
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(InvalidValueError, match="deeper than") as info:
        freeze(value)
    assert info.value.path == "[0]" * MAX_DEPTH


def test_a_self_referencing_list_is_refused_by_the_limit_not_a_recursion_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidValueError, match="deeper than"):
        freeze(loop)


@pytest.mark.parametrize(
    "number",
    [10**MAX_INT_DIGITS - 1, -(10**MAX_INT_DIGITS - 1), 0, -1],
    ids=["max", "min", "zero", "minus-one"],
)
def test_ints_that_str_and_json_can_write_are_accepted(number: int) -> None:
    assert freeze(number) == number
    json.dumps(number)


@pytest.mark.parametrize(
    "number",
    [10**MAX_INT_DIGITS, -(10**MAX_INT_DIGITS), 10**5000],
    ids=["max+1", "min-1", "10**5000"],  # str() of these fails: they cannot be ids either
)
def test_ints_too_long_to_write_as_text_are_refused(number: int) -> None:
    with pytest.raises(InvalidValueError, match=f"more than {MAX_INT_DIGITS} digits") as info:
        freeze({"n": number})
    assert info.value.path == "n"


def test_a_string_of_max_length_is_accepted_and_a_longer_one_refused() -> None:
    assert len(freeze("x" * MAX_STRING_LENGTH)) == MAX_STRING_LENGTH
    with pytest.raises(InvalidValueError, match=f"longer than {MAX_STRING_LENGTH}") as info:
        freeze({"s": "x" * (MAX_STRING_LENGTH + 1)})
    assert info.value.path == "s"
    assert "xxxx" not in str(info.value)


def test_a_flat_section_of_a_million_keys_is_accepted() -> None:
    frozen = freeze({f"k{i}": i for i in range(1_000_000)})
    assert len(frozen) == 1_000_000


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda n: [0] * n, "list"),
        (lambda n: (0,) * n, "tuple"),
        (lambda n: {f"k{i}": 0 for i in range(n)}, "dict"),
    ],
)
def test_containers_with_more_than_max_items_are_refused(
    monkeypatch: pytest.MonkeyPatch, make, type_name: str
) -> None:
    monkeypatch.setattr("otpylib_config.values.MAX_ITEMS", 10)
    assert len(freeze(make(10))) == 10
    with pytest.raises(InvalidValueError, match=f"{type_name} with more than 10 entries") as info:
        freeze({"c": make(11)})
    assert info.value.path == "c"


def test_a_list_over_the_real_limit_is_refused_before_it_is_walked() -> None:
    with pytest.raises(InvalidValueError, match=f"more than {MAX_ITEMS} entries"):
        freeze([None] * (MAX_ITEMS + 1))


def test_a_key_that_would_make_an_unparsable_path_is_refused_without_quoting_it_whole() -> None:
    key = "k" * (MAX_PATH_LENGTH + 1)
    with pytest.raises(InvalidValueError, match=f"longer than {MAX_PATH_LENGTH}") as info:
        freeze({"section": {key: 1}})
    assert info.value.path == "section"
    assert len(str(info.value)) < 200


SECRET = "hunter2-SECRET-xyz"


@pytest.mark.parametrize(
    "bad",
    [
        SECRET.encode(),
        bytearray(SECRET.encode()),
        {SECRET},
        frozenset({SECRET}),
        [SECRET, {SECRET}],
        {SECRET.encode(): 1},
        {"k": complex(1, 2)},
    ],
    ids=["bytes", "bytearray", "set", "frozenset", "set-in-list", "bytes-key", "complex"],
)
def test_a_refused_value_is_never_quoted_in_the_message(bad: object) -> None:
    with pytest.raises(InvalidValueError) as info:
        freeze(bad, "db.password")
    message = str(info.value)
    assert message.startswith("db.password")
    assert SECRET not in message
    assert "hunter2" not in message
    assert "(1+2j)" not in message


# -- Section: read-only, but a real dict ----------------------------------------------------


@pytest.fixture
def section() -> Section:
    frozen = freeze({"a": 1, "b": {"c": 2}})
    assert isinstance(frozen, Section)
    return frozen


def _assign(s: Section) -> None:
    s["a"] = 2


def _delete(s: Section) -> None:
    del s["a"]


def _in_place_or(s: Section) -> None:
    s |= {"z": 1}


MUTATIONS = {
    "subscript assignment": _assign,
    "del statement": _delete,
    "in-place or": _in_place_or,
    "clear": lambda s: s.clear(),
    "pop": lambda s: s.pop("a"),
    "pop with default": lambda s: s.pop("missing", None),
    "popitem": lambda s: s.popitem(),
    "setdefault": lambda s: s.setdefault("z", 1),
    "update": lambda s: s.update({"a": 2}),
    "update kwargs": lambda s: s.update(a=2),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_mutating_method_raises_type_error_and_changes_nothing(section, mutate) -> None:
    before = dict(section)
    with pytest.raises(TypeError, match="read-only"):
        mutate(section)
    assert section == before


def test_nested_sections_are_read_only_too(section) -> None:
    with pytest.raises(TypeError):
        section["b"]["c"] = 3


def test_section_is_a_dict_equal_to_the_plain_dict(section) -> None:
    assert isinstance(section, dict)
    assert section == {"a": 1, "b": {"c": 2}}
    assert {"a": 1, "b": {"c": 2}} == section  # noqa: SIM300 (the reflected ==)
    assert section["b"]["c"] == 2
    assert list(section) == ["a", "b"]


def test_section_serialises_with_json(section) -> None:
    assert json.loads(json.dumps(section)) == {"a": 1, "b": {"c": 2}}


def test_section_or_returns_a_new_mapping_without_touching_the_section(section) -> None:
    combined = section | {"z": 9}
    assert combined["z"] == 9
    assert "z" not in section


def test_copy_and_deepcopy_return_the_same_immutable_object(section) -> None:
    assert copy.copy(section) is section
    assert copy.deepcopy(section) is section
    assert copy.deepcopy({"wrapper": section})["wrapper"] is section


def test_dict_copy_method_gives_a_mutable_plain_dict(section) -> None:
    mutable = section.copy()
    mutable["a"] = 99
    assert section["a"] == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_keeps_sections_and_read_only(section, protocol: int) -> None:
    restored = pickle.loads(pickle.dumps(section, protocol=protocol))
    assert restored == section
    assert type(restored) is Section
    assert type(restored["b"]) is Section
    with pytest.raises(TypeError):
        restored["a"] = 2


# -- thaw -----------------------------------------------------------------------------------


def test_thaw_gives_mutable_plain_dicts_and_lists() -> None:
    frozen = freeze({"a": {"b": [1, {"c": 2}]}, "s": "x"})
    thawed = thaw(frozen)
    assert type(thawed) is dict
    assert type(thawed["a"]) is dict
    assert type(thawed["a"]["b"]) is list
    assert type(thawed["a"]["b"][1]) is dict
    assert thawed == {"a": {"b": [1, {"c": 2}]}, "s": "x"}


def test_mutating_a_thawed_copy_leaves_the_frozen_value_alone() -> None:
    frozen = freeze({"a": {"b": [1]}})
    thawed = thaw(frozen)
    thawed["a"]["b"].append(2)
    thawed["a"]["new"] = True
    assert frozen == {"a": {"b": (1,)}}


@pytest.mark.parametrize("scalar", [None, True, 3, 2.5, "s"])
def test_thaw_of_a_scalar_is_the_scalar(scalar) -> None:
    assert thaw(scalar) is scalar


# -- same -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, True), (0, False), (1, 1.0), (True, 1.0), (1, "1"), (None, False), (None, 0), ("", None)],
)
def test_same_tells_values_of_different_types_apart(a, b) -> None:
    assert not same(a, b)
    assert not same(b, a)


@pytest.mark.parametrize("value", [1, True, 1.0, "x", None, (1, 2)])
def test_same_is_true_for_equal_values_of_the_same_type(value) -> None:
    assert same(value, copy.copy(value))


def test_same_compares_nested_sections_and_tuples_deeply() -> None:
    assert same(freeze({"a": {"b": [1, 2]}}), freeze({"a": {"b": [1, 2]}}))
    assert not same(freeze({"a": {"b": [1, 2]}}), freeze({"a": {"b": [1, 3]}}))
    assert not same(freeze({"a": {"b": [1]}}), freeze({"a": {"b": [True]}}))
    assert not same(freeze({"a": {"b": 1}}), freeze({"a": {"b": 1.0}}))
    assert not same(freeze({"a": 1}), freeze({"a": 1, "b": 2}))
    assert not same(freeze({"a": 1}), freeze({"b": 1}))
    assert not same(freeze([1, 2]), freeze([1, 2, 3]))


def test_same_ignores_key_order() -> None:
    assert same(freeze({"a": 1, "b": 2}), freeze({"b": 2, "a": 1}))


def test_same_tells_a_section_from_a_list_and_a_scalar() -> None:
    assert not same(freeze({}), freeze([]))
    assert not same(freeze({"a": 1}), "a")


# -- coerce: text from the environment or Consul, refused cleanly ---------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"a": [1, }', "does not parse"),
        ("9" * (MAX_INT_DIGITS + 1), "4300 digits"),
    ],
    ids=["deep", "broken", "huge-int"],
)
def test_coerce_refuses_unparsable_text_with_a_value_error(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        coerce(text)
    assert "999999" not in str(info.value)
