"""Specification of ``${VAR}`` placeholders: syntax, defaults, escapes and the template form."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml

from otpylib_config.interpolate import (
    InterpolationError,
    expand,
    expand_layer,
    render_scalar,
    render_templates,
)
from otpylib_config.values import Section, freeze

ENV = {"HOST": "db.local", "EMPTY": "", "PORT": "5432", "DOLLAR": "${HOST}", "ESC": "$${HOST}"}


# -- syntax, in strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "db.local"),
        ("postgres://${HOST}:${PORT}/app", "postgres://db.local:5432/app"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:fallback}", "fallback"),
        ("${HOST:-fallback}", "db.local"),
        ("${HOST:fallback}", "db.local"),
        ("${MISSING:-}", ""),
        ("${MISSING:}", ""),
        ("${MISSING:-a b:c-d/e}", "a b:c-d/e"),
        ("${MISSING:--5}", "-5"),
        ("${_x1:-ok}", "ok"),
        ("no placeholders", "no placeholders"),
        ("price: $5, $ alone, $$ two", "price: $5, $ alone, $$ two"),
        ("", ""),
    ],
)
def test_forms_expand_from_the_environment(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_colon_dash_treats_an_empty_variable_as_unset_and_colon_does_not() -> None:
    assert expand("${EMPTY:-default}", ENV) == "default"
    assert expand("${EMPTY:default}", ENV) == ""
    assert expand("${EMPTY}", ENV) == ""
    assert expand("${EMPTY:-}", ENV) == expand("${EMPTY:}", ENV) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${HOST}", "${HOST}"),
        ("a $${HOST} b ${HOST}", "a ${HOST} b db.local"),
        ("$$${HOST}", "$${HOST}"),
        ("$${", "${"),
        ("$${1X", "${1X"),
    ],
)
def test_double_dollar_escapes_a_placeholder(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_values_from_the_environment_are_never_expanded_again() -> None:
    assert expand("${DOLLAR}", ENV) == "${HOST}"
    assert expand("${ESC}", ENV) == "$${HOST}"
    assert expand("${MISSING:-pa$$word}", ENV) == "pa$$word"


def test_a_default_is_literal_and_cannot_nest() -> None:
    with pytest.raises(InterpolationError, match="nesting"):
        expand("${A:-${HOST}}", ENV)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("${", "unterminated"),
        ("abc ${HOST", "unterminated"),
        ("${}", "malformed"),
        ("${1X}", "malformed"),
        ("${A-B}", "malformed"),
        ("${A B}", "malformed"),
        ("${A.B}", "malformed"),
        ("${ HOST}", "malformed"),
    ],
)
def test_a_malformed_placeholder_is_an_error(text: str, reason: str) -> None:
    with pytest.raises(InterpolationError, match=reason) as info:
        expand(text, ENV)
    assert info.value.variable is None


def test_a_missing_variable_without_default_names_the_variable() -> None:
    with pytest.raises(InterpolationError) as info:
        expand("x ${NOPE} y", ENV)
    assert info.value.variable == "NOPE"
    assert "NOPE is not set" in str(info.value)


def test_the_layer_pass_expands_every_string_and_no_key() -> None:
    layer = freeze(
        {
            "${HOST}": "${HOST}",
            "db": {"url": "pg://${HOST}", "hosts": ["${HOST}", "x", ["${PORT}"]], "n": 3},
        }
    )
    assert expand_layer(layer, ENV) == {
        "${HOST}": "db.local",
        "db": {"url": "pg://db.local", "hosts": ("db.local", "x", ("5432",)), "n": 3},
    }
    expanded = expand_layer(layer, ENV)
    assert type(expanded) is Section and type(expanded["db"]) is Section
    assert type(expanded["db"]["hosts"]) is tuple


def test_the_layer_pass_names_the_dotted_path() -> None:
    layer = freeze({"database": {"url": "pg://${DB_HOST}", "hosts": ["a", "${H2}"]}})
    with pytest.raises(InterpolationError) as info:
        expand_layer(layer, ENV)
    assert info.value.key == "database.url"
    assert str(info.value).startswith("key database.url: ")
    with pytest.raises(InterpolationError) as info:
        expand_layer(freeze({"database": {"hosts": ["a", "${H2}"]}}), ENV)
    assert info.value.key == "database.hosts[1]"
    assert info.value.variable == "H2"


# -- safe literals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("true", "true"),
        ("FALSE", "false"),
        ("8000", "8000"),
        ("+5", "5"),
        ("-7", "-7"),
        ("2.5", "2.5"),
        (".5", "0.5"),
        ("5.", "5.0"),
        ("1e5", "100000.0"),
        ("1e300", "1.0e+300"),
        ("1e-5", "1.0e-05"),
    ],
)
def test_bools_and_numbers_become_literals_every_format_reads_alike(
    value: str, literal: str
) -> None:
    for fmt in ("toml", "json", "yaml"):
        assert render_scalar(value, fmt) == literal
    expected = parse_as("toml", f"v = {literal}")["v"]
    assert parse_as("json", f'{{"v": {literal}}}')["v"] == expected
    assert parse_as("yaml", f"v: {literal}")["v"] == expected


TRICKY = [
    "plain text",
    "",
    "007",
    "1e999",
    "inf",
    "yes",
    "null",
    "[1, 2]",
    '{"a": 1}',
    "1\n[evil]\nx=1",
    'a"b\\c',
    "x]\ny = 1",
    "tab\there\r\nDEL\x7f NEL\x85 NBSP\xa0",
    "emoji \U0001f600 and é",
    "${HOST}",
    "key = value",
    "# not a comment",
    "'single'",
    '"""triple"""',
]


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
@pytest.mark.parametrize("value", TRICKY)
def test_any_other_value_becomes_one_string_that_reads_back_exactly(fmt: str, value: str) -> None:
    literal = render_scalar(value, fmt)
    assert "\n" not in literal
    document = {
        "toml": f"v = {literal}\n",
        "json": f'{{"v": {literal}}}',
        "yaml": f"v: {literal}\n",
    }[fmt]
    parsed = parse_as(fmt, document)
    assert list(parsed) == ["v"]
    assert expand(parsed["v"], {}) == value


def parse_as(fmt: str, text: str) -> dict[str, Any]:
    loaded: Any = {"toml": tomllib.loads, "json": json.loads, "yaml": yaml.safe_load}[fmt](text)
    assert isinstance(loaded, dict)
    return loaded


# -- template form ---------------------------------------------------------------------------


def render(fmt: str, text: str, environ: dict[str, str] | None = None) -> str:
    return render_templates(text.encode(), fmt, ENV if environ is None else environ).decode()


def test_toml_template_placeholders_become_literals() -> None:
    text = "port = ${PORT}\nhost = ${HOST}\nlist = [${PORT}, ${MISSING:-x},\n  ${HOST}]\n"
    assert render("toml", text) == (
        'port = 5432\nhost = "db.local"\nlist = [5432, "x",\n  "db.local"]\n'
    )


def test_toml_strings_and_comments_are_left_for_the_string_pass() -> None:
    text = (
        'a = "${HOST} \\" ${PORT}"  # ${NOPE}\n'
        "b = '${HOST}'\n"
        'c = """\n${HOST} "" ${PORT}\n"""\n'
        "d = '''\n${HOST}\n'''\n"
        'e = """x""""\n'
        'f = ${PORT} # ${NOPE} "${NOPE}\n'
        '"${NOPE}" = 1\n'
    )
    rendered = render("toml", text)
    assert rendered == text.replace("f = ${PORT}", "f = 5432")
    assert tomllib.loads(rendered)["e"] == 'x"'


def test_json_template_placeholders_become_literals_and_strings_are_left() -> None:
    text = '{"a": ${PORT}, "b": "${HOST}", "${X}": [${HOST}, ${MISSING:true}], "c": "\\"${Y}"}'
    assert render("json", text) == (
        '{"a": 5432, "b": "${HOST}", "${X}": ["db.local", true], "c": "\\"${Y}"}'
    )


def test_yaml_template_placeholders_become_literals() -> None:
    text = (
        "port: ${PORT}\n"
        "host: ${HOST}   # ${NOPE}\n"
        "list:\n  - ${PORT}\n  - ${MISSING:-x}\n"
        "url: http://${HOST}/x\n"
        'q: "${HOST}"\n'
        "s: '${HOST}'\n"
        "t: !!str ${PORT}\n"
        "block: |\n  key: ${HOST}\n"
        "${KEY}: 1\n"
    )
    expected = (
        text.replace("port: ${PORT}", "port: 5432")
        .replace("host: ${HOST}", 'host: "db.local"')
        .replace("- ${PORT}", "- 5432")
        .replace("- ${MISSING:-x}", '- "x"')
    )
    assert render("yaml", text) == expected


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("toml", "${HOST} = 1\n"),
        ("toml", "[${HOST}]\nx = 1\n"),
        ("toml", "[[t.${HOST}]]\n"),
        ("toml", "a.${HOST} = 1\n"),
        ("toml", "t = {${HOST} = 1}\n"),
        ("toml", "t = {a = 1, ${HOST} = 2}\n"),
        ("toml", "a = 1 ${HOST}\n"),
        ("toml", 'a = "x" ${HOST}\n'),
        ("json", "{${HOST}: 1}"),
        ("json", '{"a": 1, ${HOST}: 2}'),
        ("toml", "port = ${HOST}000\n"),
        ("toml", "a = [${HOST}x]\n"),
        ("json", '{"a": ${HOST}1}'),
    ],
)
def test_a_template_placeholder_cannot_name_a_key_or_table(fmt: str, text: str) -> None:
    with pytest.raises(InterpolationError, match="whole value") as info:
        render(fmt, text)
    assert info.value.line == 1


def test_template_errors_name_the_line_the_key_and_the_variable() -> None:
    text = "# ${NOPE} in a comment\n[server]\nhost = 'h'\nport = ${SERVER_PORT}\n"
    with pytest.raises(InterpolationError) as info:
        render("toml", text)
    err = info.value
    assert (err.line, err.key, err.variable) == (4, "server.port", "SERVER_PORT")
    assert str(err).startswith("line 4, key server.port: ")

    with pytest.raises(InterpolationError) as info:
        render("json", '{\n  "db": {\n    "port": ${DB_PORT}\n  }\n}')
    assert (info.value.line, info.value.key, info.value.variable) == (3, "port", "DB_PORT")

    with pytest.raises(InterpolationError) as info:
        render("yaml", "db:\n  port: ${DB_PORT}\n")
    assert (info.value.line, info.value.key, info.value.variable) == (2, "port", "DB_PORT")


def test_a_malformed_template_placeholder_names_its_line() -> None:
    for fmt, text in [("toml", "a = 1\nb = ${1X}\n"), ("toml", "a = 1\nb = ${X\n")]:
        with pytest.raises(InterpolationError, match=r"malformed|unterminated") as info:
            render(fmt, text)
        assert info.value.line == 2


def test_without_placeholders_the_text_is_unchanged() -> None:
    text = 'a = "$5"\nb = 1\n'
    assert render("toml", text) == text
    assert render_templates(b"a = '\xff'", "toml", ENV) == b"a = '\xff'"


def test_invalid_yaml_is_left_to_the_parser() -> None:
    text = "a: [${HOST}\nb: ${HOST}\n"
    assert render("yaml", text) == text


# -- errors name the key, the line and the variable, never the text ------------------------

SECRET = "hunter2-SECRET-xyz"


@pytest.mark.parametrize(
    "text",
    [
        f"${{{SECRET}",  # unterminated, the rest of the value inside
        f"{SECRET}${{",
        f"${{{SECRET}}}",  # malformed: '-' is not allowed in a name
        f"pre-{SECRET}-${{1X}}-post",
        f"${{A:-{SECRET}${{B}}}}",  # nested default
    ],
)
def test_an_error_in_a_string_never_quotes_the_value(text: str) -> None:
    layer = freeze({"db": {"password": text}})
    with pytest.raises(InterpolationError) as info:
        expand_layer(layer, ENV)
    message = str(info.value)
    assert info.value.key == "db.password"
    assert message.startswith("key db.password: ")
    assert SECRET not in message
    assert "hunter2" not in message


def test_a_nesting_error_names_the_variable_but_not_its_default() -> None:
    with pytest.raises(InterpolationError, match="nesting") as info:
        expand(f"${{TOKEN:-{SECRET}${{B}}}}", ENV)
    assert info.value.variable == "TOKEN"
    assert "TOKEN" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("toml", f'password = "{SECRET}"\nport = ${{PORT}}{SECRET}\n'),
        ("toml", f"password = {SECRET}${{PORT}}\n"),
        ("json", f'{{"password": ${{PORT}}{SECRET}}}'),
        ("toml", f"x = ${{{SECRET}\n"),
        ("yaml", f"password: ${{{SECRET}\n"),
    ],
)
def test_a_template_error_never_quotes_the_text_around_the_placeholder(fmt: str, text: str) -> None:
    try:
        render(fmt, text, {"PORT": "1"})
    except InterpolationError as exc:
        assert SECRET not in str(exc)
        assert exc.line is not None
    else:  # left to the parser (YAML reads ``${`` as a flow mapping)
        assert fmt == "yaml"


def test_a_misplaced_template_placeholder_names_its_variable() -> None:
    with pytest.raises(InterpolationError, match="whole value") as info:
        render("toml", "port = ${PORT}000\n")
    assert info.value.variable == "PORT"
    assert "PORT" in str(info.value)


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_an_integer_too_long_to_convert_is_rendered_as_a_string(fmt: str) -> None:
    digits = "9" * 5000
    literal = render_scalar(digits, fmt)
    assert literal.strip('"') == digits and literal.startswith('"')
