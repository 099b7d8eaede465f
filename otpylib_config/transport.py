"""How a request reaches the manager and its reply comes back, across restarts.

A request is sent to the manager by its registered name, with a future for the reply
(:mod:`otpylib_config.protocol`). If the manager dies before it answers, the request is sent
again to its successor, until ``ConfigSpec.write_timeout``. A retried request has the effect
it would have had once (a subscription by its id, a put sets the same value again); only its
reply may differ: a delete the dead manager had committed answers ``False`` the second time.
Once the tree is stopped for good, a request fails at once with ``NotRunningError``.

While a request waits, a liveness check runs every ``POLL_S`` on the event loop: it fails
the future if the manager died (so the request is retried), if the tree stopped, or when
the deadline passed. A timer per request, not a monitor: monitors are messages to a process,
and a caller need not be one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from otpylib import process

from otpylib_config.errors import ConfigTimeoutError, NotRunningError

if TYPE_CHECKING:
    from otpylib_config.protocol import Message
    from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")

POLL_S = 0.05
"""How often a waiting writer checks that the manager is still alive."""
RETRY_PAUSE_S = 0.005
"""How long a sender waits for a restarting manager to be registered again."""

T = TypeVar("T")


async def request(table: ConfigTable, make: Callable[[asyncio.Future[T]], Message]) -> T:
    """Send ``make(reply)`` to the manager and wait for ``reply``, across manager restarts;
    fails at once with ``NotRunningError`` if the tree is stopped for good."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + table.spec.write_timeout
    while True:
        reply: asyncio.Future[T] = loop.create_future()
        pid = await send_to_manager(table, make(reply), deadline)
        if pid is None:
            raise _timeout(table)
        liveness = _Liveness(table, reply, pid, deadline)
        try:
            return await reply
        except _ManagerDown:
            continue
        finally:
            liveness.cancel()


async def send_to_manager(table: ConfigTable, message: Message, deadline: float) -> Any:
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
        await asyncio.sleep(RETRY_PAUSE_S)


async def tell_manager(table: ConfigTable, message: Message) -> None:
    """Send a notice within ``write_timeout``; else log and drop it (a dropped change waits
    for the next reload: the timer's, if the spec has one)."""
    deadline = asyncio.get_running_loop().time() + table.spec.write_timeout
    try:
        sent = await send_to_manager(table, message, deadline)
    except NotRunningError:
        return
    if sent is None:
        logger.warning("config manager is down; dropped a %s", type(message).__name__)


def _timeout(table: ConfigTable) -> ConfigTimeoutError:
    return ConfigTimeoutError(
        f"config manager {table.manager_name!r} did not answer within "
        f"{table.spec.write_timeout}s ({_health(table)})"
    )


def _health(table: ConfigTable) -> str:
    """Which processes of the tree are down and why, for a timeout's message."""
    down = [
        f"{p.role} down (last exit: {p.last_exit})"
        for p in table.status(False).processes
        if not p.alive
    ]
    return "; ".join(down) or "every process of the tree is alive"


class _ManagerDown(Exception):
    """The manager died with the request: send it again."""


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
        self.timer = self.loop.call_later(POLL_S, self.check)

    def check(self) -> None:
        if self.fut.done():
            return
        if self.table.stopped is not None:
            self.fut.set_exception(NotRunningError(self.table.stopped))
        elif not process.is_alive(self.pid):
            self.fut.set_exception(_ManagerDown())
        elif self.loop.time() >= self.deadline:
            self.fut.set_exception(_timeout(self.table))
        else:
            self.timer = self.loop.call_later(POLL_S, self.check)

    def cancel(self) -> None:
        self.timer.cancel()  # drops the handle's reference back to us
