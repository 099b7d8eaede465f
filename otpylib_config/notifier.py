"""``ConfigNotifier``: runs subscriber callbacks, never inside the manager
(docs/architecture.md, Paths, patterns and events).

The manager hands each published change to the table's delivery queue
(:mod:`otpylib_config.delivery`) and sends ``Wake``; the notifier turns queued changes into
each subscription's pending events and starts one delivery task per subscription with
pending events. A delivery task calls its
subscription's callback for one event at a time, in order, so a callback that raises, hangs
or is slow delays only its own subscription. Tasks run in an empty ``contextvars`` context:
a callback is not inside any otpylib process, so it may use ``gen_server.call`` or
``Config`` freely without touching the notifier's mailbox.

Delivery tasks belong to the notifier process: if it dies they are cancelled, and an event
leaves its queue only once its callback has returned, so the restarted notifier delivers
an interrupted event again (at least once). A task yields to the loop every
``YIELD_AFTER_S`` so that a burst of events to sync callbacks never stalls readers, puts or
other subscribers. A callback that keeps failing is counted every time but logged at most
once per ``ERROR_LOG_INTERVAL_S``: a log record with a traceback costs far more than a put.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from typing import Any

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat, counters, telemetry
from otpylib_config.errors import ConfigError
from otpylib_config.protocol import WAKE, Wake
from otpylib_config.redact import frames_and
from otpylib_config.subscriptions import Subscription
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")


YIELD_AFTER_S = 0.005
ERROR_LOG_INTERVAL_S = 60.0


class ConfigNotifier(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ConfigTable:
        table.track("notifier")
        delivery = table.delivery
        delivery.wake_sent = False
        delivery.ready.update(s for s in table.subscriptions.by_id.values() if s.pending)
        start_deliveries(table)
        if delivery.changes:  # its predecessor died mid-way: resume (no mailbox wait in init)
            await process.send(process.self(), WAKE)
        return table

    async def handle_call(self, request: Any, from_: Any, table: ConfigTable) -> Any:
        return (Reply(ConfigError("ConfigNotifier takes no calls")), table)

    async def handle_cast(self, request: Any, table: ConfigTable) -> Any:
        return (NoReply(), table)

    async def handle_info(self, message: Any, table: ConfigTable) -> Any:
        if isinstance(message, Wake):
            table.delivery.wake_sent = False
            await _expand(table)
        else:
            logger.warning("config notifier ignored an unexpected %s", type(message).__name__)
        return (NoReply(), table)

    async def terminate(self, reason: Any, table: ConfigTable) -> None:
        """Never called by otpylib 0.5.18; nothing here depends on it."""


async def _expand(table: ConfigTable) -> None:
    """Start deliveries for the events the manager expanded, then turn the rest of the
    published changes into events a slice (``delivery.SLICE_WORK``) at a time, yielding
    before each slice, so that the writer whose put queued them (and everyone else) goes
    on first, and starting deliveries after each so callbacks need not wait for the whole
    change."""
    start_deliveries(table)
    while table.delivery.changes:
        await asyncio.sleep(0)
        table.delivery.expand(table.subscriptions)
        start_deliveries(table)


def start_deliveries(table: ConfigTable) -> None:
    """Give every ready subscription without a running delivery task one (called in the
    notifier process, which owns the tasks)."""
    loop = asyncio.get_running_loop()
    owner = process.self()
    delivery = table.delivery
    while delivery.ready:
        sub = delivery.ready.pop()
        if sub.active and sub.pending and sub.task is None:
            task = loop.create_task(_deliver(table, sub), context=contextvars.Context())
            sub.task = task
            delivery.tasks.add(task)
            task.add_done_callback(delivery.tasks.discard)
            _otp_compat.bind_task(owner, task)


async def _deliver(table: ConfigTable, sub: Subscription) -> None:
    """Call back for each pending event, in order. The event being delivered is out of the
    queue, so a change that arrives meanwhile (even one back to the old value) is a new
    event; if the task is interrupted, the event goes back to the front (at least once)."""
    loop = asyncio.get_running_loop()
    since_yield = loop.time()
    try:
        while sub.active and sub.pending:
            path, (old, new) = sub.pending.popitem(last=False)
            try:
                await _call(table, sub, path, old, new)
            except BaseException:
                sub.requeue(path, old, new)
                raise
            if loop.time() - since_yield > YIELD_AFTER_S:
                await asyncio.sleep(0)
                since_yield = loop.time()
    finally:
        sub.task = None
        if sub.active and sub.pending:  # interrupted: whoever starts deliveries next sees it
            table.delivery.ready.add(sub)
            _wake_soon(table)


def _wake_soon(table: ConfigTable) -> None:
    """Ask the (maybe restarted) notifier to start deliveries, from a task that cannot wait."""
    if not table.delivery.wake_sent:
        table.delivery.wake_sent = True
        asyncio.get_running_loop().create_task(process.send(table.notifier_name, WAKE))


async def _call(table: ConfigTable, sub: Subscription, path: str, old: Any, new: Any) -> None:
    try:
        result = sub.callback(path, old, new)
        if inspect.isawaitable(result):
            async with asyncio.timeout(table.spec.callback_timeout):
                await result
        table.delivery.counters[counters.EVENTS_DELIVERED] += 1
    except Exception as exc:
        table.delivery.counters[counters.SUBSCRIBER_ERRORS] += 1
        error = "timed out" if isinstance(exc, TimeoutError) else _describe(table, exc)
        _log_failure(sub, path, error, exc)
        telemetry.execute(
            telemetry.SUBSCRIBER_ERROR,
            {"count": 1},
            {"id": table.spec.id, "pattern": sub.pattern, "path": path, "error": error},
        )


def _describe(table: ConfigTable, exc: Exception) -> str:
    """The callback's error, with any secret value it quotes masked (it may well quote the
    value it was given)."""
    text = f"{type(exc).__name__}: {exc}"
    tree = table.snapshot.tree if table.snapshot is not None else None
    return text if tree is None else table.redactor.scrub(text, tree)


def _log_failure(sub: Subscription, path: str, error: str, exc: Exception) -> None:
    """The first failure with its traceback, then one line per interval with a count."""
    sub.failures += 1
    now = time.monotonic()
    if sub.logged_at is not None and now - sub.logged_at < ERROR_LOG_INTERVAL_S:
        return
    first = sub.logged_at is None
    unlogged, sub.failures, sub.logged_at = sub.failures - 1, 0, now
    more = f" ({unlogged} more failures since the last report)" if unlogged else ""
    logger.error("config subscriber %r failed on %s: %s%s", sub.pattern, path, error, more)
    if first:
        logger.debug("config subscriber %r failed:\n%s", sub.pattern, frames_and(exc, error))
