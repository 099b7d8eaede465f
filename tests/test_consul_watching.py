"""End to end: a supervised tree follows a Consul prefix by blocking queries, through faults.

Trees have no reload timer, so every change seen here came through the source's watcher.
Each fault test shows three things: the last good layer keeps serving, the error is visible
in telemetry and ``status()``, and the source recovers once Consul behaves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import Config, ConsulSource, DefaultsSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.sources.consul_kv import ConsulError
from otpylib_config.values import Section, same, thaw

from .conftest import FakeSource, Recorder, StartTree, eventually
from .consul_server import ConsulServer, FaultKind, consul_server_fixture

consul = consul_server_fixture()
acl_consul = consul_server_fixture(acl_tokens={"reader": "read", "writer": "write"})

PREFIX = "myapp/config/"
NAME = f"consul:{PREFIX}"


def kv(server: ConsulServer, **options: Any) -> ConsulSource:
    """Short waits and timeouts so that faults show within a second."""
    for option, value in {
        "wait": 0.5,
        "timeout": 0.5,
        "retry_first": 0.05,
        "retry_max": 0.2,
    }.items():
        options.setdefault(option, value)
    return ConsulSource(PREFIX, url=server.url, environ={}, **options)


async def start(start_tree: StartTree, *sources: Any) -> Recorder:
    await start_tree(sources=list(sources), reload_interval=None)
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    return recorder


async def source_status(name: str = NAME) -> Any:
    return next(s for s in (await Config.status()).sources if s.name == name)


async def test_a_write_in_consul_reaches_subscribers(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/db/pool_size", "5")
    recorder = await start(start_tree, kv(consul))

    consul.put("myapp/config/db/pool_size", "20")

    assert await recorder.settled(1) == [("db.pool_size", 5, 20)]


async def test_a_delete_in_consul_removes_the_key(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    consul.put("myapp/config/b", "2")
    recorder = await start(start_tree, DefaultsSource({"a": 0}), kv(consul))

    consul.delete("myapp/config/a")

    assert await recorder.settled(1) == [("a", 1, 0)]


async def test_an_index_bump_without_new_data_notifies_nobody(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    recorder = await start(start_tree, kv(consul))

    consul.put("myapp/config/a", "1")  # a new ModifyIndex, the same value
    consul.put("myapp/other", "x")  # outside the prefix

    async def write() -> None:  # a later write: its event comes first, so those made none
        consul.put("myapp/config/b", "2")

    assert await recorder.settled(0, then=write) == [("b", None, 2)]


async def test_consul_down_at_start_up_starts_degraded_and_catches_up(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/db/pool_size", "20")
    await consul.go_down()
    recorder = await start(start_tree, DefaultsSource({"db": {"pool_size": 5}}), kv(consul))

    assert Config.get_nowait("db.pool_size") == 5
    status = await source_status()
    assert not status.healthy and "cannot read" in (status.last_error or "")

    await consul.come_up()

    assert await recorder.settled(1) == [("db.pool_size", 5, 20)]
    assert (await source_status()).healthy


FAULTS = [
    (FaultKind.HTTP_500, "No cluster leader"),
    (FaultKind.HTTP_429, "Consul answered 429"),
    (FaultKind.HANG, "did not answer within"),
    (FaultKind.DROP_MID_BODY, "cannot read"),
    (FaultKind.DISCONNECT, "cannot read"),
    (FaultKind.NO_INDEX, "no X-Consul-Index header"),
    (FaultKind.INVALID_JSON, "not valid JSON"),
    (FaultKind.INVALID_BASE64, "not valid base64"),
    (FaultKind.INVALID_UTF8, "not valid UTF-8"),
]


@pytest.mark.parametrize(("fault", "error"), FAULTS, ids=[f.value for f, _ in FAULTS])
async def test_a_fault_keeps_the_last_good_layer_and_recovers(
    start_tree: StartTree, consul: ConsulServer, fault: FaultKind, error: str
) -> None:
    consul.put("myapp/config/a", "1")
    recorder = await start(start_tree, kv(consul))

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        consul.faults.always(fault, interrupt=True)
        consul.put("myapp/config/a", "2")  # hidden by the fault
        await eventually(lambda: any(error in e.metadata["error"] for e in errors))
        status = await source_status()

    assert Config.get_nowait("a") == 1
    assert not status.healthy and error in (status.last_error or "")
    assert recorder.events == []

    consul.faults.clear()

    assert await recorder.settled(1) == [("a", 1, 2)]
    await eventually(lambda: current_table().sources[NAME].last_error is None)


async def test_a_rejected_token_is_reported_and_the_last_good_layer_serves(
    start_tree: StartTree, acl_consul: ConsulServer
) -> None:
    acl_consul.put("myapp/config/a", "1")
    source = kv(acl_consul, token="reader")
    await start(start_tree, source)

    acl_consul.acl_tokens = {"writer": "write"}  # the reader token was revoked
    acl_consul.wake_blocking()

    await eventually(
        lambda: "refused the ACL token" in str(current_table().sources[NAME].last_error)
    )
    assert Config.get_nowait("a") == 1
    assert all(r.token_header == "reader" for r in acl_consul.kv_requests("GET"))


async def test_an_index_that_goes_backwards_resets_and_reads_again(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    recorder = await start(start_tree, kv(consul))
    await eventually(lambda: consul.waiting > 0)

    consul.faults.next(FaultKind.INDEX_BACKWARDS, interrupt=True)
    await eventually(lambda: FaultKind.INDEX_BACKWARDS in consul.faults.history)
    consul.put("myapp/config/a", "2")

    assert await recorder.settled(1) == [("a", 1, 2)]
    reset = [r for r in consul.kv_requests("GET") if r.fault is None and r.index is None]
    assert len(reset) >= 2  # the first read, and the read after the index went down


async def test_the_loop_is_rate_limited_when_consul_answers_at_once(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    await start(start_tree, kv(consul, min_interval=0.1))
    await eventually(lambda: consul.waiting > 0)
    before = len(consul.kv_requests("GET"))

    for _ in range(20):  # Consul answering every held query at once, with no change
        consul.wake_blocking()
        await asyncio.sleep(0.025)

    assert len(consul.kv_requests("GET")) - before <= 8  # at most one per 100 ms (+ slack)


async def test_errors_back_off_instead_of_spinning(
    start_tree: StartTree, consul: ConsulServer, caplog: pytest.LogCaptureFixture
) -> None:
    consul.put("myapp/config/a", "1")
    await start(start_tree, kv(consul, retry_first=0.1, retry_max=10.0))
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    consul.faults.always(FaultKind.HTTP_500, interrupt=True)
    consul.clear_requests()

    def waits() -> list[float]:  # the watcher logs each wait it takes after a failure
        found = (re.search(r"retrying in ([0-9.]+)s", r.getMessage()) for r in caplog.records)
        return [float(m.group(1)) for m in found if m]

    await eventually(lambda: len(waits()) >= 4, timeout=10.0)
    requests = len(consul.kv_requests("GET"))
    failures = len(waits())
    consul.faults.clear()

    # each wait doubles (with jitter: 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8 s) ...
    first = waits()[:4]
    assert [w >= 0.1 * 2**n / 2 - 0.005 for n, w in enumerate(first)] == [True] * 4
    assert first == sorted(first)
    # ... and each follows one watch and one load, not a spin of requests
    assert requests <= 2 * (failures + 1)


async def test_a_restarted_service_starts_on_the_cached_values(
    start_tree: StartTree, consul: ConsulServer, tmp_path: Path
) -> None:
    cache = tmp_path / "consul.json"
    consul.put("myapp/config/db/pool_size", "20")
    first = await start_tree(sources=[kv(consul, cache_path=cache)], id="first")
    await first.stop()
    await consul.go_down()

    recorder = await start(
        start_tree, DefaultsSource({"db": {"pool_size": 5}}), kv(consul, cache_path=cache)
    )

    assert Config.get_nowait("db.pool_size") == 20
    status = await source_status()
    assert not status.healthy and "cannot read" in (status.last_error or "")

    await consul.come_up()
    consul.put("myapp/config/db/pool_size", "30")

    assert (await recorder.settled(1))[-1] == ("db.pool_size", 20, 30)
    await eventually(lambda: current_table().sources[NAME].last_error is None)


async def test_explain_names_the_consul_key_and_index(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    index = consul.put("myapp/config/db/url", "postgres://db/app")
    await start(start_tree, DefaultsSource({"db": {"url": "sqlite://"}}), kv(consul))

    explanation = await Config.explain("db.url")

    assert explanation.source == NAME
    assert explanation.origin == f"consul:myapp/config/db/url (ModifyIndex {index})"
    assert [c.source for c in explanation.overridden] == ["defaults"]


async def test_a_rejected_write_is_not_cached_and_a_failed_reload_is_retried(
    start_tree: StartTree, consul: ConsulServer, tmp_path: Path
) -> None:
    cache = tmp_path / "consul.json"
    reject = {"once": False}

    def schema(tree: Any) -> None:
        if tree["a"] < 0:
            raise ValueError("a must not be negative")
        if reject["once"]:
            reject["once"] = False
            raise ValueError("a passing problem")

    consul.put("myapp/config/a", "1")
    await start_tree(sources=[kv(consul, cache_path=cache)], reload_interval=None, schema=schema)

    consul.put("myapp/config/a", "-1")
    await eventually(lambda: "negative" in str(current_table().last_validation_error))
    assert Config.get_nowait("a") == 1
    assert '"MQ=="' in cache.read_text()  # still the accepted value, 1

    reject["once"] = True  # the reload of the next write fails once...
    consul.put("myapp/config/a", "2")
    await eventually(lambda: "passing problem" in str(current_table().last_validation_error))

    # ...and is retried when the held query next answers, with no new write
    await eventually(lambda: Config.get_nowait("a") == 2)
    await eventually(lambda: '"Mg=="' in cache.read_text())  # saved once accepted


async def test_a_type_change_is_a_change(start_tree: StartTree, consul: ConsulServer) -> None:
    consul.put("myapp/config/flag", "1")
    recorder = await start(start_tree, kv(consul))

    consul.put("myapp/config/flag", "true")  # 1 == True in Python, but not in a config

    assert await recorder.settled(1) == [("flag", 1, True)]


async def test_a_write_is_read_once_by_the_blocking_query(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    recorder = await start(start_tree, kv(consul))
    await eventually(lambda: consul.waiting > 0)
    consul.clear_requests()

    consul.put("myapp/config/a", "2")
    await recorder.settled(1)

    assert [r for r in consul.kv_requests("GET") if not r.blocking] == []


# -- what a watch hands over, and the races of what the source keeps (docs/sources.md) -------


async def test_a_change_while_a_reading_is_out_is_published_and_not_undone(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    """A reload read Consul, then a write came and the watch handed it over while that
    reading was still out (held up by a slow source): the reading's older layer comes back
    later and must not undo the write."""
    consul.put("myapp/config/a", "1")
    slow = FakeSource("slow", required=False)
    recorder = await start(start_tree, kv(consul), slow)
    await eventually(lambda: consul.waiting > 0)
    consul.clear_requests()
    gate = slow.block_next()

    reload = asyncio.ensure_future(Config.reload())
    await gate.reached()
    await eventually(lambda: any(not r.blocking and r.status for r in consul.kv_requests("GET")))
    consul.put("myapp/config/a", "2")  # the reload has read a = 1 already
    await eventually(lambda: Config.get_nowait("a") == 2)
    gate.release()
    await reload

    assert Config.get_nowait("a") == 2
    last = {"index": 0}

    async def write_again() -> None:
        last["index"] = consul.put("myapp/config/a", "3")

    assert await recorder.settled(1, then=write_again) == [("a", 1, 2), ("a", 2, 3)]
    explanation = await Config.explain("a")
    assert explanation.origin == f"consul:myapp/config/a (ModifyIndex {last['index']})"


async def test_a_watch_that_reconnects_clears_its_failure_though_nothing_changed(
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    recorder = await start(start_tree, kv(consul))
    state = current_table().sources[NAME]
    consul.faults.always(FaultKind.HTTP_500, interrupt=True)
    await eventually(lambda: state.last_error is not None)

    consul.faults.clear()  # nothing was written meanwhile

    await eventually(lambda: state.last_error is None)  # the new watch's first answer
    assert Config.get_nowait("a") == 1

    async def write() -> None:
        consul.put("myapp/config/a", "2")

    assert await recorder.settled(0, then=write) == [("a", 1, 2)]


class Handed:
    """A ``changed`` that records what a watch hands over, instead of sending it on."""

    def __init__(self) -> None:
        self.layers: list[Section | None] = []
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, layer: Section | None = None, /) -> None:
        self.layers.append(layer)


@contextlib.asynccontextmanager
async def watching(source: ConsulSource) -> AsyncIterator[Handed]:
    """Run ``source.watch`` on its own, as its watcher process would, until the block ends."""
    handed = Handed()
    handed.task = asyncio.create_task(source.watch(handed))
    try:
        yield handed
    finally:
        handed.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConsulError):
            await handed.task


async def answered(consul: ConsulServer, make_it_answer: Callable[[], Any]) -> None:
    """Make the blocking query held now answer, and wait until the watch has dealt with the
    answer: it hands over (or not) before it sends its next query, so once that arrives
    whatever the answer caused has happened."""
    await eventually(lambda: consul.waiting > 0)
    before = consul.blocking_queries
    make_it_answer()
    await eventually(lambda: consul.blocking_queries > before)


async def test_a_watch_hands_over_the_layer_it_read(consul: ConsulServer) -> None:
    first_index = consul.put("myapp/config/a", "1")
    source = kv(consul, wait=30.0)
    written: dict[str, int] = {}
    async with watching(source) as handed:
        await eventually(lambda: len(handed.layers) == 1)
        await source.accepted(handed.layers[0])  # type: ignore[arg-type]

        await answered(consul, lambda: written.update(index=consul.put("myapp/config/a", "2")))

    first, second = handed.layers
    assert first is not None and thaw(first) == {"a": 1}
    assert second is not None and thaw(second) == {"a": 2}
    # handed over, not yet accepted: explain names what the tree serves
    assert source.origin(("a",)).endswith(f"(ModifyIndex {first_index})")
    assert source.origin(("a",), second).endswith(f"(ModifyIndex {written['index']})")
    assert [r.index for r in consul.kv_requests("GET") if not r.blocking] == [None]


async def test_a_load_reads_consul_itself_never_what_a_watch_read(consul: ConsulServer) -> None:
    consul.put("myapp/config/a", "1")
    source = kv(consul, wait=30.0)
    async with watching(source) as handed:
        await eventually(lambda: len(handed.layers) == 1)
        await answered(consul, lambda: consul.put("myapp/config/a", "2"))
        plain_reads = sum(1 for r in consul.kv_requests("GET") if not r.blocking)

        layer = await source.load()

    assert thaw(layer) == {"a": 2}
    assert all(layer is not handed_over for handed_over in handed.layers)
    assert sum(1 for r in consul.kv_requests("GET") if not r.blocking) == plain_reads + 1


async def test_a_layer_not_accepted_is_neither_cached_nor_taken_as_served(
    consul: ConsulServer, tmp_path: Path
) -> None:
    """Each answer is compared with the layer the tree serves: one the manager rejected (no
    ``accepted``) is handed over again at the next answer, even with nothing written."""
    cache = tmp_path / "consul.json"
    consul.put("myapp/config/a", "1")
    source = kv(consul, wait=30.0, cache_path=cache)
    async with watching(source) as handed:
        await eventually(lambda: len(handed.layers) == 1)

        await answered(consul, consul.wake_blocking)  # same index, same data

        assert len(handed.layers) == 2 and not cache.exists()
        await source.accepted(handed.layers[1])  # type: ignore[arg-type]
        assert cache.exists()

        await answered(consul, consul.wake_blocking)
        await answered(consul, lambda: consul.put("myapp/config/a", "1"))  # a bump, same value

        assert len(handed.layers) == 2


async def test_a_new_watch_after_a_failure_hands_over_its_first_answer(
    consul: ConsulServer,
) -> None:
    consul.put("myapp/config/a", "1")
    source = kv(consul, wait=30.0)
    async with watching(source) as failing:
        await eventually(lambda: len(failing.layers) == 1)
        await source.accepted(failing.layers[0])  # type: ignore[arg-type]
        await eventually(lambda: consul.waiting > 0)
        consul.faults.next(FaultKind.HTTP_500, interrupt=True)
        assert failing.task is not None
        with pytest.raises(ConsulError, match="No cluster leader"):
            await failing.task

    async with watching(source) as again:
        # nothing changed since the failed watch's answer: handed over all the same
        await eventually(lambda: len(again.layers) == 1)
        await answered(consul, consul.wake_blocking)

    assert same(again.layers[0], failing.layers[0])
    assert len(again.layers) == 1


async def test_after_an_older_layer_was_accepted_the_watch_hands_the_newer_one_again(
    consul: ConsulServer,
) -> None:
    """The manager committed an older read after a newer one: the tree serves the older, so
    the watch's next answer, which holds the newer data, is handed over again."""
    consul.put("myapp/config/a", "1")
    source = kv(consul, wait=30.0)
    older = await source.load()
    consul.put("myapp/config/a", "2")
    newer = await source.load()
    await source.accepted(newer)
    await source.accepted(older)

    async with watching(source) as handed:
        await eventually(lambda: len(handed.layers) == 1)
        await answered(consul, consul.wake_blocking)

    assert [thaw(layer) for layer in handed.layers] == [{"a": 2}, {"a": 2}]
