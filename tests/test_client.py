"""Config: reads from the snapshot, writes through the manager, bad input rejected."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import (
    Config,
    DefaultsSource,
    EnvironmentSource,
    FileSource,
    InvalidPathError,
    InvalidValueError,
    NotRunningError,
    Section,
    ValidationError,
)

from .conftest import FakeSource, Recorder, StartTree

DEFAULTS = {"database": {"url": "postgres://localhost/app", "pool_size": 5}, "debug": False}


async def test_get_returns_leaves_sections_and_defaults(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    assert await Config.get("database.url") == "postgres://localhost/app"
    assert await Config.get("database") == {"url": "postgres://localhost/app", "pool_size": 5}
    assert await Config.get("missing.key", default=10) == 10
    assert await Config.get("database.url.deeper") is None
    assert Config.get_nowait("database.pool_size") == 5
    assert Config.get_nowait("debug") is False


async def test_sections_handed_out_are_read_only(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": {"b": [1, 2], "c": {"d": 1}}})])

    section = await Config.get("a")
    assert isinstance(section, Section)
    with pytest.raises(TypeError, match="read-only"):
        section["b"] = 3
    with pytest.raises(TypeError):
        section["c"]["d"] = 2
    assert section["b"] == (1, 2)  # lists come back as tuples
    assert json.loads(json.dumps(section)) == {"b": [1, 2], "c": {"d": 1}}


async def test_reads_before_start_raise_not_running(otp_runtime: Any) -> None:
    with pytest.raises(NotRunningError, match="no otpylib-config tree is running"):
        Config.get_nowait("a")
    with pytest.raises(NotRunningError):
        await Config.put("a", 1)


async def test_put_is_read_by_the_writer_at_once(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    await Config.put("database.pool_size", 20)
    assert Config.get_nowait("database.pool_size") == 20
    await Config.put("rate_limits.api", {"requests": 1000, "window": 60})
    assert Config.get_nowait("rate_limits.api.requests") == 1000
    assert await Config.get("rate_limits") == {"api": {"requests": 1000, "window": 60}}


async def test_put_replaces_the_whole_node_and_none_overrides(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    await Config.put("database", {"url": "sqlite://"})
    assert await Config.get("database") == {"url": "sqlite://"}
    await Config.put("debug", None)
    assert await Config.get("debug", default="absent") is None


async def test_put_copies_its_value(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({})])
    value: dict[str, Any] = {"hosts": ["a", "b"]}

    await Config.put("cluster", value)
    value["hosts"].append("c")
    value["extra"] = True

    assert await Config.get("cluster") == {"hosts": ("a", "b")}


async def test_delete_removes_only_the_runtime_override(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    await Config.put("database.pool_size", 50)
    await Config.put("rate_limits.api", {"requests": 1000, "window": 60})
    assert await Config.delete("database.pool_size") is True
    assert await Config.delete("rate_limits.api") is True
    assert await Config.delete("rate_limits.api") is False
    assert await Config.delete("database.url") is False  # not an override: stays

    assert await Config.get("database") == DEFAULTS["database"]
    assert await Config.get("rate_limits") is None


async def test_delete_inside_a_put_section(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    await Config.put("limits", {"a": 1, "b": 2})
    assert await Config.delete("limits.a") is True
    assert await Config.get("limits") == {"b": 2}


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "a.*", 1, None, ["a"]])
async def test_bad_paths_are_rejected_everywhere(start_tree: StartTree, path: Any) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])

    with pytest.raises(InvalidPathError):
        await Config.put(path, 1)
    with pytest.raises(InvalidPathError):
        await Config.delete(path)
    with pytest.raises(InvalidPathError):
        Config.get_nowait(path)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1: "a"}, "limits"),
        ({"a": {"b": {1, 2}}}, "limits.a.b"),
        ([1, object()], r"limits\[1\]"),
        (float("nan"), "limits"),
        (b"bytes", "limits"),
        ({"a.b": 1}, "limits"),
    ],
)
async def test_bad_values_are_rejected_with_their_path(
    start_tree: StartTree, value: Any, where: str
) -> None:
    await start_tree(sources=[DefaultsSource(DEFAULTS)])
    before = await Config.status()

    with pytest.raises(InvalidValueError, match=where):
        await Config.put("limits", value)

    after = await Config.status()
    assert after.version == before.version
    assert await Config.get("limits") is None


async def test_reload_picks_up_an_edited_file_and_reports_changes(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nport = 8000\nhost = "0.0.0.0"\n')
    await start_tree(sources=[FileSource(config, watch=False)])  # the reload is the only one

    config.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n')
    result = await Config.reload()

    assert result.changed == ("server.port",)
    assert result.errors == {}
    assert await Config.get("server.port") == 9000


async def test_reload_that_changes_nothing_keeps_the_version(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"a": 1}')
    await start_tree(sources=[FileSource(config)])
    version = (await Config.status()).version

    result = await Config.reload()

    assert result.changed == ()
    assert result.version == version


async def test_broken_file_keeps_last_good_layer_and_recovers(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[db]\npool = 5\n")
    file = FileSource(config, watch=False)  # the reloads below are the only ones
    await start_tree(sources=[file, EnvironmentSource("APP_", environ={})])

    config.write_text("[db\npool = ")
    result = await Config.reload()

    assert await Config.get("db.pool") == 5
    assert list(result.errors) == [f"file:{config}"]
    assert "invalid TOML" in result.errors[f"file:{config}"]
    status = await Config.status()
    file_status = status.sources[0]
    assert not file_status.healthy
    assert file_status.last_error is not None and str(config) in file_status.last_error

    config.write_text("[db]\npool = 7\n")
    result = await Config.reload()
    assert result.errors == {}
    assert await Config.get("db.pool") == 7
    assert (await Config.status()).sources[0].healthy


async def test_env_overrides_file_and_runtime_overrides_env(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[database]\npool_size = 5\nurl = 'x'\n")
    environ = {"MYAPP_DATABASE__POOL_SIZE": "20"}
    await start_tree(
        sources=[
            DefaultsSource({"database": {"pool_size": 1, "timeout": 3}}),
            FileSource(config),
            EnvironmentSource(prefix="MYAPP_", environ=environ),
        ]
    )

    assert await Config.get("database") == {"pool_size": 20, "url": "x", "timeout": 3}
    await Config.put("database.pool_size", 99)
    assert await Config.get("database.pool_size") == 99
    environ["MYAPP_DATABASE__POOL_SIZE"] = "30"
    await Config.reload()
    assert await Config.get("database.pool_size") == 99  # runtime still wins
    await Config.delete("database.pool_size")
    assert await Config.get("database.pool_size") == 30


async def test_status_reports_version_hash_sources_and_counters(start_tree: StartTree) -> None:
    await start_tree(id="svc", sources=[DefaultsSource(DEFAULTS)])
    first = await Config.status()

    await Config.put("debug", True)
    second = await Config.status()

    assert first.id == "svc"
    assert second.version == first.version + 1
    assert second.config_hash != first.config_hash
    assert second.counters["puts"] == 1
    assert second.manager_running
    assert [s.name for s in second.sources] == ["defaults"]
    assert second.sources[0].healthy and second.sources[0].age_s is not None


async def test_a_slow_source_holds_up_neither_reads_nor_writes(start_tree: StartTree) -> None:
    """A reload's I/O runs outside the manager: puts are applied while it waits."""
    source = FakeSource("blocking")
    await start_tree(sources=[DefaultsSource(DEFAULTS), source])
    gate = source.block_next()
    reload = asyncio.create_task(Config.reload())
    await gate.reached()

    await asyncio.wait_for(Config.put("debug", True), 5)

    assert not reload.done()  # still waiting for the blocked source
    assert Config.get_nowait("database.pool_size") == 5
    assert await Config.get("debug") is True
    gate.release()
    result = await asyncio.wait_for(reload, 5)
    assert result.errors == {}
    assert await Config.get("debug") is True


async def test_writes_leave_no_reference_cycles_behind(start_tree: StartTree) -> None:
    """Each write must be freed by reference counting, not left to the cycle collector."""
    await start_tree(sources=[DefaultsSource({"a": 0})])
    await Config.put("a", -1)  # warm up caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(50):
            await Config.put("a", i)
        await Config.delete("a")
        gc.collect()
        leftovers = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

    assert leftovers == []


async def test_put_many_is_one_version_with_one_batch_of_events(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"limits": {"api": 10, "burst": 20, "window": 1}})])
    recorder = Recorder()
    await Config.subscribe("limits.*", recorder)
    before = (await Config.status()).version

    await Config.put_many({"limits.api": 100, "limits.burst": 200})

    assert (await Config.status()).version == before + 1
    assert Config.get_nowait("limits.window") == 1
    events = await recorder.settled(2, then=lambda: Config.put("limits.window", 2))
    assert sorted(events[:2]) == [("limits.api", 10, 100), ("limits.burst", 20, 200)]
    assert events[2:] == [("limits.window", 1, 2)]  # and no other event of the batch


async def test_put_many_is_all_or_nothing(start_tree: StartTree) -> None:
    def positive(tree: Any) -> None:
        bad = [k for k, v in tree["limits"].items() if v <= 0]
        if bad:
            raise ValidationError([(f"limits.{k}", "must be positive") for k in bad])

    await start_tree(
        sources=[DefaultsSource({"limits": {"a": 1, "b": 1, "c": 1}})], schema=positive
    )

    with pytest.raises(ValidationError) as error:
        await Config.put_many({"limits.a": 5, "limits.b": 0, "limits.c": -1})

    assert [path for path, _ in error.value.problems] == ["limits.b", "limits.c"]
    assert Config.get_nowait("limits") == {"a": 1, "b": 1, "c": 1}  # not even a
    with pytest.raises(InvalidPathError):
        await Config.put_many({"limits.a": 2, "bad..path": 1})
    assert Config.get_nowait("limits.a") == 1


async def test_put_many_pins_only_its_leaves(start_tree: StartTree, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[limits]\napi = 10\nburst = 20\n")
    await start_tree(sources=[FileSource(config, watch=False)])
    await Config.put_many({"limits.api": 100})

    config.write_text("[limits]\napi = 11\nburst = 21\n")
    await Config.reload()

    assert Config.get_nowait("limits") == {"api": 100, "burst": 21}  # burst follows the file


async def test_config_of_reaches_each_tree_and_config_keeps_the_first(
    start_tree: StartTree,
) -> None:
    await start_tree(id="first", sources=[DefaultsSource({"name": "first"})])
    await start_tree(id="second", sources=[DefaultsSource({"name": "second"})])

    assert Config.get_nowait("name") == "first"  # the default tree: the first started
    second = Config.of("second")
    assert second.get_nowait("name") == "second" and await second.get("name") == "second"
    await second.put("name", "changed")
    assert second.get_nowait("name") == "changed" and Config.get_nowait("name") == "first"
    assert (await second.status()).id == "second"
    with pytest.raises(NotRunningError, match="'third'"):
        Config.of("third").get_nowait("name")
