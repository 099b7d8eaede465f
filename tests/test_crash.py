"""Crash safety of the supervised tree: a crashed manager or notifier is restarted by its
supervisor and loses no acknowledged put, no subscription and no pending event, while
reads keep answering (docs/supervision.md, The tree; README.md, Failure policy).

A crash is injected the way a real bug would surface: an exception escaping the manager's
``handle_info``, which otpylib turns into an abnormal exit that the supervisor sees.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from otpylib import process

from otpylib_config import Config, DefaultsSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.manager import ConfigManager
from otpylib_config.notifier import ConfigNotifier

from .conftest import Recorder, StartTree, eventually

CRASH = ("test: crash now",)


@pytest.fixture
def crashable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let the manager and notifier be crashed by sending them ``CRASH``."""
    for module in (ConfigManager, ConfigNotifier):
        original = module.handle_info

        async def handle_info(self: Any, message: Any, state: Any, _orig: Any = original) -> Any:
            if message == CRASH:
                raise RuntimeError("injected crash")
            return await _orig(self, message, state)

        monkeypatch.setattr(module, "handle_info", handle_info)
    yield


async def crash(name: str) -> Any:
    """Crash the named process and wait for the supervisor to restart it; returns the new pid."""
    old = process.whereis(name)
    await process.send(name, CRASH)
    await eventually(lambda: process.whereis(name) not in (None, old))
    return process.whereis(name)


async def test_supervisor_restarts_a_crashed_manager(
    start_tree: StartTree, crashable: None
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})])
    table = current_table()
    first = process.whereis(table.manager_name)

    with telemetry.capture_events(telemetry.MANAGER_RESTARTED) as restarted:
        second = await crash(table.manager_name)

    assert second != first
    assert restarted[0].measurements == {"restarts": 1}
    status = await Config.status()
    assert status.manager_restarts == 1 and status.manager_running
    await Config.put("x", 2)
    assert await Config.get("x") == 2


async def test_repeated_crashes_lose_no_acknowledged_put_or_subscription(
    start_tree: StartTree, crashable: None
) -> None:
    await start_tree(sources=[DefaultsSource({"seed": 0})], max_restarts=100)
    table = current_table()
    recorder = Recorder()
    await Config.subscribe("keys.*", recorder)
    acknowledged: dict[str, int] = {}
    read_errors: list[BaseException] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(60):
            await Config.put(f"keys.w{n}_{i}", i)
            acknowledged[f"keys.w{n}_{i}"] = i
            await asyncio.sleep(random.random() * 0.004)  # pacing: crashes land between puts

    async def reader() -> None:
        while not stop.is_set():
            try:
                assert Config.get_nowait("seed") == 0
                await Config.get("keys")
            except BaseException as exc:  # any failure during a restart gap is a bug
                read_errors.append(exc)
            await asyncio.sleep(0)

    async def crasher() -> None:
        for _ in range(8):
            await asyncio.sleep(0.02)  # pacing: let some puts through between crashes
            await crash(table.manager_name)

    readers = [asyncio.create_task(reader()) for _ in range(2)]
    await asyncio.gather(writer(1), writer(2), crasher())
    stop.set()
    await asyncio.gather(*readers)

    assert read_errors == []
    assert table.health["manager"].starts == 9
    for path, value in acknowledged.items():
        assert Config.get_nowait(path) == value, path
    await eventually(lambda: len({p for p, _, _ in recorder.events}) == len(acknowledged))
    assert len(table.subscriptions) == 1


async def test_subscriptions_keep_working_after_the_notifier_crashes(
    start_tree: StartTree, crashable: None
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    table = current_table()
    recorder = Recorder()
    await Config.subscribe("x", recorder)

    manager = process.whereis(table.manager_name)
    await crash(table.notifier_name)
    await Config.put("x", 1)

    events = await recorder.settled(1, then=lambda: Config.put("x", 2))
    assert events == [("x", 0, 1), ("x", 1, 2)]  # delivered once, by the new notifier
    assert process.whereis(table.manager_name) == manager  # the right child was restarted


async def test_our_tree_restarts_the_right_child_every_time(
    start_tree: StartTree, crashable: None
) -> None:
    """With otpylib 0.5.18's colliding monitor refs this fails on the second crash."""
    await start_tree(sources=[DefaultsSource({"x": 0})], max_restarts=100)
    table = current_table()

    for name, other in [
        (table.manager_name, table.notifier_name),
        (table.notifier_name, table.manager_name),
        (table.manager_name, table.notifier_name),
        (table.notifier_name, table.manager_name),
    ]:
        untouched = process.whereis(other)
        await crash(name)
        assert process.whereis(other) == untouched
        assert process.is_alive(untouched)

    await Config.put("x", 1)
    assert await Config.get("x") == 1


async def test_a_write_during_the_restart_gap_is_retried_not_lost(
    start_tree: StartTree, crashable: None
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    table = current_table()
    old = process.whereis(table.manager_name)

    await process.send(table.manager_name, CRASH)
    put = asyncio.create_task(Config.put("x", 42))  # may hit the dying or the new manager
    await asyncio.wait_for(put, 5)

    assert process.whereis(table.manager_name) != old
    assert await Config.get("x") == 42


async def test_bad_messages_do_not_crash_or_stall_the_manager(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    table = current_table()
    pid = process.whereis(table.manager_name)

    for junk in ["junk", (), (None,), ("put",), 42, {"a": 1}]:
        await process.send(table.manager_name, junk)
    loop = asyncio.get_running_loop()
    malformed = loop.create_future()
    from otpylib_config.protocol import Put

    await process.send(table.manager_name, Put(malformed, None, "x", 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # a request of the right type with a bad field
        await asyncio.wait_for(malformed, 5)

    await Config.put("x", 1)
    assert await Config.get("x") == 1
    assert process.whereis(table.manager_name) == pid
