"""``ConfigManager``: the gen_server that serialises every write (DESIGN §2).

The message protocol is in :mod:`otpylib_config.protocol`. Each handler computes the new
state from the table without touching it, then commits with plain assignments and publishes
one new snapshot; the requester's future is resolved only after that, so it reads its own
write. No handler raises out of ``handle_info``: an error goes to the requester's future, or
to the log, and the manager keeps serving (otpylib 0.5.18 would otherwise lose the reply or
the process, see reference/otpylib-0.5.18.md §2).

Failure policy: at start-up a required source that fails makes ``init`` fail; afterwards a
failing source keeps its last good layer, the error goes to the log, telemetry and
``status()``, and the other sources' changes are still published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import client, telemetry
from otpylib_config.errors import ConfigError, SourceError
from otpylib_config.paths import Path
from otpylib_config.protocol import (
    DELETE,
    DOWN,
    PUT,
    RELOAD,
    SUBSCRIBE,
    TICK,
    UNSUBSCRIBE,
    WAKE,
    ReloadResult,
)
from otpylib_config.snapshot import Snapshot
from otpylib_config.sources.runtime import Overrides
from otpylib_config.subscriptions import Subscription, SubscriptionHandle
from otpylib_config.table import ConfigTable
from otpylib_config.tree import MISSING, diff, get_in, remove_in, set_in
from otpylib_config.values import Section

logger = logging.getLogger("otpylib_config")


@dataclass(eq=False)
class ManagerState:
    """What one incarnation of the manager owns; everything durable is in ``table``."""

    table: ConfigTable
    pid: Any
    timer: str | None = None
    monitors: dict[Any, str] = field(default_factory=dict)  # subscriber pid -> monitor ref


class ConfigManager(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ManagerState:
        state = ManagerState(table=table, pid=process.self())
        table.manager_starts += 1
        if table.snapshot is None:
            await load_initial(table)
        if table.manager_starts > 1:
            _restarted(table)
        await _monitor_owners(state)
        await _arm_timer(state)
        client.register(table)
        return state

    async def handle_call(self, request: Any, from_: Any, state: ManagerState) -> Any:
        error = ConfigError("ConfigManager takes no gen_server calls; use otpylib_config.Config")
        return (Reply(error), state)

    async def handle_cast(self, request: Any, state: ManagerState) -> Any:
        logger.warning("config manager ignored an unexpected cast: %.200r", request)
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: ManagerState) -> Any:
        try:
            await _dispatch(state, message)
        except Exception as exc:
            logger.exception("config manager failed to handle %.200r", message)
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
        logger.warning("config manager ignored an unexpected message: %.200r", message)


# -- writes ------------------------------------------------------------------------------


async def _put(
    state: ManagerState, fut: asyncio.Future[Any], segments: Path, path: str, value: Any
) -> None:
    started = time.perf_counter()
    overrides, root = state.table.overrides.put(segments, value)
    await _apply_overrides(state, overrides, root)
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


async def _delete(state: ManagerState, fut: asyncio.Future[Any], segments: Path, path: str) -> None:
    started = time.perf_counter()
    outcome = state.table.overrides.delete(segments)
    if outcome is not None:
        await _apply_overrides(state, *outcome)
        state.table.counters["deletes"] += 1
    _resolve(fut, outcome is not None)
    telemetry.execute(
        telemetry.DELETE,
        {"duration_s": time.perf_counter() - started},
        {"path": path, "removed": outcome is not None, "version": _version(state)},
    )


async def _apply_overrides(state: ManagerState, overrides: Overrides, root: Path) -> None:
    """Commit new overrides and publish the effective value under ``root``."""
    table = state.table
    assert table.snapshot is not None
    old_tree = table.snapshot.tree
    value = overrides.apply(get_in(table.base, root), root)
    new_tree = remove_in(old_tree, root) if value is MISSING else set_in(old_tree, root, value)
    changed = diff(get_in(old_tree, root), value, root)
    table.overrides = overrides
    if changed:
        await _publish(table, new_tree, changed)


# -- reloads -----------------------------------------------------------------------------


async def _reload_request(state: ManagerState, fut: asyncio.Future[Any], reason: str) -> None:
    _resolve(fut, await reload(state.table, reason))


async def _tick(state: ManagerState) -> None:
    state.timer = None
    try:
        await reload(state.table, "timer")
    finally:
        await _arm_timer(state)


async def reload(table: ConfigTable, reason: str) -> ReloadResult:
    """Load every source, merge, and publish what changed. Failed sources keep their layer."""
    with telemetry.span("config.reload", {"reason": reason}) as stop:
        errors = await _load_sources(table)
        assert table.snapshot is not None
        base = table.merged_layers()
        new_tree = table.overrides.apply(base)
        changed = diff(table.snapshot.tree, new_tree)
        table.base = base
        if changed:
            await _publish(table, new_tree, changed)
        table.counters["reloads"] += 1
        table.counters["reload_errors"] += bool(errors)
        version = table.snapshot.version
        stop.update(
            version=version,
            errors=errors,
            measurements={"keys": len(changed), "changes": len(changed)},
        )
    return ReloadResult(version, tuple(".".join(p) for p in changed), errors)


async def load_initial(table: ConfigTable) -> None:
    """The first load: a required source that fails raises its ``SourceError``."""
    errors = await _load_sources(table)
    for name, message in errors.items():
        source = table.sources[name].source
        if source.required:
            raise SourceError(name, message.removeprefix(f"{name}: "))
    table.base = table.merged_layers()
    table.snapshot = Snapshot(table.overrides.apply(table.base), version=1)


async def _load_sources(table: ConfigTable) -> dict[str, str]:
    states = list(table.sources.values())
    results = await asyncio.gather(*(_load_one(s.source) for s in states))
    errors: dict[str, str] = {}
    for source_state, (layer, error, duration) in zip(states, results, strict=True):
        name = source_state.source.name
        if error is None:
            source_state.succeeded(layer)
            telemetry.execute(
                telemetry.SOURCE_LOADED,
                {"duration_s": duration, "keys": len(layer)},
                {"source": name},
            )
        else:
            source_state.failed(error)
            errors[name] = error
            logger.warning("config source %s failed, keeping its last good layer: %s", name, error)
            telemetry.execute(
                telemetry.SOURCE_ERROR, {"duration_s": duration}, {"source": name, "error": error}
            )
    return errors


async def _load_one(source: Any) -> tuple[Section, str | None, float]:
    started = time.perf_counter()
    try:
        layer = await source.load()
    except SourceError as exc:
        return Section(), str(exc), time.perf_counter() - started
    except Exception as exc:  # a source bug must not take the manager down
        logger.exception("config source %s raised", source.name)
        return (
            Section(),
            f"{source.name}: {type(exc).__name__}: {exc}",
            time.perf_counter() - started,
        )
    return layer, None, time.perf_counter() - started


async def _arm_timer(state: ManagerState) -> None:
    interval = state.table.spec.reload_interval
    if interval is not None and state.timer is None:
        state.timer = await process.send_after(interval, state.pid, (TICK,))


# -- publishing and notifying ------------------------------------------------------------


async def _publish(table: ConfigTable, new_tree: Section, changed: list[Path]) -> None:
    """Swap in the next snapshot, then queue the events of every matching subscription."""
    assert table.snapshot is not None
    old_tree = table.snapshot.tree
    table.snapshot = table.snapshot.successor(new_tree, changed)
    table.counters["changes"] += len(changed)
    for sub, events in table.subscriptions.events(changed, old_tree, new_tree).items():
        sub.enqueue(events)
        if sub.pending and sub.task is None:
            table.ready.add(sub)
    if table.ready and not table.wake_sent:
        table.wake_sent = True
        await process.send(table.notifier_name, (WAKE,))
    if telemetry.has_handlers(telemetry.CHANGED):
        _emit_changes(table, old_tree, new_tree, changed)


def _emit_changes(table: ConfigTable, old: Section, new: Section, changed: list[Path]) -> None:
    assert table.snapshot is not None
    for leaf in changed:
        path = ".".join(leaf)
        old_value, new_value = get_in(old, leaf), get_in(new, leaf)
        telemetry.execute(
            telemetry.CHANGED,
            {"changes": 1},
            {
                "path": path,
                "old_value": table.redactor.value(
                    path, None if old_value is MISSING else old_value
                ),
                "new_value": table.redactor.value(
                    path, None if new_value is MISSING else new_value
                ),
                "version": table.snapshot.version,
            },
        )


# -- subscriptions -----------------------------------------------------------------------


async def _subscribe(state: ManagerState, fut: asyncio.Future[Any], sub: Subscription) -> None:
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
    restarts = table.manager_starts - 1
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


def _version(state: ManagerState) -> int:
    return state.table.snapshot.version if state.table.snapshot else 0


_HANDLERS: dict[Any, Callable[..., Awaitable[None]]] = {
    PUT: _put,
    DELETE: _delete,
    RELOAD: _reload_request,
    SUBSCRIBE: _subscribe,
    UNSUBSCRIBE: _unsubscribe,
    TICK: _tick,
}
