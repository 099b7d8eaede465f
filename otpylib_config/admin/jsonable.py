"""JSON for the admin API: frozen sections are dicts and frozen lists tuples, so they
encode as they are; TOML's dates and times become ISO 8601 text."""

from __future__ import annotations

import datetime
import json
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Compact JSON of ``value`` (pretty with ``indent``)."""
    separators = None if indent else (",", ":")
    return json.dumps(
        value, default=_default, ensure_ascii=False, indent=indent, separators=separators
    )
