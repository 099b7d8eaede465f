"""Fault injection on the supervised tree: faults the way the world causes them.

Processes die from ``process.exit(pid, reason)`` with every kind of reason, from a crashed
linked process, from their supervisor giving up, from their parent's shutdown or death.
After each fault the tree must keep every acknowledged put and subscription, keep serving
reads, publish file edits again and say in ``status()`` what happened.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from otpylib import atom, gen_server, process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule
from otpylib.supervisor import ONE_FOR_ALL, SHUTDOWN

import otpylib_config
from otpylib_config import (
    Config,
    ConfigSpec,
    DefaultsSource,
    FileSource,
    NotRunningError,
    telemetry,
)
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

from ._otp_helpers import AppSupervisor, Outer, start_unlinked
from .conftest import Recorder, StartTree, eventually

REASONS: list[Any] = [
    atom.ensure("kill"),
    atom.ensure("killed"),
    atom.ensure("normal"),
    atom.ensure("shutdown"),
    atom.ensure("supervisor_shutdown"),
    atom.ensure("boom"),
    "a string",
    ValueError("an exception"),
    RuntimeError(),
    42,
]
ROLES = ["manager", "notifier", "watch:config", "supervisor"]


def write(path: Path, version: int) -> None:
    path.write_text(f"[app]\nversion = {version}\n")


async def watched_tree(start_tree: StartTree, tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "config.toml"
    write(path, 0)
    await start_tree(
        sources=[DefaultsSource({"x": 0}), FileSource(path, name="config")],
        watch_debounce=0.01,
        **options,
    )
    return path


async def tree_works(path: Path, recorder: Recorder, step: int) -> None:
    """A put is acknowledged and delivered, a file edit is published, every process runs."""
    await Config.put("x", step)
    await eventually(lambda: ("x", step - 1, step) in recorder.events)
    write(path, step)
    await eventually(lambda: Config.get_nowait("app.version") == step)
    await eventually(lambda: all(p.alive for p in current_table().status(True).processes))


@pytest.mark.parametrize("role", ROLES)
async def test_every_process_survives_exit_with_every_reason(
    start_tree: StartTree, tmp_path: Path, role: str
) -> None:
    path = await watched_tree(start_tree, tmp_path, max_restarts=100)
    recorder = Recorder()
    await Config.subscribe("x", recorder)
    await Config.put("x", 1)
    table = current_table()
    for step, reason in enumerate(REASONS, start=2):
        pid = process.whereis(table.name_of(role))
        assert pid is not None, role
        await in_process(lambda pid=pid, reason=reason: process.exit(pid, reason))
        await tree_works(path, recorder, step)
    status = await Config.status()
    assert status.healthy and status.stopped is None
    assert Config.get_nowait("x") == len(REASONS) + 1
    assert len(table.subscriptions) == 1


async def test_a_hundred_kills_under_load_lose_no_acknowledged_put(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"seed": 0})], max_restarts=10_000)
    table = current_table()
    recorder = Recorder()
    await Config.subscribe("keys.*", recorder)
    acknowledged: dict[str, int] = {}
    read_errors: list[BaseException] = []
    done = asyncio.Event()
    rng = random.Random(8)

    async def writer(n: int) -> None:
        i = 0
        while not done.is_set():
            await Config.put(f"keys.w{n}_{i}", i)
            acknowledged[f"keys.w{n}_{i}"] = i
            i += 1
            await asyncio.sleep(rng.random() * 0.002)  # pacing: kills land between puts

    async def reader() -> None:
        while not done.is_set():
            try:
                assert Config.get_nowait("seed") == 0
                keys = Config.get_nowait("keys", {})
                assert all(keys[k.split(".")[1]] == v for k, v in list(acknowledged.items()))
            except BaseException as exc:
                read_errors.append(exc)
            await asyncio.sleep(0)

    async def killer() -> None:
        for kill in range(120):
            name = table.name_of("manager" if kill % 2 == 0 else "notifier")
            pid = process.whereis(name)
            if pid is not None:
                await in_process(lambda pid=pid, k=kill: process.exit(pid, REASONS[k % 10]))
            await asyncio.sleep(rng.random() * 0.01)  # pacing: kills at random moments
        done.set()

    tasks = [asyncio.create_task(writer(n)) for n in range(4)]
    tasks.append(asyncio.create_task(reader()))
    await asyncio.wait_for(killer(), 60)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert read_errors == []
    assert len(acknowledged) > 100
    for path, value in acknowledged.items():
        assert Config.get_nowait(path) == value, path
    await eventually(lambda: {p for p, _, _ in recorder.events} >= set(acknowledged), 10)
    deaths = table.health["manager"].starts + table.health["notifier"].starts - 2
    assert deaths >= 100  # every reason but "normal" (ignored, as in Erlang) ends a process
    await Config.put("after", 1)
    assert (await Config.status()).healthy


class Linker(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):
    """A user process that links itself to the manager, then crashes on request."""

    async def init(self, manager: Any) -> Any:
        await process.link(manager)
        return manager

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return (Reply(None), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: Any) -> Any:
        raise RuntimeError("the linked user process crashed")

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


async def test_a_crashed_linked_process_restarts_the_manager_and_loses_nothing(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    table = current_table()
    await Config.put("kept", "yes")
    manager = process.whereis(table.manager_name)

    async def link_and_crash() -> None:
        user = await gen_server.start(Linker, init_arg=manager)  # linked to the manager only
        await process.send(user, "crash")

    await in_process(link_and_crash)
    await eventually(lambda: process.whereis(table.manager_name) not in (None, manager))
    assert Config.get_nowait("kept") == "yes"
    await Config.put("x", 1)
    manager_health = next(p for p in (await Config.status()).processes if p.role == "manager")
    assert manager_health.restarts == 1
    assert "linked user process" in (manager_health.last_exit or "")


async def test_past_the_intensity_the_tree_stops_for_good_and_says_so(
    start_tree: StartTree,
) -> None:
    await start_tree(
        sources=[DefaultsSource({"x": 0})], max_restarts=1, max_seconds=30, write_timeout=30
    )
    await Config.put("x", 1)
    table = current_table()
    with telemetry.capture_events(telemetry.TREE_STOPPED) as stopped:
        for _ in range(4):  # the ConfigSupervisor dies; the root restarts it once, then gives up
            pid = process.whereis(table.supervisor_name)
            if pid is None:
                break
            await in_process(lambda pid=pid: process.exit(pid, atom.ensure("kill")))
            await eventually(lambda pid=pid: not process.is_alive(pid))
        await eventually(lambda: table.stopped is not None)

    with pytest.raises(NotRunningError, match="stopped for good") as error:
        await asyncio.wait_for(Config.put("x", 2), 5)  # at once, not after write_timeout
    assert "supervisor 2x" in str(error.value) and "root" in str(error.value)
    assert Config.get_nowait("x") == 1  # reads keep the last snapshot
    status = await Config.status()
    assert status.stopped is not None and not status.healthy
    assert [e.metadata["id"] for e in stopped] == ["default"]


def tree_processes(spec_id: str) -> list[Any]:
    prefix = f"otpylib_config.{spec_id}"
    from otpylib.runtime import get_runtime

    backend = get_runtime()
    return [pid for name, pid in backend._name_registry.items() if str(name).startswith(prefix)]


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before``, but for the loop's default executor (the worker
    threads of ``otpylib_config.threads``: idle ones stay and are reused by whoever needs
    one next)."""
    return [
        t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio_")
    ]


@pytest.mark.parametrize("how", ["shutdown", "kill"])
async def test_an_embedded_tree_stops_with_its_parent_leaving_nothing(
    otp_runtime: Any, tmp_path: Path, how: str
) -> None:
    threads_before = set(threading.enumerate())
    tasks_before = set(asyncio.all_tasks())
    path = tmp_path / "config.toml"
    write(path, 0)
    spec = ConfigSpec(id="emb", sources=[FileSource(path, name="config")], reload_interval=None)
    app = await in_process(lambda: start_unlinked(AppSupervisor, spec, "app"))
    recorder = Recorder()
    await Config.subscribe("app.version", recorder)
    write(path, 1)
    await recorder.settled(1)
    assert new_threads(threads_before)  # the file's observer runs

    if how == "shutdown":
        await in_process(lambda: process.send(app, SHUTDOWN))
    else:
        await in_process(lambda: process.exit(app, atom.ensure("kill")))

    await eventually(lambda: tree_processes("emb") == [] and not process.is_alive(app))
    await eventually(lambda: not new_threads(threads_before))
    await eventually(lambda: set(asyncio.all_tasks()) - tasks_before <= {asyncio.current_task()})


async def test_a_parent_that_restarts_the_tree_gets_every_put_and_subscription_back(
    otp_runtime: Any,
) -> None:
    spec = ConfigSpec(id="emb", sources=[DefaultsSource({"x": 0})], reload_interval=None)
    await in_process(lambda: start_unlinked(Outer, (AppSupervisor, spec, "app"), "o"))
    recorder = Recorder()
    await Config.subscribe("x", recorder)
    await Config.put("x", 1)
    old_sup = process.whereis("otpylib_config.emb")

    app = process.whereis("app")
    await in_process(lambda: process.exit(app, atom.ensure("kill")))  # Outer restarts App
    await eventually(lambda: process.whereis("otpylib_config.emb") not in (None, old_sup))

    assert Config.get_nowait("x") == 1
    await Config.put("x", 2)
    events = await recorder.settled(2, then=lambda: Config.put("x", 3))
    assert events == [("x", 0, 1), ("x", 1, 2), ("x", 2, 3)]  # nothing lost, none twice


async def test_a_one_for_all_sibling_crash_leaves_exactly_one_config_tree(
    otp_runtime: Any,
) -> None:
    spec = ConfigSpec(id="emb", sources=[DefaultsSource({"x": 0})], reload_interval=None)
    await in_process(lambda: start_unlinked(AppSupervisor, (spec, ONE_FOR_ALL, True), "app"))
    await Config.put("x", 1)
    old = {name: process.whereis(f"otpylib_config.emb{name}") for name in ("", ".manager")}

    await in_process(lambda: process.send("sibling", "crash"))

    await eventually(lambda: process.whereis("otpylib_config.emb") not in (None, old[""]))
    assert not any(process.is_alive(pid) for pid in old.values())
    assert len(tree_processes("emb")) == 3  # supervisor, manager, notifier: one of each
    assert Config.get_nowait("x") == 1
    await Config.put("x", 2)


async def test_start_and_stop_fifty_times_leaves_nothing_behind(
    otp_runtime: Any, tmp_path: Path
) -> None:
    path = tmp_path / "config.toml"
    write(path, 0)
    spec = ConfigSpec(sources=[FileSource(path, name="config")], reload_interval=None)

    async def cycle() -> None:
        async with otpylib_config.running(spec):
            await Config.subscribe("app.*", Recorder())
            await Config.put("x", 1)

    await cycle()  # warm-up: imports, caches
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(50):
        await cycle()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    await eventually(lambda: threading.active_count() <= threads)
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert len(asyncio.all_tasks()) <= tasks
    assert grown < 2_000_000, grown  # bytes still allocated after 50 cycles


async def test_stop_is_bounded_when_a_callback_ignores_cancellation(
    otp_runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def stubborn(path: str, old: Any, new: Any) -> None:
        started.set()
        for _ in range(3):
            try:
                await asyncio.sleep(1.0)  # a slow callback: what stop() must not wait for
            except asyncio.CancelledError:
                continue  # swallows cancellation, then ends by itself after ~3 s

    spec = ConfigSpec(sources=[DefaultsSource({"a": 1})], stop_timeout=0.2)
    tree = await otpylib_config.start(spec)
    await Config.subscribe("a", stubborn)
    await Config.put("a", 2)
    await started.wait()

    await asyncio.wait_for(tree.stop(), 2.0)

    assert "ignored cancellation" in caplog.text


async def test_a_manager_whose_init_fails_on_restart_counts_as_a_death_until_the_tree_gives_up(
    start_tree: StartTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})], max_restarts=2, max_seconds=30)
    await Config.put("x", 1)
    table = current_table()
    from otpylib_config.manager import ConfigManager

    async def failing_init(self: Any, table: Any) -> Any:
        table.track("manager")
        raise RuntimeError("manager cannot start")

    monkeypatch.setattr(ConfigManager, "init", failing_init)
    manager = process.whereis(table.manager_name)
    await in_process(lambda: process.exit(manager, atom.ensure("boom")))

    await eventually(lambda: table.stopped is not None, timeout=10)
    assert Config.get_nowait("x") == 1
    with pytest.raises(NotRunningError, match="manager"):
        await Config.put("x", 2)
    manager_status = next(p for p in (await Config.status()).processes if p.role == "manager")
    assert not manager_status.alive and manager_status.restarts >= 2
