"""Configuration values as JSON, for everything that sends or prints them (the admin API,
the CLI): frozen sections are dicts and frozen lists tuples, so they encode as they are;
TOML's dates and times become ISO 8601 text."""

from __future__ import annotations

import datetime
import json
from typing import Any


def default(value: Any) -> Any:
    """``json.dumps``'s ``default``: what JSON has no type for, as JSON data."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def dumps(value: Any, *, indent: int | None = None, ensure_ascii: bool = True) -> str:
    """Compact JSON of ``value`` (pretty with ``indent``). ASCII by default, so that any
    stored text encodes, a lone surrogate from a request or a variable included."""
    separators = None if indent else (",", ":")
    return json.dumps(
        value, default=default, ensure_ascii=ensure_ascii, indent=indent, separators=separators
    )
