"""How a request reaches the manager and its reply comes back, across restarts.

A request is sent to the manager by its registered name, with a future for the reply
(:mod:`otpylib_config.protocol`). If the manager dies before it answers, the request is sent
again to its successor, until ``ConfigSpec.write_timeout``. A retried request has the effect
it would have had once (a subscription by its id, a put sets the same value again); only its
reply may differ: a delete the dead manager had committed answers ``False`` the second time.
Once the tree is stopped for good, a request fails at once with ``NotRunningError``.

While requests wait, one liveness check runs every ``POLL_S`` on the event loop: it fails a
request's future if its manager died (so the request is retried), if the tree stopped, or
when the deadline passed. A check on a timer, not a monitor: monitors are messages to a
process, and a caller need not be one.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
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
        liveness = _liveness(loop)
        liveness.watch(reply, table, pid, deadline)
        try:
            return await reply
        except _ManagerDown:
            continue
        finally:
            liveness.forget(reply)


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
    """Fails waiting requests whose manager died, whose tree stopped, or whose deadline
    passed: one timer for every request of the loop, armed while any waits, rather than a
    timer per request (a put then costs a dict insert and delete, not a timer)."""

    def __init__(self) -> None:
        self.waiting: dict[asyncio.Future[Any], tuple[ConfigTable, Any, float]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def watch(
        self, fut: asyncio.Future[Any], table: ConfigTable, pid: Any, deadline: float
    ) -> None:
        self.waiting[fut] = (table, pid, deadline)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(POLL_S, self.check)

    def forget(self, fut: asyncio.Future[Any]) -> None:
        self.waiting.pop(fut, None)

    def check(self) -> None:
        self.timer = None
        now = asyncio.get_running_loop().time()
        for fut, (table, pid, deadline) in list(self.waiting.items()):
            if fut.done():
                del self.waiting[fut]
            elif table.stopped is not None:
                fut.set_exception(NotRunningError(table.stopped))
            elif not process.is_alive(pid):
                fut.set_exception(_ManagerDown())
            elif now >= deadline:
                fut.set_exception(_timeout(table))
        if self.waiting:
            self.timer = asyncio.get_running_loop().call_later(POLL_S, self.check)


_CHECKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Liveness] = (
    weakref.WeakKeyDictionary()
)


def _liveness(loop: asyncio.AbstractEventLoop) -> _Liveness:
    """The loop's one liveness check (a timer belongs to its loop)."""
    check = _CHECKS.get(loop)
    if check is None:
        check = _CHECKS[loop] = _Liveness()
    return check
