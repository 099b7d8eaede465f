"""Subscribers, end to end: exact events, isolation from bad callbacks, coalescing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from otpylib import process

from otpylib_config import Config, DefaultsSource, FileSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

from .conftest import Recorder, StartTree, eventually

TC_RULES = {
    "queuemizer": {
        "tc_rules": {
            "eth0": {"rate": "10mbit", "burst": 32},
            "eth1": {"rate": "5mbit", "burst": 16},
        }
    }
}


async def test_interface_subscription_gets_one_event_per_interface(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[queuemizer.tc_rules.eth0]\nrate = '10mbit'\nburst = 32\n"
        "[queuemizer.tc_rules.eth1]\nrate = '5mbit'\nburst = 16\n"
    )
    await start_tree(sources=[FileSource(config)])
    rules = Recorder()
    await Config.subscribe("queuemizer.tc_rules.*", rules)

    config.write_text(
        "[queuemizer.tc_rules.eth0]\nrate = '20mbit'\nburst = 64\n"
        "[queuemizer.tc_rules.eth2]\nrate = '1mbit'\nburst = 8\n"
    )
    await Config.reload()

    eth9 = {"rate": "1kbit", "burst": 1}
    events = await rules.settled(3, then=lambda: Config.put("queuemizer.tc_rules.eth9", eth9))
    assert events[3:] == [("queuemizer.tc_rules.eth9", None, eth9)]  # and no fourth before
    assert sorted(events[:3]) == [
        (
            "queuemizer.tc_rules.eth0",
            {"rate": "10mbit", "burst": 32},
            {"rate": "20mbit", "burst": 64},
        ),
        ("queuemizer.tc_rules.eth1", {"rate": "5mbit", "burst": 16}, None),
        ("queuemizer.tc_rules.eth2", None, {"rate": "1mbit", "burst": 8}),
    ]


async def test_patterns_get_events_at_their_own_granularity(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"rate_limits": {"api": {"requests": 10}}})])
    exact, star, section, globstar, inseg = (
        Recorder(),
        Recorder(),
        Recorder(),
        Recorder(),
        Recorder(),
    )
    await Config.subscribe("rate_limits.api.requests", exact)
    await Config.subscribe("rate_limits.*", star)
    await Config.subscribe("rate_limits", section)
    await Config.subscribe("rate_limits.**", globstar)
    await Config.subscribe("rate_limits.a?i", inseg)

    await Config.put("rate_limits.api", {"requests": 1000, "window": 60})

    new_api = {"requests": 1000, "window": 60}
    later = {"requests": 1, "window": 60}

    async def change_later() -> None:  # every pattern sees it: each list ends with its event
        await Config.put("rate_limits.api.requests", 1)

    assert await exact.settled(1, then=change_later) == [
        ("rate_limits.api.requests", 10, 1000),
        ("rate_limits.api.requests", 1000, 1),
    ]
    assert await star.settled(2) == [
        ("rate_limits.api", {"requests": 10}, new_api),
        ("rate_limits.api", new_api, later),
    ]
    assert await inseg.settled(2) == [
        ("rate_limits.api", {"requests": 10}, new_api),
        ("rate_limits.api", new_api, later),
    ]
    assert await section.settled(2) == [
        ("rate_limits", {"api": {"requests": 10}}, {"api": new_api}),
        ("rate_limits", {"api": new_api}, {"api": later}),
    ]
    events = await globstar.settled(3)
    assert sorted(events[:2]) == [
        ("rate_limits.api.requests", 10, 1000),
        ("rate_limits.api.window", None, 60),
    ]
    assert events[2:] == [("rate_limits.api.requests", 1000, 1)]


async def test_section_replaced_by_scalar_and_back(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": {"b": {"c": 1}}})])
    deep, top = Recorder(), Recorder()
    await Config.subscribe("a.b.c", deep)
    await Config.subscribe("a.*", top)

    await Config.put("a.b", 5)
    await Config.delete("a.b")

    assert await deep.settled(2, then=lambda: Config.put("a.b.c", 7)) == [
        ("a.b.c", 1, None),
        ("a.b.c", None, 1),
        ("a.b.c", 1, 7),  # the later change's: nothing else came before it
    ]
    assert await top.settled(3) == [
        ("a.b", {"c": 1}, 5),
        ("a.b", 5, {"c": 1}),
        ("a.b", {"c": 1}, {"c": 7}),
    ]


async def test_deletion_is_a_change_with_new_none(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({})])
    await Config.put("flags.new_ui", True)
    flags = Recorder()
    await Config.subscribe("flags.*", flags)

    await Config.delete("flags.new_ui")

    assert await flags.settled(1, then=lambda: Config.put("flags.new_ui", False)) == [
        ("flags.new_ui", True, None),
        ("flags.new_ui", None, False),
    ]


async def test_reload_without_changes_notifies_nobody(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"a": {"b": 1}}')
    await start_tree(sources=[FileSource(config)])
    everything = Recorder()
    await Config.subscribe("**", everything)

    config.write_text('{ "a": { "b": 1 } }')  # same data, different bytes
    await Config.reload()
    await Config.put("a.b", 1)  # a put of the value already there changes nothing either

    # the first event is the one of a later change: the reload and the put made none
    assert await everything.settled(0, then=lambda: Config.put("a.b", 2)) == [("a.b", 1, 2)]


async def test_several_changes_in_one_reload(start_tree: StartTree, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"db": {"pool": 5, "url": "x"}, "debug": false}')
    await start_tree(sources=[FileSource(config)])
    db, debug = Recorder(), Recorder()
    await Config.subscribe("db.*", db)
    await Config.subscribe("debug", debug)

    config.write_text('{"db": {"pool": 6, "timeout": 3}, "debug": true}')
    await Config.reload()

    events = await db.settled(3, then=lambda: Config.put("db.pool", 7))
    assert sorted(events[:3]) == [
        ("db.pool", 5, 6),
        ("db.timeout", None, 3),
        ("db.url", "x", None),
    ]
    assert events[3:] == [("db.pool", 6, 7)]
    assert await debug.settled(1, then=lambda: Config.put("debug", False)) == [
        ("debug", False, True),
        ("debug", True, False),
    ]


async def test_async_callbacks_are_awaited_in_order(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"n": 0})])
    seen: list[Any] = []

    async def on_change(path: str, old: Any, new: Any) -> None:
        await asyncio.sleep(0.001)
        seen.append(new)

    await Config.subscribe("n", on_change)
    for i in range(1, 21):
        await Config.put(f"m{i}", i)  # other paths: nothing coalesces
        await Config.put("n", i)
        await asyncio.sleep(0.002)

    await eventually(lambda: seen[-1:] == [20])
    assert seen == sorted(seen)


async def test_raising_callback_affects_only_its_subscription(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    good = Recorder()
    calls: list[Any] = []

    def bad(path: str, old: Any, new: Any) -> None:
        calls.append(new)
        raise RuntimeError("subscriber bug")

    await Config.subscribe("x", bad)
    await Config.subscribe("x", good)
    with telemetry.capture_events(telemetry.SUBSCRIBER_ERROR) as errors:
        await Config.put("x", 1)
        await Config.put("x", 2)
        await good.settled(2)
        await eventually(lambda: len(errors) == 2)

    assert calls == [1, 2]  # it keeps getting later events
    assert errors[0].metadata == {
        "id": "default",
        "pattern": "x",
        "path": "x",
        "error": "RuntimeError: subscriber bug",
    }
    assert (await Config.status()).counters["subscriber_errors"] == 2


async def test_hanging_callback_is_cancelled_after_its_timeout(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})], callback_timeout=0.1)
    good = Recorder()
    hung: list[Any] = []

    async def hangs(path: str, old: Any, new: Any) -> None:
        hung.append(new)
        await asyncio.Event().wait()

    await Config.subscribe("x", hangs)
    await Config.subscribe("x", good)
    with telemetry.capture_events(telemetry.SUBSCRIBER_ERROR) as errors:
        await Config.put("x", 1)
        await good.settled(1)
        await Config.put("x", 2)
        await good.settled(2)
        await eventually(lambda: len(errors) == 2)

    assert hung == [1, 2]
    assert errors[0].metadata["error"] == "timed out"


async def test_slow_subscriber_coalesces_instead_of_queueing(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    release = asyncio.Event()
    seen: list[tuple[Any, Any]] = []

    async def slow(path: str, old: Any, new: Any) -> None:
        await release.wait()
        seen.append((old, new))

    handle = await Config.subscribe("x", slow)
    for i in range(1, 1001):
        await Config.put("x", i)

    sub = _subscription(handle.id)
    assert len(sub.pending) == 1  # one event per path, however many changes
    release.set()
    await eventually(lambda: len(seen) == 2)
    assert seen == [(0, 1), (1, 1000)]  # the running call, then first old and last new


async def test_callbacks_run_outside_any_process_and_may_write(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    inside: list[Any] = []

    async def on_change(path: str, old: Any, new: Any) -> None:
        inside.append(process.self())
        await Config.put("echo", new)  # a callback may write without deadlocking

    await Config.subscribe("x", on_change)
    await Config.put("x", 7)

    await eventually(lambda: Config.get_nowait("echo") == 7)
    assert inside == [None]


async def test_unsubscribe_stops_events(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    recorder, witness = Recorder(), Recorder()
    handle = await Config.subscribe("x", recorder)
    await Config.put("x", 1)
    await recorder.settled(1)

    assert await Config.unsubscribe(handle) is True
    assert await Config.unsubscribe(handle) is False
    await Config.subscribe("x", witness)
    await Config.put("x", 2)

    # the witness has its events of x = 2 and of a later change: x = 2 was delivered
    assert await witness.settled(1, then=lambda: Config.put("x", 3)) == [
        ("x", 1, 2),
        ("x", 2, 3),
    ]
    assert recorder.events == [("x", 0, 1)]


async def test_subscriptions_of_an_exited_process_are_removed(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    recorder = Recorder()
    leave = asyncio.Event()

    async def subscriber() -> None:
        await Config.subscribe("x", recorder)
        await leave.wait()

    owner = await process.spawn(subscriber)
    await eventually(lambda: (_table().subscriptions.owners()) == {owner})
    await Config.put("x", 1)
    await recorder.settled(1)

    leave.set()
    await eventually(lambda: len(_table().subscriptions) == 0)
    witness = Recorder()
    await Config.subscribe("x", witness)
    await Config.put("x", 2)

    # the witness has its events of x = 2 and of a later change: x = 2 was delivered
    assert await witness.settled(1, then=lambda: Config.put("x", 3)) == [
        ("x", 1, 2),
        ("x", 2, 3),
    ]
    assert recorder.events == [("x", 0, 1)]


async def test_subscription_from_a_process_works_like_any_other(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    recorder = Recorder()

    async def body() -> Any:
        handle = await Config.subscribe("x", recorder)
        await Config.put("x", 3)
        return handle

    handle = await in_process(body)
    assert await recorder.settled(1) == [("x", 0, 3)]
    assert handle.pattern == "x"


def _table() -> Any:
    from otpylib_config.client import current_table

    return current_table()


def _subscription(sub_id: int) -> Any:
    return _table().subscriptions.by_id[sub_id]


async def test_a_large_change_is_delivered_while_the_loop_keeps_running(
    start_tree: StartTree,
) -> None:
    """20,000 events to one sync ``**`` subscriber: other tasks run between deliveries."""
    await start_tree(sources=[DefaultsSource({"seed": 0})])
    delivered: list[str] = []
    ticks_during: list[int] = []
    ticks = 0
    await Config.subscribe("**", lambda path, old, new: delivered.append(path))

    async def ticker() -> None:
        nonlocal ticks
        while len(delivered) < 20_000:
            ticks += 1
            if delivered:
                ticks_during.append(len(delivered))
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await Config.put("a", {f"k{i}": i for i in range(20_000)})
    await asyncio.wait_for(running, 30)

    assert sorted(delivered) == sorted(f"a.k{i}" for i in range(20_000))
    assert len({n for n in ticks_during if n < 20_000}) > 3  # it ran in between, repeatedly


async def test_a_failing_callback_is_counted_every_time_and_logged_once_per_interval(
    start_tree: StartTree, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    await start_tree(sources=[DefaultsSource({"a": {}})])

    def broken(path: str, old: Any, new: Any) -> None:
        raise RuntimeError("broken subscriber")

    await Config.subscribe("a.*", broken)
    with telemetry.capture_events(telemetry.SUBSCRIBER_ERROR) as errors:
        await Config.put("a", {f"k{i}": i for i in range(200)})
        await eventually(lambda: len(errors) == 200)

    errors_logged = [
        r for r in caplog.records if r.levelname == "ERROR" and "a.*" in r.getMessage()
    ]
    tracebacks = [r for r in caplog.records if r.levelname == "DEBUG" and "Traceback" in r.message]
    assert len(errors_logged) == 1 and "broken subscriber" in errors_logged[0].getMessage()
    assert len(tracebacks) == 1  # the first failure's traceback, for debugging
    assert (await Config.status()).counters["subscriber_errors"] == 200


async def test_an_event_interrupted_by_a_notifier_death_is_delivered_again(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 0})])
    table = current_table()
    calls: list[tuple[str, Any, Any]] = []
    entered = asyncio.Event()

    async def slow(path: str, old: Any, new: Any) -> None:
        calls.append((path, old, new))
        entered.set()
        await asyncio.sleep(60 if len(calls) == 1 else 0)

    await Config.subscribe("x", slow)
    await Config.put("x", 1)
    await entered.wait()
    notifier = process.whereis(table.notifier_name)
    await in_process(lambda: process.exit(notifier, "boom"))

    await eventually(lambda: len(calls) == 2)
    assert calls == [("x", 0, 1), ("x", 0, 1)]  # at least once: the interrupted one again
    await Config.put("x", 2)
    await eventually(lambda: calls[-1] == ("x", 1, 2))
    notifier_status = next(p for p in (await Config.status()).processes if p.role == "notifier")
    assert notifier_status.restarts == 1 and notifier_status.last_exit == "boom"


async def test_a_notifier_killed_while_expanding_a_change_resumes_where_it_was(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": {}})], max_restarts=100)
    table = current_table()
    delivered: list[str] = []
    await Config.subscribe("a.*", lambda path, old, new: delivered.append(path))

    await Config.put("a", {f"k{i}": i for i in range(50_000)})
    for _ in range(5):  # kill it repeatedly while the change is being expanded
        await asyncio.sleep(0.002)
        pid = process.whereis(table.notifier_name)
        if pid is not None and table.delivery.changes:
            await in_process(lambda pid=pid: process.exit(pid, "kill"))

    await eventually(lambda: len(delivered) >= 50_000, timeout=30)
    assert len(delivered) == len(set(delivered)) == 50_000  # nothing lost, nothing twice


async def test_a_change_back_while_its_callback_runs_is_a_new_event(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})])
    calls: list[tuple[str, Any, Any]] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(path: str, old: Any, new: Any) -> None:
        calls.append((path, old, new))
        entered.set()
        await release.wait()

    await Config.subscribe("x", slow)
    await Config.put("x", 2)
    await entered.wait()
    await Config.put("x", 1)  # back to the old value while the first callback runs
    release.set()

    await eventually(lambda: len(calls) == 2)
    assert calls == [("x", 1, 2), ("x", 2, 1)]  # the subscriber ends up knowing x is 1
