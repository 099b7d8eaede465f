"""The admin API as a supervised child of the tree (otpylib_config/admin/server.py;
docs/admin.md, docs/supervision.md): it dies the ways any process dies and comes back on
the same URL, its death touches nothing else, a first start that cannot bind fails
clearly, a restart that cannot bind yet retries, and ``shutdown`` closes its socket."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from otpylib import atom, process

import otpylib_config
from otpylib_config import Config, ConfigSpec, DefaultsSource
from otpylib_config.admin import AdminSpec, AdminToken
from otpylib_config.admin.server import AdminBindError
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

from .conftest import Recorder, StartTree, eventually
from .test_faults import REASONS

WRITE_SECRET = "w" * 24
WRITE = AdminToken("ops", WRITE_SECRET, scope="write")
AUTH = {"Authorization": f"Bearer {WRITE_SECRET}"}


def admin(**options: Any) -> AdminSpec:
    options.setdefault("port", 0)
    return AdminSpec(tokens=[WRITE], writable=["x"], **options)


async def answers(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/config/x", headers=AUTH) as r,
    ):
        return int(await r.json())


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("reason", REASONS, ids=repr)
async def test_the_admin_process_comes_back_on_the_same_url_after_any_exit(
    start_tree: StartTree, reason: Any
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})], admin=admin(), max_restarts=100)
    table = current_table()
    url = (await Config.status()).admin_url
    assert url is not None
    old = process.whereis(table.name_of("admin"))

    await in_process(lambda: process.exit(old, reason))
    restarts = 0 if reason == atom.ensure("normal") else 1  # Erlang ignores a normal signal
    if restarts:
        await eventually(lambda: process.whereis(table.name_of("admin")) not in (None, old))
    await eventually(lambda: table.admin_url == url)

    await Config.put("x", 2)
    assert await answers(url) == 2
    status = await Config.status()
    (health,) = [p for p in status.processes if p.role == "admin"]
    assert health.alive and health.restarts == restarts
    assert status.manager_restarts == 0  # one_for_one: nothing else restarted


async def test_killing_the_admin_process_ends_its_streams_and_a_client_resumes(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})], admin=admin())
    table = current_table()
    url = (await Config.status()).admin_url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/events", headers=AUTH) as stream:
            assert (await stream.content.readline()).startswith(b"event: snapshot")
            pid = process.whereis(table.name_of("admin"))
            await in_process(lambda: process.exit(pid, "kill"))
            async with asyncio.timeout(5):
                while await stream.content.readline():
                    pass  # the stream ends: the server that held it is gone
        await eventually(lambda: table.admin_url == url)
        await Config.put("x", 2)
        headers = {**AUTH, "Last-Event-ID": "1"}
        async with session.get(f"{url}/events", headers=headers) as stream, asyncio.timeout(5):
            first = await stream.content.readline()
    # the restarted server's log starts at version 2's predecessor: 1 is complete from there
    assert first == b"event: change\n"


async def test_a_first_start_that_cannot_bind_fails_and_says_where(otp_runtime: Any) -> None:
    with taken_port() as sock:
        port = sock.getsockname()[1]
        spec = ConfigSpec(sources=[DefaultsSource({"x": 1})], admin=admin(port=port))
        with pytest.raises(Exception) as caught:
            await otpylib_config.start(spec)
    text = str(caught.value)
    assert f"127.0.0.1:{port}" in text and "cannot listen" in text
    assert isinstance(caught.value, AdminBindError) or "AdminBindError" in repr(caught.value)


async def test_a_restart_that_cannot_bind_yet_retries_until_the_port_is_free(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})], admin=admin())
    table = current_table()
    recorder = Recorder()
    await Config.subscribe("x", recorder)
    blocker = taken_port()
    table.admin_port = blocker.getsockname()[1]  # as if someone took our port meanwhile
    pid = process.whereis(table.name_of("admin"))
    await in_process(lambda: process.exit(pid, "boom"))

    await eventually(lambda: "retrying" in caplog.text)
    assert table.admin_url is None
    await Config.put("x", 5)  # the tree serves on meanwhile
    await eventually(lambda: ("x", 1, 5) in recorder.events)
    blocker.close()
    await eventually(lambda: table.admin_url is not None, timeout=15)
    assert await answers(table.admin_url or "") == 5


async def test_shutdown_closes_the_admin_socket(otp_runtime: Any) -> None:
    spec = ConfigSpec(sources=[DefaultsSource({"x": 1})], admin=admin())
    tree = await otpylib_config.start(spec)
    url = (await Config.status()).admin_url
    assert url is not None and await answers(url) == 1

    await tree.stop()

    with pytest.raises(aiohttp.ClientConnectionError):
        await answers(url)


async def test_a_tree_without_admin_runs_no_admin_process(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"x": 1})])
    status = await Config.status()
    assert status.admin_url is None
    assert "admin" not in {p.role for p in status.processes}
