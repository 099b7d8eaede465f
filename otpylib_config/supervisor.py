"""The supervision tree: ``child_spec`` for an application's tree, ``start`` for scripts.

::

    owner process (start() only)        otpylib_config.<id>.owner    (marks the tree stopped)
    └── ConfigRoot (one_for_one)        otpylib_config.<id>.root     (restarts the supervisor)
        └── ConfigSupervisor            otpylib_config.<id>          (child_spec() embeds this)
            ├── ConfigManager           otpylib_config.<id>.manager  (all writes)
            ├── ConfigNotifier          otpylib_config.<id>.notifier (runs callbacks)
            └── SourceWatcher, one per  otpylib_config.<id>.watch.<source name>
                push source             (tells the manager a source changed)

Every process gets the same :class:`ConfigTable`, so any of them can crash and be restarted
without losing state, and readers keep reading the published snapshot meanwhile. The
supervisors are otpylib's, with the Erlang semantics that ``_otp_compat`` restores: any
death of a child is a restart, past the intensity a supervisor stops and its parent
decides. In a standalone tree the owner process is the root's parent; when the root gives
up (or the owner itself is killed) nothing will restart the tree, so the owner's exit marks
the table stopped for good: writes fail at once, reads keep the last snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from otpylib import atom, process, supervisor
from otpylib.module import SUPERVISOR, OTPModule
from otpylib.runtime import get_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend
from otpylib.supervisor import ONE_FOR_ONE, SHUTDOWN

from otpylib_config import _otp_compat, commit, registry, source_watcher
from otpylib_config.manager import ConfigManager
from otpylib_config.notifier import ConfigNotifier
from otpylib_config.protocol import DOWN
from otpylib_config.spec import ConfigSpec
from otpylib_config.table import ConfigTable, supervisor_name

logger = logging.getLogger("otpylib_config")

T = TypeVar("T")

_START_TIMEOUT_S = 10.0
_STOP = atom.ensure("otpylib_config.stop")


class ConfigSupervisor(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> Any:
        table.track("supervisor")
        options = supervisor.options(
            strategy=ONE_FOR_ONE,
            max_restarts=table.spec.max_restarts,
            max_seconds=table.spec.max_seconds,
        )
        if table.stopped is not None:  # shutdown() stopped it; a parent restart is a no-op
            return ([], options)
        children = [
            supervisor.child_spec(
                id="manager", module=ConfigManager, args=table, name=table.manager_name
            ),
            supervisor.child_spec(
                id="notifier", module=ConfigNotifier, args=table, name=table.notifier_name
            ),
            *_watcher_specs(table),
            *_optional_specs(table),
        ]
        return (children, options)

    async def terminate(self, reason: Any, state: Any) -> None:
        """Never called by otpylib 0.5.18."""


class ConfigRoot(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    """A standalone tree's root: restarts the ``ConfigSupervisor`` if even that dies."""

    async def init(self, table: ConfigTable) -> Any:
        table.track("root")
        child = supervisor.child_spec(
            id="supervisor", module=ConfigSupervisor, args=table, name=table.supervisor_name
        )
        options = supervisor.options(
            strategy=ONE_FOR_ONE,
            max_restarts=table.spec.max_restarts,
            max_seconds=table.spec.max_seconds,
        )
        return ([child], options)

    async def terminate(self, reason: Any, state: Any) -> None:
        """Never called by otpylib 0.5.18."""


def _watcher_specs(table: ConfigTable) -> list[supervisor.child_spec]:
    return [
        supervisor.child_spec(
            id=f"watch:{name}",
            module=source_watcher.SourceWatcher,
            args=source_watcher.WatchArgs(table, name),
            name=table.watcher_name(name),
        )
        for name, state in table.sources.items()
        if state.source.pushes
    ]


def _optional_specs(table: ConfigTable) -> list[supervisor.child_spec]:
    """The admin API's and the fleet announcer's processes, when the spec asks for them
    (their modules, and aiohttp with them, are imported only then)."""
    modules: list[tuple[str, Any]] = []
    if table.spec.admin is not None:
        from otpylib_config.admin.server import AdminServer

        modules.append(("admin", AdminServer))
    if table.spec.fleet is not None:
        from otpylib_config.fleet.announcer import FleetAnnouncer

        modules.append(("fleet", FleetAnnouncer))
    return [
        supervisor.child_spec(id=role, module=module, args=table, name=table.name_of(role))
        for role, module in modules
    ]


def child_spec(spec: ConfigSpec) -> supervisor.child_spec:
    """The one child to add to an application's supervision tree.

    Calling it again with the same ``spec`` object (an application supervisor whose
    ``init`` runs again after a restart) gives back the same table, so the restarted tree
    keeps every acknowledged put and subscription.
    """
    _otp_compat.install()
    table = registry.table_for(spec.id)
    if table is None or table.spec is not spec or table.stopped is not None:
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

    def __repr__(self) -> str:
        return f"ConfigTree(id={self.table.spec.id!r})"


async def shutdown(spec_id: str) -> None:
    """Stop the config tree ``spec_id`` for good: its processes, callbacks and reads.

    An embedded tree stops with its parent by itself; this is an explicit stop that a
    parent restarting the child does not undo (the restarted supervisor starts nothing).
    Bounded: a callback task that ignores cancellation is left behind after
    ``ConfigSpec.stop_timeout`` and named in a warning.
    """
    table = registry.table_for(spec_id)
    if table is not None:
        table.stop_for_good("stopped by shutdown()", expected=True)
    owner = process.whereis(owner_name(spec_id))
    pid = owner or process.whereis(supervisor_name(spec_id))
    if pid is not None:
        message = (_STOP,) if owner is not None else SHUTDOWN
        await in_process(lambda: _stop_and_wait(pid, message, _stop_timeout(table)))
    if table is None:
        return
    registry.unregister(table)
    await source_watcher.stop_all(table)
    if table.admin_task is not None:
        from otpylib_config.admin.server import stop as stop_admin

        await stop_admin(table)
    if table.fleet_task is not None:
        from otpylib_config.fleet.announcer import stop as stop_fleet

        await stop_fleet(table)
    await _cancel_leftovers(table)
    await table.persistence.close()  # waits for a compaction in flight


def _stop_timeout(table: ConfigTable | None) -> float:
    return 5.0 if table is None else table.spec.stop_timeout


async def _cancel_leftovers(table: ConfigTable) -> None:
    """Cancel tasks no process owned any more (there should be none) and say which did
    not stop in time: asyncio cannot end a task that swallows its cancellation."""
    tasks = [*table.reading_tasks, *table.delivery.tasks]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=table.spec.stop_timeout)
    if pending:
        logger.warning(
            "config tree %s stopped, but %d task(s) ignored cancellation and still run "
            "(a subscriber callback that catches CancelledError?): %s",
            table.spec.id,
            len(pending),
            ", ".join(sorted(t.get_name() for t in pending)),
        )


async def _stop_and_wait(pid: Any, message: Any, timeout: float) -> None:
    ref = await process.monitor(pid)
    await process.send(pid, message)
    await _await_down(pid, ref, timeout)


async def _await_down(pid: Any, ref: Any, timeout: float) -> None:
    try:
        while True:
            reply = await process.receive(timeout=timeout)
            if isinstance(reply, tuple) and reply[:2] == (DOWN, ref):
                return
    except TimeoutError:
        logger.warning("config tree process %s did not stop in %.1fs", pid, timeout)


def owner_name(spec_id: str) -> str:
    return f"{supervisor_name(spec_id)}.owner"


async def start(spec: ConfigSpec) -> ConfigTree:
    """Start a standalone tree (for scripts and tests) and wait until it serves reads.

    Starts an otpylib runtime first if none is set; ``stop()`` shuts that one down again.
    Raises the first required source's ``SourceError`` if the initial load fails.
    """
    _otp_compat.install()
    backend = await _ensure_runtime()
    table = ConfigTable(spec)
    try:
        if process.whereis(owner_name(spec.id)) or process.whereis(table.supervisor_name):
            raise RuntimeError(f"Supervisor name '{table.supervisor_name}' is already registered")
        await commit.initial(table)  # before any process: a bad config fails start()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await process.spawn(_own, args=[table, ready], name=owner_name(spec.id))
        await asyncio.wait_for(ready, _START_TIMEOUT_S)
    except BaseException:
        if backend is not None:
            await _otp_compat.shutdown_runtime(backend)
        raise
    return ConfigTree(table, backend)


async def _own(table: ConfigTable, ready: asyncio.Future[None]) -> None:
    """The owner of a standalone tree: the root's parent, until the tree stops."""
    me = process.self()
    _otp_compat.on_exit(me, lambda reason: _owner_exited(table, reason))
    try:
        root = await supervisor.start_link(ConfigRoot, init_arg=table, name=table.name_of("root"))
        ref = await process.monitor(root)
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        return
    ready.set_result(None)
    while True:
        message = await process.receive()
        if isinstance(message, tuple) and message[:2] == (DOWN, ref):
            why = f"its root supervisor gave up ({_otp_compat.describe(message[-1])})"
            table.stop_for_good(why)
            raise _otp_compat.ProcessExit(message[-1])
        if message == (_STOP,):
            await process.exit(root, SHUTDOWN)  # from its parent: children first, then itself
            await _await_down(root, ref, table.spec.stop_timeout)
            return


def _owner_exited(table: ConfigTable, reason: Any) -> None:
    """The owner ended without the root going down first (it was killed, say): the root
    follows its parent, so nothing runs the tree any more."""
    table.stop_for_good(f"its owner process exited ({_otp_compat.describe(reason)})")


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
