"""Blocking calls in a worker thread, finished before a cancellation goes on.

A parse, a merge, a journal write and a cache write run off the event loop. If the task that
waits for one is cancelled (its process died, the tree stops), the call is waited for before
the cancellation goes on: a journal write is never left running under the next manager's
recovery, and two reads of one file never overlap (``FileSource``'s proof counts its own
opens). That is ``anyio.to_thread.run_sync``'s rule; it is written out here because the first
use of anyio's asyncio backend imports about 20 ms of modules (sockets, streams, TLS), a tenth
of a cold start (docs/performance.md), for what the standard library's executor does.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def run_sync(function: Callable[[*Ts], T], *args: *Ts) -> T:
    """``function(*args)`` in the loop's default executor, with the caller's context."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args)
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _finished(future)
        raise


async def _finished(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` however often this task is cancelled meanwhile; the caller
    re-raises the cancellation once it is done."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: the cancellation is what the caller reports
