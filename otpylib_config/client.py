"""``Config``: the API an application calls.

``Config`` is bound to the **default tree**: the first tree started (``start`` or
``child_spec``) that is still registered — with one tree in the process, that tree. A tree
stopped for good stays registered, serving reads, until ``shutdown(id)``.
``Config.of(spec_id)`` gives the same API bound to the tree ``spec_id``.

Reads look the path up in the published snapshot of the running tree, with no message and
no await inside, so they never block on the manager and never fail while it restarts.
Writes validate their input here, in the caller, then go to the manager as a message that
carries a future (see :mod:`otpylib_config.protocol`); if the manager dies before answering
the request is sent again to its successor, until ``ConfigSpec.write_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from otpylib import process

from otpylib_config.errors import (
    ConfigError,
    ConfigTimeoutError,
    InvalidPathError,
    NotRunningError,
)
from otpylib_config.paths import parse_path, parse_pattern
from otpylib_config.protocol import (
    DELETE,
    PUT,
    PUT_MANY,
    RELOAD,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ReloadResult,
)
from otpylib_config.provenance import Explanation, explain
from otpylib_config.subscriptions import Callback, Subscription, SubscriptionHandle
from otpylib_config.tree import MISSING
from otpylib_config.values import freeze, thaw

if TYPE_CHECKING:
    from otpylib_config.table import ConfigTable, Status

_current: ConfigTable | None = None
_tables: dict[str, ConfigTable] = {}
_POLL_S = 0.05  # how often a waiting writer checks that the manager is still alive
_RETRY_PAUSE_S = 0.005

logger = logging.getLogger("otpylib_config")


def register(table: ConfigTable) -> None:
    """Let ``Config.of(table.spec.id)`` reach ``table`` (called by the manager's init, also
    after a restart, which must not move it in the order that picks the default tree)."""
    global _current
    if _tables.get(table.spec.id) is not table:
        _tables.pop(table.spec.id, None)
        _tables[table.spec.id] = table
    _current = next(iter(_tables.values()))


def unregister(table: ConfigTable) -> None:
    global _current
    if _tables.get(table.spec.id) is table:
        del _tables[table.spec.id]
    _current = next(iter(_tables.values()), None)


def table_for(spec_id: str) -> ConfigTable | None:
    return _tables.get(spec_id)


def current_table() -> ConfigTable:
    if _current is None:
        raise NotRunningError(
            "no otpylib-config tree is running: add otpylib_config.child_spec(spec) to your "
            "supervision tree or await otpylib_config.start(spec)"
        )
    return _current


def _table_by_id(spec_id: str) -> ConfigTable:
    table = _tables.get(spec_id)
    if table is None:
        raise NotRunningError(f"no otpylib-config tree {spec_id!r} is running")
    return table


class ConfigClient:
    """Reads, writes and subscriptions on one running tree (see the module docstring for
    which one ``Config`` is)."""

    __slots__ = ("_table_of",)

    def __init__(self, table_of: Callable[[], ConfigTable]) -> None:
        self._table_of = table_of

    def of(self, spec_id: str) -> ConfigClient:
        """The same API, bound to the tree ``spec_id``."""
        return ConfigClient(partial(_table_by_id, spec_id))

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
        await _request(self._table_of(), PUT, segments, path, frozen)

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
            await _request(self._table_of(), PUT_MANY, tuple(entries))

    async def delete(self, path: str) -> bool:
        """Remove the runtime override at or below ``path``; lower layers show through.

        Returns whether there was an override to remove.
        """
        result: bool = await _request(self._table_of(), DELETE, parse_path(path), path)
        return result

    async def reload(self) -> ReloadResult:
        """Reload every source now and return what changed."""
        result: ReloadResult = await _request(self._table_of(), RELOAD, "request")
        return result

    async def subscribe(self, pattern: str, callback: Callback) -> SubscriptionHandle:
        """Call ``callback(path, old, new)`` for changes matching ``pattern``.

        If called from inside an otpylib process, the subscription ends when it exits.
        """
        segments = parse_pattern(pattern)
        if not callable(callback):
            raise TypeError(f"subscribe callback must be callable, got {callback!r}")
        table = self._table_of()
        sub = Subscription(next(table.sub_ids), pattern, segments, callback, process.self())
        handle: SubscriptionHandle = await _request(table, SUBSCRIBE, sub)
        return handle

    async def unsubscribe(self, handle: SubscriptionHandle) -> bool:
        """Stop a subscription; returns whether it was still active."""
        if not isinstance(handle, SubscriptionHandle):
            raise TypeError(f"unsubscribe takes a SubscriptionHandle, got {handle!r}")
        result: bool = await _request(self._table_of(), UNSUBSCRIBE, handle.id)
        return result

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
    """``Config.get_nowait`` for the default tree: the hot path, one global and one dict
    lookup when the path was read before."""
    try:
        snapshot = _current.snapshot  # type: ignore[union-attr]
        value = snapshot.cache.get(path, MISSING)  # type: ignore[union-attr]
    except AttributeError:
        current_table()
        raise
    except TypeError:
        raise InvalidPathError(f"a path must be a str, got {type(path).__name__}") from None
    if value is MISSING:
        value = snapshot.lookup(path)  # type: ignore[union-attr]
        if value is MISSING:
            return default
    return value


class _DefaultConfig(ConfigClient):
    __slots__ = ()
    get_nowait = staticmethod(_get_nowait)


Config: ConfigClient = _DefaultConfig(current_table)
"""Reads, writes and subscriptions on the default tree; ``Config.of(id)`` for another."""


def lookup(table: ConfigTable, path: str, default: Any = None) -> Any:
    """The value at ``path`` in ``table``'s published snapshot, or ``default``."""
    snapshot = table.snapshot
    assert snapshot is not None
    if not isinstance(path, str):
        raise InvalidPathError(f"a path must be a str, got {type(path).__name__}")
    value = snapshot.cache.get(path, MISSING)
    if value is MISSING:
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


async def _request(table: ConfigTable, tag: Any, *args: Any) -> Any:
    """Send a request to the manager and wait for its future, across manager restarts;
    fails at once with ``NotRunningError`` if the tree is stopped for good."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + table.spec.write_timeout
    while True:
        fut: asyncio.Future[Any] = loop.create_future()
        pid = await send_to_manager(table, (tag, fut, *args), deadline)
        if pid is None:
            raise ConfigTimeoutError(
                f"config manager {table.manager_name!r} did not answer within "
                f"{table.spec.write_timeout}s ({_health(table)})"
            )
        outcome = await _wait(table, fut, pid, deadline)
        if outcome is not _RETRY:
            return outcome


async def send_to_manager(table: ConfigTable, message: Any, deadline: float) -> Any:
    """Send ``message`` to the tree's manager, waiting out a restart until ``deadline`` (loop
    time). Returns the pid it went to, or ``None`` if no manager took it in time; raises
    ``NotRunningError`` once the tree is stopped for good."""
    loop = asyncio.get_running_loop()
    while True:
        if table.stopped is not None:
            raise NotRunningError(table.stopped)
        pid = process.whereis(table.manager_name)
        if pid is not None:
            try:
                await process.send(pid, message)
            except Exception:  # the mailbox closed under us: the manager is going down
                pass
            else:
                return pid
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(_RETRY_PAUSE_S)


async def tell_manager(table: ConfigTable, message: Any) -> None:
    """Send ``message``, which needs no answer, within ``write_timeout``; else log and drop it
    (a dropped change waits for the next reload: the timer's, if the spec has one)."""
    deadline = asyncio.get_running_loop().time() + table.spec.write_timeout
    try:
        sent = await send_to_manager(table, message, deadline)
    except NotRunningError:
        return
    if sent is None:
        logger.warning("config manager is down; dropped a %s message", message[0])


def _health(table: ConfigTable) -> str:
    """Which processes of the tree are down and why, for a timeout's message."""
    down = [
        f"{p.role} down (last exit: {p.last_exit})"
        for p in table.status(False).processes
        if not p.alive
    ]
    return "; ".join(down) or "every process of the tree is alive"


class _ManagerDown(Exception):
    pass


_RETRY: Any = object()


async def _wait(table: ConfigTable, fut: asyncio.Future[Any], pid: Any, deadline: float) -> Any:
    """Await ``fut``; checks every ``_POLL_S`` that the manager still lives."""
    liveness = _Liveness(table, fut, pid, deadline)
    try:
        return await fut
    except _ManagerDown:
        return _RETRY
    finally:
        liveness.cancel()


class _Liveness:
    """Fails a request's future if the manager dies or the deadline passes.

    A class rather than a closure that re-arms itself: such a closure refers to itself, and
    every request would leave a reference cycle for the garbage collector.
    """

    __slots__ = ("deadline", "fut", "loop", "pid", "table", "timer")

    def __init__(
        self, table: ConfigTable, fut: asyncio.Future[Any], pid: Any, deadline: float
    ) -> None:
        self.table, self.fut, self.pid, self.deadline = table, fut, pid, deadline
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(_POLL_S, self.check)

    def check(self) -> None:
        if self.fut.done():
            return
        if self.table.stopped is not None:
            self.fut.set_exception(NotRunningError(self.table.stopped))
        elif not process.is_alive(self.pid):
            self.fut.set_exception(_ManagerDown())
        elif self.loop.time() >= self.deadline:
            self.fut.set_exception(ConfigTimeoutError("config manager did not answer in time"))
        else:
            self.timer = self.loop.call_later(_POLL_S, self.check)

    def cancel(self) -> None:
        self.timer.cancel()  # drops the handle's reference back to us
