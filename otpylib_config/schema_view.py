"""What a schema publishes: the validated model as plain, frozen configuration data.

With a pydantic ``schema`` the snapshot holds what the model says, not what the sources
said: ``"no"`` from the environment becomes ``False`` where the field is a ``bool``,
``"08001"`` becomes ``8001`` for an ``int``, and defaults and ``@computed_field``\\s appear at
their paths. So ``Config.get`` and ``Config.model()`` always agree. Values that are not
JSON-like are published in a plain form:

============================  ==========================================================
model value                   published as
============================  ==========================================================
``SecretStr``/``SecretBytes`` its secret value (text), and the path is marked secret
datetime, date, time          ISO 8601 text (``.isoformat()``)
``Enum``                      its ``.value``
set, frozenset, tuple, list   a tuple
URL, UUID, Decimal, Path,     ``str(value)``
IP address, anything else
============================  ==========================================================

Keys the model has no field for (pydantic ignores extra keys by default) keep the value
the sources gave: the model's view is laid over the merged tree, so a schema that covers
some sections leaves the others as they are.

A callable schema that returns a mapping publishes that mapping; one that returns
anything else (or ``None``) leaves the merged configuration as it is.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

from otpylib_config.tree import merge
from otpylib_config.values import Section, freeze

_PLAIN = (str, int, float, bool, type(None))
_TEMPORAL = (datetime.datetime, datetime.date, datetime.time)


class SchemaView(NamedTuple):
    """The tree to publish, and the paths whose value the schema says is secret."""

    tree: Section
    secret_paths: frozenset[str] = frozenset()


def view(raw: Section, model: Any) -> SchemaView:
    """What to publish for the merged tree ``raw`` once the schema returned ``model``."""
    if hasattr(model, "model_dump") and hasattr(type(model), "model_fields"):
        secrets: set[str] = set()
        # by alias: the keys as the sources spell them, so a field is published once
        dumped = _frozen(_plain(model.model_dump(mode="python", by_alias=True), "", secrets))
        return SchemaView(merge([raw, dumped]), frozenset(secrets))
    if isinstance(model, Mapping):
        return SchemaView(_frozen(_plain(model, "", set())))
    return SchemaView(raw)


def _frozen(value: Any) -> Section:
    frozen = freeze(value if isinstance(value, Mapping) else {})
    assert isinstance(frozen, Section)
    return frozen


def _plain(value: Any, path: str, secrets: set[str]) -> Any:
    """``value`` as JSON-like data, recording the paths of secret values in ``secrets``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {
            str(key): _plain(item, f"{path}.{key}" if path else str(key), secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_plain(item, path, secrets) for item in value)
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        secrets.add(path)
        revealed = secret()
        return revealed.decode("utf-8", "replace") if isinstance(revealed, bytes) else revealed
    if isinstance(value, _TEMPORAL):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _plain(value.value, path, secrets)
    return str(value)


def schema_origin(model: Any, path: tuple[str, ...]) -> str | None:
    """``"schema default"`` or ``"schema computed field"`` for a value the model gave at
    ``path`` that no source did; ``None`` if the model has no field there."""
    node = model
    for depth, segment in enumerate(path):
        fields = getattr(type(node), "model_fields", None)
        if fields is None:  # a plain dict inside the model: any key
            if not isinstance(node, Mapping) or segment not in node:
                return None
            node = node[segment]
            continue
        if segment in getattr(type(node), "model_computed_fields", {}):
            return "schema computed field" if depth == len(path) - 1 else None
        if segment not in fields:
            return None
        node = getattr(node, segment)
    return "schema default"
