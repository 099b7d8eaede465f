"""``threads.run_sync``: a blocking call off the loop, finished before a cancellation goes on."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from otpylib_config import threads

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_the_call_runs_in_another_thread_and_its_result_comes_back() -> None:
    caller = threading.get_ident()
    result = await threads.run_sync(lambda a, b: (threading.get_ident(), a + b), 2, 3)
    assert result[0] != caller and result[1] == 5


async def test_the_call_sees_the_callers_context_variables() -> None:
    VAR.set("caller's")
    assert await threads.run_sync(VAR.get) == "caller's"


async def test_an_exception_of_the_call_is_raised_to_the_caller() -> None:
    def fail() -> None:
        raise LookupError("from the thread")

    with pytest.raises(LookupError, match="from the thread"):
        await threads.run_sync(fail)


async def test_a_cancelled_caller_waits_until_the_call_has_finished() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)
        finished.set()

    task = asyncio.ensure_future(threads.run_sync(blocking))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second cancellation does not cut the wait short either
    await asyncio.sleep(0.01)
    assert not task.done()  # the call still runs: the cancellation waits for it
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
