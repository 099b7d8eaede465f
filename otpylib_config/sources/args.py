"""Command-line arguments as a layer.

**Flags to paths**: ``--server.port=8082`` and ``--server.port 8082`` set ``server.port``
(a ``-`` in a segment is a ``_``: ``--websocket.max-connections`` is
``websocket.max_connections``); ``mapping={"port": "server.port"}`` names a flat flag
(``--port``), exactly as written after the dashes, and wins over the dotted reading. A flag
with no value (the last token, or one followed by another ``--`` flag) is ``true``. A flag
given twice takes the last value, as argparse does. ``--`` ends the flags.

**Values** are coerced as the environment's are (:func:`otpylib_config.schema_shape.coerce_at`):
the text itself where the schema wants a string, else ``8082`` → int, ``true`` → bool and
JSON arrays and objects.

**Unknown input** is an error that names the token: a flat flag no mapping names, a flag whose
path is no field of the schema, a positional argument or a short option. ``ignore_unknown=True``
skips what names no path, for a command line that also carries the application's own options
(``--profile``, ``--config``); a mapped or dotted flag for no field of the schema is still an
error. :meth:`ArgsSource.from_namespace` takes what an application's own
``argparse`` parsed instead of raw text.

The arguments are taken when the source is made and never change, so every load gives the
same layer object once one was built, and a reload costs nothing (docs/sources.md).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from otpylib_config.errors import InvalidPathError, SourceError
from otpylib_config.paths import Path, parse_path
from otpylib_config.schema_shape import SchemaShape, coerce_at
from otpylib_config.sources.base import Source, SourceContext
from otpylib_config.tree import PathClash, build
from otpylib_config.values import Section, freeze

if TYPE_CHECKING:  # the application's argparse, not imported for a raw command line
    import argparse

FLAG = "--"

Given = tuple[str, Any, bool]
"""A flag as written (without its dashes), its value, and whether the value is text to
coerce (``False``: already typed, from argparse)."""


class ArgsSource(Source):
    """Command-line flags as configuration (see the module doc)."""

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        *,
        mapping: Mapping[str, str] | None = None,
        ignore_unknown: bool = False,
        secret: bool = False,
        name: str = "args",
    ) -> None:
        if isinstance(argv, str | bytes):
            raise TypeError("ArgsSource argv must be a sequence of str, not one string")
        tokens = list(sys.argv[1:] if argv is None else argv)
        if not all(isinstance(token, str) for token in tokens):
            raise TypeError("ArgsSource argv must be a sequence of str")
        self.mapping = {
            flag.removeprefix(FLAG): parse_path(path) for flag, path in (mapping or {}).items()
        }
        self.ignore_unknown = ignore_unknown
        self.secret = secret
        self.name = name
        self._given, self._unknown = _scan(tokens)
        self._shape: SchemaShape | None = None
        self._layer: Section | None = None
        self._flags: dict[Path, str] = {}

    @classmethod
    def from_namespace(
        cls,
        namespace: argparse.Namespace,
        mapping: Mapping[str, str] | None = None,
        *,
        parser: argparse.ArgumentParser | None = None,
        name: str = "args",
        secret: bool = False,
    ) -> ArgsSource:
        """The options an application's own ``argparse`` parsed: each attribute named in
        ``mapping`` (by its ``dest``, ``max_connections``, or its flag, ``max-connections``)
        and each whose ``dest`` is a dotted path (``--server.port`` has ``dest`` ``server.port``).
        An option that was not given sets nothing: one at ``None``, and, with ``parser``, one
        still at the parser's default (a ``store_true`` flag not given is ``False``, which
        must not override a lower layer). The rest of the namespace is left alone."""
        source = cls([], mapping=mapping, name=name, secret=secret)
        wanted = {flag.replace("-", "_"): flag for flag in source.mapping}
        given: list[Given] = []
        for dest, value in sorted(vars(namespace).items()):
            if value is None or (parser is not None and value == parser.get_default(dest)):
                continue
            if dest in wanted:
                given.append((wanted[dest], value, False))
            elif "." in dest:
                given.append((dest, value, False))
        source._given = given
        return source

    def configure(self, context: SourceContext) -> None:
        self._shape = context.shape
        self._layer = None

    def origin(self, path: Path, layer: Section | None = None) -> str:
        for depth in range(len(path), 0, -1):
            flag = self._flags.get(path[:depth])
            if flag is not None:
                return f"command line --{flag}"
        return f"command line ({self.name})"

    async def load(self) -> Section:
        if self._layer is None:
            self._layer = self._build()
        return self._layer

    def _build(self) -> Section:
        problems = (
            [] if self.ignore_unknown else [f"{token}: {why}" for token, why in self._unknown]
        )
        entries: list[tuple[str, Path, Any]] = []
        flags: dict[Path, str] = {}
        for flag, value, text in self._given:
            path, problem, ignorable = self._path(flag)
            if path is None:
                if problem is not None and not (ignorable and self.ignore_unknown):
                    problems.append(problem)
                continue
            flags[path] = flag
            entries.append((f"--{flag}", path, self._value(flag, path, value, text)))
        if problems:
            raise SourceError(self.name, "; ".join(problems))
        last = {entry[1]: entry for entry in entries}  # a flag given twice: the last one wins
        try:
            layer = build(list(last.values()))
        except PathClash as exc:
            raise SourceError(self.name, str(exc)) from None
        self._flags = flags
        return layer

    def _path(self, flag: str) -> tuple[Path | None, str | None, bool]:
        """The path ``--flag`` sets, or ``None`` with why; and whether ``ignore_unknown``
        may pass over it: a flag that names no path may be the application's own, but a
        mapped or dotted one that the schema has no field for is a mistake either way."""
        path = self.mapping.get(flag)
        if path is None:
            if "." not in flag:
                return None, f"--{flag}: unknown flag (name it in ArgsSource(mapping=...))", True
            try:
                path = parse_path(flag.replace("-", "_"))
            except InvalidPathError as exc:
                return None, f"--{flag}: {exc}", True
        if self._shape is None:
            return path, None, False
        spelled = self._shape.spelling(path)
        if spelled is None:
            return None, f"--{flag}: {'.'.join(path)} is no field of the schema", False
        return spelled, None, False

    def _value(self, flag: str, path: Path, value: Any, text: bool) -> Any:
        try:
            typed = coerce_at(value, path, self._shape) if text else value
            return freeze(typed, ".".join(path))
        except (TypeError, ValueError) as exc:  # InvalidValueError too
            raise SourceError(self.name, f"--{flag}: {exc}") from None


def _scan(tokens: list[str]) -> tuple[list[Given], list[tuple[str, str]]]:
    """The flags of ``tokens`` with their values, and the tokens that are no flag."""
    given: list[Given] = []
    unknown: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == FLAG:
            unknown += [(rest, "positional argument") for rest in tokens[i:]]
            break
        if token.startswith(FLAG + "="):
            unknown.append((token, "a flag needs a name"))
            continue
        if not token.startswith(FLAG):
            why = (
                "short option" if token.startswith("-") and token != "-" else "positional argument"
            )
            unknown.append((token, why))
            continue
        flag, equals, value = token[len(FLAG) :].partition("=")
        if equals:
            given.append((flag, value, True))
        elif i < len(tokens) and not tokens[i].startswith(FLAG):
            given.append((flag, tokens[i], True))
            i += 1
        else:
            given.append((flag, True, False))
    return given, unknown
