"""The manager: timer reloads, failure policy, telemetry of what it does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from otpylib import gen_server

import otpylib_config
from otpylib_config import (
    Config,
    ConfigError,
    ConfigSpec,
    DefaultsSource,
    EnvironmentSource,
    FileSource,
    SourceError,
    telemetry,
)
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

from .conftest import FakeSource, Recorder, StartTree, eventually


async def test_timer_reload_picks_up_environment_changes(start_tree: StartTree) -> None:
    environ = {"APP_WORKERS": "2"}
    await start_tree(sources=[EnvironmentSource("APP_", environ=environ)], reload_interval=0.05)
    workers = Recorder()
    await Config.subscribe("workers", workers)

    environ["APP_WORKERS"] = "8"

    def change_again() -> None:
        environ["APP_WORKERS"] = "9"

    # the ticks after the change publish nothing more: the next event is the next change's
    assert await workers.settled(1, then=change_again) == [("workers", 2, 8), ("workers", 8, 9)]
    assert await Config.get("workers") == 9


async def test_missing_required_file_fails_start_with_its_path(
    otp_runtime: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SourceError, match=r"file not found: .*nope\.toml"):
        await otpylib_config.start(ConfigSpec(sources=[FileSource(missing)]))


async def test_invalid_required_file_fails_start_naming_file_and_line(
    otp_runtime: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nport = \n")
    with pytest.raises(SourceError, match=r"config\.toml.*invalid TOML.*line 2"):
        await otpylib_config.start(ConfigSpec(sources=[FileSource(config)]))


async def test_optional_missing_file_is_an_empty_layer(
    start_tree: StartTree, tmp_path: Path
) -> None:
    local = tmp_path / "local.toml"
    await start_tree(sources=[DefaultsSource({"a": 1}), FileSource(local, optional=True)])
    assert await Config.get("a") == 1

    local.write_text("a = 2\n")
    await Config.reload()
    assert await Config.get("a") == 2


async def test_a_source_bug_is_reported_and_its_last_layer_kept(start_tree: StartTree) -> None:
    source = FakeSource("flaky", {"flaky": 1})
    await start_tree(sources=[source])
    source.fail_from_now(KeyError("source bug"))  # not a SourceError: a bug in the source

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        result = await Config.reload()

    assert result.errors == {"flaky": "flaky: KeyError: 'source bug'"}
    assert errors[0].metadata["source"] == "flaky"
    assert await Config.get("flaky") == 1
    status = await Config.status()
    assert status.sources[0].last_error == "flaky: KeyError: 'source bug'"
    assert status.counters["reload_errors"] == 1


async def test_reload_emits_a_span_and_change_events(start_tree: StartTree, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"db": {"password": "old", "pool": 1}}')
    await start_tree(sources=[FileSource(config, watch=False)])  # the reload is the only one
    config.write_text('{"db": {"password": "new", "pool": 2}}')

    names = [
        telemetry.RELOAD_START,
        telemetry.RELOAD_STOP,
        telemetry.CHANGED,
        telemetry.SOURCE_LOADED,
    ]
    with telemetry.capture_events(*names) as events:
        await Config.reload()

    kinds = [e.name for e in events]
    assert kinds[0] == telemetry.RELOAD_START and kinds[-1] == telemetry.RELOAD_STOP
    stop = events[-1]
    assert stop.measurements["changes"] == 2 and stop.measurements["duration_s"] >= 0
    assert stop.metadata["reason"] == "request" and stop.metadata["errors"] == {}
    changed = {e.metadata["path"]: e for e in events if e.name == telemetry.CHANGED}
    assert changed["db.pool"].metadata["old_value"] == 1
    assert changed["db.pool"].metadata["new_value"] == 2
    assert changed["db.pool"].measurements == {"changes": 1}
    assert changed["db.password"].metadata["old_value"] == "**redacted**"  # secrets never leak
    assert changed["db.password"].metadata["new_value"] == "**redacted**"
    assert await Config.get("db.password") == "new"  # but get returns them


async def test_put_emits_telemetry_with_redacted_value(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({})])
    with telemetry.capture_events(telemetry.PUT) as events:
        await Config.put("auth.api_token", "s3cret")
        await Config.put("limits.rps", 10)

    assert [e.metadata["value"] for e in events] == ["**redacted**", 10]
    assert [e.metadata["path"] for e in events] == ["auth.api_token", "limits.rps"]


async def test_gen_server_calls_are_answered_with_an_error_not_a_hang(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({})])
    name = current_table().manager_name

    async def body() -> Any:
        return await gen_server.call(name, "get", timeout=5.0)

    with pytest.raises(ConfigError, match="takes no gen_server calls"):
        await in_process(body)


async def test_timer_survives_a_failing_reload(start_tree: StartTree) -> None:
    source = FakeSource("flaky", {"flaky": 1})
    await start_tree(sources=[source], reload_interval=0.05)
    source.fail_from_now(KeyError("source bug"))
    table = current_table()
    await eventually(lambda: table.counters["reload_errors"] >= 2)

    source.heal()
    reloads = table.counters["reloads"]
    await eventually(lambda: table.counters["reloads"] > reloads + 1)
    assert (await Config.status()).sources[0].healthy


async def test_a_reading_that_finishes_late_never_overwrites_a_newer_one(
    start_tree: StartTree,
) -> None:
    source = FakeSource("scripted", {"a": 0})
    await start_tree(sources=[source])
    source.set({"a": 1})
    gate = source.block_next()  # the first reload's read hangs...
    first = asyncio.create_task(Config.reload())
    await gate.reached()
    source.set({"a": 2})

    second = await Config.reload()  # ...while the second one reads 2 and applies it

    assert second.changed == ("a",) and Config.get_nowait("a") == 2
    gate.release()
    late = await first
    assert late.changed == () and Config.get_nowait("a") == 2  # 1 came too late


async def test_a_stuck_timer_reload_does_not_pile_up_readings(start_tree: StartTree) -> None:
    source = FakeSource("scripted", {"a": 0})
    witness = FakeSource("witness")
    await start_tree(sources=[source], reload_interval=0.01)
    gate = source.block_next()  # the next timer reload never finishes reading
    await gate.reached()
    stuck = source.loads

    # A second tree ticking on the same interval: once it has reloaded twenty times, about
    # twenty ticks of the first tree have come too, and each skipped its reload.
    await start_tree(id="witness", sources=[witness], reload_interval=0.01)
    await eventually(lambda: witness.loads > 20)

    assert source.loads == stuck
    gate.release()
    await eventually(lambda: source.loads > 2)  # the next tick reloads again
