"""``${VAR}`` placeholders in configuration files, expanded from the environment.

Syntax (the same in both forms below)::

    ${VAR}            the variable's value; an error if VAR is not set
    ${VAR:-default}   ``default`` when VAR is unset *or empty* (as in the shell)
    ${VAR:default}    ``default`` only when VAR is unset; a set-but-empty VAR gives ""
    $${VAR}           a literal ``${VAR}``: ``$${`` is the escape for ``${``

So ``${VAR:-}`` and ``${VAR:}`` both give "" when VAR is unset or empty: an optional variable.
``:-`` is read first, so ``${OFFSET:-5}`` defaults to ``5``; write ``${OFFSET:--5}`` for ``-5``.
``VAR`` matches ``[A-Za-z_][A-Za-z0-9_]*``. A default is literal text up to the first ``}``:
it is not expanded and cannot hold a placeholder (``${A:-${B}}`` is an error). A value taken
from the environment is inserted as it is, never expanded again. A ``$`` not followed by
``{`` is an ordinary character. A malformed placeholder (``${``, ``${1X}``, no closing brace)
is an error, never kept silently: a typo must not reach production as a literal.

**In strings** (``url = "postgres://${DB_HOST:-localhost}/app"``): the document is parsed
first, then :func:`expand_layer` expands every ``str`` value, inside lists too; keys are never
expanded. The result is a string whatever the variable holds.

**Template form**, a placeholder standing for a whole value outside quotes
(``port = ${PORT:8000}``): before parsing, :func:`render_templates` finds these with a small
lexer per format and replaces each with ONE safe literal: ``true``/``false``, an integer or a
finite float when the text looks like one (the rules of
:func:`otpylib_config.sources.env.coerce`), otherwise a double-quoted string with every quote,
backslash and control character escaped and ``${`` written as ``$${`` (so the string pass
gives it back unexpanded). Whatever the environment holds, it becomes one scalar:
``1\\n[evil]\\nx=1`` is a string, never a table. Where the form is recognised:

* TOML: after ``key =`` and as an array element. In a key or a table name it is an error.
  The lexer knows basic, literal and multi-line strings and ``#`` comments.
* JSON: after ``"key":`` and as an array element; an error as an object key.
* YAML: PyYAML's own scanner finds plain (unquoted) scalars that are exactly one placeholder
  and stand as a mapping value or a block-sequence entry (``port: ${PORT:8000}``,
  ``- ${HOST}``). Limits: in a flow collection (``[${A}, ${B}]``) YAML reads ``{`` as syntax,
  so quote placeholders there; a tagged or anchored scalar (``!!str ${X}``, ``&a ${X}``) and
  a placeholder inside a longer plain scalar (``url: http://${HOST}/x``) are expanded as
  strings; a default holding ``: `` or `` #`` ends the plain scalar early, so quote it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from otpylib_config.values import Section, coerce

Environ = Mapping[str, str]

_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-?)(?P<default>[^}]*))?")
_MARK = re.compile(r"\$\$\{|\$\{")
_SYNTAX_HINT = (
    "expected ${NAME}, ${NAME:-default} or ${NAME:default}, NAME = [A-Za-z_][A-Za-z0-9_]*"
)


class InterpolationError(ValueError):
    """A placeholder is malformed, or names an unset variable that has no default.

    ``variable`` is the variable's name (``None`` when the placeholder is malformed); ``key``
    the dotted path of the value, or the key written before the placeholder on its line;
    ``line`` the line number for a placeholder outside quotes. Each is ``None`` when unknown.
    """

    def __init__(
        self,
        reason: str,
        *,
        variable: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.variable = variable
        self.key = key
        self.line = line
        where = ", ".join(
            part for part in (f"line {line}" if line else "", f"key {key}" if key else "") if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)

    def at(self, *, key: str | None = None, line: int | None = None) -> InterpolationError:
        """The same error, located: the low-level parser does not know where it is."""
        return InterpolationError(self.reason, variable=self.variable, key=key, line=line)


@dataclass(frozen=True)
class _Placeholder:
    name: str
    default: str | None
    empty_is_unset: bool  # ``:-`` (shell semantics) rather than ``:``

    def resolve(self, environ: Environ) -> str:
        value = environ.get(self.name)
        if value is not None and not (value == "" and self.empty_is_unset):
            return value
        if self.default is None:
            raise InterpolationError(
                f"environment variable {self.name} is not set and ${{{self.name}}} has no default",
                variable=self.name,
            )
        return self.default


def _placeholder(source: str) -> _Placeholder:
    """Parse ``source``, a placeholder as written from ``${`` to its ``}`` (if it has one).

    Errors never quote ``source``: the text around and inside a placeholder may be a secret
    (a password that happens to contain ``${``). They name the variable where one was
    written correctly; the caller adds the key and line.
    """
    if not source.endswith("}"):
        raise InterpolationError(f"unterminated placeholder: {_SYNTAX_HINT}")
    match = _BODY.fullmatch(source[2:-1])
    if match is None:
        raise InterpolationError(f"malformed placeholder: {_SYNTAX_HINT}")
    default = match["default"]
    if default is not None and "${" in default:
        raise InterpolationError(
            f"the placeholder of {match['name']} has a placeholder in its default; "
            "nesting is not supported",
            variable=match["name"],
        )
    return _Placeholder(match["name"], default, match["op"] == ":-")


def _variable(source: str) -> str | None:
    """The variable a complete placeholder names, or ``None``: safe to put in a message."""
    match = _BODY.fullmatch(source[2:-1]) if source.endswith("}") else None
    return None if match is None else match["name"]


# -- in strings ----------------------------------------------------------------------------


def expand(text: str, environ: Environ) -> str:
    """Expand the placeholders of one string and turn each ``$${`` into ``${``."""
    if "${" not in text:
        return text
    out: list[str] = []
    pos = 0
    while (mark := _MARK.search(text, pos)) is not None:
        out.append(text[pos : mark.start()])
        if mark.group() == "$${":
            out.append("${")
            pos = mark.end()
            continue
        end = text.find("}", mark.end())
        source = text[mark.start() :] if end < 0 else text[mark.start() : end + 1]
        out.append(_placeholder(source).resolve(environ))
        pos = mark.start() + len(source)
    out.append(text[pos:])
    return "".join(out)


def expand_layer(layer: Section, environ: Environ) -> Section:
    """Expand every string value of a parsed layer; errors name the value's dotted path."""
    return _expand_section(layer, "", environ)


def _expand_section(section: Section, path: str, environ: Environ) -> Section:
    return Section(
        {
            key: _expand_value(value, f"{path}.{key}" if path else key, environ)
            for key, value in section.items()
        }
    )


def _expand_value(value: Any, path: str, environ: Environ) -> Any:
    if isinstance(value, str):
        try:
            return expand(value, environ)
        except InterpolationError as exc:
            raise exc.at(key=path) from None
    if isinstance(value, Section):
        return _expand_section(value, path, environ)
    if isinstance(value, tuple):
        return tuple(_expand_value(item, f"{path}[{i}]", environ) for i, item in enumerate(value))
    return value


# -- template form: one safe literal per placeholder outside quotes ------------------------


def render_templates(data: bytes, fmt: str, environ: Environ) -> bytes:
    """Replace placeholders that stand for whole values by literals, before parsing.

    Literals never contain a newline, so the parser's line numbers stay right. Bytes that
    are not UTF-8 are returned as they are: the parser reports where they go wrong.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data
    return _RENDERERS[fmt](text, environ).encode("utf-8")


def render_scalar(value: str, fmt: str) -> str:
    """``value`` as one literal of ``fmt``: a bool, a number, or a quoted string."""
    typed = _scalar(value)
    if isinstance(typed, bool):
        return "true" if typed else "false"
    if isinstance(typed, int):
        return str(typed)
    if isinstance(typed, float):
        return _float_literal(typed)
    safe = value.replace("${", "$${")  # the string pass must give it back as it is
    return json.dumps(safe) if fmt == "json" else _double_quoted(safe)


def _scalar(text: str) -> object:
    try:
        typed: object = coerce(text, structured=False)  # never structure from the environment
    except ValueError:
        return text  # an integer too long to convert: it stays the string it was
    if isinstance(typed, float) and not math.isfinite(typed):
        return text  # "1e999": JSON and YAML have no literal for infinity
    return typed


def _float_literal(number: float) -> str:
    """Shortest round-trip text, with a ``.`` in the mantissa: YAML 1.1 needs one."""
    mantissa, e, exponent = repr(number).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def _double_quoted(text: str) -> str:
    """A TOML basic string that is also a YAML double-quoted scalar.

    Not ``json.dumps``: it writes DEL raw (TOML refuses it) and characters beyond U+FFFF as
    surrogate pairs (TOML refuses those too). ``\\uXXXX``/``\\UXXXXXXXX`` mean the same in both.
    """
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def _escape_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# -- TOML and JSON lexing --------------------------------------------------------------------

_TOML_SKIP = "|".join(
    [
        r"\#[^\n]*",  # comment
        r'"""(?:\\.|[^\\])*?"{3,5}',  # multi-line basic string (up to two quotes of content)
        r"'''.*?'{3,5}",  # multi-line literal string
        r'"(?:\\.|[^"\\\n])*"?',  # basic string; unterminated ones are the parser's to report
        r"'[^'\n]*'?",  # literal string
    ]
)
_JSON_SKIP = r'"(?:\\.|[^"\\])*"?'


def _lexer(skip: str, punct: str) -> re.Pattern[str]:
    return re.compile(
        f"(?P<skip>{skip})"
        r"|(?P<escape>\$\$\{)"
        r"|(?P<placeholder>\$\{[^}\n]*\}?)"
        f"|(?P<punct>[{punct}])"
        r"|(?P<newline>\n)"
        r"""|(?P<other>[^\s"'#$\[\]{},=:]+|\S)""",
        re.DOTALL,
    )


_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""


@dataclass(frozen=True)
class _Syntax:
    fmt: str
    lexer: re.Pattern[str]
    assign: str  # the token after which a value starts: "=" or ":"
    key: re.Pattern[str]  # a key written before the placeholder on its line, for messages


_TOML = _Syntax(
    "toml",
    _lexer(_TOML_SKIP, r"=\[\]{},"),
    "=",
    re.compile(rf"({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*="),
)
_JSON = _Syntax(
    "json", _lexer(_JSON_SKIP, r":\[\]{},"), ":", re.compile(r'"((?:\\.|[^"\\])*)"\s*:')
)


class _Scan:
    """One pass over a TOML or JSON document, tracking whether a value may start here.

    ``stack`` holds the open brackets: ``[`` an array, ``{`` an inline table or object, ``H``
    a TOML table header. ``prev`` is the last significant token: a punctuation character,
    ``\\n`` at top level (a new TOML statement), or ``x`` for anything else (a key, a value).
    """

    def __init__(self, text: str, syntax: _Syntax, environ: Environ) -> None:
        self.text = text
        self.syntax = syntax
        self.environ = environ
        self.stack: list[str] = []
        self.prev = "\n"
        self.table = ""  # the current TOML table, for error messages
        self._header_start = 0

    def render(self) -> str:
        out: list[str] = []
        pos = 0
        for token in self.syntax.lexer.finditer(self.text):
            if token.lastgroup == "placeholder":
                out += [self.text[pos : token.start()], self._literal(token)]
                pos = token.end()
            self._step(token)
        out.append(self.text[pos:])
        return "".join(out)

    def _step(self, token: re.Match[str]) -> None:
        kind = token.lastgroup
        if kind == "punct":
            self._punct(token.group(), token.start())
        elif kind == "newline":
            if not self.stack:
                self.prev = "\n"
        elif kind != "skip" or not token.group().startswith("#"):  # comments change nothing
            self.prev = "x"

    def _punct(self, char: str, start: int) -> None:
        if char in "[{":
            if not self.stack:
                self._header_start = start
            self.stack.append("H" if self._opens_header(char) else char)
        elif char in "]}" and self.stack:
            closed = self.stack.pop()
            if closed == "H" and not self.stack:
                self.table = self.text[self._header_start : start].strip("[] \t")
        self.prev = char

    def _opens_header(self, char: str) -> bool:
        if self.syntax.fmt != "toml" or char != "[":
            return False
        return (not self.stack and self.prev == "\n") or (self.stack == ["H"] and self.prev == "[")

    def _at_value(self) -> bool:
        if self.prev == self.syntax.assign:
            return True
        return self.stack[-1:] == ["["] and self.prev in ("[", ",")

    def _ends_value(self, end: int) -> bool:
        """Whether the value ends right after the placeholder (``${X}000`` does not)."""
        following = self.text[end : end + 1]
        return not following or following.isspace() or following in ",]}#"

    def _literal(self, token: re.Match[str]) -> str:
        try:
            if not self._at_value() or not self._ends_value(token.end()):
                raise _misplaced(token.group())
            value = _placeholder(token.group()).resolve(self.environ)
        except InterpolationError as exc:
            line = self.text.count("\n", 0, token.start()) + 1
            raise exc.at(line=line, key=self._key(token.start())) from None
        return render_scalar(value, self.syntax.fmt)

    def _key(self, start: int) -> str | None:
        line_start = self.text.rfind("\n", 0, start) + 1
        keys = self.syntax.key.findall(self.text, line_start, start)
        if not keys:
            return None
        key = str(keys[-1])
        return f"{self.table}.{key}" if self.table else key


def _misplaced(source: str) -> InterpolationError:
    variable = _variable(source)
    of = f" of {variable}" if variable else ""
    return InterpolationError(
        f"the placeholder{of} outside quotes must stand for a whole value (not a key, a "
        "table name or part of a value); put it in a string to build a string",
        variable=variable,
    )


def _render_toml(text: str, environ: Environ) -> str:
    return _Scan(text, _TOML, environ).render()


def _render_json(text: str, environ: Environ) -> str:
    return _Scan(text, _JSON, environ).render()


# -- YAML: PyYAML's scanner finds the plain scalars --------------------------------------------

_WHOLE = re.compile(r"\$\{[^}]*\}")


def _render_yaml(text: str, environ: Environ) -> str:
    try:
        import yaml
    except ImportError:
        return text  # parse() names the extra to install
    try:
        tokens = list(yaml.scan(text))
    except yaml.YAMLError:
        return text  # parse() reports where
    value_before = (yaml.ValueToken, yaml.BlockEntryToken, yaml.FlowEntryToken)
    out: list[str] = []
    pos = 0
    key: tuple[int, str] | None = None  # (line, key) of the last mapping key seen
    for before, token in zip([None, *tokens], tokens, strict=False):
        if not isinstance(token, yaml.ScalarToken):
            continue
        if isinstance(before, yaml.KeyToken):
            key = (token.start_mark.line, token.value)
        elif isinstance(before, value_before) and _is_template(text, token):
            out += [text[pos : token.start_mark.index], _yaml_literal(token, key, environ)]
            pos = token.end_mark.index
    out.append(text[pos:])
    return "".join(out)


def _is_template(text: str, token: Any) -> bool:
    """A plain scalar written on one line that is exactly one placeholder."""
    start, end = token.start_mark.index, token.end_mark.index
    return (
        bool(token.plain) and text[start:end] == token.value and bool(_WHOLE.fullmatch(token.value))
    )


def _yaml_literal(token: Any, key: tuple[int, str] | None, environ: Environ) -> str:
    line = int(token.start_mark.line)
    try:
        value = _placeholder(str(token.value)).resolve(environ)
    except InterpolationError as exc:
        on_line = key[1] if key is not None and key[0] == line else None
        raise exc.at(line=line + 1, key=on_line) from None
    return render_scalar(value, "yaml")


_RENDERERS: dict[str, Callable[[str, Environ], str]] = {
    "toml": _render_toml,
    "json": _render_json,
    "yaml": _render_yaml,
}
