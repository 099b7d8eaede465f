"""Turn the bytes of a configuration document into a frozen layer, by format.

Kept apart from where the bytes come from, so files and Consul keys that hold a whole
document share one parser per format. Parse errors carry the line where known.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from typing import Any

from otpylib_config.errors import InvalidValueError
from otpylib_config.values import Section, freeze

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


def _parse_toml(data: bytes) -> Any:
    try:
        return tomllib.loads(_decode(data))
    except tomllib.TOMLDecodeError as exc:
        raise ParseError(f"invalid TOML: {exc}") from exc


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc


def _parse_yaml(data: bytes) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise ParseError("YAML needs PyYAML: pip install 'otpylib-config[yaml]'") from exc
    try:
        return yaml.safe_load(_decode(data))
    except yaml.YAMLError as exc:
        raise ParseError(f"invalid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: Any) -> str:
    """The problem and where, never PyYAML's full message: it quotes the document's lines,
    which may hold secrets or expanded placeholders."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "toml": _parse_toml,
    "json": _parse_json,
    "yaml": _parse_yaml,
}
