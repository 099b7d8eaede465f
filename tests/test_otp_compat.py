"""The otpylib monitor-ref defect, shown upstream, and our fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from otpylib import process, supervisor
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, SUPERVISOR, OTPModule
from otpylib.runtime.backends.asyncio_backend.backend import AsyncIOBackend

from otpylib_config import _otp_compat
from otpylib_config.supervisor import in_process

from .conftest import eventually


class Worker(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):
    async def init(self, arg: Any) -> Any:
        return arg

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return (Reply(state), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: Any) -> Any:
        raise RuntimeError("crash on request")

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


class TwoChildren(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
    async def init(self, arg: Any) -> Any:
        children = [
            supervisor.child_spec(id=name, module=Worker, args=name, name=name)
            for name in ("alpha", "beta")
        ]
        return (children, supervisor.options(max_restarts=10, max_seconds=5))

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


@pytest.fixture
def upstream_monitors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(AsyncIOBackend, "_monitor_local", _otp_compat.ORIGINAL_MONITOR_LOCAL)
    yield


async def crash_alpha_then_beta() -> bool:
    """Crash each child once; return whether beta was restarted."""

    async def body() -> bool:
        await supervisor.start_link(TwoChildren, name="two_children")
        alpha, beta = process.whereis("alpha"), process.whereis("beta")
        await process.send("alpha", "crash")
        await eventually(lambda: process.whereis("alpha") not in (None, alpha))
        await process.send("beta", "crash")
        await eventually(lambda: not process.is_alive(beta))
        try:
            await eventually(lambda: process.whereis("beta") not in (None, beta), timeout=1)
        except BaseException:
            return False
        return True

    return await in_process(body)


async def test_upstream_restarts_the_wrong_child(otp_runtime: Any, upstream_monitors: None) -> None:
    assert await crash_alpha_then_beta() is False


async def test_with_the_fix_each_crashed_child_is_restarted(otp_runtime: Any) -> None:
    assert _otp_compat.install() is True
    assert await crash_alpha_then_beta() is True


def test_only_the_affected_series_is_patched() -> None:
    assert _otp_compat.affected("0.5.18")
    assert _otp_compat.affected("0.5.3")
    assert not _otp_compat.affected("0.6.0")
    assert not _otp_compat.affected("1.0.0")
