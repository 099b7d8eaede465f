"""Lifecycle: one child spec in an application's tree, or a standalone tree for scripts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from otpylib import process, supervisor
from otpylib.runtime import get_runtime
from otpylib.supervisor import SHUTDOWN

import otpylib_config
from otpylib_config import Config, ConfigSpec, DefaultsSource, NotRunningError
from otpylib_config.supervisor import in_process

from ._otp_helpers import AppSupervisor
from .conftest import Recorder, eventually


async def stop_application(name: str) -> None:
    """How an application stops its own tree: SHUTDOWN to its outermost supervisor."""
    pid = process.whereis(name)
    await process.send(name, SHUTDOWN)
    await eventually(lambda: not process.is_alive(pid))


async def test_child_spec_embeds_the_tree_in_an_application(otp_runtime: Any) -> None:
    spec = ConfigSpec(id="app", sources=[DefaultsSource({"server": {"port": 8000}})])

    async def boot() -> Any:
        return await supervisor.start_link(AppSupervisor, init_arg=spec, name="application")

    await in_process(boot)
    assert await Config.get("server.port") == 8000
    await Config.put("server.port", 9000)
    assert Config.get_nowait("server.port") == 9000
    assert process.whereis("otpylib_config.app.manager") is not None

    await stop_application("application")  # the tree stops with its parent

    assert process.whereis("otpylib_config.app") is None
    assert process.whereis("otpylib_config.app.manager") is None
    assert Config.get_nowait("server.port") == 9000  # reads keep the last snapshot
    await otpylib_config.shutdown("app")  # an explicit stop also ends the reads
    with pytest.raises(NotRunningError):
        Config.get_nowait("server.port")


async def test_start_creates_and_removes_its_own_runtime() -> None:
    assert get_runtime() is None
    tree = await otpylib_config.start(ConfigSpec(sources=[DefaultsSource({"a": 1})]))
    assert get_runtime() is not None
    assert await Config.get("a") == 1

    await tree.stop()

    assert get_runtime() is None


async def test_running_stops_everything_it_started(otp_runtime: Any) -> None:
    before = set(asyncio.all_tasks())
    slow_started = asyncio.Event()

    async def slow(path: str, old: Any, new: Any) -> None:
        slow_started.set()
        await asyncio.sleep(60)  # a callback that hangs: stopping must cancel it

    async with otpylib_config.running(ConfigSpec(sources=[DefaultsSource({"a": 1})])) as tree:
        await Config.subscribe("a", slow)
        await Config.put("a", 2)
        await slow_started.wait()
        names = [tree.table.manager_name, tree.table.notifier_name, tree.table.supervisor_name]

    await eventually(lambda: all(process.whereis(n) is None for n in names))
    await eventually(lambda: set(asyncio.all_tasks()) - before <= {asyncio.current_task()})
    assert not tree.table.delivery.tasks  # the hanging callback was cancelled


async def test_a_second_tree_with_the_same_id_is_refused(otp_runtime: Any) -> None:
    spec = ConfigSpec(id="dup", sources=[DefaultsSource({})])
    async with otpylib_config.running(spec):
        with pytest.raises(RuntimeError, match="already registered"):
            await otpylib_config.start(spec)
        assert await Config.get("a") is None  # the first one still serves


async def test_events_flow_in_an_embedded_tree(otp_runtime: Any) -> None:
    spec = ConfigSpec(id="embedded", sources=[DefaultsSource({"x": 0})])
    await in_process(lambda: supervisor.start_link(AppSupervisor, init_arg=spec, name="app2"))
    recorder = Recorder()
    await Config.subscribe("x", recorder)

    await Config.put("x", 1)

    events = await recorder.settled(1, then=lambda: Config.put("x", 2))
    assert events == [("x", 0, 1), ("x", 1, 2)]
    await stop_application("app2")
    assert process.whereis("otpylib_config.embedded.notifier") is None
