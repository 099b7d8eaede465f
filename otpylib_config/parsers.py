"""Turn the bytes of a configuration document into a frozen layer, by format.

Kept apart from where the bytes come from, so files and Consul keys that hold a whole
document share one parser per format. Parse errors carry the line where known, and never
the document's text: a file may be secret, and the message reaches status, logs and
telemetry. A document too deep for a parser's recursion, or nested deeper than
:data:`~otpylib_config.values.MAX_DEPTH`, is a :class:`ParseError` like any other.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from otpylib_config.errors import InvalidValueError
from otpylib_config.values import MAX_DEPTH, MAX_INT_DIGITS, Section, freeze

FORMATS_BY_SUFFIX = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}


class ParseError(ValueError):
    """The document is not valid in its format; the message says where."""


def format_of(name: str, fmt: str | None) -> str:
    """``fmt``, or the format ``name``'s suffix implies; ``ValueError`` if neither tells."""
    fmt = fmt or FORMATS_BY_SUFFIX.get(os.path.splitext(name)[1].lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {name!r} from its suffix; pass format=")
    return check_format(fmt)


def check_format(fmt: str) -> str:
    """Reject an unknown format name early, where the source is configured."""
    if fmt not in _PARSERS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {sorted(_PARSERS)})")
    return fmt


def parse(data: bytes, fmt: str) -> Section:
    """Parse ``data`` as ``fmt`` ("toml", "json" or "yaml") into a frozen layer."""
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise ParseError(f"unknown format {fmt!r} (expected one of {sorted(_PARSERS)})")
    document = parser(data)
    if document is None:
        return Section()
    if not isinstance(document, dict):
        raise ParseError(f"the document must be a table/object, got {type(document).__name__}")
    try:
        frozen = freeze(document, allow_temporal=True)
    except InvalidValueError as exc:
        raise ParseError(str(exc)) from exc
    assert isinstance(frozen, Section)
    return frozen


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # editors on Windows may add a byte-order mark
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 at byte {exc.start}") from exc


_TOO_DEEP = f"nested too deeply to parse (configuration may nest at most {MAX_DEPTH} levels)"


def _unparsable(exc: Exception) -> str:
    """Why a parser failed outside its own error type, without the exception's text, which
    may quote the document (``int('hunter2')``): only the digit limit is worth naming."""
    if isinstance(exc, RecursionError):
        return _TOO_DEEP
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return f"an integer has more than {MAX_INT_DIGITS} digits"
    return f"{type(exc).__name__} while reading a value"


def _parse_toml(data: bytes) -> Any:
    text = _decode(data)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParseError(f"invalid TOML: {exc}") from exc
    except (RecursionError, ValueError) as exc:
        raise ParseError(f"invalid TOML: {_unparsable(exc)}") from None


def load_json(data: bytes) -> Any:
    """``data`` decoded as JSON, whoever sent it (a file, Consul, etcd, an announcement in
    etcd): one place that knows every way ``json.loads`` fails on hostile bytes. A
    :class:`ParseError` says why and where, never the text: not UTF-8 (at which byte),
    invalid JSON (line and column), nested too deeply for the decoder (a
    ``RecursionError``), an integer of more than 4300 digits (a ``ValueError``)."""
    text = _decode(data)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(str(exc)) from None
    except (RecursionError, ValueError) as exc:
        raise ParseError(_unparsable(exc)) from None


def _parse_json(data: bytes) -> Any:
    try:
        return load_json(data)
    except ParseError as exc:
        raise ParseError(f"invalid JSON: {exc}") from None


def _parse_yaml(data: bytes) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise ParseError("YAML needs PyYAML: pip install 'otpylib-config[yaml]'") from exc
    text = _decode(data)
    try:
        return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: no python tags
    except yaml.YAMLError as exc:
        raise ParseError(f"invalid YAML: {_yaml_problem(exc)}") from None
    except RecursionError as exc:
        raise ParseError(f"invalid YAML: {_unparsable(exc)}") from None


def _yaml_problem(exc: Any) -> str:
    """The problem and where, never PyYAML's full message: it quotes the document's lines,
    which may hold secrets or expanded placeholders."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


@lru_cache(maxsize=1)
def _yaml_loader() -> type:
    """PyYAML's ``SafeLoader``, changed in two ways that keep values out of messages.

    * A tag it has no constructor for (``!!python/...``, ``!Ref``) gives a placeholder
      object whose type is named after the tag, instead of an error at a line and column:
      :func:`freeze` then refuses it naming the key path and the tag.
    * A constructor that fails (``!!int hunter2``) raises ``ConstructorError`` at the
      node's position, not PyYAML's ``ValueError``, whose text quotes the value.

    ``!!binary`` and ``!!set`` construct ``bytes`` and ``set``, which :func:`freeze`
    refuses by path and type.
    """
    import yaml

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (yaml.YAMLError, RecursionError):
                raise
            except Exception as exc:
                problem = f"cannot construct a {_tag(node.tag)} value: {_unparsable(exc)}"
                raise yaml.constructor.ConstructorError(
                    None, None, problem, node.start_mark
                ) from None

    Loader.add_constructor(None, lambda _loader, node: _unsupported_tag(_tag(node.tag))())
    return Loader


def _tag(tag: str) -> str:
    """A tag as written in YAML (``!!int``), cut short: it names a type, not a value. What
    follows a ``:`` in a tag (``!!python/name:<anything>``) is an argument, so it is cut."""
    standard = "tag:yaml.org,2002:"
    short = "!!" + tag.removeprefix(standard) if tag.startswith(standard) else tag
    name, colon, _ = short.partition(":")
    short = name + colon + ("..." if colon else "")
    return short if len(short) <= 60 else short[:60] + "..."


@lru_cache(maxsize=64)
def _unsupported_tag(tag: str) -> type:
    """A type named ``YAML tag <tag>``: what :func:`freeze`'s message calls the value."""
    return type(f"YAML tag {tag}", (), {"__slots__": ()})


_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "toml": _parse_toml,
    "json": _parse_json,
    "yaml": _parse_yaml,
}
