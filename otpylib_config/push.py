"""``SourceWatcher``: one supervised process per push source (DESIGN §5, §8).

A push source (a watched file, a Consul prefix) says through :meth:`Source.watch` when it
may have changed; its watcher process turns that into ``(SOURCE_CHANGED, name)`` for the
manager, which reloads just that source, validates, diffs and notifies. The watcher never
touches the table's configuration: every write stays with the manager.

The watch loop runs as a task the process owns, outside any process context (like the
notifier's deliveries), so a source may do HTTP or file I/O without holding a mailbox. A
loop that raises is logged and restarted after a backoff; if the process itself crashes
the supervisor restarts it, and ``init`` first cancels the loop of its predecessor, which
otpylib 0.5.18 never ``terminate``\\s (reference/otpylib-0.5.18.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config.errors import ConfigError
from otpylib_config.protocol import SOURCE_CHANGED
from otpylib_config.sources.base import Source
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
_MANAGER_POLL_S = 0.05
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WatchArgs:
    table: ConfigTable
    source: str


class SourceWatcher(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, args: WatchArgs) -> WatchArgs:
        await stop(args.table, args.source)
        start(args.table, args.table.sources[args.source].source)
        return args

    async def handle_call(self, request: Any, from_: Any, args: WatchArgs) -> Any:
        return (Reply(ConfigError("SourceWatcher takes no calls")), args)

    async def handle_cast(self, request: Any, args: WatchArgs) -> Any:
        return (NoReply(), args)

    async def handle_info(self, message: Any, args: WatchArgs) -> Any:
        logger.warning("source watcher ignored an unexpected message: %.200r", message)
        return (NoReply(), args)

    async def terminate(self, reason: Any, args: WatchArgs) -> None:
        """Never called by otpylib 0.5.18; ``init`` and ``stop_all`` clean up instead."""


def start(table: ConfigTable, source: Source) -> None:
    """Start ``source``'s watch loop as a task owned by ``table``."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(_watch(table, source), context=contextvars.Context())
    table.watch_tasks[source.name] = task


async def stop(table: ConfigTable, name: str) -> None:
    """Cancel one source's watch loop, if running, and wait until it has cleaned up."""
    task = table.watch_tasks.pop(name, None)
    if task is not None:
        await _cancel([task])


async def stop_all(table: ConfigTable) -> None:
    """Cancel every watch loop of the tree: its observers, threads and connections close."""
    tasks = list(table.watch_tasks.values())
    table.watch_tasks.clear()
    await _cancel(tasks)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)


async def _watch(table: ConfigTable, source: Source) -> None:
    """Run ``source.watch`` until it returns, restarting it after a backoff when it fails.

    The backoff doubles up to ``RETRY_MAX_S`` and starts again from ``RETRY_FIRST_S`` once
    a watch has run for longer than that without failing.
    """

    async def changed() -> None:
        await tell_manager(table, source.name)

    loop = asyncio.get_running_loop()
    delay = RETRY_FIRST_S
    while True:
        started = loop.time()
        try:
            await source.watch(changed)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if loop.time() - started > RETRY_MAX_S:
                delay = RETRY_FIRST_S
            log = logger.warning if delay == RETRY_FIRST_S else logger.debug
            log("watching %s failed (%s); retrying in %.1fs", source.name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


async def tell_manager(table: ConfigTable, name: str) -> None:
    """Ask the manager to reload source ``name``; waits out a manager restart.

    Gives up after ``write_timeout``: the reload timer is the safety net.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + table.spec.write_timeout
    while True:
        pid = process.whereis(table.manager_name)
        if pid is not None:
            try:
                await process.send(pid, (SOURCE_CHANGED, name))
            except Exception:  # its mailbox closed under us: it is restarting
                pass
            else:
                return
        if loop.time() >= deadline:
            logger.warning("config manager is down; the change of %s waits for the timer", name)
            return
        await asyncio.sleep(_MANAGER_POLL_S)
