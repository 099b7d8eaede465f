"""``ConfigManager``: the gen_server that serialises every write, and the only writer of
the table's configuration (docs/architecture.md, The one rule).

Its messages are the typed ones of :mod:`otpylib_config.protocol`; :func:`_dispatch` matches
on their type, with a catch-all that logs and keeps serving. Each handler is a few lines:
it asks :mod:`otpylib_config.commit` to compute (through the pipeline), commit and publish,
then resolves the requester's future, so a writer reads its own write. No handler raises
out of ``handle_info``: an error goes to the requester's future, or to the log (otpylib
0.5.18 would otherwise lose the reply or the process; docs/supervision.md).

A reload (requested, timed or pushed) reads its sources in a task outside the manager and
comes back as :class:`~otpylib_config.protocol.ReadDone`; only applying the reading happens
here, so source I/O never delays a put.

Failure policy: at start-up a required source that fails makes ``init`` fail; afterwards a
failing source keeps its last good layer, the error goes to the log, telemetry and
``status()``, and the other sources' changes are still published.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat, commit, counters, pipeline, registry, telemetry
from otpylib_config.errors import ConfigError
from otpylib_config.protocol import (
    DOWN,
    TICK,
    Delete,
    Message,
    Put,
    PutMany,
    ReadDone,
    Reload,
    ReloadResult,
    SourceChanged,
    SourceFailed,
    Subscribe,
    Tick,
    Unsubscribe,
)
from otpylib_config.redact import frames_and
from otpylib_config.subscriptions import SubscriptionHandle
from otpylib_config.table import ConfigTable
from otpylib_config.transport import tell_manager

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
            await commit.initial(table)
        await _monitor_owners(state)
        await _arm_timer(state)
        registry.register(table)
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
        except Exception as exc:  # the message may hold a secret value: log only its type
            text = frames_and(exc, type(exc).__name__)  # its message may quote a value
            logger.error("config manager failed to handle a %s:\n%s", _tag(message), text)
            _fail(message, exc)
        return (NoReply(), state)

    async def terminate(self, reason: Any, state: ManagerState) -> None:
        """Never called by otpylib 0.5.18; nothing here depends on it."""


async def _dispatch(state: ManagerState, message: Message | Any) -> None:
    match message:
        case Put():
            await _put(state, message)
        case PutMany():
            await _put_many(state, message)
        case Delete():
            await _delete(state, message)
        case Reload():
            _start_reload(state, message.reason, None, message.reply)
        case ReadDone():
            await _read_done(state, message)
        case SourceChanged(name=name, layer=None):
            _start_reload(state, f"changed:{name}", [name], None)
        case SourceChanged(name=name, layer=layer):
            await _pushed(state, name, layer)
        case SourceFailed(name=name, error=error):
            commit.failure(state.table, name, error, "watch")
        case Subscribe():
            await _subscribe(state, message)
        case Unsubscribe():
            await _unsubscribe(state, message)
        case Tick():
            await _tick(state)
        case (tag, _ref, _kind, pid, _reason) if tag == DOWN:
            await _owner_down(state, pid)
        case _:
            logger.warning("config manager ignored an unexpected %s", _tag(message))


# -- writes ------------------------------------------------------------------------------


async def _put(state: ManagerState, put: Put) -> None:
    started = time.perf_counter()
    table = state.table
    overrides, root = table.overrides.put(put.segments, put.value)
    await commit.overrides(table, overrides, [root])
    table.counters[counters.PUTS] += 1
    _resolve(put.reply, None)
    if telemetry.has_handlers(telemetry.PUT):
        _put_event(table, started, [(put.path, put.value)])


async def _put_many(state: ManagerState, batch: PutMany) -> None:
    """Every put of the batch, validated and published as one: all or nothing."""
    started = time.perf_counter()
    table = state.table
    overrides, roots = table.overrides.put_many([(s, v) for s, _, v in batch.entries])
    await commit.overrides(table, overrides, roots)
    table.counters[counters.PUTS] += len(batch.entries)
    _resolve(batch.reply, None)
    if telemetry.has_handlers(telemetry.PUT):
        _put_event(table, started, [(path, value) for _, path, value in batch.entries])


def _put_event(table: ConfigTable, started: float, puts: list[tuple[str, Any]]) -> None:
    duration = time.perf_counter() - started
    version = _version(table)
    for path, value in puts:
        telemetry.execute(
            telemetry.PUT,
            {"duration_s": duration},
            {
                "id": table.spec.id,
                "path": path,
                "value": table.redactor.value(path, value),
                "version": version,
            },
        )


async def _delete(state: ManagerState, delete: Delete) -> None:
    started = time.perf_counter()
    table = state.table
    outcome = table.overrides.delete(delete.segments)
    if outcome is not None:
        await commit.overrides(table, outcome[0], [outcome[1]])
        table.counters[counters.DELETES] += 1
    _resolve(delete.reply, outcome is not None)
    telemetry.execute(
        telemetry.DELETE,
        {"duration_s": time.perf_counter() - started},
        {
            "id": table.spec.id,
            "path": delete.path,
            "removed": outcome is not None,
            "version": _version(table),
        },
    )


# -- reloads -----------------------------------------------------------------------------


def _start_reload(
    state: ManagerState,
    reason: str,
    only: list[str] | None,
    reply: asyncio.Future[ReloadResult] | None,
) -> None:
    """Read the sources in a task of its own; the manager applies the reading when it comes
    back as ``ReadDone``, so puts never wait for the sources' I/O. The task belongs to
    this manager: if it dies, the reading dies with it and its successor reads again."""
    table = state.table

    async def read_and_return() -> None:
        reading = await pipeline.prepare(table, await pipeline.read(table, reason, only))
        await tell_manager(table, ReadDone(reply, reading))  # by name: survives a restart

    loop = asyncio.get_running_loop()
    task = loop.create_task(read_and_return(), context=contextvars.Context())
    table.reading_tasks.add(task)
    task.add_done_callback(table.reading_tasks.discard)
    _otp_compat.bind_task(state.pid, task)


async def _read_done(state: ManagerState, done: ReadDone) -> None:
    if done.reading.reason == "timer":
        state.timer_reading = False
    result = await commit.reading(state.table, done.reading)
    if done.reply is not None:
        _resolve(done.reply, result)


async def _pushed(state: ManagerState, name: str, layer: Any) -> None:
    """A push source's watch handed over its layer: apply it as a reading of that source."""
    if name in state.table.sources:
        await commit.reading(state.table, pipeline.pushed(state.table, name, layer))


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
        await process.send_after(interval, state.pid, TICK)


# -- subscriptions -----------------------------------------------------------------------


async def _subscribe(state: ManagerState, request: Subscribe) -> None:
    sub = request.subscription
    if sub.id not in state.table.subscriptions.by_id:
        sub.since = _version(state.table)  # changes published before now are not its events
    added = state.table.subscriptions.add(sub)
    if added and sub.owner is not None and not await _monitor(state, sub.owner):
        state.table.subscriptions.remove(sub.id)  # the subscriber exited already
    _resolve(request.reply, SubscriptionHandle(sub.id, sub.pattern))


async def _unsubscribe(state: ManagerState, request: Unsubscribe) -> None:
    sub = state.table.subscriptions.remove(request.sub_id)
    if sub is not None and sub.owner is not None:
        await _demonitor_if_unused(state, sub.owner)
    _resolve(request.reply, sub is not None)


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
    """Fail the request's reply, if the message is a request (or a reading with a reply)."""
    reply = getattr(message, "reply", None) if isinstance(message, Message) else None
    if reply is not None and not reply.done():
        reply.set_exception(exc)


def _tag(message: Any) -> str:
    """What to call a message in a log line: its type (its data may hold a secret)."""
    if isinstance(message, tuple) and message and message[0] == DOWN:
        return "DOWN"
    return type(message).__name__[:80]


def _version(table: ConfigTable) -> int:
    return table.snapshot.version if table.snapshot else 0
