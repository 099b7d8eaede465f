"""``ConfigManager``: the gen_server that serialises every write
(docs/architecture.md, The one rule).

The message protocol is in :mod:`otpylib_config.protocol`. Each handler computes the new
state from the table without touching it, then commits with plain assignments and publishes
one new snapshot; the requester's future is resolved only after that, so it reads its own
write. No handler raises out of ``handle_info``: an error goes to the requester's future, or
to the log, and the manager keeps serving (otpylib 0.5.18 would otherwise lose the reply or
the process: a handler that raises leaves its caller waiting; docs/supervision.md).

A reload (requested, timed or pushed) reads its sources in a task outside the manager and
comes back as ``(READ, ...)``; only applying the reading happens here, so source I/O never
delays a put.

Failure policy: at start-up a required source that fails makes ``init`` fail; afterwards a
failing source keeps its last good layer, the error goes to the log, telemetry and
``status()``, and the other sources' changes are still published.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat, client, pipeline, telemetry
from otpylib_config.errors import ConfigError
from otpylib_config.paths import Path
from otpylib_config.protocol import (
    DELETE,
    DOWN,
    PUT,
    PUT_MANY,
    READ,
    RELOAD,
    SOURCE_CHANGED,
    SOURCE_FAILED,
    SUBSCRIBE,
    TICK,
    UNSUBSCRIBE,
)
from otpylib_config.redact import frames_and
from otpylib_config.subscriptions import Subscription, SubscriptionHandle
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")


@dataclass(eq=False)
class ManagerState:
    """What one incarnation of the manager owns; everything durable is in ``table``."""

    table: ConfigTable
    pid: Any
    timer_reading: bool = False  # a timer reload is reading: the next tick skips its reload
    monitors: dict[Any, str] = field(default_factory=dict)  # subscriber pid -> monitor ref


class ConfigManager(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ManagerState:
        state = ManagerState(table=table, pid=process.self())
        starts = table.track("manager")
        if table.snapshot is None:
            await pipeline.load_initial(table)
        await _monitor_owners(state)
        await _arm_timer(state)
        client.register(table)
        if starts > 1:
            _restarted(table)
            _start_reload(state, "restart", None, None)  # readings died with the last one
        return state

    async def handle_call(self, request: Any, from_: Any, state: ManagerState) -> Any:
        error = ConfigError("ConfigManager takes no gen_server calls; use otpylib_config.Config")
        return (Reply(error), state)

    async def handle_cast(self, request: Any, state: ManagerState) -> Any:
        logger.warning("config manager ignored an unexpected %s cast", _tag(request))
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: ManagerState) -> Any:
        try:
            await _dispatch(state, message)
        except ConfigError as exc:  # a rejected request: the requester learns why
            _fail(message, exc)
        except Exception as exc:  # the message may hold a secret value: log only its tag
            text = frames_and(exc, type(exc).__name__)  # its message may quote a value
            logger.error("config manager failed to handle a %s message:\n%s", _tag(message), text)
            _fail(message, exc)
        return (NoReply(), state)

    async def terminate(self, reason: Any, state: ManagerState) -> None:
        """Never called by otpylib 0.5.18; nothing here depends on it."""


async def _dispatch(state: ManagerState, message: Any) -> None:
    tag = message[0] if isinstance(message, tuple) and message else None
    handler = _HANDLERS.get(tag)
    if handler is not None:
        await handler(state, *message[1:])
    elif tag == DOWN:
        await _owner_down(state, message[-2])
    else:
        logger.warning("config manager ignored an unexpected %s message", _tag(message))


# -- writes ------------------------------------------------------------------------------


async def _put(
    state: ManagerState, fut: asyncio.Future[Any], segments: Path, path: str, value: Any
) -> None:
    started = time.perf_counter()
    overrides, root = state.table.overrides.put(segments, value)
    await pipeline.apply_overrides(state.table, overrides, [root])
    state.table.counters["puts"] += 1
    _resolve(fut, None)
    if telemetry.has_handlers(telemetry.PUT):
        telemetry.execute(
            telemetry.PUT,
            {"duration_s": time.perf_counter() - started},
            {
                "path": path,
                "value": state.table.redactor.value(path, value),
                "version": _version(state),
            },
        )


async def _put_many(
    state: ManagerState, fut: asyncio.Future[Any], entries: tuple[tuple[Path, str, Any], ...]
) -> None:
    """Every put of the batch, validated and published as one: all or nothing."""
    started = time.perf_counter()
    overrides, roots = state.table.overrides.put_many([(s, v) for s, _, v in entries])
    await pipeline.apply_overrides(state.table, overrides, roots)
    state.table.counters["puts"] += len(entries)
    _resolve(fut, None)
    if telemetry.has_handlers(telemetry.PUT):
        duration = time.perf_counter() - started
        for _, path, value in entries:
            metadata = {"path": path, "value": state.table.redactor.value(path, value)}
            telemetry.execute(
                telemetry.PUT, {"duration_s": duration}, {**metadata, "version": _version(state)}
            )


async def _delete(state: ManagerState, fut: asyncio.Future[Any], segments: Path, path: str) -> None:
    started = time.perf_counter()
    outcome = state.table.overrides.delete(segments)
    if outcome is not None:
        await pipeline.apply_overrides(state.table, outcome[0], [outcome[1]])
        state.table.counters["deletes"] += 1
    _resolve(fut, outcome is not None)
    telemetry.execute(
        telemetry.DELETE,
        {"duration_s": time.perf_counter() - started},
        {"path": path, "removed": outcome is not None, "version": _version(state)},
    )


# -- reloads -----------------------------------------------------------------------------


async def _reload_request(state: ManagerState, fut: asyncio.Future[Any], reason: str) -> None:
    _start_reload(state, reason, None, fut)


async def _source_changed(state: ManagerState, name: str) -> None:
    _start_reload(state, f"changed:{name}", [name], None)


def _start_reload(
    state: ManagerState, reason: str, only: list[str] | None, fut: asyncio.Future[Any] | None
) -> None:
    """Read the sources in a task of its own; the manager applies the reading when it comes
    back as ``(READ, ...)``, so puts never wait for the sources' I/O. The task belongs to
    this manager: if it dies, the reading dies with it and its successor reads again."""
    table = state.table

    async def read_and_return() -> None:
        reading = await pipeline.read(table, reason, only)
        await client.tell_manager(table, (READ, fut, reading))  # by name: survives a restart

    loop = asyncio.get_running_loop()
    task = loop.create_task(read_and_return(), context=contextvars.Context())
    table.tasks.add(task)
    task.add_done_callback(table.tasks.discard)
    _otp_compat.bind_task(state.pid, task)


async def _read(
    state: ManagerState, fut: asyncio.Future[Any] | None, reading: pipeline.Reading
) -> None:
    if reading.reason == "timer":
        state.timer_reading = False
    result = await pipeline.apply(state.table, reading)
    if fut is not None:
        _resolve(fut, result)


async def _source_failed(state: ManagerState, name: str, error: str) -> None:
    source = state.table.sources.get(name)
    if source is not None:
        state.table.record_failure(source, error, stage="watch")


async def _tick(state: ManagerState) -> None:
    """Reload every source, unless the last timer reload is still reading (a stuck mount
    must not pile up a reading per tick)."""
    if not state.timer_reading:
        state.timer_reading = True
        _start_reload(state, "timer", None, None)
    await _arm_timer(state)


async def _arm_timer(state: ManagerState) -> None:
    interval = state.table.spec.reload_interval
    if interval is not None:
        await process.send_after(interval, state.pid, (TICK,))


# -- subscriptions -----------------------------------------------------------------------


async def _subscribe(state: ManagerState, fut: asyncio.Future[Any], sub: Subscription) -> None:
    if sub.id not in state.table.subscriptions.by_id:
        sub.since = _version(state)  # changes published before now are not its events
    added = state.table.subscriptions.add(sub)
    if added and sub.owner is not None and not await _monitor(state, sub.owner):
        state.table.subscriptions.remove(sub.id)  # the subscriber exited already
    _resolve(fut, SubscriptionHandle(sub.id, sub.pattern))


async def _unsubscribe(state: ManagerState, fut: asyncio.Future[Any], sub_id: int) -> None:
    sub = state.table.subscriptions.remove(sub_id)
    if sub is not None and sub.owner is not None:
        await _demonitor_if_unused(state, sub.owner)
    _resolve(fut, sub is not None)


async def _owner_down(state: ManagerState, pid: Any) -> None:
    state.monitors.pop(pid, None)
    for sub in state.table.subscriptions.owned_by(pid):
        state.table.subscriptions.remove(sub.id)
        logger.debug("removed subscription %s of exited process %s", sub.pattern, pid)


async def _monitor(state: ManagerState, owner: Any) -> bool:
    """Monitor a subscriber process once; ``False`` if it is already gone."""
    if owner in state.monitors:
        return True
    try:
        state.monitors[owner] = await process.monitor(owner)
    except Exception:
        return False
    return True


async def _demonitor_if_unused(state: ManagerState, owner: Any) -> None:
    if state.table.subscriptions.owned_by(owner):
        return
    ref = state.monitors.pop(owner, None)
    if ref is not None:
        await process.demonitor(ref)


async def _monitor_owners(state: ManagerState) -> None:
    """After a restart, monitors died with the old process: take them again."""
    for owner in state.table.subscriptions.owners():
        if not await _monitor(state, owner):
            await _owner_down(state, owner)


def _restarted(table: ConfigTable) -> None:
    restarts = table.restarts("manager")
    logger.warning("config manager %s restarted (restart #%d)", table.spec.id, restarts)
    telemetry.execute(telemetry.MANAGER_RESTARTED, {"restarts": restarts}, {"id": table.spec.id})


# -- replies -----------------------------------------------------------------------------


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(message: Any, exc: BaseException) -> None:
    if isinstance(message, tuple) and len(message) > 1 and isinstance(message[1], asyncio.Future):
        fut = message[1]
        if not fut.done():
            fut.set_exception(exc)


def _tag(message: Any) -> str:
    tag = message[0] if isinstance(message, tuple) and message else type(message).__name__
    return str(tag)[:80]


def _version(state: ManagerState) -> int:
    return state.table.snapshot.version if state.table.snapshot else 0


_HANDLERS: dict[Any, Callable[..., Awaitable[None]]] = {
    PUT: _put,
    PUT_MANY: _put_many,
    DELETE: _delete,
    RELOAD: _reload_request,
    SOURCE_CHANGED: _source_changed,
    SOURCE_FAILED: _source_failed,
    SUBSCRIBE: _subscribe,
    UNSUBSCRIBE: _unsubscribe,
    TICK: _tick,
    READ: _read,
}
