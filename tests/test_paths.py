"""Specification of otpylib_config.paths: dot-separated paths and glob patterns (DESIGN §3)."""

from __future__ import annotations

import pytest

from otpylib_config.errors import ConfigError, InvalidPathError
from otpylib_config.paths import join, parse_path, parse_pattern

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
