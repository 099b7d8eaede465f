"""Fixes for otpylib 0.5.x defects, so that processes die and are supervised as in Erlang.

Verified on otpylib 0.5.18; :func:`install` patches only the 0.5 series, is idempotent, and
runs when ``otpylib_config`` is imported, so it changes how **every** otpylib supervisor and
exit signal in the process behaves, the application's own included (docs/supervision.md
says what changes). Each defect below has a test in ``tests/test_otp_compat.py`` that shows
it on the unpatched runtime and fixed by this module.

Exit signals (``AsyncIOBackend.exit``, ``_handle_process_exit``, ``Process.run``):

* upstream, ``exit(pid, reason)`` announces the death itself as a 4-tuple ``DOWN`` before
  the process has stopped, while a process that returns or raises announces a 5-tuple one;
  supervisors match only the 5-tuple, so a process ended by ``exit`` is never restarted.
  Here the signal only marks the reason and cancels the process's task; the one place that
  announces a death is the end of the task, with the 5-tuple and the real reason, so
  ``DOWN`` always means "this process has stopped".
* ``kill`` (and otpylib's own ``killed``) cannot be trapped and ends the process with
  ``killed``; any other reason is a message ``(EXIT, sender, reason)`` to a process that
  traps exits (upstream also announced its death and unregistered its name, leaving an
  unnamed zombie); ``normal`` from another process is ignored unless trapped.
* a process killed before it ever ran stayed in the process table forever: its exit is
  handled at once, since its body will never run.
* links propagate every reason but ``normal`` (upstream dropped ``shutdown`` and ``killed``).
* ``receive(timeout=...)`` waited with ``asyncio.wait_for``, which on Python 3.11 swallows
  a cancellation that lands as the message arrives: an exit signal was then lost and the
  process lived on. It waits with ``asyncio.timeout`` instead.
* :func:`on_exit` and :func:`bind_task` attach cleanup to a process: otpylib never calls
  ``terminate``, so this is how a task or resource owned by a process ends with it.

Supervisors (``otpylib.supervisor.start_link`` and its loop): upstream ignores 4-tuple
``DOWN``\\s, never restarts a child that died with ``killed`` or ``shutdown``, ignores
``restart=``, ignores its parent's exit and shutdown (so a nested tree outlives its
parent), restarts ``one_for_all`` siblings before the old ones have stopped, leaves started
children running when a later child's ``init`` fails, and takes the first message in the
caller's mailbox as the start handshake. :class:`_Supervisor` is a replacement with
Erlang's rules: permanent children are restarted whatever ended them, transient ones unless
``normal``/``shutdown``, temporary ones never; every death counts towards the intensity,
and past it the supervisor stops its children and exits with ``shutdown`` so its parent
decides; a child whose ``init`` fails on a restart counts as another death; children stop
in reverse start order, each waited for (``shutdown``, then ``kill`` after
``CHILD_SHUTDOWN_TIMEOUT``).

Monitor refs: upstream builds them as ``#Ref<watcher.N>`` with ``N = len(monitors)``, so a
ref is reused once a monitored process has died and a supervisor can restart the wrong
child; refs here come from a process-wide counter.

``shutdown_runtime`` works around ``AsyncIOBackend.shutdown`` clearing the process table
right after requesting cancellation, which makes a supervisor that runs before its
cancellation lands spin forever: every process is cancelled and awaited first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otpylib import atom, process
from otpylib import supervisor as otp_supervisor
from otpylib.runtime import reset_runtime, set_runtime
from otpylib.runtime.atoms import DOWN, EXIT, KILLED, NORMAL, SHUTDOWN, STARTING
from otpylib.runtime.backends.asyncio_backend.backend import AsyncIOBackend
from otpylib.runtime.backends.asyncio_backend.process import Process, ProcessMailbox
from otpylib.runtime.backends.base import ProcessNotFoundError
from otpylib.supervisor import core as supervisor_core
from otpylib.supervisor.atoms import (
    ONE_FOR_ALL,
    PERMANENT,
    REST_FOR_ONE,
    SUPERVISOR_SHUTDOWN,
    TEMPORARY,
)

logger = logging.getLogger("otpylib_config")

KILL = atom.ensure("kill")
PROCESS = atom.ensure("process")
_RESTART = atom.ensure("otpylib_config.supervisor.restart")

CHILD_SHUTDOWN_TIMEOUT = 5.0
"""Seconds a supervisor waits for a child to stop after ``shutdown`` before killing it."""
_HANDSHAKE_TIMEOUT = 5.0

_refs = itertools.count(1)
ORIGINAL = {
    "monitor_local": AsyncIOBackend._monitor_local,
    "exit": AsyncIOBackend.exit,
    "handle_process_exit": AsyncIOBackend._handle_process_exit,
    "run": Process.run,
    "receive": ProcessMailbox.receive,
    "start_link": supervisor_core.start_link,
    "supervisor_loop": supervisor_core._supervisor_loop,
}
"""Upstream's implementations, for the tests that show each defect."""


def installed_version() -> str:
    """otpylib's version, from the name of its ``otpylib-X.Y.Z.dist-info`` folder beside the
    package; ``importlib.metadata`` only if there is none (it imports ``email``, a tenth of
    ``import otpylib_config``)."""
    import otpylib

    site = os.path.dirname(os.path.dirname(os.path.abspath(otpylib.__file__ or "")))
    prefix, suffix = "otpylib-", ".dist-info"
    try:
        names = [n for n in os.listdir(site) if n.startswith(prefix) and n.endswith(suffix)]
    except OSError:
        names = []
    if len(names) == 1:
        return names[0][len(prefix) : -len(suffix)]
    from importlib.metadata import version

    return version("otpylib")


def affected(otpylib_version: str) -> bool:
    """True for the otpylib releases these fixes are written against."""
    return otpylib_version.split(".")[:2] == ["0", "5"]


class ProcessExit(Exception):
    """Raised in a process body to end the process with ``reason`` (an atom, str...)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def describe(reason: Any) -> str:
    """A short text for an exit reason, for logs and ``status()``."""
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"[:200]
    return str(reason)[:200]


# -- exit signals ----------------------------------------------------------------------

_hooks: dict[Any, list[Callable[[Any], None]]] = {}
_owned: dict[Any, set[asyncio.Task[Any]]] = {}


def on_exit(pid: Any, hook: Callable[[Any], None]) -> None:
    """Call ``hook(reason)`` when process ``pid`` ends, however it ends (at once if it is
    already gone). Hooks run on the loop before the death is announced to monitors."""
    if not process.is_alive(pid):
        hook(NORMAL)
        return
    _hooks.setdefault(pid, []).append(hook)


def bind_task(pid: Any, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` when process ``pid`` ends: the task belongs to the process."""
    if not process.is_alive(pid):
        task.cancel()
        return
    tasks = _owned.setdefault(pid, set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _run_hooks(pid: Any, reason: Any) -> None:
    for task in _owned.pop(pid, ()):
        task.cancel()
    for hook in _hooks.pop(pid, ()):
        try:
            hook(reason)
        except Exception:
            logger.exception("exit hook of %s raised", pid)


async def _run(self: Process) -> Any:
    """``Process.run`` that ends with the reason of the exit signal that stopped it."""
    try:
        await self.func(*self.args, **self.kwargs)
    except asyncio.CancelledError:
        return getattr(self, "exit_reason", None) or SHUTDOWN
    except ProcessExit as exc:
        return getattr(self, "exit_reason", None) or exc.reason
    except Exception as exc:
        return getattr(self, "exit_reason", None) or exc
    return getattr(self, "exit_reason", None) or NORMAL


async def _receive(self: ProcessMailbox, timeout: float | None = None) -> Any:
    """A message, waiting at most ``timeout``; one already queued is taken without arming
    a timer (the common case for a busy server), and no wait is bounded by ``wait_for``,
    which on Python 3.11 can swallow a cancellation that comes with a message."""
    if self.closed:
        raise RuntimeError("Mailbox is closed")
    queue = self.queue
    if not queue.empty():
        return queue.get_nowait()
    if timeout is None:
        return await queue.get()
    async with asyncio.timeout(timeout):
        return await queue.get()


async def _exit(self: AsyncIOBackend, pid: Any, reason: Any) -> None:
    target = self._name_registry.get(pid) if isinstance(pid, str | atom.Atom) else pid
    proc = self._processes.get(target) if target is not None else None
    if proc is None:
        raise ProcessNotFoundError(f"Process {pid} not found")
    if reason in (KILL, KILLED):
        await _terminate(self, proc, KILLED)
    elif proc.trap_exits and proc.mailbox is not None and not proc.mailbox.closed:
        await proc.mailbox.send((EXIT, self.self() or "system", reason))
    elif reason != NORMAL or target == self.self():
        await _terminate(self, proc, reason)


async def _terminate(self: AsyncIOBackend, proc: Process, reason: Any) -> None:
    """End ``proc`` with ``reason``: the first reason wins, except that ``killed`` always
    does. The death is announced when the task ends (see ``_handle_process_exit``)."""
    if getattr(proc, "exit_reason", None) is None or reason is KILLED:
        proc.exit_reason = reason
    task = proc.task
    if task is None or task.done():
        return
    started = proc.info.state != STARTING
    task.cancel()
    if not started:  # its body, and so its exit handling, will never run
        pid = proc.pid
        await self._handle_process_exit(pid, reason)
        self._cleanup_process(pid)


async def _handle_process_exit(self: AsyncIOBackend, pid: Any, reason: Any) -> None:
    """Announce a death once, after the process stopped: hooks, links, then monitors."""
    proc = self._processes.get(pid)
    if proc is None:
        return
    _run_hooks(pid, reason)
    if reason is not NORMAL and reason is not None:
        for linked_pid in list(proc.links):
            linked = self._processes.get(linked_pid)
            if linked is None:
                continue
            linked.links.discard(pid)
            if linked.trap_exits and linked.mailbox is not None and not linked.mailbox.closed:
                await linked.mailbox.send((EXIT, pid, reason))
            else:
                await _terminate(self, linked, reason)
    for ref, watcher in list(proc.monitored_by.items()):
        watching = self._processes.get(watcher)
        if watching is not None:
            watching.monitors.pop(ref, None)
            if watching.mailbox is not None and not watching.mailbox.closed:
                await watching.mailbox.send((DOWN, ref, PROCESS, pid, reason))
    proc.monitored_by.clear()


async def _monitor_local(self: AsyncIOBackend, monitoring_pid: Any, monitored_pid: Any) -> str:
    monitored = self._processes.get(monitored_pid)
    if not monitored:
        raise ProcessNotFoundError(f"Process {monitored_pid} not found")
    monitoring = self._processes.get(monitoring_pid)
    if not monitoring:
        raise ProcessNotFoundError(f"Process {monitoring_pid} not found")
    ref = f"#Ref<{monitoring_pid}.{next(_refs)}>"
    monitoring.monitors[ref] = monitored_pid
    monitored.monitored_by[ref] = monitoring_pid
    return ref


# -- supervisors -----------------------------------------------------------------------


async def _start_link(module_class: type, init_arg: Any = None, name: str | None = None) -> Any:
    """``supervisor.start_link`` whose handshake skips (and keeps) unrelated messages and
    notices a supervisor that died before answering."""
    supervisor_core._validate_supervisor_module(module_class)
    if name and process.whereis(name) is not None:
        raise RuntimeError(f"Supervisor name '{name}' is already registered")
    parent = process.self()
    if not parent:
        raise RuntimeError("supervisor.start_link() must be called from within a process")
    pid = await process.spawn_link(
        supervisor_core._supervisor_loop,
        args=[module_class, init_arg, parent],
        name=name,
        mailbox=True,
        trap_exits=True,
    )
    ref = await process.monitor(pid)
    kept: list[Any] = []
    try:
        reply = await _handshake(pid, ref, kept)
    finally:
        await process.demonitor(ref)
        for message in kept:
            await process.send(parent, message)
    if reply[0] == "supervisor_init_ok":
        return pid
    raise RuntimeError(f"[supervisor] {_module_id(module_class)} init failed: {reply[-1]}")


async def _handshake(pid: Any, ref: str, kept: list[Any]) -> tuple[Any, ...]:
    deadline = time.monotonic() + _HANDSHAKE_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"[supervisor] {pid} did not finish init in time")
        message = await process.receive(timeout=remaining)
        if _is_handshake(message, pid):
            return message  # type: ignore[no-any-return]
        if _is_down(message, ref):
            return ("supervisor_init_error", pid, f"exited: {describe(message[-1])}")
        kept.append(message)


def _is_handshake(message: Any, pid: Any) -> bool:
    return (
        isinstance(message, tuple)
        and len(message) == 3
        and message[0] in ("supervisor_init_ok", "supervisor_init_error")
        and message[1] == pid
    )


def _is_down(message: Any, ref: Any) -> bool:
    return (
        isinstance(message, tuple)
        and len(message) >= 4
        and message[0] == DOWN
        and message[1] == ref
    )


@dataclass(eq=False)
class _Child:
    spec: otp_supervisor.child_spec
    pid: Any = None
    ref: Any = None


@dataclass(eq=False)
class _Supervisor:
    """One supervisor's children and restart bookkeeping (runs inside its process)."""

    pid: Any
    parent: Any
    name: str
    strategy: Any = None
    max_restarts: int = 3
    max_seconds: float = 5.0
    children: list[_Child] = field(default_factory=list)
    restarts: deque[float] = field(default_factory=deque)
    stash: deque[Any] = field(default_factory=deque)

    def configure(self, result: Any) -> None:
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"init must return (child_specs, options), got {type(result)}")
        specs, options = result
        for spec in specs:
            if not isinstance(spec, otp_supervisor.child_spec):
                raise TypeError(f"child_specs must be child_spec instances, got {type(spec)}")
        get: Callable[[str, Any], Any] = (
            options.get if isinstance(options, dict) else lambda k, d: getattr(options, k, d)
        )
        self.strategy = get("strategy", otp_supervisor.ONE_FOR_ONE)
        self.max_restarts = int(get("max_restarts", 3))
        self.max_seconds = float(get("max_seconds", 5))
        self.children = [_Child(spec) for spec in specs]

    async def serve(self) -> Any:
        """Handle messages until told to stop; returns the reason to exit with."""
        while True:
            message = self.stash.popleft() if self.stash else await process.receive()
            reason = await self._handle(message)
            if reason is not None:
                return reason

    async def _handle(self, message: Any) -> Any:
        if message in (SHUTDOWN, SUPERVISOR_SHUTDOWN):
            return NORMAL
        if not isinstance(message, tuple) or not message:
            return None
        if message[0] == EXIT and len(message) == 3:
            return message[2] if message[1] == self.parent else None
        if message[0] == DOWN and len(message) >= 4:
            child = next((c for c in self.children if c.ref == message[1]), None)
            return None if child is None else await self._child_down(child, message[-1])
        if message[0] == _RESTART:
            return await self._restart(message[1])
        return None

    async def _child_down(self, child: _Child, reason: Any) -> Any:
        child.pid = child.ref = None
        restart = child.spec.restart
        if restart == TEMPORARY:
            self.children.remove(child)
            return None
        if restart != PERMANENT and reason in (NORMAL, SHUTDOWN):
            return None  # transient, ended normally
        logger.debug("supervisor %s: child %s exited: %s", self.name, child.spec.id, reason)
        return await self._restart(self._victims(child))

    def _victims(self, child: _Child) -> list[str]:
        if self.strategy == ONE_FOR_ALL:
            return [c.spec.id for c in self.children]
        if self.strategy == REST_FOR_ONE:
            return [c.spec.id for c in self.children[self.children.index(child) :]]
        return [child.spec.id]

    async def _restart(self, ids: list[str]) -> Any:
        """Count one restart; past the intensity stop everything, else (re)start ``ids``."""
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - self.max_seconds:
            self.restarts.popleft()
        if len(self.restarts) > self.max_restarts:
            logger.error("supervisor %s reached its restart intensity; shutting down", self.name)
            return SHUTDOWN
        victims = [c for c in self.children if c.spec.id in ids]
        for child in reversed(victims):
            await self._stop(child)
        for index, child in enumerate(victims):
            try:
                await self._start(child)
            except Exception as exc:
                logger.warning(
                    "supervisor %s: restarting %s failed: %s", self.name, child.spec.id, exc
                )
                rest = [c.spec.id for c in victims[index:]]
                await process.send(self.pid, (_RESTART, rest))
                break
        return None

    async def start_all(self) -> None:
        for child in self.children:
            await self._start(child)

    async def _start(self, child: _Child) -> None:
        spec = child.spec
        pid = await spec.module.start_link(init_arg=spec.args, name=spec.name)
        try:
            child.ref = await process.monitor(pid)
        except ProcessNotFoundError:
            raise RuntimeError(f"{spec.id} exited right after it started") from None
        child.pid = pid

    async def stop_all(self) -> None:
        for child in reversed(self.children):
            await self._stop(child)

    async def _stop(self, child: _Child) -> None:
        """Stop one child and wait until it has (``shutdown``, then ``kill``)."""
        pid, ref = child.pid, child.ref
        child.pid = child.ref = None
        if pid is None or not process.is_alive(pid):
            return
        for reason, timeout in ((SHUTDOWN, CHILD_SHUTDOWN_TIMEOUT), (KILL, 1.0)):
            try:
                await process.exit(pid, reason)
            except ProcessNotFoundError:
                return
            if await self._await_down(ref, timeout):
                return
        logger.error("supervisor %s: child %s ignored kill", self.name, child.spec.id)

    async def _await_down(self, ref: Any, timeout: float) -> bool:
        """Wait for ``DOWN`` of ``ref``; other messages are kept for :meth:`serve`."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await process.receive(timeout=remaining)
            except TimeoutError:
                return False
            if _is_down(message, ref):
                return True
            self.stash.append(message)
        return False


def _module_id(module_class: type) -> str:
    return str(getattr(module_class, "__mod_id__", module_class.__name__))


async def _supervisor_loop(module_class: type, init_arg: Any, parent: Any) -> None:
    sup = _Supervisor(process.self(), parent, _module_id(module_class))
    try:
        sup.configure(await module_class().init(init_arg))
        await sup.start_all()
    except Exception as exc:
        await sup.stop_all()
        await process.send(parent, ("supervisor_init_error", sup.pid, repr(exc)))
        return
    ids = [child.spec.id for child in sup.children]
    await process.send(parent, ("supervisor_init_ok", sup.pid, ids))
    reason = await sup.serve()
    await sup.stop_all()
    if reason is not NORMAL:
        raise ProcessExit(reason)


# -- installation ----------------------------------------------------------------------


def install() -> bool:
    """Apply every fix if this otpylib needs them; returns whether they are in place."""
    if AsyncIOBackend.exit is _exit:
        return True
    if not affected(installed_version()):
        return False
    AsyncIOBackend._monitor_local = _monitor_local
    AsyncIOBackend.exit = _exit
    AsyncIOBackend._handle_process_exit = _handle_process_exit
    Process.run = _run
    ProcessMailbox.receive = _receive
    supervisor_core._supervisor_loop = _supervisor_loop
    supervisor_core.start_link = _start_link
    otp_supervisor.start_link = _start_link
    logger.debug("patched otpylib exits, monitors and supervisors (Erlang semantics)")
    return True


def uninstall() -> None:
    """Put upstream's code back (for the tests that show each defect)."""
    AsyncIOBackend._monitor_local = ORIGINAL["monitor_local"]
    AsyncIOBackend.exit = ORIGINAL["exit"]
    AsyncIOBackend._handle_process_exit = ORIGINAL["handle_process_exit"]
    Process.run = ORIGINAL["run"]
    ProcessMailbox.receive = ORIGINAL["receive"]
    supervisor_core._supervisor_loop = ORIGINAL["supervisor_loop"]
    supervisor_core.start_link = ORIGINAL["start_link"]
    otp_supervisor.start_link = ORIGINAL["start_link"]


# -- runtime ---------------------------------------------------------------------------


async def open_runtime() -> AsyncIOBackend:
    """A new asyncio backend, initialised and set as otpylib's runtime; undo with
    :func:`shutdown_runtime`."""
    backend = AsyncIOBackend()
    await backend.initialize()
    set_runtime(backend)
    return backend


async def shutdown_runtime(backend: AsyncIOBackend) -> None:
    """Stop every process of ``backend``, then the backend itself, without the spin, and
    unset it as the runtime."""
    tasks = [p.task for p in backend._processes.values() if p.task and not p.task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.shutdown()
    await asyncio.sleep(0)
    reset_runtime()
