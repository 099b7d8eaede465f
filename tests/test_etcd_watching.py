"""End to end: a supervised tree follows an etcd prefix by one watch stream, through faults.

Real etcd processes (``tests/etcd_cluster.py``); keys are written with etcd's HTTP API,
never with the source. Trees have no reload timer and sources no resync unless a test
says so, so every change seen here came through the watch. Network faults go through
:class:`~tests.etcd_cluster.Proxy`, which drops, cuts or freezes the source's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from otpylib_config import Config, DefaultsSource, EtcdSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.sources.etcd import _Watch
from otpylib_config.sources.etcd_kv import EtcdClient, EtcdError
from otpylib_config.values import MAX_STRING_LENGTH, Section

from .conftest import Recorder, StartTree, eventually
from .etcd_cluster import (
    EtcdCluster,
    FakeGateway,
    Proxy,
    created,
    etcd,
    etcd3,
    etcd_module,
    next_prefix,
    range_answer,
    stream,
)

__all__ = ["etcd", "etcd3", "etcd_module"]  # fixtures

WAIT = 15.0
"""Bound on waits that involve etcd (a loaded 2-core machine, an election, a restart)."""


def kv(endpoints: Any, prefix: str, **options: Any) -> EtcdSource:
    """Short timeouts and backoffs so that faults show and heal within a second."""
    for option, value in {
        "timeout": 1.0,
        "retry_first": 0.05,
        "retry_max": 0.3,
        "resync_interval": None,
    }.items():
        options.setdefault(option, value)
    return EtcdSource(prefix, endpoints, **options)


async def start(start_tree: StartTree, *sources: Any, **spec: Any) -> Recorder:
    await start_tree(sources=list(sources), reload_interval=None, **spec)
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    return recorder


async def status_of(name: str) -> Any:
    return next(s for s in (await Config.status()).sources if s.name == name)


def last_error(name: str) -> str | None:
    return current_table().sources[name].last_error


async def watching(name: str) -> None:
    """Wait until the source's watch has handed over its first layer (it is connected)."""
    await eventually(lambda: current_table().sources[name].last_success is not None, WAIT)
    await asyncio.sleep(0.2)  # the stream is created just after the first hand-over


# -- changes reach subscribers ---------------------------------------------------------------


async def test_a_put_reaches_subscribers_with_old_and_new(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "db/pool_size", "5")
    recorder = await start(start_tree, kv(etcd_module.endpoints, prefix))
    await watching(f"etcd:{prefix}")

    await etcd_module.put(prefix + "db/pool_size", "20")

    assert await recorder.settled(1, WAIT) == [("db.pool_size", 5, 20)]
    assert await Config.get("db.pool_size") == 20


async def test_a_delete_removes_the_key_and_a_rewrite_notifies_nobody(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")
    await etcd_module.put(prefix + "b", "2")
    recorder = await start(start_tree, DefaultsSource({"a": 0}), kv(etcd_module.endpoints, prefix))
    await watching(f"etcd:{prefix}")

    await etcd_module.delete(prefix + "a")
    await etcd_module.put(prefix + "b", "2")  # a new revision, the same value
    await etcd_module.put(prefix.rstrip("/") + "x/c", "3")  # not under the prefix

    async def write() -> None:
        await etcd_module.put(prefix + "c", "3")

    assert await recorder.settled(1, WAIT, then=write) == [("a", 1, 0), ("c", None, 3)]


async def test_document_mode_follows_the_document(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    key = next_prefix() + "app.toml"
    await etcd_module.put(key, "[server]\nport = 8080\n")
    source = EtcdSource(endpoints=etcd_module.endpoints, key=key, resync_interval=None)
    recorder = await start(start_tree, source)
    await watching(f"etcd:{key}")

    revision = await etcd_module.put(key, "[server]\nport = 9090\nhost = 'a'\n")

    assert sorted(await recorder.settled(2, WAIT)) == [
        ("server.host", None, "a"),
        ("server.port", 8080, 9090),
    ]
    assert (await Config.explain("server.port")).origin == f"etcd:{key} (mod_revision {revision})"


async def test_values_are_coerced_as_the_schema_wants(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    class Settings(pydantic.BaseModel):
        code: str
        port: int

    prefix = next_prefix()
    await etcd_module.put(prefix + "code", "007")
    await etcd_module.put(prefix + "port", "80")
    recorder = await start(start_tree, kv(etcd_module.endpoints, prefix), schema=Settings)
    await watching(f"etcd:{prefix}")

    await etcd_module.put(prefix + "code", "0042")
    await etcd_module.put(prefix + "port", "8080")

    assert await recorder.settled(2, WAIT) == [("code", "007", "0042"), ("port", 80, 8080)]


async def test_explain_names_the_etcd_key_and_revision(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "db/url", "postgres://a")
    await start(
        start_tree, DefaultsSource({"db": {"url": "sqlite://"}}), kv(etcd_module.endpoints, prefix)
    )
    await watching(f"etcd:{prefix}")
    revision = await etcd_module.put(prefix + "db/url", "postgres://b")
    await eventually(lambda: Config.get_nowait("db.url") == "postgres://b", WAIT)

    explanation = await Config.explain("db.url")

    assert explanation.source == f"etcd:{prefix}"
    assert explanation.origin == f"etcd:{prefix}db/url (mod_revision {revision})"
    assert [c.source for c in explanation.overridden] == ["defaults"]


# -- faults ----------------------------------------------------------------------------------


async def test_etcd_down_at_start_up_starts_degraded_and_catches_up(
    start_tree: StartTree, tmp_path: Path
) -> None:
    cluster = EtcdCluster(tmp_path)  # not started
    try:
        recorder = await start(
            start_tree, DefaultsSource({"a": 0}), kv(cluster.endpoints, "/app/", timeout=0.5)
        )
        assert Config.get_nowait("a") == 0
        status = await status_of("etcd:/app/")
        assert not status.healthy and "no etcd endpoint answered" in (status.last_error or "")

        cluster.launch()
        await cluster.put("/app/a", "1")

        assert (await recorder.settled(1, WAIT))[-1] == ("a", 0, 1)
        await eventually(lambda: last_error("etcd:/app/") is None, WAIT)
    finally:
        cluster.stop()


async def test_etcd_killed_mid_watch_and_restarted_loses_no_change(
    start_tree: StartTree, etcd: EtcdCluster
) -> None:
    await etcd.put("/app/a", "1")
    recorder = await start(start_tree, kv(etcd.endpoints, "/app/"))
    await watching("etcd:/app/")

    etcd.members[0].kill()
    await eventually(lambda: last_error("etcd:/app/") is not None, WAIT)
    assert Config.get_nowait("a") == 1  # the last good layer serves
    etcd.restart()
    await etcd.put("/app/a", "2")
    await etcd.put("/app/b", "3")

    assert await recorder.settled(2, WAIT) == [("a", 1, 2), ("b", None, 3)]
    await eventually(lambda: last_error("etcd:/app/") is None, WAIT)


async def test_a_dropped_stream_resumes_from_its_revision(
    start_tree: StartTree, etcd_module: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otpylib_config")
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")
    proxy = await Proxy(etcd_module.members[0].client_port).start()
    try:
        recorder = await start(start_tree, kv([proxy.url], prefix))
        await watching(f"etcd:{prefix}")

        with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
            proxy.drop()  # the stream breaks; the write below lands before it is back
            await etcd_module.put(prefix + "a", "2")
            assert await recorder.settled(1, WAIT) == [("a", 1, 2)]

        assert errors == []  # resumed within the watch: never reported as failing
        assert f"broke off the watch of '{prefix}'" in caplog.text
    finally:
        proxy.stop()


async def test_a_compaction_while_the_watch_is_down_rereads_everything(
    start_tree: StartTree, etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otpylib_config")
    await etcd.put("/app/a", "1")
    await etcd.put("/app/b", "2")
    proxy = await Proxy(etcd.members[0].client_port).start()
    try:
        recorder = await start(start_tree, kv([proxy.url], "/app/"))
        await watching("etcd:/app/")

        proxy.cut()  # the watch is down, and stays down
        await eventually(lambda: last_error("etcd:/app/") is not None, WAIT)
        await etcd.delete("/app/b")
        await etcd.put("/app/a", "3")
        await etcd.put("/app/c", "4")
        await etcd.compact(await etcd.revision())
        await proxy.restore()

        assert sorted(await recorder.settled(3, WAIT)) == [
            ("a", 1, 3),
            ("b", 2, None),
            ("c", None, 4),
        ]
        assert "was compacted" in caplog.text and "reading everything again" in caplog.text
        await eventually(lambda: last_error("etcd:/app/") is None, WAIT)
    finally:
        proxy.stop()


async def test_a_silent_stream_is_caught_by_the_resync_and_opened_again(
    start_tree: StartTree, etcd_module: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that stays open but delivers nothing (lessons.md 14): the re-read every
    ``resync_interval`` brings the change, sees that the stream did not, and opens the
    stream again, so the next change comes at once, not one ``resync_interval`` later."""
    caplog.set_level(logging.INFO, logger="otpylib_config")
    prefix = next_prefix()
    interval = 3.0
    await etcd_module.put(prefix + "a", "1")
    proxy = await Proxy(etcd_module.members[0].client_port).start()
    try:
        recorder = await start(start_tree, kv([proxy.url], prefix, resync_interval=interval))
        await watching(f"etcd:{prefix}")

        proxy.freeze()  # open connections go silent; new ones (the re-read) pass
        await etcd_module.put(prefix + "a", "2")
        assert await recorder.settled(1, WAIT) == [("a", 1, 2)]  # by the resync
        assert "did not deliver; opening the stream again" in caplog.text

        began = time.monotonic()
        await etcd_module.put(prefix + "a", "3")
        assert (await recorder.settled(2, WAIT))[1:] == [("a", 2, 3)]
        assert time.monotonic() - began < interval / 2  # by the new stream
    finally:
        proxy.stop()


async def test_a_resync_read_that_fails_is_logged_and_the_watch_goes_on(
    start_tree: StartTree,
    etcd_module: EtcdCluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="otpylib_config")
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")
    failing = asyncio.Event()
    read = EtcdClient.range

    async def flaky_range(client: EtcdClient, *args: Any, **options: Any) -> Any:
        if failing.is_set():
            raise EtcdError("no etcd endpoint answered (the test)")
        return await read(client, *args, **options)

    monkeypatch.setattr(EtcdClient, "range", flaky_range)
    recorder = await start(start_tree, kv(etcd_module.endpoints, prefix, resync_interval=0.2))
    await watching(f"etcd:{prefix}")

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        failing.set()
        await eventually(lambda: caplog.text.count("the resync read failed") >= 2, WAIT)
        await etcd_module.put(prefix + "a", "2")
        assert await recorder.settled(1, WAIT) == [("a", 1, 2)]  # the stream went on

    assert errors == []
    assert "the resync read failed: no etcd endpoint answered (the test)" in caplog.text


async def test_a_member_that_accepts_the_watch_and_never_answers_is_passed_over(
    start_tree: StartTree, etcd_module: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch's request and its ``created`` message are bounded by ``timeout``: a member
    that accepts the connection and says nothing is unreachable, and the next one serves."""
    caplog.set_level(logging.INFO, logger="otpylib_config")
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers

    hanging = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    try:
        endpoints = [f"http://127.0.0.1:{port}", etcd_module.url]  # the mute one first
        recorder = await start(start_tree, kv(endpoints, prefix))
        await watching(f"etcd:{prefix}")

        await etcd_module.put(prefix + "a", "2")

        assert await recorder.settled(1, WAIT) == [("a", 1, 2)]
        assert f"did not open the watch of '{prefix}' within 1s" in caplog.text
    finally:
        hanging.close()


async def test_writes_caught_up_in_one_message_are_checked_one_by_one(
    start_tree: StartTree,
    etcd_module: EtcdCluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two writes of one key, and a delete and a re-create, while the stream is down: the
    stream resumes from the older revision and gets all four in one message; each event
    agrees with the entries as the ones before it left them, so nothing is re-read."""
    caplog.set_level(logging.INFO, logger="otpylib_config")
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")
    await etcd_module.put(prefix + "b", "2")
    rereads: list[str] = []
    reread = _Watch._reread

    async def counted(watch: _Watch, why: str) -> None:
        rereads.append(why)
        await reread(watch, why)

    monkeypatch.setattr(_Watch, "_reread", counted)
    proxy = await Proxy(etcd_module.members[0].client_port).start()
    try:
        recorder = await start(start_tree, kv([proxy.url], prefix))
        await watching(f"etcd:{prefix}")

        proxy.cut()  # the stream is down until restore
        await etcd_module.put(prefix + "a", "2")
        await etcd_module.put(prefix + "a", "3")
        await etcd_module.delete(prefix + "b")
        await etcd_module.put(prefix + "b", "5")
        await proxy.restore()

        assert sorted(await recorder.settled(2, WAIT)) == [("a", 1, 3), ("b", 2, 5)]
        assert "contradicts" not in caplog.text
        assert "inconsistent event" not in rereads
    finally:
        proxy.stop()


async def changes_of(source: EtcdSource) -> tuple[asyncio.Task[None], list[Any]]:
    layers: list[Any] = []

    async def changed(layer: Section | None = None) -> None:
        layers.append(layer)

    return asyncio.create_task(source.watch(changed)), layers


async def test_a_stream_created_and_dropped_at_once_backs_off_and_gives_up() -> None:
    """A member that creates the watch and drops it at once: not reopened ten times a
    second for ever, but counted as a failure, so the watch raises and the watcher backs
    off (``retry_first`` doubled up to ``retry_max``) and reports the source failing."""
    gateway = FakeGateway(
        {"/v3/kv/range": range_answer(7, {"/app/a": "1"}), "/v3/watch": stream(created(7))}
    )
    await gateway.start()
    try:
        source = EtcdSource("/app/", [gateway.url, gateway.url], timeout=1.0)
        await source.accepted(await source.load())
        watch, _ = await changes_of(source)
        with pytest.raises(EtcdError, match="closed the watch of '/app/'"):
            async with asyncio.timeout(WAIT):
                await watch
    finally:
        gateway.close()

    assert gateway.paths().count("/v3/watch") == 3  # each endpoint, and once more: no more


async def test_a_stream_that_delivers_before_it_drops_is_opened_again_on_its_member() -> None:
    progress = {"result": {"header": {"revision": "8"}}}
    gateway = FakeGateway(
        {
            "/v3/kv/range": range_answer(7, {"/app/a": "1"}),
            "/v3/watch": stream(created(7), progress),
        }
    )
    await gateway.start()
    watch: asyncio.Task[None] | None = None
    try:
        source = EtcdSource("/app/", gateway.url, timeout=1.0)
        await source.accepted(await source.load())
        watch, _ = await changes_of(source)

        await eventually(lambda: gateway.paths().count("/v3/watch") >= 4, WAIT)

        assert not watch.done()  # each stream worked: the watch goes on
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        gateway.close()


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("huge", "x" * (MAX_STRING_LENGTH + 1000), f"longer than {MAX_STRING_LENGTH}"),
        ("blob", b"\xff\xfe", "value is not valid UTF-8"),
        ("db.host", "x", "cannot be a config path"),
    ],
    ids=["huge-value", "bad-utf8", "no-path"],
)
async def test_a_bad_key_or_value_keeps_the_last_good_layer_until_it_is_gone(
    start_tree: StartTree, etcd_module: EtcdCluster, key: str, value: Any, error: str
) -> None:
    prefix = next_prefix()
    name = f"etcd:{prefix}"
    await etcd_module.put(prefix + "a", "1")
    recorder = await start(start_tree, kv(etcd_module.endpoints, prefix))
    await watching(name)

    await etcd_module.put(prefix + key, value)
    await eventually(lambda: f"'{prefix}{key}'" in str(last_error(name)), WAIT)
    assert error in str(last_error(name))
    assert Config.get_nowait("a") == 1

    await etcd_module.delete(prefix + key)
    await etcd_module.put(prefix + "a", "2")

    assert await recorder.settled(1, WAIT) == [("a", 1, 2)]
    await eventually(lambda: last_error(name) is None, WAIT)


async def test_a_large_value_arrives_through_the_watch(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    """One event longer than aiohttp's line buffer (128 KiB)."""
    prefix = next_prefix()
    recorder = await start(start_tree, kv(etcd_module.endpoints, prefix))
    await watching(f"etcd:{prefix}")

    await etcd_module.put(prefix + "big", "y" * 900_000)

    [(path, old, new)] = await recorder.settled(1, WAIT)
    assert (path, old, len(new)) == ("big", None, 900_000)


# -- credentials -----------------------------------------------------------------------------

PASSWORD = "s3cret-pw-do-not-print"


async def test_a_wrong_password_is_reported_naming_the_source_never_the_password(
    start_tree: StartTree, etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    await etcd.enable_auth("root-pw", {"app": (PASSWORD, "/app/")})
    await etcd.put("/app/a", "1")
    source = kv(etcd.endpoints, "/app/", username="app", password="wrong-" + PASSWORD)
    await start(start_tree, DefaultsSource({"a": 0}), source)

    status = await status_of("etcd:/app/")

    assert not status.healthy
    assert "etcd refused the credentials of user 'app'" in (status.last_error or "")
    assert Config.get_nowait("a") == 0
    everything = f"{status!r} {await Config.status()!r} {caplog.text} {source!r}"
    assert PASSWORD not in everything and "password=***" in repr(source)


async def test_an_expired_token_is_renewed_when_the_watch_reconnects(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    cluster = EtcdCluster.start(tmp_path, **{"auth-token-ttl": "1"})
    proxy = await Proxy(cluster.members[0].client_port).start()
    try:
        await cluster.enable_auth("root-pw", {"app": (PASSWORD, "/app/")})
        await cluster.put("/app/a", "1")
        source = kv([proxy.url], "/app/", username="app", password=PASSWORD)
        recorder = await start(start_tree, source)
        await watching("etcd:/app/")
        await asyncio.sleep(2.5)  # the watch's token expires (TTL 1 s, and etcd's sweep)
        before = caplog.text.count("authenticating to etcd")

        with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
            proxy.drop()  # the stream reconnects with its expired token
            await cluster.put("/app/a", "2")
            assert await recorder.settled(1, WAIT) == [("a", 1, 2)]

        assert errors == []
        assert caplog.text.count("authenticating to etcd") == before + 1
        assert PASSWORD not in caplog.text
    finally:
        proxy.stop()
        cluster.stop()


# -- the last-known-good cache ---------------------------------------------------------------


async def test_a_restarted_service_starts_on_the_cached_values(
    start_tree: StartTree, etcd: EtcdCluster, tmp_path: Path
) -> None:
    cache = tmp_path / "etcd.json"
    await etcd.put("/app/db/pool_size", "20")
    first = await start_tree(sources=[kv(etcd.endpoints, "/app/", cache_path=cache)], id="first")
    await first.stop()
    etcd.stop()

    recorder = await start(
        start_tree,
        DefaultsSource({"db": {"pool_size": 5}}),
        kv(etcd.endpoints, "/app/", cache_path=cache, timeout=0.5),
    )

    assert Config.get_nowait("db.pool_size") == 20
    status = await status_of("etcd:/app/")
    assert not status.healthy and "no etcd endpoint answered" in (status.last_error or "")
    assert (await Config.explain("db.pool_size")).origin.endswith("[cached]")

    etcd.restart()
    await etcd.put("/app/db/pool_size", "30")

    assert (await recorder.settled(1, WAIT))[-1] == ("db.pool_size", 20, 30)
    await eventually(lambda: last_error("etcd:/app/") is None, WAIT)


# -- a 3-member cluster ----------------------------------------------------------------------


async def test_killing_the_leader_mid_watch_fails_over_and_loses_no_change(
    start_tree: StartTree, etcd3: EtcdCluster
) -> None:
    await etcd3.put("/app/a", "1")
    leader = await etcd3.leader()
    others = [m for m in etcd3.members if m is not leader]
    endpoints = [leader.client_url, *(m.client_url for m in others)]  # the leader first
    recorder = await start(start_tree, kv(endpoints, "/app/"))
    await watching("etcd:/app/")

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        await etcd3.put("/app/a", "2", leader)  # committed; perhaps not yet sent to us
        leader.kill()
        await put_during_election(etcd3, "/app/b", "3")

        events = await recorder.settled(2, WAIT)

    assert events == [("a", 1, 2), ("b", None, 3)]
    assert errors == []  # the watch went on on another member, never reported failing

    async def write() -> None:
        await put_during_election(etcd3, "/app/c", "4")

    assert (await recorder.settled(2, WAIT, then=write))[2:] == [("c", None, 4)]


async def put_during_election(cluster: EtcdCluster, key: str, value: str) -> None:
    """Write once a new leader is there: etcd refuses writes while it elects one."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            await cluster.put(key, value)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
