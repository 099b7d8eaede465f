"""The supervision tree: ``child_spec`` for an application's tree, ``start`` for scripts.

::

    ConfigSupervisor (one_for_one)      registered as otpylib_config.<id>
    ├── ConfigManager                   otpylib_config.<id>.manager   (all writes)
    ├── ConfigNotifier                  otpylib_config.<id>.notifier  (runs callbacks)
    └── SourceWatcher, one per push     otpylib_config.<id>.watch.<source name>
        source (watched file, Consul)   (tells the manager a source changed)

Every child gets the same :class:`ConfigTable`, so any of them can crash and be restarted
without losing state, and readers keep reading the published snapshot meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from otpylib import process, supervisor
from otpylib.module import SUPERVISOR, OTPModule
from otpylib.runtime import get_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend
from otpylib.supervisor import ONE_FOR_ONE, SHUTDOWN

from otpylib_config import _otp_compat, client, push
from otpylib_config.manager import ConfigManager
from otpylib_config.notifier import ConfigNotifier
from otpylib_config.pipeline import load_initial
from otpylib_config.protocol import DOWN
from otpylib_config.spec import ConfigSpec
from otpylib_config.table import ConfigTable, supervisor_name

logger = logging.getLogger("otpylib_config")

T = TypeVar("T")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class ConfigSupervisor(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> Any:
        children = [
            supervisor.child_spec(
                id="manager", module=ConfigManager, args=table, name=table.manager_name
            ),
            supervisor.child_spec(
                id="notifier", module=ConfigNotifier, args=table, name=table.notifier_name
            ),
            *_watcher_specs(table),
        ]
        options = supervisor.options(
            strategy=ONE_FOR_ONE,
            max_restarts=table.spec.max_restarts,
            max_seconds=table.spec.max_seconds,
        )
        return (children, options)

    async def terminate(self, reason: Any, state: Any) -> None:
        """Never called by otpylib 0.5.18."""


def _watcher_specs(table: ConfigTable) -> list[supervisor.child_spec]:
    return [
        supervisor.child_spec(
            id=f"watch:{name}",
            module=push.SourceWatcher,
            args=push.WatchArgs(table, name),
            name=table.watcher_name(name),
        )
        for name, state in table.sources.items()
        if state.source.pushes
    ]


def child_spec(spec: ConfigSpec) -> supervisor.child_spec:
    """The one child to add to an application's supervision tree."""
    _otp_compat.install()
    table = ConfigTable(spec)
    return supervisor.child_spec(
        id=table.supervisor_name, module=ConfigSupervisor, args=table, name=table.supervisor_name
    )


class ConfigTree:
    """A running standalone tree, as returned by :func:`start`."""

    def __init__(self, table: ConfigTable, backend: AsyncIOBackend | None) -> None:
        self.table = table
        self._backend = backend

    async def stop(self) -> None:
        """Stop the tree, and the otpylib runtime too if ``start`` created it."""
        await shutdown(self.table.spec.id)
        if self._backend is not None:
            await _otp_compat.shutdown_runtime(self._backend)

    async def __aenter__(self) -> ConfigTree:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def shutdown(spec_id: str) -> None:
    """Stop the config tree ``spec_id``: its processes, its running callbacks, its reads.

    An application that embeds ``child_spec`` calls this after stopping its own supervisor
    (so that nothing restarts the tree): otpylib 0.5.18's nested supervisors ignore their
    parent's shutdown (reference/otpylib-0.5.18.md §3).
    """
    pid = process.whereis(supervisor_name(spec_id))
    if pid is not None:
        await in_process(lambda: _stop_supervisor(pid))
    table = client.table_for(spec_id)
    if table is None:
        return
    client.unregister(table)
    await push.stop_all(table)
    for task in list(table.tasks):
        task.cancel()
    if table.tasks:
        await asyncio.wait(list(table.tasks), timeout=_STOP_TIMEOUT_S)


async def _stop_supervisor(pid: Any) -> None:
    ref = await process.monitor(pid)
    await process.send(pid, SHUTDOWN)
    try:
        while True:
            message = await process.receive(timeout=_STOP_TIMEOUT_S)
            if isinstance(message, tuple) and message[:2] == (DOWN, ref):
                return
    except TimeoutError:
        logger.warning("config supervisor %s did not stop in time", pid)


async def start(spec: ConfigSpec) -> ConfigTree:
    """Start a standalone tree (for scripts and tests) and wait until it serves reads.

    Starts an otpylib runtime first if none is set; ``stop()`` shuts that one down again.
    Raises the first required source's ``SourceError`` if the initial load fails.
    """
    _otp_compat.install()
    backend = await _ensure_runtime()
    table = ConfigTable(spec)
    try:
        await load_initial(table)
        await in_process(
            lambda: supervisor.start_link(
                ConfigSupervisor, init_arg=table, name=table.supervisor_name
            )
        )
    except BaseException:
        if backend is not None:
            await _otp_compat.shutdown_runtime(backend)
        raise
    return ConfigTree(table, backend)


@asynccontextmanager
async def running(spec: ConfigSpec) -> AsyncIterator[ConfigTree]:
    """``async with running(spec):`` — start a tree, stop it on the way out."""
    tree = await start(spec)
    try:
        yield tree
    finally:
        await tree.stop()


async def _ensure_runtime() -> AsyncIOBackend | None:
    """Start an otpylib runtime if none is set; the one started, else ``None``."""
    return None if get_runtime() is not None else await _otp_compat.open_runtime()


async def in_process(body: Callable[[], Awaitable[T]], timeout: float = _START_TIMEOUT_S) -> T:
    """Run ``body`` in a short-lived otpylib process and return its result or raise its error.

    ``start_link``, ``monitor`` and ``receive`` only work inside a process; scripts and
    tests are not in one.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    async def runner() -> None:
        try:
            result = await body()
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            return
        if not outcome.done():
            outcome.set_result(result)

    await process.spawn(runner)
    return await asyncio.wait_for(outcome, timeout)
