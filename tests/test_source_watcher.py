"""Push sources: each gets a supervised SourceWatcher that makes the manager reload it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from otpylib import process

from otpylib_config import Config, DefaultsSource, source_watcher, telemetry
from otpylib_config.client import current_table

from .conftest import FakeSource, Recorder, StartTree, eventually

CRASH = ("test: crash now",)


@pytest.fixture
def crashable_watcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = source_watcher.SourceWatcher.handle_info

    async def handle_info(self: Any, message: Any, state: Any) -> Any:
        if message == CRASH:
            raise RuntimeError("injected crash")
        return await original(self, message, state)

    monkeypatch.setattr(source_watcher.SourceWatcher, "handle_info", handle_info)
    yield


async def test_a_push_reaches_subscribers_without_the_timer(start_tree: StartTree) -> None:
    source = FakeSource("push", {"feature": {"on": False}}, pushes=True)
    await start_tree(sources=[source], reload_interval=None)
    recorder = Recorder()
    await Config.subscribe("feature.*", recorder)

    source.push({"feature": {"on": True}})

    assert await recorder.settled(1) == [("feature.on", False, True)]
    assert Config.get_nowait("feature.on") is True


async def test_a_push_that_changes_nothing_notifies_nobody(start_tree: StartTree) -> None:
    source = FakeSource("push", {"a": 1}, pushes=True)
    await start_tree(sources=[source])
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    loads = source.loads

    source.push({"a": 1})
    await eventually(lambda: source.loads > loads)

    # the next push's event is the first: the one that changed nothing published none
    assert await recorder.settled(0, then=lambda: source.push({"a": 2})) == [("a", 1, 2)]


async def test_only_push_sources_get_a_watcher(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1}), FakeSource("push", {"b": 2}, pushes=True)])
    table = current_table()

    assert process.whereis(table.watcher_name("defaults")) is None
    assert process.whereis(table.watcher_name("push")) is not None


async def test_a_failing_watch_is_reported_retried_and_the_source_keeps_serving(
    start_tree: StartTree,
) -> None:
    source = FakeSource("push", {"a": 1}, pushes=True)
    source.watch_retry_first = 0.01
    source.fail_next_watch(ConnectionError("injected watch failure"), times=3)

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        await start_tree(sources=[source])
        await eventually(lambda: source.watching == 1)

    assert source.watches == 4
    assert [e.metadata["stage"] for e in errors] == ["watch"] * 3
    assert errors[0].metadata["error"] == "push: injected watch failure"
    (status,) = (await Config.status()).sources
    assert status.last_error == "push: injected watch failure" and not status.healthy
    assert await Config.get("a") == 1

    source.push({"a": 2})  # the next successful reload clears the error

    await eventually(lambda: Config.get_nowait("a") == 2)
    assert (await Config.status()).sources[0].healthy


async def test_retry_after_sets_the_least_wait(start_tree: StartTree) -> None:
    class Throttled(ConnectionError):
        retry_after = 0.2

    source = FakeSource("push", {"a": 1}, pushes=True)
    source.watch_retry_first = 0.001
    source.fail_next_watch(Throttled("slow down"))
    started = time.monotonic()
    await start_tree(sources=[source])
    await eventually(lambda: source.watching == 1)

    assert time.monotonic() - started >= 0.2


async def test_a_crashed_watcher_is_restarted_and_replaces_its_loop(
    start_tree: StartTree, crashable_watcher: None
) -> None:
    source = FakeSource("push", {"a": 1}, pushes=True)
    await start_tree(sources=[source])
    name = current_table().watcher_name("push")
    await eventually(lambda: source.watching == 1)
    first = process.whereis(name)

    await process.send(name, CRASH)
    await eventually(lambda: process.whereis(name) not in (None, first))

    await eventually(lambda: source.watches == 2)
    assert source.watching == 1  # the first loop was cancelled, not leaked
    source.push({"a": 2})
    await eventually(lambda: Config.get_nowait("a") == 2)
    assert process.whereis(current_table().manager_name) is not None


async def test_stopping_the_tree_stops_every_watch_loop(start_tree: StartTree) -> None:
    sources = [FakeSource("one", {"a": 1}, pushes=True), FakeSource("two", {"b": 1}, pushes=True)]
    tree = await start_tree(sources=sources)
    await eventually(lambda: all(s.watching == 1 for s in sources))

    await tree.stop()

    assert [s.watching for s in sources] == [0, 0]
    assert tree.table.watch_tasks == {}


async def test_a_watch_loop_ends_with_its_owner_process(start_tree: StartTree) -> None:
    """otpylib never calls terminate: a loop must notice by itself that its owner is gone."""
    await start_tree(sources=[DefaultsSource({"a": 1})])
    source = FakeSource("orphan", {"b": 1}, pushes=True)
    stop = asyncio.Event()

    async def owner_body() -> None:
        await stop.wait()

    owner = await process.spawn(owner_body)
    source_watcher.start(current_table(), source, owner)
    await eventually(lambda: source.watching == 1)

    stop.set()  # the owner exits normally, as a process killed by its supervisor would

    await eventually(lambda: source.watching == 0)
    assert current_table().watch_tasks["orphan"].done()
