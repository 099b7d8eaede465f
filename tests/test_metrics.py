"""Specification of otpylib_config.metrics: Prometheus metrics read from ``status()`` and
telemetry, on the application's registry or the admin API's ``exposition`` (docs/metrics.md).

Every test runs real trees and reads the metrics back through prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from otpylib import process
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from otpylib_config import Config, ConfigError, DefaultsSource, FileSource, telemetry
from otpylib_config import metrics as m
from otpylib_config._otp_compat import KILL
from otpylib_config.errors import NotRunningError
from otpylib_config.supervisor import in_process

from .conftest import FakeSource, StartTree, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Register = Callable[..., m.MetricsRegistration]


def parse(text: str | bytes) -> Samples:
    """Every sample of an exposition, by name and labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry))


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def ids_in(samples: Samples) -> set[str]:
    return {dict(labels)["id"] for (_, labels) in samples if "id" in dict(labels)}


def reload_handlers() -> int:
    return len(telemetry._table.get(telemetry.RELOAD_STOP, ()))


@pytest.fixture
def app_registry() -> CollectorRegistry:
    """The application's own registry, as a service would make it."""
    return CollectorRegistry()


@pytest.fixture
def register() -> Iterator[Register]:
    """``metrics.register`` whose registrations are all undone after the test."""
    made: list[m.MetricsRegistration] = []

    def make(*args: Any, **kwargs: Any) -> m.MetricsRegistration:
        registration = m.register(*args, **kwargs)
        made.append(registration)
        return registration

    yield make
    for registration in made:
        registration.unregister()


async def test_counters_follow_puts_and_reloads_including_a_failing_one(
    start_tree: StartTree, tmp_path: Path, app_registry: CollectorRegistry, register: Register
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("a = 1\n")
    source = f"file:{config}"
    await start_tree(id="m-counts", sources=[FileSource(config, watch=False)])
    register(app_registry, tree="m-counts")
    client = Config.of("m-counts")

    await client.put("b", 1)
    await client.put("b", 2)
    config.write_text("a = 2\n")
    assert (await client.reload()).errors == {}
    config.write_text("a = [\n")  # invalid TOML: the reload keeps the last good layer
    assert source in (await client.reload()).errors

    got, status = scrape(app_registry), await client.status()
    tree = {"id": "m-counts"}
    reloads, errors = status.counters["reloads"], status.counters["reload_errors"]
    assert errors == 1
    assert value(got, "otpylib_config_reloads_total", **tree, result="error") == 1
    assert value(got, "otpylib_config_reloads_total", **tree, result="ok") == reloads - errors
    assert reloads - errors >= 1
    assert value(got, "otpylib_config_puts_total", **tree) == 2
    assert value(got, "otpylib_config_changes_total", **tree) == status.counters["changes"] >= 3
    assert value(got, "otpylib_config_subscriber_errors_total", **tree) == 0
    assert (
        value(got, "otpylib_config_source_errors_total", **tree, source=source, stage="load") == 1
    )
    assert value(got, "otpylib_config_source_healthy", **tree, source=source) == 0
    assert value(got, "otpylib_config_version", **tree) == status.version
    assert value(got, "otpylib_config_info", **tree, config_hash=status.config_hash) == 1
    assert value(got, "otpylib_config_restarts_total", **tree, process="manager") == 0
    # the two reloads since registration, the failing one included
    assert value(got, "otpylib_config_reload_duration_seconds_count", **tree) == 2
    assert (value(got, "otpylib_config_reload_duration_seconds_sum", **tree) or 0) > 0


async def test_a_raising_subscriber_is_counted(
    start_tree: StartTree, app_registry: CollectorRegistry, register: Register
) -> None:
    await start_tree(id="m-subs", sources=[DefaultsSource({"x": 0})])
    register(app_registry)

    def boom(path: str, old: Any, new: Any) -> None:
        raise RuntimeError("subscriber bug")

    await Config.of("m-subs").subscribe("x", boom)
    await Config.of("m-subs").put("x", 1)

    name = "otpylib_config_subscriber_errors_total"
    await eventually(lambda: value(scrape(app_registry), name, id="m-subs") == 1)


async def test_a_failing_source_is_unhealthy_and_counted_until_it_recovers(
    start_tree: StartTree, app_registry: CollectorRegistry, register: Register
) -> None:
    flaky = FakeSource("flaky", {"a": 1})
    await start_tree(id="m-flaky", sources=[DefaultsSource({"b": 1}), flaky])
    register(app_registry)
    healthy, errors = "otpylib_config_source_healthy", "otpylib_config_source_errors_total"
    assert value(scrape(app_registry), healthy, id="m-flaky", source="flaky") == 1

    flaky.fail_next("flaky is down")
    await Config.of("m-flaky").reload()
    got = scrape(app_registry)
    assert value(got, healthy, id="m-flaky", source="flaky") == 0
    assert value(got, errors, id="m-flaky", source="flaky", stage="load") == 1
    assert value(got, errors, id="m-flaky", source="defaults", stage="load") == 0

    await Config.of("m-flaky").reload()
    got = scrape(app_registry)
    assert value(got, healthy, id="m-flaky", source="flaky") == 1
    assert value(got, errors, id="m-flaky", source="flaky", stage="load") == 1  # since start


async def test_a_killed_manager_is_counted_and_the_counters_survive_it(
    start_tree: StartTree, app_registry: CollectorRegistry, register: Register
) -> None:
    tree = await start_tree(id="m-kill", sources=[DefaultsSource({"x": 0})])
    register(app_registry, tree="m-kill")
    await Config.of("m-kill").put("x", 1)
    name = tree.table.manager_name
    old = process.whereis(name)

    async def kill() -> None:
        await process.exit(old, KILL)

    await in_process(kill)
    restarts = "otpylib_config_restarts_total"
    await eventually(
        lambda: value(scrape(app_registry), restarts, id="m-kill", process="manager") == 1
    )

    got = scrape(app_registry)
    assert process.whereis(name) not in (None, old)
    assert value(got, restarts, id="m-kill", process="notifier") == 0
    assert value(got, "otpylib_config_puts_total", id="m-kill") == 1  # kept in the table


async def test_trees_are_labelled_apart_and_tree_selects_one(
    start_tree: StartTree, register: Register
) -> None:
    await start_tree(id="m-a", sources=[DefaultsSource({"x": 0})])
    await start_tree(id="m-b", sources=[DefaultsSource({"y": 0})])
    every, only_b = CollectorRegistry(), CollectorRegistry()
    register(every)
    register(only_b, tree="m-b")
    await Config.of("m-a").put("x", 1)
    await Config.of("m-a").put("x", 2)

    got = scrape(every)
    assert value(got, "otpylib_config_puts_total", id="m-a") == 2
    assert value(got, "otpylib_config_puts_total", id="m-b") == 0
    assert ids_in(scrape(only_b)) == {"m-b"}

    await start_tree(id="m-c", sources=[DefaultsSource({"z": 0})])  # after registering
    assert ids_in(scrape(every)) == {"m-a", "m-b", "m-c"}


async def test_registering_a_tree_twice_on_one_registry_is_an_error(
    start_tree: StartTree, app_registry: CollectorRegistry, register: Register
) -> None:
    await start_tree(id="m-twice", sources=[DefaultsSource({"x": 0})])
    await start_tree(id="m-other", sources=[DefaultsSource({"y": 0})])
    first = register(app_registry, tree="m-twice")

    for tree in ("m-twice", None):  # None covers m-twice too
        with pytest.raises(m.MetricsAlreadyRegisteredError, match="already registered"):
            m.register(app_registry, tree=tree)
    register(app_registry, tree="m-other")  # another tree: the same collector shows both
    assert ids_in(scrape(app_registry)) == {"m-twice", "m-other"}

    first.unregister()
    assert ids_in(scrape(app_registry)) == {"m-other"}
    register(app_registry, tree="m-twice")  # free again
    assert ids_in(scrape(app_registry)) == {"m-twice", "m-other"}


async def test_unregister_detaches_the_handler_and_leaves_the_registry(
    start_tree: StartTree, app_registry: CollectorRegistry
) -> None:
    await start_tree(id="m-unreg", sources=[DefaultsSource({"x": 0})])
    before = reload_handlers()
    registration = m.register(app_registry)
    assert reload_handlers() == before + 1
    await Config.of("m-unreg").reload()
    assert value(scrape(app_registry), "otpylib_config_reload_duration_seconds_count", id="m-unreg")

    registration.unregister()
    registration.unregister()  # a second call does nothing

    assert reload_handlers() == before
    assert generate_latest(app_registry) == b""
    again = m.register(app_registry)  # a fresh histogram: it counts from now
    try:
        got = scrape(app_registry)
        assert value(got, "otpylib_config_puts_total", id="m-unreg") == 0
        assert value(got, "otpylib_config_reload_duration_seconds_count", id="m-unreg") is None
    finally:
        again.unregister()


async def test_the_default_registry_is_used_without_an_argument(start_tree: StartTree) -> None:
    await start_tree(id="m-default", sources=[DefaultsSource({"x": 0})])
    registration = m.register()
    try:
        assert registration.registry is REGISTRY
        assert value(scrape(REGISTRY), "otpylib_config_version", id="m-default") == 1
    finally:
        registration.unregister()
    assert "m-default" not in ids_in(scrape(REGISTRY))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body


async def test_a_scrape_from_another_thread_reads_the_status_on_the_trees_loop(
    start_tree: StartTree,
    app_registry: CollectorRegistry,
    register: Register,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = await start_tree(id="m-http", sources=[DefaultsSource({"x": 0})])
    register(app_registry)
    await Config.of("m-http").put("x", 1)
    readers: list[int] = []
    status = tree.table.status

    def spy(manager_running: bool) -> Any:
        readers.append(threading.get_ident())
        return status(manager_running)

    monkeypatch.setattr(tree.table, "status", spy)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=app_registry)
    try:
        body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert readers == [threading.get_ident()]  # this test's thread runs the tree's loop
    got = parse(body)
    assert value(got, "otpylib_config_puts_total", id="m-http") == 1
    assert value(got, "otpylib_config_version", id="m-http") == (await Config.status()).version


def scrape_from_a_thread_while_blocking(registry: CollectorRegistry) -> bytes:
    """Scrape from another thread while this thread, the tree's loop, waits for it: the
    loop is busy for as long as the scrape takes, as a long sync callback would keep it."""
    out: list[bytes] = []
    thread = threading.Thread(target=lambda: out.append(generate_latest(registry)))
    thread.start()
    thread.join(timeout=10)
    return out[0]


async def test_a_tree_whose_loop_is_busy_is_left_out_of_a_scrape_and_logged(
    start_tree: StartTree,
    app_registry: CollectorRegistry,
    register: Register,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_tree(id="m-busy", sources=[DefaultsSource({"x": 0})])
    register(app_registry)
    monkeypatch.setattr(m, "READ_TIMEOUT_S", 0.05)

    with caplog.at_level(logging.WARNING, logger="otpylib_config"):
        got = parse(scrape_from_a_thread_while_blocking(app_registry))

    assert "m-busy" not in ids_in(got)
    assert any("'m-busy' did not answer" in r.getMessage() for r in caplog.records)
    assert "m-busy" in ids_in(scrape(app_registry))  # on the loop: read directly


async def test_a_bad_event_is_logged_and_the_handler_stays_attached(
    start_tree: StartTree,
    app_registry: CollectorRegistry,
    register: Register,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await start_tree(id="m-bad", sources=[DefaultsSource({"x": 0})])
    register(app_registry)
    handlers = reload_handlers()

    with caplog.at_level(logging.ERROR, logger="otpylib_config"):
        telemetry.execute(telemetry.RELOAD_STOP, {}, {"id": "m-bad"})  # no duration_s
    await Config.of("m-bad").reload()

    assert any("metrics: cannot record" in r.getMessage() for r in caplog.records)
    assert reload_handlers() == handlers
    count = "otpylib_config_reload_duration_seconds_count"
    assert value(scrape(app_registry), count, id="m-bad") == 1


async def test_exposition_serves_one_trees_metrics_like_register_does(
    start_tree: StartTree, app_registry: CollectorRegistry, register: Register
) -> None:
    await start_tree(id="m-expo", sources=[DefaultsSource({"x": 0})])
    await start_tree(id="m-expo-other", sources=[DefaultsSource({"y": 0})])
    register(app_registry, tree="m-expo")
    body, content_type = m.exposition("m-expo")  # the histogram counts from here
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(parse(body), "otpylib_config_reload_duration_seconds_count", id="m-expo") is None

    await Config.of("m-expo").put("x", 1)
    await Config.of("m-expo").reload()
    body, _ = m.exposition("m-expo")

    served = parse(body)
    assert ids_in(served) == {"m-expo"}
    assert value(served, "otpylib_config_reload_duration_seconds_count", id="m-expo") == 1
    assert value(served, "otpylib_config_puts_total", id="m-expo") == 1

    def timeless(samples: Samples) -> Samples:
        return {key: v for key, v in samples.items() if not key[0].endswith("_created")}

    assert timeless(served) == timeless(scrape(app_registry))
    with pytest.raises(NotRunningError, match="m-nowhere"):
        m.exposition("m-nowhere")


def test_without_prometheus_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed

    with pytest.raises(m.MetricsUnavailableError, match=r"otpylib-config\[prometheus\]") as exc:
        m.register(CollectorRegistry())
    assert isinstance(exc.value, ConfigError)
    with pytest.raises(m.MetricsUnavailableError, match=r"otpylib-config\[prometheus\]"):
        m.exposition("any")


def test_importing_the_package_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, otpylib_config, otpylib_config.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
