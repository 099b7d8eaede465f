"""Specification of otpylib_config.parsers: documents by format into frozen layers.

What matters here is what a bad document becomes: always a :class:`ParseError` (never a
``RecursionError`` or a stray ``ValueError``), naming where it went wrong and never quoting
the document, which may be a secret file.
"""

from __future__ import annotations

import datetime
import sys

import pytest

from otpylib_config.parsers import ParseError, check_format, format_of, parse
from otpylib_config.values import MAX_DEPTH, MAX_INT_DIGITS, Section

SECRET = "hunter2-SECRET-xyz"
FORMATS = ["toml", "json", "yaml"]


def parse_text(text: str, fmt: str) -> Section:
    return parse(text.encode(), fmt)


# -- good documents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("toml", '[db]\nurl = "pg://db"\nports = [1, 2]\n'),
        ("json", '{"db": {"url": "pg://db", "ports": [1, 2]}}'),
        ("yaml", "db:\n  url: pg://db\n  ports: [1, 2]\n"),
    ],
)
def test_each_format_gives_the_same_frozen_layer(fmt: str, text: str) -> None:
    layer = parse_text(text, fmt)
    assert layer == {"db": {"url": "pg://db", "ports": (1, 2)}}
    assert type(layer["db"]) is Section


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_document_is_an_empty_layer(fmt: str) -> None:
    text = {"toml": "", "json": "{}", "yaml": ""}[fmt]
    assert parse_text(text, fmt) == {}


def test_toml_and_yaml_dates_are_kept() -> None:
    assert parse_text("d = 2024-05-01\n", "toml")["d"] == datetime.date(2024, 5, 1)
    assert parse_text("d: 2024-05-01\n", "yaml")["d"] == datetime.date(2024, 5, 1)


def test_yaml_aliases_and_ordered_maps_are_json_like() -> None:
    layer = parse_text("a: &x [1]\nb: *x\nc: !!omap [k: 1]\n", "yaml")
    assert layer == {"a": (1,), "b": (1,), "c": (("k", 1),)}


def test_format_of_follows_the_suffix_and_unknown_formats_are_refused() -> None:
    assert format_of("config.yml", None) == "yaml"
    assert format_of("config.txt", "json") == "json"
    with pytest.raises(ValueError, match="unknown format"):
        check_format("ini")
    with pytest.raises(ParseError, match="unknown format"):
        parse(b"", "ini")


# -- depth -----------------------------------------------------------------------------------


def _deep_array(fmt: str, levels: int) -> str:
    arrays = "[" * levels + "]" * levels
    return {"toml": f"a = {arrays}\n", "json": f'{{"a": {arrays}}}', "yaml": f"a: {arrays}\n"}[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_document_too_deep_for_the_parser_is_a_parse_error(fmt: str) -> None:
    with pytest.raises(ParseError, match="nested too deeply to parse"):
        parse_text(_deep_array(fmt, 100_000), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_document_deeper_than_max_depth_is_a_parse_error_naming_the_path(fmt: str) -> None:
    with pytest.raises(ParseError, match=f"deeper than {MAX_DEPTH} levels") as info:
        parse_text(_deep_array(fmt, 200), fmt)
    assert str(info.value).startswith("a" + "[0]" * (MAX_DEPTH - 1) + ": ")


def test_a_toml_table_deeper_than_max_depth_names_its_path() -> None:
    header = ".".join(["t"] * (MAX_DEPTH + 1))
    with pytest.raises(ParseError, match="deeper than") as info:
        parse_text(f"[{header}]\nx = 1\n", "toml")
    assert str(info.value).startswith(".".join(["t"] * MAX_DEPTH) + ": ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_max_depth_itself_parses(fmt: str) -> None:
    layer = parse_text(_deep_array(fmt, MAX_DEPTH - 1), fmt)
    assert "a" in layer


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_decimal_int_too_long_for_text_is_a_parse_error(fmt: str) -> None:
    digits = "1" * (MAX_INT_DIGITS + 1)
    text = {"toml": f"n = {digits}\n", "json": f'{{"n": {digits}}}', "yaml": f"n: {digits}\n"}
    with pytest.raises(ParseError, match=f"more than {MAX_INT_DIGITS} digits"):
        parse_text(text[fmt], fmt)


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_a_hex_int_too_long_for_text_is_refused_by_its_path(fmt: str) -> None:
    text = {"toml": "[limits]\nn = 0x", "yaml": "limits:\n  n: 0x"}[fmt] + "f" * 5000
    with pytest.raises(ParseError, match=f"more than {MAX_INT_DIGITS} digits") as info:
        parse_text(text, fmt)
    assert str(info.value).startswith("limits.n: ")


# -- YAML values that are not JSON-like: path and type, never the value ---------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("!!binary aHVudGVyMi1TRUNSRVQteHl6", "bytes"),  # base64 of the secret
        (f"!!set {{{SECRET}: null}}", "set"),
        ("!!python/object/apply:os.getcwd []", "YAML tag !!python/object/apply:..."),
        (f"!!python/name:{SECRET}", "YAML tag !!python/name:..."),
        (f"!Ref {SECRET}", "YAML tag !Ref"),
    ],
)
def test_a_yaml_value_that_is_not_json_like_names_its_path_and_type(
    value: str, type_name: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(f"db:\n  password: {value}\n", "yaml")
    message = str(info.value)
    assert message.startswith("db.password: ")
    assert type_name in message
    assert SECRET not in message
    assert "aHVudGVy" not in message


def test_a_python_tag_is_never_constructed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "touched"
    text = f"a: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n"
    with pytest.raises(ParseError, match="YAML tag"):
        parse_text(text, "yaml")
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["!!int", "!!float", "!!bool", "!!timestamp"])
def test_a_yaml_value_that_does_not_fit_its_tag_is_located_but_not_quoted(tag: str) -> None:
    with pytest.raises(ParseError, match=f"cannot construct a {tag} value") as info:
        parse_text(f"db:\n  password: {tag} {SECRET}\n", "yaml")
    assert "at line 2, column 13" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("toml", f'password = "{SECRET}\n'),
        ("json", f'{{"password": "{SECRET}'),
        ("yaml", f"password: {SECRET}\n- b\n"),
        ("yaml", f'password: "{SECRET}\n'),
    ],
)
def test_a_syntax_error_never_quotes_the_document(fmt: str, text: str) -> None:
    with pytest.raises(ParseError, match=f"invalid {fmt.upper()}") as info:
        parse_text(text, fmt)
    assert SECRET not in str(info.value)


def test_a_document_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ParseError, match="table/object, got list"):
        parse_text("[1, 2]", "json")


# -- encoding and formats --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_byte_order_mark_is_ignored(fmt: str) -> None:
    text = {"toml": "a = 1\n", "json": '{"a": 1}', "yaml": "a: 1\n"}[fmt]
    assert parse(b"\xef\xbb\xbf" + text.encode(), fmt) == {"a": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_that_are_not_utf8_are_a_parse_error_at_their_offset(fmt: str) -> None:
    with pytest.raises(ParseError, match="not valid UTF-8 at byte 5"):
        parse(b'a = "\xff"', fmt)


def test_format_of_ignores_the_suffixs_case_and_needs_a_format_without_one() -> None:
    assert format_of("CONFIG.YAML", None) == "yaml"
    assert format_of("config.Toml", None) == "toml"
    assert format_of("settings.json", None) == "json"
    with pytest.raises(ValueError, match="cannot tell the format of 'config' from its suffix"):
        format_of("config", None)
    with pytest.raises(ValueError, match="unknown format 'ini'"):
        format_of("config.toml", "ini")


# -- where a bad document is wrong -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "where"),
    [
        ("toml", "a = 1\nb = \n", "at line 2, column 5"),
        ("json", '{"a": 1,\n "b": }', "line 2 column 7"),
        ("yaml", "a: 1\nb: [\n", "at line 3, column 1"),
    ],
)
def test_a_syntax_error_says_where(fmt: str, text: str, where: str) -> None:
    with pytest.raises(ParseError, match=f"invalid {fmt.upper()}") as info:
        parse_text(text, fmt)
    assert where in str(info.value)


@pytest.mark.parametrize(("text", "kind"), [("5", "int"), ('"text"', "str"), ("NaN", "float")])
def test_a_json_document_must_be_an_object(text: str, kind: str) -> None:
    with pytest.raises(ParseError, match=f"table/object, got {kind}"):
        parse_text(text, "json")


def test_a_yaml_list_document_is_refused() -> None:
    with pytest.raises(ParseError, match="table/object, got list"):
        parse_text("- a\n- b\n", "yaml")


@pytest.mark.parametrize("text", ["", "~\n", "null\n", "# only a comment\n"])
def test_an_empty_yaml_document_is_an_empty_layer(text: str) -> None:
    assert parse_text(text, "yaml") == {}


def test_values_that_are_not_json_like_are_refused_by_their_path() -> None:
    with pytest.raises(ParseError) as info:
        parse_text('{"limits": {"ratio": NaN}}', "json")
    assert str(info.value) == "limits.ratio: NaN is not a valid configuration value"


def test_a_key_that_cannot_be_a_path_segment_is_refused_where_it_is() -> None:
    with pytest.raises(ParseError, match=r"mapping key 'a\.b' cannot be a path segment") as info:
        parse_text('{"db": {"a.b": 1}}', "json")
    assert str(info.value).startswith("db: ")


# -- what a good document becomes ------------------------------------------------------------


def test_toml_arrays_of_tables_are_tuples_of_sections_and_times_are_kept() -> None:
    layer = parse_text("t = 07:32:00\n[[rules]]\nx = 1\n[[rules]]\nx = 2\n", "toml")
    assert layer == {"t": datetime.time(7, 32), "rules": ({"x": 1}, {"x": 2})}
    assert all(type(rule) is Section for rule in layer["rules"])


def test_yaml_without_pyyaml_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML is imported only when a YAML document is parsed; without it the error says
    which extra brings it, and the TOML and JSON parsers do not need it."""
    monkeypatch.setitem(sys.modules, "yaml", None)  # what a missing package gives: ImportError
    with pytest.raises(ParseError, match=r"pip install 'otpylib-config\[yaml\]'") as info:
        parse(b"a: 1\n", "yaml")
    assert isinstance(info.value.__cause__, ImportError)
    assert parse(b"a = 1\n", "toml") == {"a": 1}
    assert parse(b'{"a": 1}', "json") == {"a": 1}
