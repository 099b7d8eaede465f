"""``ConfigNotifier``: runs subscriber callbacks, never inside the manager (DESIGN §4).

The manager queues events on each subscription and sends ``(WAKE,)``; the notifier starts
one delivery task per subscription with pending events. A delivery task calls its
subscription's callback for one event at a time, in order, so a callback that raises, hangs
or is slow delays only its own subscription. Tasks run in an empty ``contextvars`` context:
a callback is not inside any otpylib process, so it may use ``gen_server.call`` or
``Config`` freely without touching the notifier's mailbox.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from typing import Any

from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import telemetry
from otpylib_config.errors import ConfigError
from otpylib_config.protocol import WAKE
from otpylib_config.subscriptions import Subscription
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")


class ConfigNotifier(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ConfigTable:
        table.wake_sent = False
        table.ready.update(sub for sub in table.subscriptions.by_id.values() if sub.pending)
        start_deliveries(table)
        return table

    async def handle_call(self, request: Any, from_: Any, table: ConfigTable) -> Any:
        return (Reply(ConfigError("ConfigNotifier takes no calls")), table)

    async def handle_cast(self, request: Any, table: ConfigTable) -> Any:
        return (NoReply(), table)

    async def handle_info(self, message: Any, table: ConfigTable) -> Any:
        if message == (WAKE,):
            table.wake_sent = False
            start_deliveries(table)
        else:
            logger.warning("config notifier ignored an unexpected message: %.200r", message)
        return (NoReply(), table)

    async def terminate(self, reason: Any, table: ConfigTable) -> None:
        """Never called by otpylib 0.5.18; nothing here depends on it."""


def start_deliveries(table: ConfigTable) -> None:
    """Give every ready subscription without a running delivery task one."""
    loop = asyncio.get_running_loop()
    while table.ready:
        sub = table.ready.pop()
        if sub.active and sub.pending and sub.task is None:
            task = loop.create_task(_deliver(table, sub), context=contextvars.Context())
            sub.task = task
            table.tasks.add(task)
            task.add_done_callback(table.tasks.discard)


async def _deliver(table: ConfigTable, sub: Subscription) -> None:
    try:
        while sub.active and sub.pending:
            path = next(iter(sub.pending))
            old, new = sub.pending.pop(path)
            await _call(table, sub, path, old, new)
    finally:
        sub.task = None


async def _call(table: ConfigTable, sub: Subscription, path: str, old: Any, new: Any) -> None:
    try:
        result = sub.callback(path, old, new)
        if inspect.isawaitable(result):
            async with asyncio.timeout(table.spec.callback_timeout):
                await result
        table.counters["events_delivered"] += 1
    except Exception as exc:
        table.counters["subscriber_errors"] += 1
        error = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        logger.error(
            "config subscriber %r failed on %s: %s", sub.pattern, path, error, exc_info=exc
        )
        telemetry.execute(
            telemetry.SUBSCRIBER_ERROR,
            {"count": 1},
            {"pattern": sub.pattern, "path": path, "error": error},
        )
