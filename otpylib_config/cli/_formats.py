"""Configuration as text: JSON (always there), TOML and YAML (optional extras).

``tomli_w`` and ``yaml`` are imported only when their format is asked for, so the CLI
starts fast and works without them; a missing one is a usage error naming the extra that
installs it.
"""

from __future__ import annotations

import json
from typing import Any

from otpylib_config import jsonable
from otpylib_config.cli._errors import UsageError

FORMATS = ("json", "toml", "yaml")


def to_json(value: Any, *, pretty: bool = True) -> str:
    """``value`` as JSON; TOML dates and times as ISO text, the way the admin API sends them."""
    if pretty:
        return json.dumps(value, indent=2, ensure_ascii=False, default=jsonable.default)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=jsonable.default)


def compact(value: Any) -> str:
    """One value on one line, for diffs, explanations and change events."""
    return to_json(value, pretty=False)


def render(value: Any, fmt: str, what: str = "the configuration") -> str:
    """``value`` as a document in ``fmt``; ``what`` names it in errors (``the value at x``)."""
    if fmt == "toml":
        return _toml(value, what)
    if fmt == "yaml":
        return _yaml(value)
    return to_json(value)


def _toml(value: Any, what: str) -> str:
    try:
        import tomli_w
    except ImportError:
        raise UsageError("TOML output needs tomli-w: pip install 'otpylib-config[cli]'") from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{what} is a {_kind(value)}, and a TOML document must be a table: "
            "use --format json or yaml"
        )
    null = _first_null(value, "")
    if null is not None:
        raise UsageError(f"TOML has no null, and {null or 'a value'} is null: use --format json")
    return str(tomli_w.dumps(value))


def _yaml(value: Any) -> str:
    try:
        import yaml
    except ImportError:
        raise UsageError("YAML output needs PyYAML: pip install 'otpylib-config[yaml]'") from None
    return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))


def _first_null(value: Any, path: str) -> str | None:
    """The path of the first ``None`` in ``value`` (``""`` for the root), or ``None``."""
    if value is None:
        return path
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for sub, item in items:
        found = _first_null(item, sub)
        if found is not None:
            return found
    return None


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
