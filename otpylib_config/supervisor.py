"""The supervision tree: ``child_spec`` for an application's tree, ``start`` for scripts.

::

    ConfigSupervisor (one_for_one)      registered as otpylib_config.<id>
    ├── ConfigManager                   otpylib_config.<id>.manager   (all writes)
    └── ConfigNotifier                  otpylib_config.<id>.notifier  (runs callbacks)

Both children get the same :class:`ConfigTable`, so either can crash and be restarted
without losing state, and readers keep reading the published snapshot meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from otpylib import process, supervisor
from otpylib.module import SUPERVISOR, OTPModule
from otpylib.runtime import get_runtime, reset_runtime, set_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend
from otpylib.supervisor import ONE_FOR_ONE, SHUTDOWN

from otpylib_config import _otp_compat, client
from otpylib_config.manager import ConfigManager, load_initial
from otpylib_config.notifier import ConfigNotifier
from otpylib_config.protocol import DOWN
from otpylib_config.spec import ConfigSpec
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")

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
        ]
        options = supervisor.options(
            strategy=ONE_FOR_ONE,
            max_restarts=table.spec.max_restarts,
            max_seconds=table.spec.max_seconds,
        )
        return (children, options)

    async def terminate(self, reason: Any, state: Any) -> None:
        """Never called by otpylib 0.5.18."""


def child_spec(spec: ConfigSpec) -> supervisor.child_spec:
    """The one child to add to an application's supervision tree."""
    _otp_compat.install()
    table = ConfigTable(spec)
    return supervisor.child_spec(
        id=table.supervisor_name, module=ConfigSupervisor, args=table, name=table.supervisor_name
    )


class ConfigTree:
    """A running standalone tree, as returned by :func:`start`."""

    def __init__(
        self,
        table: ConfigTable,
        supervisor_pid: Any,
        stop_requested: asyncio.Event,
        stopped: asyncio.Future[None],
        backend: AsyncIOBackend | None,
    ) -> None:
        self.table = table
        self.supervisor_pid = supervisor_pid
        self._stop_requested = stop_requested
        self._stopped = stopped
        self._backend = backend

    async def stop(self) -> None:
        """Stop the tree, cancel running callbacks, and the runtime if ``start`` made it."""
        self._stop_requested.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), _STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("config tree %s did not stop in time", self.table.spec.id)
        client.unregister(self.table)
        for task in list(self.table.tasks):
            task.cancel()
        if self.table.tasks:
            await asyncio.wait(list(self.table.tasks), timeout=_STOP_TIMEOUT_S)
        if self._backend is not None:
            await self._backend.shutdown()
            await asyncio.sleep(0)
            reset_runtime()

    async def __aenter__(self) -> ConfigTree:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


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
        supervisor_pid, stop_requested, stopped = await _spawn_root(table)
    except BaseException:
        if backend is not None:
            await backend.shutdown()
            reset_runtime()
        raise
    return ConfigTree(table, supervisor_pid, stop_requested, stopped, backend)


@asynccontextmanager
async def running(spec: ConfigSpec) -> AsyncIterator[ConfigTree]:
    """``async with running(spec):`` — start a tree, stop it on the way out."""
    tree = await start(spec)
    try:
        yield tree
    finally:
        await tree.stop()


async def _ensure_runtime() -> AsyncIOBackend | None:
    if get_runtime() is not None:
        return None
    backend = AsyncIOBackend()
    await backend.initialize()
    set_runtime(backend)
    return backend


async def _spawn_root(table: ConfigTable) -> tuple[Any, asyncio.Event, asyncio.Future[None]]:
    """A root process owns the supervisor: start_link must run inside a process."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Any] = loop.create_future()
    stopped: asyncio.Future[None] = loop.create_future()
    stop_requested = asyncio.Event()

    async def root() -> None:
        try:
            sup = await supervisor.start_link(
                ConfigSupervisor, init_arg=table, name=table.supervisor_name
            )
        except Exception as exc:
            started.set_exception(exc)
            return
        started.set_result(sup)
        try:
            await stop_requested.wait()
            ref = await process.monitor(sup)
            await process.send(sup, SHUTDOWN)
            await _wait_down(ref)
        finally:
            if not stopped.done():
                stopped.set_result(None)

    await process.spawn(root, trap_exits=True)
    supervisor_pid = await asyncio.wait_for(started, _START_TIMEOUT_S)
    return supervisor_pid, stop_requested, stopped


async def _wait_down(ref: str) -> None:
    """Receive until the DOWN message of ``ref`` (the root's mailbox holds nothing else)."""
    while True:
        message = await process.receive(timeout=_STOP_TIMEOUT_S)
        if isinstance(message, tuple) and message[:2] == (DOWN, ref):
            return
