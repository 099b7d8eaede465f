"""The transport between a caller and the manager, as a specification: a request outlives
the manager's death, fails at once on a tree stopped for good, and a notice that finds no
manager is dropped with one warning."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from otpylib import atom, process, supervisor
from otpylib.module import SUPERVISOR, OTPModule

import otpylib_config
from otpylib_config import (
    Config,
    ConfigSpec,
    ConfigTimeoutError,
    DefaultsSource,
    NotRunningError,
    Section,
    Source,
    registry,
    transport,
)
from otpylib_config.client import current_table
from otpylib_config.protocol import Reload, SourceChanged
from otpylib_config.supervisor import in_process, owner_name
from otpylib_config.table import ConfigTable
from otpylib_config.values import freeze

from .conftest import StartTree, eventually

KILL = atom.ensure("kill")


class Gated(Source):
    """A source whose loads wait while its gate is closed."""

    name = "gated"

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = freeze(data)
        self.gate = asyncio.Event()
        self.gate.set()
        self.loads = 0

    async def load(self) -> Section:
        self.loads += 1
        await self.gate.wait()
        return self.data


class EmbeddingApp(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
    """An application's supervisor with the config tree as its one child."""

    async def init(self, spec: ConfigSpec) -> Any:
        children = [otpylib_config.child_spec(spec)]
        return (children, supervisor.options(max_restarts=5, max_seconds=5))

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


async def _start_unlinked(spec: ConfigSpec) -> Any:
    pid = await supervisor.start_link(EmbeddingApp, init_arg=spec, name="embedding_app")
    await process.unlink(pid)  # the short-lived starter must not take the tree down
    return pid


async def kill(pid: Any) -> None:
    await in_process(lambda: process.exit(pid, KILL))


async def embedded_tree_left_down(**options: Any) -> ConfigTable:
    """An embedded tree whose parent was killed: nothing restarts its manager, and nothing
    marks it stopped (only ``shutdown`` or a standalone tree's owner does)."""
    spec = ConfigSpec(id="emb", sources=[DefaultsSource({"a": 1})], **options)
    app = await in_process(lambda: _start_unlinked(spec))
    table = registry.table_by_id("emb")
    await eventually(lambda: process.whereis(table.manager_name) is not None)
    await kill(app)
    await eventually(lambda: process.whereis(table.supervisor_name) is None)
    await eventually(lambda: table.health["manager"].pid is None)
    assert table.stopped is None
    return table


# -- across manager restarts --------------------------------------------------------------


async def test_a_request_survives_the_manager_being_killed_and_the_successor_answers(
    start_tree: StartTree,
) -> None:
    source = Gated({"a": 1})
    await start_tree(sources=[source], write_timeout=30)
    table = current_table()
    first = process.whereis(table.manager_name)
    source.gate.clear()
    loads = source.loads

    request = asyncio.create_task(Config.reload())
    await eventually(lambda: source.loads == loads + 1)  # the manager took it; it is reading
    await kill(first)
    await eventually(lambda: process.whereis(table.manager_name) not in (None, first))
    # the successor reads on its restart, and again for the request sent to it anew
    await eventually(lambda: source.loads >= loads + 3)
    assert not request.done()
    source.data = freeze({"a": 2})
    source.gate.set()

    result = await asyncio.wait_for(request, 10)

    assert result.errors == {} and result.version == 2
    assert Config.get_nowait("a") == 2
    assert (await Config.status()).manager_restarts == 1


async def test_a_put_sent_while_the_manager_restarts_is_applied_once(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 0})], write_timeout=30)
    table = current_table()
    first = process.whereis(table.manager_name)

    await kill(first)
    await Config.put("a", 1)  # waits for the successor to register

    assert Config.get_nowait("a") == 1
    assert process.whereis(table.manager_name) not in (None, first)
    assert (await Config.status()).counters["puts"] == 1


# -- stopped for good ---------------------------------------------------------------------


async def test_once_stopped_for_good_a_request_fails_at_once(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})], write_timeout=30)
    table = current_table()

    await kill(process.whereis(owner_name("default")))  # nothing will restart the tree
    await eventually(lambda: table.stopped is not None)

    status = await Config.status()
    assert status.stopped is not None and "stopped for good" in status.stopped
    with pytest.raises(NotRunningError, match="stopped for good"):
        await asyncio.wait_for(Config.put("a", 2), 5)  # at once, not after write_timeout
    with pytest.raises(NotRunningError, match="stopped for good"):
        await asyncio.wait_for(transport.request(table, Reload), 5)
    assert Config.get_nowait("a") == 1  # reads keep the last snapshot


async def test_a_request_waiting_when_the_tree_stops_for_good_fails_with_not_running(
    start_tree: StartTree,
) -> None:
    source = Gated({"a": 1})
    await start_tree(sources=[source], write_timeout=30)
    table = current_table()
    source.gate.clear()
    loads = source.loads
    request = asyncio.create_task(Config.reload())
    await eventually(lambda: source.loads == loads + 1)

    await kill(process.whereis(owner_name("default")))

    with pytest.raises(NotRunningError, match="stopped for good"):
        await asyncio.wait_for(request, 5)  # well before write_timeout
    assert table.stopped is not None
    source.gate.set()


async def test_tell_manager_of_a_stopped_tree_drops_the_notice_silently(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})], write_timeout=30)
    table = current_table()
    await kill(process.whereis(owner_name("default")))
    await eventually(lambda: table.stopped is not None)
    caplog.set_level(logging.WARNING, logger="otpylib_config")
    caplog.clear()

    await asyncio.wait_for(transport.tell_manager(table, SourceChanged("defaults")), 5)

    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


# -- a manager that stays down ------------------------------------------------------------


async def test_tell_manager_drops_a_notice_after_write_timeout_with_one_warning(
    otp_runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table = await embedded_tree_left_down(write_timeout=0.1, reload_interval=None)
    caplog.set_level(logging.WARNING, logger="otpylib_config")
    caplog.clear()
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.wait_for(transport.tell_manager(table, SourceChanged("defaults")), 5)

    assert loop.time() - started >= 0.1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["config manager is down; dropped a SourceChanged"]


async def test_a_request_to_a_manager_that_stays_down_times_out_naming_what_is_down(
    otp_runtime: Any,
) -> None:
    table = await embedded_tree_left_down(write_timeout=0.1, reload_interval=None)

    with pytest.raises(ConfigTimeoutError) as error:
        await asyncio.wait_for(Config.of("emb").put("a", 2), 5)

    message = str(error.value)
    assert table.manager_name in message and "0.1s" in message
    assert "supervisor down (last exit: killed)" in message  # the parent killed it
    assert "manager down (last exit: shutdown)" in message  # its supervisor stopped it
    assert "notifier down (last exit: shutdown)" in message
    assert Config.of("emb").get_nowait("a") == 1  # reads are unaffected


async def test_send_to_manager_returns_none_past_the_deadline(otp_runtime: Any) -> None:
    table = ConfigTable(ConfigSpec(id="never", write_timeout=0.05))
    loop = asyncio.get_running_loop()

    sent = await transport.send_to_manager(table, SourceChanged("x"), loop.time() + 0.05)

    assert sent is None


async def test_a_request_a_live_manager_never_answers_times_out_naming_it(
    start_tree: StartTree,
) -> None:
    source = Gated({"a": 1})
    await start_tree(sources=[source], write_timeout=0.2)
    table = current_table()
    source.gate.clear()

    try:
        with pytest.raises(ConfigTimeoutError) as error:
            await asyncio.wait_for(Config.reload(), 5)
    finally:
        source.gate.set()

    message = str(error.value)
    assert table.manager_name in message and "0.2s" in message
