"""Specification of otpylib_config.paths: dot-separated paths and glob patterns.

A path is non-empty segments joined by dots, without glob characters; a pattern may hold
``*`` (one segment), ``**`` (zero or more) and ``?``/``[abc]``/``tc_*`` inside a segment;
both are bounded in segments and length (README.md, Paths, patterns and events; Input
limits)."""

from __future__ import annotations

import pytest

from otpylib_config.errors import ConfigError, InvalidPathError
from otpylib_config.paths import MAX_PATH_LENGTH, MAX_SEGMENTS, join, parse_path, parse_pattern

PARSERS = [parse_path, parse_pattern]


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("database", ("database",)),
        ("database.pool_size", ("database", "pool_size")),
        ("a.b.c.d", ("a", "b", "c", "d")),
        ("queuemizer.tc_rules.eth0", ("queuemizer", "tc_rules", "eth0")),
        ("with space.and-dash", ("with space", "and-dash")),
        ("ünïcode.键", ("ünïcode", "键")),
        ("1.2", ("1", "2")),
    ],
)
def test_valid_path_splits_into_segments(text: str, segments: tuple[str, ...]) -> None:
    assert parse_path(text) == segments


@pytest.mark.parametrize("parser", PARSERS)
def test_parsed_path_is_a_tuple_of_str(parser) -> None:
    result = parser("a.b")
    assert isinstance(result, tuple)
    assert all(isinstance(segment, str) for segment in result)


@pytest.mark.parametrize("parser", PARSERS)
def test_empty_string_is_rejected(parser) -> None:
    with pytest.raises(InvalidPathError, match="empty string"):
        parser("")


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("text", ["a..b", ".a", "a.", ".", "..", "a.b."])
def test_empty_segment_is_rejected_naming_the_input(parser, text: str) -> None:
    with pytest.raises(InvalidPathError, match="empty segment") as info:
        parser(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    ("bad", "type_name"),
    [(None, "NoneType"), (1, "int"), (b"a", "bytes"), (["a"], "list"), (("a",), "tuple")],
)
def test_non_str_input_is_rejected_naming_its_type_and_value(parser, bad, type_name) -> None:
    with pytest.raises(InvalidPathError) as info:
        parser(bad)
    message = str(info.value)
    assert type_name in message
    assert repr(bad) in message


def test_invalid_path_error_is_a_value_error_and_a_config_error() -> None:
    assert issubclass(InvalidPathError, ValueError)
    assert issubclass(InvalidPathError, ConfigError)
    with pytest.raises(ValueError):
        parse_path("a..b")


@pytest.mark.parametrize(
    ("text", "bad_segment"),
    [
        ("a.*", "*"),
        ("a.**", "**"),
        ("tc_*", "tc_*"),
        ("a.b?", "b?"),
        ("a.[ab]", "[ab]"),
        ("x.y]", "y]"),
    ],
)
def test_glob_characters_are_rejected_in_concrete_paths(text: str, bad_segment: str) -> None:
    with pytest.raises(InvalidPathError, match="glob character") as info:
        parse_path(text)
    assert repr(bad_segment) in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a.*", ("a", "*")),
        ("a.**", ("a", "**")),
        ("**", ("**",)),
        ("**.port", ("**", "port")),
        ("queuemizer.tc_rules.*", ("queuemizer", "tc_rules", "*")),
        ("tc_*.eth?", ("tc_*", "eth?")),
        ("[ab].c", ("[ab]", "c")),
        ("database.url", ("database", "url")),
    ],
)
def test_patterns_allow_glob_characters(text: str, segments: tuple[str, ...]) -> None:
    assert parse_pattern(text) == segments


def test_rejection_is_not_cached_as_success() -> None:
    """Parsing is memoised; a rejected input must be rejected again, every time."""
    for _ in range(3):
        with pytest.raises(InvalidPathError):
            parse_path("a..b")
    assert parse_path("a.b") == ("a", "b")
    assert parse_path("a.b") == ("a", "b")


@pytest.mark.parametrize("segments", [("a",), ("a", "b"), ("database", "pool_size", "x")])
def test_join_is_the_inverse_of_parse(segments: tuple[str, ...]) -> None:
    assert join(segments) == ".".join(segments)
    assert parse_path(join(segments)) == segments


def test_join_of_pattern_segments_round_trips() -> None:
    assert join(parse_pattern("a.**.tc_*")) == "a.**.tc_*"


# -- malformed patterns and oversized input --------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "segment", "why"),
    [
        ("[", "[", "never closed"),
        ("a.[", "[", "never closed"),
        ("a.[bc", "[bc", "never closed"),
        ("a.x[b].[c", "[c", "never closed"),
        ("a.[]", "[]", "never closed"),  # ']' right after '[' is a member: still open
        ("a.[!]", "[!]", "never closed"),
        ("a.b]", "b]", "without a matching"),
        ("]", "]", "without a matching"),
        ("a.[b]]", "[b]]", "without a matching"),
    ],
)
def test_a_pattern_with_a_malformed_set_is_rejected_naming_the_segment(
    pattern: str, segment: str, why: str
) -> None:
    with pytest.raises(InvalidPathError, match=why) as info:
        parse_pattern(pattern)
    assert repr(pattern) in str(info.value)
    assert repr(segment) in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "segments"),
    [
        ("eth[01]", ("eth[01]",)),
        ("a.[!x]*", ("a", "[!x]*")),
        ("a.[]]", ("a", "[]]")),  # fnmatch: the set of ']'
        ("a.[!]]", ("a", "[!]]")),
        ("a.[[]", ("a", "[[]")),  # the set of '['
        ("[a-c]?.[0-9]", ("[a-c]?", "[0-9]")),
    ],
)
def test_well_formed_sets_are_accepted(pattern: str, segments: tuple[str, ...]) -> None:
    assert parse_pattern(pattern) == segments


def test_a_malformed_pattern_is_rejected_every_time() -> None:
    for _ in range(3):
        with pytest.raises(InvalidPathError):
            parse_pattern("a.[")


@pytest.mark.parametrize("parser", PARSERS)
def test_max_segments_are_accepted_and_one_more_is_rejected(parser) -> None:
    assert len(parser(".".join(["a"] * MAX_SEGMENTS))) == MAX_SEGMENTS
    with pytest.raises(InvalidPathError, match=f"more than {MAX_SEGMENTS} segments"):
        parser(".".join(["a"] * (MAX_SEGMENTS + 1)))


@pytest.mark.parametrize("parser", PARSERS)
def test_a_path_longer_than_the_limit_is_rejected_without_quoting_it_whole(parser) -> None:
    assert parser("a" * MAX_PATH_LENGTH) == ("a" * MAX_PATH_LENGTH,)
    with pytest.raises(InvalidPathError, match=f"longer than {MAX_PATH_LENGTH}") as info:
        parser("a" * (MAX_PATH_LENGTH + 1))
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("parser", PARSERS)
def test_a_non_str_that_cannot_be_shown_is_still_an_invalid_path_error(parser) -> None:
    with pytest.raises(InvalidPathError, match="must be a str, got int: <unprintable>"):
        parser(10**5000)  # repr() of it raises ValueError
    with pytest.raises(InvalidPathError) as info:
        parser(["a"] * 10_000)
    assert len(str(info.value)) < 200
