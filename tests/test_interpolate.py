"""Specification of ``${VAR}`` placeholders: syntax, defaults, escapes and the template form.

The grammar is docker compose's; the section "docker compose's own vectors" translates its
interpolation test suite, and the differences we keep on purpose are tested as such.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml

from otpylib_config.interpolate import (
    InterpolationError,
    expand,
    expand_file,
    expand_layer,
    render_scalar,
    render_templates,
)
from otpylib_config.parsers import ParseError
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
        ("${MISSING-fallback}", "fallback"),
        ("${HOST-fallback}", "db.local"),
        ("${HOST:?needed}", "db.local"),
        ("${HOST?needed}", "db.local"),
        ("${HOST:+other}", "other"),
        ("${HOST+other}", "other"),
        ("${MISSING:+other}", ""),
        ("${MISSING+other}", ""),
        ("${MISSING-}", ""),
        ("${MISSING:-${HOST}}", "db.local"),
        ("${MISSING:-${ALSO:-x}}", "x"),
        ("${MISSING-pg://${HOST}:${PORT}/}", "pg://db.local:5432/"),
        ("${HOST:+host=${HOST} port=${PORT}}", "host=db.local port=5432"),
        ("${MISSING:-{braces}", "{braces"),
        ("${MISSING:-}", ""),
        ("${MISSING:}", ""),
        ("${MISSING:-a b:c-d/e}", "a b:c-d/e"),
        ("${MISSING:--5}", "-5"),
        ("${_x1:-ok}", "ok"),
        ("no placeholders", "no placeholders"),
        ("price: $5, $ alone, $$ two", "price: $5, $ alone, $$ two"),
        ("$HOST and $}", "$HOST and $}"),
        ("a } b", "a } b"),
        ("", ""),
    ],
)
def test_forms_expand_from_the_environment(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_colon_dash_treats_an_empty_variable_as_unset_and_colon_does_not() -> None:
    assert expand("${EMPTY:-default}", ENV) == "default"
    assert expand("${EMPTY:default}", ENV) == ""
    assert expand("${EMPTY-default}", ENV) == ""
    assert expand("${EMPTY}", ENV) == ""
    assert expand("${EMPTY:-}", ENV) == expand("${EMPTY:}", ENV) == ""
    assert expand("${EMPTY:+other}", ENV) == ""
    assert expand("${EMPTY+other}", ENV) == "other"
    assert expand("${EMPTY?needed}", ENV) == ""
    with pytest.raises(InterpolationError, match="required variable EMPTY is missing a value"):
        expand("${EMPTY:?needed}", ENV)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "${MISSING:?set it in .env}",
            "required variable MISSING is missing a value: set it in .env",
        ),
        ("${MISSING?set it}", "required variable MISSING is missing a value: set it"),
        ("${MISSING:?}", "required variable MISSING is missing a value"),
        ("${MISSING?}", "required variable MISSING is missing a value"),
        ("${MISSING?a-b:-c}", "required variable MISSING is missing a value: a-b:-c"),
    ],
)
def test_question_mark_makes_a_variable_required(text: str, reason: str) -> None:
    with pytest.raises(InterpolationError) as info:
        expand(f"x {text} y", ENV)
    assert info.value.reason == reason
    assert info.value.variable == "MISSING"


def test_defaults_and_alternatives_are_expanded_only_when_used() -> None:
    assert expand("${HOST:-${NOPE}}", ENV) == "db.local"
    assert expand("${MISSING:+${NOPE}}", ENV) == ""
    assert expand("${HOST:?${NOPE}}", ENV) == "db.local"
    with pytest.raises(InterpolationError) as info:
        expand("${MISSING:-${NOPE}}", ENV)
    assert info.value.variable == "NOPE"


def test_a_typo_in_an_unused_branch_is_still_an_error() -> None:
    for text in ("${HOST:-${}}", "${HOST:-${1X}}", "${HOST:+${A B}}", "${MISSING?${x!}}"):
        with pytest.raises(InterpolationError, match="malformed"):
            expand(text, ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${HOST}", "${HOST}"),
        ("a $${HOST} b ${HOST}", "a ${HOST} b db.local"),
        ("$$${HOST}", "$${HOST}"),
        ("$${", "${"),
        ("$${1X", "${1X"),
        ("${MISSING:-$${HOST}}", "${HOST}"),
        ("${HOST:-$${X}}", "db.local"),
        ("${MISSING:-a$${b}c}", "a${b}c"),
    ],
)
def test_double_dollar_escapes_a_placeholder(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_values_from_the_environment_are_never_expanded_again() -> None:
    assert expand("${DOLLAR}", ENV) == "${HOST}"
    assert expand("${ESC}", ENV) == "$${HOST}"
    assert expand("${MISSING:-pa$$word}", ENV) == "pa$$word"
    assert expand("${MISSING:-${DOLLAR}}", ENV) == "${HOST}"
    assert expand("${HOST:+${ESC}}", ENV) == "$${HOST}"
    assert expand("${MISSING-$DOLLAR}", ENV) == "$DOLLAR"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("${", "unterminated"),
        ("abc ${HOST", "unterminated"),
        ("${HOST:-x", "unterminated"),
        ("${MISSING:-${HOST}", "unterminated"),
        ("${MISSING:-$${HOST}", "unterminated"),
        ("${}", "malformed"),
        ("${ }", "malformed"),
        ("${1X}", "malformed"),
        ("${A B}", "malformed"),
        ("${A.B}", "malformed"),
        ("${ HOST}", "malformed"),
        ("${HOST }", "malformed"),
        ("${HOST!}", "malformed"),
        ("${MISSING:=x}", "assign-default"),
        ("${HOST:-${}}", "malformed"),
        ("${MISSING:?message ${1X}}", "malformed"),
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


def test_every_problem_of_a_string_is_reported_at_once() -> None:
    with pytest.raises(InterpolationError) as info:
        expand("${A} ${HOST} ${B:?needed} ${1X} ${C}", ENV)
    err = info.value
    assert [problem.variable for problem in err.details] == ["A", "B", None, "C"]
    assert err.variable == "A"
    assert str(err).count(";") == 3


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


def test_the_layer_pass_reports_every_problem_with_its_path_and_a_partial_layer() -> None:
    layer = freeze(
        {
            "db": {"url": "pg://${DB_HOST}", "host": "${HOST}", "pw": "${PW:?set PW}"},
            "hosts": ["a", "${H2}"],
            "ok": "${PORT}",
            "bad": "x${1X}",
        }
    )
    with pytest.raises(InterpolationError) as info:
        expand_layer(layer, ENV)
    err = info.value
    assert [path for path, _ in err.problems] == ["db.url", "db.pw", "hosts[1]", "bad"]
    assert err.problems[1] == ("db.pw", "required variable PW is missing a value: set PW")
    assert [problem.line for problem in err.details] == [None] * 4
    assert err.partial == {"db": {"host": "db.local"}, "ok": "5432"}


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
        f"${{X {SECRET}}}",  # malformed: a space after the name
        f"${{1{SECRET}}}",  # malformed: a name cannot start with a digit
        f"${{{SECRET.replace('-', '.')}}}",  # malformed: '.' is no operator
        f"pre-{SECRET}-${{1X}}-post",
        f"${{A:-{SECRET}${{B}}}}",  # nested default, whose placeholder is missing
        f"${{A:-{SECRET}${{B}}",  # nested default, unterminated
        f"{SECRET} ${{A}} {SECRET}",
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


def test_an_error_in_a_default_names_the_inner_variable_but_not_the_default() -> None:
    with pytest.raises(InterpolationError) as info:
        expand(f"${{TOKEN:-{SECRET}${{B}}}}", ENV)
    assert info.value.variable == "B"
    assert "B is not set" in str(info.value)
    assert SECRET not in str(info.value)


def test_an_error_never_carries_a_value_from_the_environment() -> None:
    environ = {"SECRET_VAR": SECRET, "EMPTY": ""}
    with pytest.raises(InterpolationError) as info:
        expand("${PW:?ask ops, not ${SECRET_VAR}} ${SECRET_VAR:+${NOPE}}", environ)
    message = str(info.value)
    assert "required variable PW is missing a value: ask ops, not ${SECRET_VAR}" in message
    assert "NOPE is not set" in message
    assert SECRET not in message
    layer = freeze({"a": {"b": "${SECRET_VAR}${NOPE}"}})
    with pytest.raises(InterpolationError) as info:
        expand_layer(layer, environ)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.problems)


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


# -- template form with the whole grammar ------------------------------------------------------


@pytest.mark.parametrize(
    ("placeholder", "value"),
    [
        ("${MISSING:-${PORT}}", 5432),
        ("${MISSING:-${ALSO:-8000}}", 8000),
        ("${MISSING-${HOST}}", "db.local"),
        ("${HOST:+${PORT}}", 5432),
        ("${MISSING:+${PORT}}", ""),
        ("${EMPTY+true}", True),
        ("${PORT:?needed}", 5432),
        ("${MISSING:-${DOLLAR}}", "${HOST}"),
        ("${MISSING:-a, b = 1}", "a, b = 1"),
        ("${MISSING:-$${HOST}}", "${HOST}"),
    ],
)
@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_template_placeholders_take_the_whole_grammar(
    fmt: str, placeholder: str, value: object
) -> None:
    document = {"toml": f"v = {placeholder}\n", "json": f'{{"v": {placeholder}}}'}.get(
        fmt, f"v: {placeholder}\n"
    )
    parsed = parse_as(fmt, render(fmt, document))
    assert list(parsed) == ["v"]
    got = expand(parsed["v"], {}) if isinstance(parsed["v"], str) else parsed["v"]
    assert got == value


def test_a_template_placeholder_ends_on_its_own_line() -> None:
    with pytest.raises(InterpolationError, match="unterminated") as info:
        render("toml", "a = 1\nb = ${MISSING:-${PORT\n}}\n")
    assert info.value.line == 2


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_a_required_template_variable_names_its_message_and_line(fmt: str) -> None:
    text = {"toml": "[db]\npw = ${PW:?set PW}\n", "yaml": "db:\n  pw: ${PW:?set PW}\n"}[fmt]
    with pytest.raises(InterpolationError) as info:
        render(fmt, text)
    err = info.value
    assert (err.line, err.variable) == (2, "PW")
    assert err.reason == "required variable PW is missing a value: set PW"


def test_every_template_problem_is_reported_at_once() -> None:
    text = "a = ${A}\nb = ${HOST}\nc = [${C:?needed}, ${1X}]\n[${T}]\nd = ${D}000\n"
    with pytest.raises(InterpolationError) as info:
        render("toml", text)
    err = info.value
    assert [(p.line, p.variable) for p in err.details] == [
        (1, "A"),
        (3, "C"),
        (3, None),
        (4, "T"),
        (5, "D"),
    ]
    assert [path for path, _ in err.problems] == [""] * 5  # only lines are known before parsing
    assert err.problems[0] == ("", "line 1, key a: " + err.details[0].reason)


# -- a whole file: both forms, every problem, exact paths ---------------------------------------


FILES = {
    "toml": (
        'host = "${HOST}"\n'
        "[server]\n"
        "port = ${SERVER_PORT}\n"
        'url = "pg://${DB_HOST}/x"\n'
        "tags = [${TAG:?set TAG}, 'b']\n"
        "ok = ${PORT}\n"
    ),
    "json": (
        '{"host": "${HOST}",\n'
        ' "server": {\n'
        '  "port": ${SERVER_PORT},\n'
        '  "url": "pg://${DB_HOST}/x",\n'
        '  "tags": [${TAG:?set TAG}, "b"],\n'
        '  "ok": ${PORT}}}\n'
    ),
    "yaml": (
        'host: "${HOST}"\n'
        "server:\n"
        "  port: ${SERVER_PORT}\n"
        "  url: pg://${DB_HOST}/x\n"
        "  tags:\n"
        "    - ${TAG:?set TAG}\n"
        "    - b\n"
        "  ok: ${PORT}\n"
    ),
}


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_a_file_reports_every_problem_of_both_forms_with_its_path(fmt: str) -> None:
    with pytest.raises(InterpolationError) as info:
        expand_file(FILES[fmt].encode(), fmt, ENV)
    err = info.value
    tag_line = 6 if fmt == "yaml" else 5
    assert err.problems == (
        ("server.port", "line 3: " + err.details[0].reason),
        ("server.tags[0]", f"line {tag_line}: required variable TAG is missing a value: set TAG"),
        ("server.url", err.details[2].reason),
    )
    assert [p.variable for p in err.details] == ["SERVER_PORT", "TAG", "DB_HOST"]
    assert err.partial == {"host": "db.local", "server": {"ok": 5432}}


def test_a_file_without_problems_is_parsed_and_expanded() -> None:
    text = 'port = ${MISSING:-${PORT}}\nurl = "pg://${HOST}/${MISSING-app}"\nesc = "$${X}"\n'
    layer = expand_file(text.encode(), "toml", ENV)
    assert layer == {"port": 5432, "url": "pg://db.local/app", "esc": "${X}"}
    assert type(layer) is Section


def test_a_placeholder_as_a_key_reports_the_template_problems_only() -> None:
    text = '${KEY} = 1\nport = ${NOPE}\nurl = "${ALSO_NOPE}"\n'
    with pytest.raises(InterpolationError) as info:
        expand_file(text.encode(), "toml", ENV)
    err = info.value
    assert [p.variable for p in err.details] == ["KEY", "NOPE"]
    assert err.partial is None


def test_a_file_that_does_not_parse_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        expand_file(b'a = "${HOST}"\nb = [\n', "toml", ENV)


def test_an_interpolation_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(InterpolationError) as info:
        expand_layer(freeze({"a": "${A}", "b": "${B:?x}"}), ENV)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.problems, copy.details) == (
        str(info.value),
        info.value.problems,
        info.value.details,
    )


def test_an_interpolation_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one"):
        InterpolationError([])


# -- docker compose's own vectors ------------------------------------------------------------
# Translated from compose-go's template tests: FOO="first", BAR="" (set but empty), all else
# unset. Compose's hooks for custom substitution functions have no counterpart here.

COMPOSE_ENV = {"FOO": "first", "BAR": ""}

COMPOSE_VALUES = [
    # TestEscaped, TestSubstituteNoMatch, TestUnescaped
    ("$${foo}", "${foo}"),
    ("foo", "foo"),
    ("a $ string", "a $ string"),
    ("^REGEX$", "^REGEX$"),
    ("$}", "$}"),
    ("$", "$"),
    # TestNoValueNoDefault (the set-but-empty half), TestValueNoDefault (the braced half)
    ("This ${BAR} var", "This  var"),
    ("This ${FOO} var", "This first var"),
    # TestNoValueWithDefault, soft and hard defaults, TestNonAlphanumericDefault
    ("ok ${missing:-def}", "ok def"),
    ("ok ${missing-def}", "ok def"),
    ("ok ${BAR:-def}", "ok def"),
    ("ok ${FOO:-def}", "ok first"),
    ("ok ${BAR-def}", "ok "),
    ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
    # TestPresentValue*
    ("ok ${UNSET_VAR:+presence_value}", "ok "),
    ("ok ${UNSET_VAR+presence_value}", "ok "),
    ("ok ${FOO:+presence_value}", "ok presence_value"),
    ("ok ${FOO+presence_value}", "ok presence_value"),
    ("ok ${BAR+presence_value}", "ok presence_value"),
    ("ok ${BAR:+presence_value}", "ok "),
    # TestInterpolationExternalInterference
    ("-ok ${BAR:-defaultValue}", "-ok defaultValue"),
    ("+ok ${UNSET:-${BAR-defaultValue}}", "+ok "),
    ("-ok ${FOO:-defaultValue}", "-ok first"),
    (":-ok ${UNSET-defaultValue}", ":-ok defaultValue"),
    (":-ok ${BAR-defaultValue}", ":-ok "),
    (":?ok ${BAR-defaultValue}", ":?ok "),
    (":?ok ${BAR:-defaultValue}", ":?ok defaultValue"),
    (":+ok ${BAR:-defaultValue}", ":+ok defaultValue"),
    ("+ok ${BAR-defaultValue}", "+ok "),
    ("?ok ${BAR:-defaultValue}", "?ok defaultValue"),
    # TestDefaultsWithNestedExpansion (the braced ones)
    ("ok ${UNSET_VAR-${FOO}}", "ok first"),
    ("ok ${UNSET_VAR-${FOO} ${FOO}}", "ok first first"),
    ("ok ${BAR:-${FOO}}", "ok first"),
    ("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
    # TestDefaultsForMandatoryVariables
    ("ok ${FOO:?err}", "ok first"),
    ("ok ${FOO?err}", "ok first"),
    ("ok ${BAR?err}", "ok "),
    # TestPrecedence (the ones that give a value)
    ("${UNSET_VAR-myerror?msg}", "myerror?msg"),
    ("${FOO?bar-baz}", "first"),
    ("${BAR:-default_value_for_empty_var}", "default_value_for_empty_var"),
    ("${UNSET_VAR-default_value_for_unset_var}", "default_value_for_unset_var"),
]

COMPOSE_REQUIRED = [
    # TestMandatoryVariableErrors, TestPrecedence (the error)
    ("not ok ${UNSET_VAR:?Mandatory Variable Unset}", "UNSET_VAR", ": Mandatory Variable Unset"),
    ("not ok ${BAR:?Mandatory Variable Empty}", "BAR", ": Mandatory Variable Empty"),
    ("not ok ${UNSET_VAR:?}", "UNSET_VAR", ""),
    ("not ok ${UNSET_VAR?Mandatory Variable Unset}", "UNSET_VAR", ": Mandatory Variable Unset"),
    ("not ok ${UNSET_VAR?}", "UNSET_VAR", ""),
    ("${UNSET_VAR?bar-baz}", "UNSET_VAR", ": bar-baz"),
]

COMPOSE_INVALID = ["${", "${}", "${ }", "${ foo}", "${foo }", "${foo!}"]  # TestInvalid

# TestSubstitutionFunctionChoice: the operator compose picks for each placeholder body.
COMPOSE_OPERATORS = [
    ("VARNAME:?val?ue", ":?"),
    ("VARNAME?val:?ue", "?"),
    ("VARNAME?va-lu+e:?e", "?"),
    ("VARNAME?va+lu-e:?e", "?"),
    ("VARNAME:-value", ":-"),
    ("VARNAME-va:-lu:?e", "-"),
    ("VARNAME-va+lu?e", "-"),
    ("VARNAME-va?lu+e", "-"),
    ("VARNAME:+va:?lu:-e", ":+"),
    ("VARNAME+va:+lue", "+"),
    ("VARNAME+va?lu-e", "+"),
    ("VARNAME+va-lu?e", "+"),
]

# Where we differ on purpose (see the module docstring): (template, compose's result, ours).
COMPOSE_DIFFERENCES = [
    # an unset variable without default is an error, not ""
    ("This ${missing} var", "This  var", None),
    # ``$FOO`` without braces is ordinary text
    ("$FOO-bar", "first-bar", "$FOO-bar"),
    ("This $FOO var", "This first var", "This $FOO var"),
    ("ok ${UNSET_VAR-$FOO}", "ok first", "ok $FOO"),
    ("ok ${BAR:-$FOO}", "ok first", "ok $FOO"),
    ("ok ${BAR+$FOO}", "ok first", "ok $FOO"),
    ("ok ${BAR+$FOO ${FOO:+second}}", "ok first second", "ok $FOO second"),
]

# TestMandatoryVariableErrorsWithNestedExpansion: compose expands the message (": Mandatory
# Variable first"); ours shows it as written, so no environment value reaches an error.
COMPOSE_NESTED_MESSAGES = [
    "not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}",
    "not ok ${UNSET_VAR?Mandatory Variable ${FOO}}",
]


def whole_placeholder(text: str, expected: str) -> tuple[str, str] | None:
    """The template-form counterpart of a string vector: ``prefix ${...}`` -> ``${...}``."""
    prefix, mark, rest = text.partition("${")
    if not mark or "$" in prefix or not expected.startswith(prefix):
        return None
    depth = 1
    for i, char in enumerate(rest):
        depth += rest.startswith("${", i) - (char == "}")
        if depth == 0:
            return (mark + rest, expected[len(prefix) :]) if i == len(rest) - 1 else None
    return None


COMPOSE_TEMPLATES = [
    pair for text, expected in COMPOSE_VALUES if (pair := whole_placeholder(text, expected))
]


@pytest.mark.parametrize(("text", "expected"), COMPOSE_VALUES)
def test_compose_vectors_in_strings(text: str, expected: str) -> None:
    assert expand(text, COMPOSE_ENV) == expected


@pytest.mark.parametrize(("placeholder", "expected"), COMPOSE_TEMPLATES)
@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_compose_vectors_in_the_template_form(fmt: str, placeholder: str, expected: str) -> None:
    document = {"toml": f"v = {placeholder}\n", "json": f'{{"v": {placeholder}}}'}.get(
        fmt, f"v: {placeholder}\n"
    )
    parsed = parse_as(fmt, render(fmt, document, COMPOSE_ENV))
    assert list(parsed) == ["v"]
    assert expand(parsed["v"], {}) == expected


def test_the_compose_template_vectors_cover_the_whole_value_cases() -> None:
    assert len(COMPOSE_TEMPLATES) == 33


@pytest.mark.parametrize(("text", "variable", "message"), COMPOSE_REQUIRED)
def test_compose_required_vectors(text: str, variable: str, message: str) -> None:
    expected = f"required variable {variable} is missing a value{message}"
    with pytest.raises(InterpolationError) as info:
        expand(text, COMPOSE_ENV)
    assert (info.value.reason, info.value.variable) == (expected, variable)
    placeholder = text.removeprefix("not ok ")
    with pytest.raises(InterpolationError) as info:
        render("toml", f"v = {placeholder}\n", COMPOSE_ENV)
    assert (info.value.reason, info.value.line) == (expected, 1)


@pytest.mark.parametrize("text", COMPOSE_INVALID)
def test_compose_invalid_vectors(text: str) -> None:
    with pytest.raises(InterpolationError, match=r"malformed|unterminated"):
        expand(text, COMPOSE_ENV)
    with pytest.raises(InterpolationError, match=r"malformed|unterminated") as info:
        render("toml", f"v = {text}\n", COMPOSE_ENV)
    assert info.value.line == 1


@pytest.mark.parametrize(("body", "operator"), COMPOSE_OPERATORS)
def test_compose_operator_choice(body: str, operator: str) -> None:
    """Check the operator by what it does: unset, empty and set, with the rest as argument."""
    rest = body[len("VARNAME") + len(operator) :]
    for environ in ({}, {"VARNAME": ""}, {"VARNAME": "v"}):
        value = environ.get("VARNAME")
        wanted = bool(value) if operator.startswith(":") else value is not None
        if operator in (":?", "?") and not wanted:
            with pytest.raises(InterpolationError) as info:
                expand(f"${{{body}}}", environ)
            assert info.value.reason.endswith(f"missing a value: {rest}")
            continue
        if operator in (":+", "+"):
            expected = rest if wanted else ""
        else:
            expected = value if wanted else rest
        assert expand(f"${{{body}}}", environ) == expected


@pytest.mark.parametrize(("text", "compose", "ours"), COMPOSE_DIFFERENCES)
def test_where_we_differ_from_compose(text: str, compose: str, ours: str | None) -> None:
    if ours is None:
        with pytest.raises(InterpolationError, match="is not set"):
            expand(text, COMPOSE_ENV)
    else:
        assert expand(text, COMPOSE_ENV) == ours != compose


@pytest.mark.parametrize("text", COMPOSE_NESTED_MESSAGES)
def test_a_required_message_is_shown_as_written(text: str) -> None:
    with pytest.raises(InterpolationError) as info:
        expand(text, COMPOSE_ENV)
    assert info.value.reason == (
        "required variable UNSET_VAR is missing a value: Mandatory Variable ${FOO}"
    )
    assert "first" not in str(info.value)
