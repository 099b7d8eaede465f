"""``SourceWatcher``: one supervised process per push source
(docs/architecture.md, The reload path; docs/supervision.md).

A push source (a watched file, a Consul prefix) says through :meth:`Source.watch` when it
may have changed; its watcher process turns that into a ``SourceChanged`` notice for the
manager, which reloads just that source (or applies the layer the watch already read),
validates, diffs and notifies. The watcher never
touches the table's configuration: every write stays with the manager.

The watch loop runs as a task the process owns, outside any process context (like the
notifier's deliveries), so a source may do HTTP or file I/O without holding a mailbox. A
loop that raises is logged and restarted after a backoff. The task is bound to the process
(``_otp_compat.bind_task``): however the process ends, its loop is cancelled, and ``init``
waits until the loop of its predecessor has finished cleaning up (observer threads joined,
connections closed) before it starts its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from typing import Any, NamedTuple

from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat
from otpylib_config.errors import ConfigError
from otpylib_config.protocol import SourceChanged, SourceFailed
from otpylib_config.redact import mask_url_passwords
from otpylib_config.sources.base import Source
from otpylib_config.table import ConfigTable
from otpylib_config.transport import tell_manager
from otpylib_config.values import Section

logger = logging.getLogger("otpylib_config")

_STOP_TIMEOUT_S = 5.0


class WatchArgs(NamedTuple):
    table: ConfigTable
    source: str


class SourceWatcher(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, args: WatchArgs) -> WatchArgs:
        args.table.track(f"watch:{args.source}")
        await stop(args.table, args.source)
        start(args.table, args.table.sources[args.source].source, process.self())
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


def start(table: ConfigTable, source: Source, owner: Any) -> None:
    """Start ``source``'s watch loop as a task that lives no longer than process ``owner``."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(_watch(table, source), context=contextvars.Context())
    table.watch_tasks[source.name] = task
    _otp_compat.bind_task(owner, task)


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
        _, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
        if pending:
            logger.warning("%d watch loop(s) did not stop in time", len(pending))


async def _watch(table: ConfigTable, source: Source) -> None:
    """Run ``source.watch`` until it returns; after a failure, report it and run it again.

    The wait doubles per failure from ``watch_retry_first`` up to ``watch_retry_max`` with
    jitter, and starts again from the first once a watch has run longer than the max.
    """

    async def changed(layer: Section | None = None) -> None:
        await tell_manager(table, SourceChanged(source.name, layer))

    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await source.watch(changed)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if loop.time() - started > source.watch_retry_max:
                failures = 0
            failures += 1
            delay = _backoff(source, failures, getattr(exc, "retry_after", None))
            log = logger.warning if failures == 1 else logger.debug
            text = mask_url_passwords(str(exc))  # its text may hold a URL's password
            log("watching %s failed (%s); retrying in %.2fs", source.name, text, delay)
            await tell_manager(table, SourceFailed(source.name, _describe(source, exc)))
            await asyncio.sleep(delay)


def _backoff(source: Source, failures: int, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter, so a fleet does not retry in step."""
    delay = min(source.watch_retry_first * 2.0 ** (failures - 1), source.watch_retry_max)
    delay = delay / 2 + random.uniform(0, delay / 2)
    return max(delay, float(retry_after or 0.0))


def _describe(source: Source, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.startswith(f"{source.name}:") else f"{source.name}: {text}"
