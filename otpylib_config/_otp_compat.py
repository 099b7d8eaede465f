"""Fixes for otpylib defects that cannot be worked around by design (DESIGN §8).

otpylib 0.5.x (verified on 0.5.18) builds local monitor refs as ``#Ref<watcher.N>`` with
``N = len(watcher.monitors)``. A ref is reused as soon as one monitored process has died, so
a supervisor with two or more children can restart the wrong child and orphan another
(reference/otpylib-0.5.18.md §3). ``install()`` replaces ``_monitor_local`` with a copy that
takes N from a process-wide counter. It patches only the 0.5 series and is idempotent;
``tests/test_otp_compat.py`` shows the upstream bug and the fix.

``shutdown_runtime`` works around a second defect: ``AsyncIOBackend.shutdown`` clears the
process table right after requesting cancellation, so a supervisor that runs before its
cancellation lands finds no mailbox, catches the ``RuntimeError`` and retries forever,
never yielding to the event loop. Cancelling and awaiting every process first avoids it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from importlib.metadata import version
from typing import Any

from otpylib.runtime import reset_runtime, set_runtime
from otpylib.runtime.backends.asyncio_backend.backend import AsyncIOBackend
from otpylib.runtime.backends.base import ProcessNotFoundError

logger = logging.getLogger("otpylib_config")

_refs = itertools.count(1)
ORIGINAL_MONITOR_LOCAL = AsyncIOBackend._monitor_local


def affected(otpylib_version: str) -> bool:
    """True for the otpylib releases whose monitor refs can collide."""
    return otpylib_version.split(".")[:2] == ["0", "5"]


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


def install() -> bool:
    """Apply the fix if this otpylib needs it; returns whether it is in place."""
    if AsyncIOBackend._monitor_local is _monitor_local:
        return True
    if not affected(version("otpylib")):
        return False
    AsyncIOBackend._monitor_local = _monitor_local
    logger.debug("patched otpylib AsyncIOBackend._monitor_local (unique monitor refs)")
    return True


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
