"""``Config``: the API an application calls.

``Config`` is bound to the **default tree**: the first tree started (``start`` or
``child_spec``) that is still registered — with one tree in the process, that tree. A tree
stopped for good stays registered, serving reads, until ``shutdown(id)``.
``Config.of(spec_id)`` gives the same API bound to the tree ``spec_id``.

Reads look the path up in the published snapshot of the running tree, with no message and
no await inside, so they never block on the manager and never fail while it restarts.
Writes validate and freeze their input here, in the caller, then go to the manager as one
of the typed requests of :mod:`otpylib_config.protocol`; :mod:`otpylib_config.transport`
carries it there and its reply back, across manager restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from otpylib import process

from otpylib_config import registry, transport
from otpylib_config.errors import ConfigError, InvalidPathError
from otpylib_config.paths import parse_path, parse_pattern
from otpylib_config.protocol import (
    Delete,
    Put,
    PutMany,
    Reload,
    ReloadResult,
    Subscribe,
    Unsubscribe,
)
from otpylib_config.provenance import Explanation, explain
from otpylib_config.subscriptions import Callback, Subscription, SubscriptionHandle
from otpylib_config.tree import MISSING
from otpylib_config.values import freeze, thaw

if TYPE_CHECKING:
    from otpylib_config.table import ConfigTable, Status

_current: ConfigTable | None = None
"""The default tree's table, bound by :mod:`otpylib_config.registry`: the hot read path's
one global lookup."""


def _bind_default(table: ConfigTable | None) -> None:
    global _current
    _current = table


registry.on_default_changed(_bind_default)
current_table = registry.default_table


class ConfigClient:
    """Reads, writes and subscriptions on one running tree (see the module docstring for
    which one ``Config`` is)."""

    __slots__ = ("_table_of",)

    def __init__(self, table_of: Callable[[], ConfigTable]) -> None:
        self._table_of = table_of

    def of(self, spec_id: str) -> ConfigClient:
        """The same API, bound to the tree ``spec_id``."""
        return ConfigClient(partial(registry.table_by_id, spec_id))

    def get_nowait(self, path: str, default: Any = None) -> Any:
        """The value (or read-only section) at ``path``, or ``default`` if absent."""
        return lookup(self._table_of(), path, default)

    async def get(self, path: str, default: Any = None) -> Any:
        """Same as :meth:`get_nowait`; awaitable for symmetry with the writes."""
        return self.get_nowait(path, default)

    async def put(self, path: str, value: Any) -> None:
        """Set a runtime override (highest priority) at ``path``; returns once published."""
        segments = parse_path(path)
        frozen = freeze(value, path, depth=len(segments))
        await transport.request(self._table_of(), lambda r: Put(r, segments, path, frozen))

    async def put_many(self, values: Mapping[str, Any]) -> None:
        """Set several overrides as one change: validated together, published as one
        version with one batch of events, all or nothing. Each path pins only itself."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"put_many takes a mapping of path to value, got {type(values).__name__}"
            )
        entries = []
        for path, value in values.items():
            segments = parse_path(path)
            entries.append((segments, path, freeze(value, path, depth=len(segments))))
        if entries:
            batch = tuple(entries)
            await transport.request(self._table_of(), lambda r: PutMany(r, batch))

    async def delete(self, path: str) -> bool:
        """Remove the runtime override at or below ``path``; lower layers show through.

        Returns whether there was an override to remove.
        """
        segments = parse_path(path)
        return await transport.request(self._table_of(), lambda r: Delete(r, segments, path))

    async def reload(self) -> ReloadResult:
        """Reload every source now and return what changed."""
        return await transport.request(self._table_of(), Reload)

    async def subscribe(self, pattern: str, callback: Callback) -> SubscriptionHandle:
        """Call ``callback(path, old, new)`` for changes matching ``pattern``.

        If called from inside an otpylib process, the subscription ends when it exits.
        """
        segments = parse_pattern(pattern)
        if not callable(callback):
            raise TypeError(f"subscribe callback must be callable, got {callback!r}")
        table = self._table_of()
        sub = Subscription(next(table.sub_ids), pattern, segments, callback, process.self())
        return await transport.request(table, lambda r: Subscribe(r, sub))

    async def unsubscribe(self, handle: SubscriptionHandle) -> bool:
        """Stop a subscription; returns whether it was still active."""
        if not isinstance(handle, SubscriptionHandle):
            raise TypeError(f"unsubscribe takes a SubscriptionHandle, got {handle!r}")
        sub_id = handle.id
        return await transport.request(self._table_of(), lambda r: Unsubscribe(r, sub_id))

    def model(self) -> Any:
        """The validated instance of the spec's pydantic ``schema`` for the current config."""
        return model_of(self._table_of())

    async def explain(self, path: str) -> Explanation:
        """Which source gave the value at ``path``, from where, and what it overrides."""
        return explain(self._table_of(), path)

    async def dump(self) -> dict[str, Any]:
        """The whole effective configuration as plain data, secrets redacted."""
        return dump(self._table_of())

    async def status(self) -> Status:
        """Version, config hash, per-source and per-process health, counters (no message)."""
        table = self._table_of()
        return table.status(process.whereis(table.manager_name) is not None)


def _get_nowait(path: str, default: Any = None) -> Any:
    """``Config.get_nowait`` for the default tree: the hot path, one global lookup and one
    subscript of the published read cache when the path was read before."""
    try:
        return _current.cached[path]  # type: ignore[union-attr]
    except AttributeError:  # no tree is running
        current_table()
        raise
    except (KeyError, TypeError):  # not read before, or not a path at all
        assert _current is not None
        return _walk(_current, path, default)


class _DefaultConfig(ConfigClient):
    __slots__ = ()
    get_nowait = staticmethod(_get_nowait)


Config: ConfigClient = _DefaultConfig(current_table)
"""Reads, writes and subscriptions on the default tree; ``Config.of(id)`` for another."""


def lookup(table: ConfigTable, path: str, default: Any = None) -> Any:
    """The value at ``path`` in ``table``'s published snapshot, or ``default``: a path read
    before is one subscript of the read cache (docs/performance.md, A read)."""
    try:
        return table.cached[path]
    except (KeyError, TypeError):  # not read before, or not a path at all
        return _walk(table, path, default)


def _walk(table: ConfigTable, path: str, default: Any) -> Any:
    """A read the cache cannot answer: check the path, walk the tree (which caches it)."""
    snapshot = table.snapshot
    assert snapshot is not None
    if not isinstance(path, str):
        raise InvalidPathError(f"a path must be a str, got {type(path).__name__}")
    value = snapshot.lookup(path)
    return default if value is MISSING else value


def model_of(table: ConfigTable) -> Any:
    if not hasattr(table.spec.schema, "model_validate"):
        raise ConfigError(f"config tree {table.spec.id!r} has no pydantic schema")
    assert table.snapshot is not None
    return table.snapshot.model


def dump(table: ConfigTable) -> dict[str, Any]:
    """The whole published configuration as plain data, secrets redacted."""
    assert table.snapshot is not None
    tree = table.snapshot.tree
    return {key: thaw(table.redactor.value(key, value)) for key, value in tree.items()}


def dump_at(table: ConfigTable, path: str) -> Any:
    """The value at ``path`` as ``dump`` shows it (a value inside a secret section is
    redacted like the section), or ``MISSING``; raises ``InvalidPathError``."""
    value = _walk(table, path, MISSING)
    return value if value is MISSING else thaw(table.redactor.value(path, value))
