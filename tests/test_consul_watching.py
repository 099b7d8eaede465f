"""End to end: a supervised tree follows a Consul prefix by blocking queries, through faults.

Trees have no reload timer, so every change seen here came through the source's watcher.
Each fault test shows three things: the last good layer keeps serving, the error is visible
in telemetry and ``status()``, and the source recovers once Consul behaves again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import Config, ConsulSource, DefaultsSource, telemetry
from otpylib_config.client import current_table

from .conftest import Recorder, StartTree, eventually
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
    consul.put("myapp/config/b", "2")

    assert await recorder.settled(1) == [("b", None, 2)]


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
    start_tree: StartTree, consul: ConsulServer
) -> None:
    consul.put("myapp/config/a", "1")
    await start(start_tree, kv(consul, retry_first=0.1, retry_max=10.0))
    consul.faults.always(FaultKind.HTTP_500, interrupt=True)
    consul.clear_requests()

    await asyncio.sleep(1.0)

    # 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8 s waits, each after one watch and one load
    assert len(consul.kv_requests("GET")) <= 12
    consul.faults.clear()


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
