"""``${VAR}`` placeholders in configuration files, expanded from the environment.

The grammar is docker compose's, so a file written for compose reads the same here, with
the few deliberate differences listed below. The same in both forms (strings, templates)::

    ${VAR}            the variable's value; an error if VAR is not set (see differences)
    ${VAR:-default}   ``default`` when VAR is unset *or empty*
    ${VAR-default}    ``default`` only when VAR is unset; a set-but-empty VAR gives ""
    ${VAR:?message}   an error when VAR is unset or empty, naming VAR and ``message``
    ${VAR?message}    an error only when VAR is unset
    ${VAR:+other}     ``other`` when VAR is set and not empty, else ""
    ${VAR+other}      ``other`` when VAR is set (even empty), else ""
    ${VAR:default}    the older spelling of ``${VAR-default}``, kept for files written for it
    $${               a literal ``${``: ``$${VAR}`` gives ``${VAR}``

``VAR`` matches ``[A-Za-z_][A-Za-z0-9_]*`` and the operator is what follows the name, so
in ``${V?a-b}`` the operator is ``?`` and the message ``a-b``; ``${V-a?b}`` defaults to
``a?b``; ``${OFFSET:--5}`` defaults to ``-5``. ``${V:?}`` and ``${V?}`` are errors without a
message; ``${V:-}``, ``${V-}`` and ``${V:}`` make a variable optional.

A default, message or alternative is itself a template and may hold placeholders
(``${A:-${B:-x}}``, ``${A-http://${HOST}/}``); the first ``}`` that closes no inner ``${``
ends it (a lone ``}`` cannot be part of a default; ``{`` can). Defaults and alternatives are
expanded only when used, as in the shell: a missing variable in an unused default is not an
error. Every placeholder's syntax is checked, used or not: a typo must not wait for the day
its branch is taken. A value from the environment is inserted as it is, never expanded
again, so no variable can inject a placeholder.

Anything else after ``${`` is an error, never kept silently as text: no name (``${}``,
``${ x}``, ``${1X}``), a name followed by something other than ``}`` or an operator
(``${x }``, ``${x!}``, ``${a.b}``), the shell's ``${x:=default}`` (which would otherwise read
as the older form with the default ``=default``), or no closing brace.

Deliberate differences from docker compose:

* ``${VAR}`` with VAR unset is an error naming the file, the key and the variable; compose
  warns and inserts "". A forgotten variable must not start a service on an empty value.
  ``${VAR-}`` or ``${VAR:-}`` ask for compose's behaviour.
* ``$VAR`` without braces is ordinary text, and so is every ``$`` not followed by ``{``
  (``$5``, ``$$``, ``^a$``): passwords and regular expressions often hold a ``$``, and files
  written before this grammar rely on it. Only ``$${`` is an escape.
* The message of ``${VAR:?message}`` is shown as written; placeholders in it are checked but
  not expanded, because an error never carries a value from the environment.
* ``${VAR:default}`` is accepted (compose refuses it), for compatibility.

**Errors** never quote the value around a placeholder, nor any value from the environment
(either may be a secret): they name the key, the line where known, the variable and the
``:?`` message. Every problem of a document is collected and raised as ONE
:class:`InterpolationError` whose ``problems`` lists each; :func:`expand_file` gathers those
of both forms.

**In strings** (``url = "postgres://${DB_HOST:-localhost}/app"``): the document is parsed
first, then :func:`expand_layer` expands every ``str`` value, inside lists too; keys are never
expanded. The result is a string whatever the variable holds.

**Template form**, a placeholder standing for a whole value outside quotes
(``port = ${PORT:-8000}``): before parsing, :func:`render_templates` finds these with a small
lexer per format and replaces each with ONE safe literal: ``true``/``false``, an integer or a
finite float when the text looks like one (the rules of
:func:`otpylib_config.sources.env.coerce`), otherwise a double-quoted string with every quote,
backslash and control character escaped and ``${`` written as ``$${`` (so the string pass
gives it back unexpanded). Whatever the environment holds, it becomes one scalar:
``1\\n[evil]\\nx=1`` is a string, never a table. Such a placeholder, nested ones included,
must end on its own line. Where the form is recognised:

* TOML: after ``key =`` and as an array element. In a key or a table name it is an error.
  The lexer knows basic, literal and multi-line strings and ``#`` comments.
* JSON: after ``"key":`` and as an array element; an error as an object key.
* YAML: PyYAML's own scanner finds plain (unquoted) scalars that are exactly one placeholder
  and stand as a mapping value or a block-sequence entry (``port: ${PORT:-8000}``,
  ``- ${HOST}``). Limits: in a flow collection (``[${A}, ${B}]``) YAML reads ``{`` as syntax,
  so quote placeholders there; a tagged or anchored scalar (``!!str ${X}``, ``&a ${X}``) and
  a placeholder inside a longer plain scalar (``url: http://${HOST}/x``) are expanded as
  strings; a default holding ``: `` or `` #`` ends the plain scalar early, so quote it.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from otpylib_config.parsers import ParseError, parse
from otpylib_config.values import Section, coerce

Environ = Mapping[str, str]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Tried in this order where the name ends; ``:`` alone (the older default) comes last.
_OPERATORS = (":?", ":-", ":+", "?", "-", "+", ":")
_DEFAULTS = frozenset({":-", "-", ":"})
_REQUIRED = frozenset({":?", "?"})
_ALTERNATIVES = frozenset({":+", "+"})
_WANT_NON_EMPTY = frozenset({":-", ":?", ":+"})
_MARK = re.compile(r"\$\$\{|\$\{")
_NESTED_MARK = re.compile(r"\$\$\{|\$\{|\}")
_SYNTAX_HINT = (
    "expected ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, "
    "${NAME?message}, ${NAME:+other} or ${NAME+other}, NAME = [A-Za-z_][A-Za-z0-9_]*"
)
_UNTERMINATED = f"unterminated placeholder (no closing brace): {_SYNTAX_HINT}"
_NO_NAME = f"malformed placeholder: a variable name must follow ${{: {_SYNTAX_HINT}"
_ASSIGN = (
    "malformed placeholder: ${NAME:=default} (the shell's assign-default) is not supported; "
    "write ${NAME:-default}"
)
_NO_OPERATOR = (
    "malformed placeholder: the variable name must be followed by }, :-, -, :?, ?, :+ or +: "
    + _SYNTAX_HINT
)


# -- problems and the error that lists them ------------------------------------------------


class PlaceholderProblem(NamedTuple):
    """One placeholder that could not be expanded, and where it is.

    ``key`` is what messages show: the dotted path of a string value, or for the template
    form the key written before the placeholder on its line. ``path`` is the exact dotted
    path once known ("" until then): a template placeholder's is found only after parsing.
    """

    reason: str
    variable: str | None = None
    key: str | None = None
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        line = f"line {self.line}" if self.line else ""
        key = f"key {self.key}" if self.key else ""
        where = ", ".join(part for part in (line, key) if part)
        return f"{where}: {self.reason}" if where else self.reason

    def pair(self) -> tuple[str, str]:
        """``(path, message)``, the shape of validation problems, so callers can merge them."""
        if not self.path:
            return "", str(self)
        return self.path, f"line {self.line}: {self.reason}" if self.line else self.reason


class InterpolationError(ValueError):
    """Placeholders of one document are malformed or name variables that give no value.

    ``details`` lists every :class:`PlaceholderProblem`, in document order; ``problems`` the
    same as ``(path, message)`` pairs (path "" when only a line is known). ``reason``,
    ``variable``, ``key`` and ``line`` are those of the first problem. ``partial`` is the
    layer without the values that failed (a list with one failed element is left out
    whole), when the document could be parsed; ``None`` otherwise.
    """

    def __init__(
        self, problems: Sequence[PlaceholderProblem], partial: Section | None = None
    ) -> None:
        if not problems:
            raise ValueError("an InterpolationError needs at least one problem")
        self.details = tuple(problems)
        self.problems = tuple(problem.pair() for problem in self.details)
        self.partial = partial
        first = self.details[0]
        self.reason = first.reason
        self.variable = first.variable
        self.key = first.key
        self.line = first.line
        super().__init__("; ".join(str(problem) for problem in self.details))

    def __reduce__(self) -> tuple[type[InterpolationError], tuple[Any, ...]]:
        """Pickle by the problems (``args`` holds only the message); ``partial`` is dropped:
        a read-only ``Section`` cannot be rebuilt item by item."""
        return type(self), (self.details,)


# -- the grammar -----------------------------------------------------------------------------


class _Ref(NamedTuple):
    """A well-formed placeholder. ``written`` is its argument as written, for ``:?``."""

    name: str
    op: str  # "" for ``${NAME}``
    arg: tuple[_Part, ...] = ()
    written: str = ""


class _Bad(NamedTuple):
    """A malformed placeholder: only the reason survives, never its text."""

    reason: str


_Part = str | _Ref | _Bad


class _SyntaxProblem(Exception):
    """Raised inside a placeholder, caught at its outermost ``${`` (which then becomes a
    :class:`_Bad`), so one typo in a nested default marks the whole placeholder."""


def _template(text: str, start: int = 0, end: int | None = None) -> list[_Part]:
    """The parts of ``text[start:end]``, text outside any placeholder: a ``}`` is text."""
    end = len(text) if end is None else end
    parts: list[_Part] = []
    pos = start
    while (mark := _MARK.search(text, pos, end)) is not None:
        parts.append(text[pos : mark.start()])
        if mark.group() == "$${":
            parts.append("${")
            pos = mark.end()
        else:
            part, pos = _outer(text, mark.start(), end)
            parts.append(part)
    parts.append(text[pos:end])
    return [part for part in parts if part != ""]


def _outer(text: str, start: int, end: int) -> tuple[_Ref | _Bad, int]:
    """The placeholder at ``start`` (a ``${``) and where it ends; a malformed one ends at its
    matching brace (or ``end``), so the rest of the text is still checked."""
    try:
        return _placeholder(text, start, end)
    except _SyntaxProblem as exc:
        return _Bad(str(exc)), _skip(text, start, end)


def _placeholder(text: str, start: int, end: int) -> tuple[_Ref, int]:
    name = _NAME.match(text, start + 2, end)
    if name is None:
        raise _SyntaxProblem(_UNTERMINATED if start + 2 >= end else _NO_NAME)
    pos = name.end()
    if pos >= end:
        raise _SyntaxProblem(_UNTERMINATED)
    if text[pos] == "}":
        return _Ref(name.group(), ""), pos + 1
    op = next((op for op in _OPERATORS if text.startswith(op, pos, end)), None)
    if op is None:
        raise _SyntaxProblem(_NO_OPERATOR)
    arg_start = pos + len(op)
    if op == ":" and text.startswith("=", arg_start, end):
        raise _SyntaxProblem(_ASSIGN)
    arg, close = _argument(text, arg_start, end)
    return _Ref(name.group(), op, tuple(arg), text[arg_start : close - 1]), close


def _argument(text: str, pos: int, end: int) -> tuple[list[_Part], int]:
    """A default, message or alternative: a template up to the ``}`` that closes its
    placeholder, and the position after that brace.

    ``$${`` gives ``${`` and its own ``}`` stays text, so ``${A:-$${B}}`` defaults to
    ``${B}`` (as in docker compose) rather than ending at the first brace.
    """
    parts: list[_Part] = []
    depth = 0  # escapes opened, whose closing braces are text
    while (mark := _NESTED_MARK.search(text, pos, end)) is not None:
        parts.append(text[pos : mark.start()])
        token, pos = mark.group(), mark.end()
        if token == "$${":
            parts.append("${")
            depth += 1
        elif token == "}" and depth:
            parts.append("}")
            depth -= 1
        elif token == "}":
            return [part for part in parts if part != ""], pos
        else:
            part, pos = _placeholder(text, mark.start(), end)
            parts.append(part)
    raise _SyntaxProblem(_UNTERMINATED)


def _skip(text: str, start: int, end: int) -> int:
    """Where a malformed placeholder at ``start`` ends: its matching brace, else ``end``."""
    depth = 0
    pos = start
    while (mark := _NESTED_MARK.search(text, pos, end)) is not None:
        pos = mark.end()
        depth += -1 if mark.group() == "}" else 1
        if depth == 0:
            return pos
    return end


# -- resolving against the environment -------------------------------------------------------


def _resolve(parts: Iterable[_Part], environ: Environ, sink: list[PlaceholderProblem]) -> str:
    """The text of ``parts``; each problem is appended to ``sink`` (its part gives "")."""
    return "".join(_part_value(part, environ, sink) for part in parts)


def _part_value(part: _Part, environ: Environ, sink: list[PlaceholderProblem]) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, _Bad):
        sink.append(PlaceholderProblem(part.reason))
        return ""
    return _substitute(part, environ, sink)


def _substitute(ref: _Ref, environ: Environ, sink: list[PlaceholderProblem]) -> str:
    """One placeholder's value. The environment's value is returned as it is: never parsed."""
    value = environ.get(ref.name)
    wanted = bool(value) if ref.op in _WANT_NON_EMPTY else value is not None
    if ref.op in _ALTERNATIVES:
        return _resolve(ref.arg, environ, sink) if wanted else ""
    if wanted:
        assert value is not None
        return value
    if ref.op in _DEFAULTS:
        return _resolve(ref.arg, environ, sink)
    sink.append(_missing(ref))
    return ""


def _missing(ref: _Ref) -> PlaceholderProblem:
    if ref.op in _REQUIRED:
        message = f": {ref.written}" if ref.written else ""
        reason = f"required variable {ref.name} is missing a value{message}"
    else:
        reason = f"environment variable {ref.name} is not set and ${{{ref.name}}} has no default"
    return PlaceholderProblem(reason, variable=ref.name)


# -- in strings ----------------------------------------------------------------------------


def expand(text: str, environ: Environ) -> str:
    """Expand the placeholders of one string and turn each ``$${`` into ``${``.

    Raises one :class:`InterpolationError` listing every problem of the string.
    """
    if "${" not in text:
        return text
    sink: list[PlaceholderProblem] = []
    value = _resolve(_template(text), environ, sink)
    if sink:
        raise InterpolationError(sink)
    return value


def expand_layer(layer: Section, environ: Environ) -> Section:
    """Expand every string value of a parsed layer; errors name each value's dotted path."""
    walk = _Walk(environ)
    expanded = walk.section(layer, "")
    if walk.problems:
        raise InterpolationError(walk.problems, partial=expanded)
    return expanded


def expand_file(data: bytes, fmt: str, environ: Environ) -> Section:
    """Parse a document and expand its placeholders in both forms, with every problem of
    both in ONE :class:`InterpolationError` (template ones first, in file order).

    A template placeholder that fails stands in the document as a unique string while it is
    parsed, so the string pass still runs and the failure gets its exact path. If the
    document does not parse even so (a placeholder written as a key), only the template
    problems are raised: the parser's error follows once they are fixed.
    """
    failures = _Failures()
    rendered = _render(data, fmt, environ, failures)
    try:
        layer = parse(rendered, fmt)
    except ParseError:
        if failures.problems:
            raise InterpolationError(failures.problems) from None
        raise
    walk = _Walk(environ, failures)
    expanded = walk.section(layer, "")
    problems = failures.problems + walk.problems
    if problems:
        raise InterpolationError(problems, partial=expanded)
    return expanded


_FAILED: Any = object()  # a value left out of the partial layer


class _Walk:
    """Expands a layer's strings, collecting problems; failed values are left out."""

    def __init__(self, environ: Environ, failures: _Failures | None = None) -> None:
        self.environ = environ
        self.failures = failures
        self.problems: list[PlaceholderProblem] = []

    def section(self, section: Section, path: str) -> Section:
        out = {}
        for key, value in section.items():
            expanded = self._value(value, f"{path}.{key}" if path else key)
            if expanded is not _FAILED:
                out[key] = expanded
        return Section(out)

    def _value(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self._string(value, path)
        if isinstance(value, Section):
            return self.section(value, path)
        if isinstance(value, tuple):
            items = [self._value(item, f"{path}[{i}]") for i, item in enumerate(value)]
            return _FAILED if any(item is _FAILED for item in items) else tuple(items)
        return value

    def _string(self, text: str, path: str) -> Any:
        if self.failures is not None and self.failures.locate(text, path):
            return _FAILED
        if "${" not in text:
            return text
        sink: list[PlaceholderProblem] = []
        value = _resolve(_template(text), self.environ, sink)
        if not sink:
            return value
        self.problems += [problem._replace(key=path, path=path) for problem in sink]
        return _FAILED


class _Failures:
    """The template placeholders of one document that failed, in file order.

    Each failed value is replaced by a stand-in string, random per document so no file can
    hold it by chance; finding a stand-in in the parsed layer gives its problems their path.
    """

    def __init__(self) -> None:
        self._token = secrets.token_hex(8)
        self.problems: list[PlaceholderProblem] = []
        self._indexes: dict[str, list[int]] = {}

    def add(self, problems: Iterable[PlaceholderProblem]) -> str:
        """Record one placeholder's problems; returns the stand-in for its value."""
        stand_in = f"otpylib-config unresolved placeholder {self._token} {len(self._indexes)}"
        start = len(self.problems)
        self.problems += problems
        self._indexes[stand_in] = list(range(start, len(self.problems)))
        return stand_in

    def locate(self, text: str, path: str) -> bool:
        """Whether ``text`` is a stand-in; the first path it is found at is its problems'."""
        indexes = self._indexes.get(text)
        if indexes is None:
            return False
        for i in indexes:
            if not self.problems[i].path:
                self.problems[i] = self.problems[i]._replace(path=path)
        return True


# -- template form: one safe literal per placeholder outside quotes ------------------------


def render_templates(data: bytes, fmt: str, environ: Environ) -> bytes:
    """Replace placeholders that stand for whole values by literals, before parsing.

    Literals never contain a newline, so the parser's line numbers stay right. Bytes that
    are not UTF-8 are returned as they are: the parser reports where they go wrong. Raises
    one :class:`InterpolationError` listing every template problem of the document.
    """
    failures = _Failures()
    rendered = _render(data, fmt, environ, failures)
    if failures.problems:
        raise InterpolationError(failures.problems)
    return rendered


def _render(data: bytes, fmt: str, environ: Environ, failures: _Failures) -> bytes:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data
    return _RENDERERS[fmt](text, environ, failures).encode("utf-8")


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
    """Tokens of a document; a placeholder is only its ``${``: the grammar finds its end."""
    return re.compile(
        f"(?P<skip>{skip})"
        r"|(?P<escape>\$\$\{)"
        r"|(?P<placeholder>\$\{)"
        f"|(?P<punct>[{punct}])"
        r"|(?P<newline>\n)"
        r"""|(?P<other>[^\s"'#$\[\]{},=:]+|\S)""",
        re.DOTALL,
    )


_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""


class _Syntax(NamedTuple):
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

    def __init__(self, text: str, syntax: _Syntax, environ: Environ, failures: _Failures) -> None:
        self.text = text
        self.syntax = syntax
        self.environ = environ
        self.failures = failures
        self.stack: list[str] = []
        self.prev = "\n"
        self.table = ""  # the current TOML table, for error messages
        self._header_start = 0

    def render(self) -> str:
        out: list[str] = []
        pos = at = 0
        while (token := self.syntax.lexer.search(self.text, at)) is not None:
            if token.lastgroup == "placeholder":
                literal, at = self._literal(token.start())
                out += [self.text[pos : token.start()], literal]
                pos = at
                self.prev = "x"
            else:
                self._step(token)
                at = token.end()
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

    def _literal(self, start: int) -> tuple[str, int]:
        """What replaces the placeholder at ``start``, and where the placeholder ends.

        One that fails is replaced by its stand-in where it stands for a value (so the
        document still parses), else left as written for the parser to refuse.
        """
        line_end = self.text.find("\n", start)
        part, end = _outer(self.text, start, len(self.text) if line_end < 0 else line_end)
        placed = self._at_value() and self._ends_value(end)
        sink: list[PlaceholderProblem] = []
        value = ""
        if isinstance(part, _Bad):
            sink.append(PlaceholderProblem(part.reason))
        elif not placed:
            sink.append(_misplaced(part.name))
        else:
            value = _substitute(part, self.environ, sink)
        if not sink:
            return render_scalar(value, self.syntax.fmt), end
        line = self.text.count("\n", 0, start) + 1
        stand_in = self.failures.add(
            problem._replace(line=line, key=self._key(start)) for problem in sink
        )
        return (render_scalar(stand_in, self.syntax.fmt) if placed else self.text[start:end]), end

    def _key(self, start: int) -> str | None:
        line_start = self.text.rfind("\n", 0, start) + 1
        keys = self.syntax.key.findall(self.text, line_start, start)
        if not keys:
            return None
        key = str(keys[-1])
        return f"{self.table}.{key}" if self.table else key


def _misplaced(variable: str) -> PlaceholderProblem:
    return PlaceholderProblem(
        f"the placeholder of {variable} outside quotes must stand for a whole value (not a "
        "key, a table name or part of a value); put it in a string to build a string",
        variable=variable,
    )


def _render_toml(text: str, environ: Environ, failures: _Failures) -> str:
    return _Scan(text, _TOML, environ, failures).render()


def _render_json(text: str, environ: Environ, failures: _Failures) -> str:
    return _Scan(text, _JSON, environ, failures).render()


# -- YAML: PyYAML's scanner finds the plain scalars --------------------------------------------


def _render_yaml(text: str, environ: Environ, failures: _Failures) -> str:
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
            literal = _yaml_literal(token, key, environ, failures)
            out += [text[pos : token.start_mark.index], literal]
            pos = token.end_mark.index
    out.append(text[pos:])
    return "".join(out)


def _is_template(text: str, token: Any) -> bool:
    """A plain scalar written on one line that is exactly one placeholder."""
    start, end = token.start_mark.index, token.end_mark.index
    value = str(token.value)
    return (
        bool(token.plain)
        and text[start:end] == value
        and value.startswith("${")
        and _outer(value, 0, len(value))[1] == len(value)
    )


def _yaml_literal(
    token: Any, key: tuple[int, str] | None, environ: Environ, failures: _Failures
) -> str:
    value = str(token.value)
    part, _ = _outer(value, 0, len(value))
    sink: list[PlaceholderProblem] = []
    if isinstance(part, _Bad):
        sink.append(PlaceholderProblem(part.reason))
    else:
        value = _substitute(part, environ, sink)
    if not sink:
        return render_scalar(value, "yaml")
    line = int(token.start_mark.line)
    on_line = key[1] if key is not None and key[0] == line else None
    stand_in = failures.add(problem._replace(line=line + 1, key=on_line) for problem in sink)
    return render_scalar(stand_in, "yaml")


_RENDERERS: dict[str, Callable[[str, Environ, _Failures], str]] = {
    "toml": _render_toml,
    "json": _render_json,
    "yaml": _render_yaml,
}
