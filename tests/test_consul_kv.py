"""Specification of otpylib_config.sources.consul_kv: one read of Consul's KV HTTP API.

Every answer Consul can give becomes either a ``KVRead`` (entries, index, the decoded body)
or a ``ConsulError`` whose message says what was wrong and where (docs/consul.md, Reading
and Blocking queries). Driven against the loopback Consul server of ``tests/consul_server``,
whose faults are the answers a real cluster gives; what the values mean is specified with
the source, in ``test_sources_consul.py``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from otpylib_config.sources.consul_kv import (
    INDEX_HEADER,
    ConsulError,
    Entry,
    KVClient,
    decode_entries,
)

from .conftest import eventually
from .consul_server import ConsulServer, consul_server_fixture

consul = consul_server_fixture()
acl_consul = consul_server_fixture(acl_tokens={"reader": "read"})

TIMEOUT = 5.0  # bounds a hang; no test depends on how fast an answer comes


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(session: aiohttp.ClientSession, server: ConsulServer, **options: object) -> KVClient:
    return KVClient(session, server.url, **options)  # type: ignore[arg-type]


# -- answers ---------------------------------------------------------------------------------


async def test_a_recursive_read_gives_every_entry_under_the_prefix_decoded(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/db/url", "pg://db")
    consul.put("app/db/pool", "5")
    consul.put("other/x", "1")

    read = await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)

    assert {e.key: e.value for e in read.entries} == {"app/db/url": b"pg://db", "app/db/pool": b"5"}
    assert read.index == consul.entries["app/db/pool"].modify_index  # the prefix's index
    assert {e.key: e.modify_index for e in read.entries} == {
        "app/db/url": consul.entries["app/db/url"].modify_index,
        "app/db/pool": consul.entries["app/db/pool"].modify_index,
    }
    assert [item["Key"] for item in read.document] == [e.key for e in read.entries]


async def test_a_single_key_is_read_without_recurse(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/config.toml", "a = 1\n")
    consul.put("app/config.toml.bak", "a = 0\n")

    read = await client(session, consul).read("app/config.toml", recurse=False, timeout=TIMEOUT)

    assert read.entries == (
        Entry("app/config.toml", b"a = 1\n", consul.entries["app/config.toml"].modify_index),
    )
    assert "recurse" not in consul.kv_requests("GET")[-1].query


async def test_a_key_stored_empty_has_the_value_none(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/empty", None)
    read = await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    assert [(e.key, e.value) for e in read.entries] == [("app/empty", None)]


async def test_nothing_under_the_prefix_is_no_entries_with_the_index(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("other/x", "1")
    read = await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    assert (read.entries, read.document) == ((), [])
    assert read.index >= 1


async def test_a_zero_index_counts_as_one(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    consul.faults.next("index_backwards", index=0)
    read = await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    assert read.index == 1


async def test_keys_are_sent_quoted_and_slashes_kept(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    key = "app/with space/ü?#%"
    consul.put(key, "v")
    read = await client(session, consul).read(key, recurse=False, timeout=TIMEOUT)
    assert [e.key for e in read.entries] == [key]
    assert consul.kv_requests("GET")[-1].key == key


async def test_a_trailing_slash_in_the_agent_url_is_harmless(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    kv = KVClient(session, consul.url + "/")
    assert len((await kv.read("app/", recurse=True, timeout=TIMEOUT)).entries) == 1
    assert consul.kv_requests("GET")[-1].path == "/v1/kv/app/"


# -- blocking queries ----------------------------------------------------------------------


async def test_a_blocking_query_is_held_until_the_index_moves(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    kv = client(session, consul)
    first = await kv.read("app/", recurse=True, timeout=TIMEOUT)

    held = asyncio.create_task(
        kv.read("app/", recurse=True, timeout=TIMEOUT, index=first.index, wait=60.0)
    )
    await eventually(lambda: consul.waiting == 1)  # the server holds it: nothing answered yet
    assert not held.done()
    consul.put("app/a", "2")
    second = await held

    assert second.index > first.index
    assert [e.value for e in second.entries] == [b"2"]
    request = consul.kv_requests("GET")[-1]
    assert (request.blocking, request.index, request.wait) == (True, first.index, "60000ms")


@pytest.mark.parametrize(("wait", "sent"), [(0.0001, "1ms"), (1.5, "1500ms"), (0.0126, "13ms")])
async def test_the_wait_is_sent_in_whole_milliseconds_and_at_least_one(
    consul: ConsulServer, session: aiohttp.ClientSession, wait: float, sent: str
) -> None:
    consul.put("app/a", "1")
    kv = client(session, consul)
    index = (await kv.read("app/", recurse=True, timeout=TIMEOUT)).index

    task = asyncio.create_task(
        kv.read("app/", recurse=True, timeout=TIMEOUT, index=index, wait=wait)
    )
    await eventually(lambda: len(consul.kv_requests("GET")) == 2)
    consul.put("app/a", "2")  # whatever the wait, the write answers it
    await task

    assert consul.kv_requests("GET")[-1].wait == sent


@pytest.mark.parametrize(("index", "wait"), [(0, 5.0), (7, None)])
async def test_without_both_an_index_and_a_wait_the_read_does_not_block(
    consul: ConsulServer, session: aiohttp.ClientSession, index: int, wait: float | None
) -> None:
    consul.put("app/a", "1")
    await client(session, consul).read(
        "app/", recurse=True, timeout=TIMEOUT, index=index, wait=wait
    )
    request = consul.kv_requests("GET")[-1]
    assert (request.blocking, request.wait) == (False, None)


# -- tokens ----------------------------------------------------------------------------------


async def test_the_token_is_sent_as_the_consul_token_header(
    acl_consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    acl_consul.put("app/a", "1")
    read = await client(session, acl_consul, token="reader").read(
        "app/", recurse=True, timeout=TIMEOUT
    )
    assert len(read.entries) == 1
    request = acl_consul.kv_requests("GET")[-1]
    assert request.token_header == "reader"
    assert "token" not in request.query  # never in the URL, where logs would show it


async def test_no_token_sends_no_header(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    assert consul.kv_requests("GET")[-1].token_header is None


def test_the_token_is_not_in_the_clients_repr() -> None:
    kv = KVClient(None, "http://127.0.0.1:8500", token="s3cret")  # type: ignore[arg-type]
    assert "s3cret" not in repr(kv)


async def test_a_refused_token_is_an_error_to_retry_slowly(
    acl_consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    kv = client(session, acl_consul, token="wrong", slow_retry=12.0)
    with pytest.raises(
        ConsulError, match="Consul refused the ACL token reading 'app/': 403"
    ) as info:
        await kv.read("app/", recurse=True, timeout=TIMEOUT)
    assert info.value.retry_after == 12.0


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "body"),
    [("http_500", 500, "No cluster leader"), ("http_429", 429, "rate limit exceeded")],
)
async def test_an_error_status_is_an_error_naming_status_key_and_body(
    consul: ConsulServer, session: aiohttp.ClientSession, fault: str, status: int, body: str
) -> None:
    consul.faults.next(fault)
    with pytest.raises(ConsulError) as info:
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    assert str(info.value) == f"Consul answered {status} reading 'app/': {body}"
    assert info.value.retry_after is None  # the normal backoff applies


async def test_a_long_error_body_is_cut_and_an_empty_one_named(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    kv = client(session, consul)
    consul.faults.next("http_500", body="x" * 1000)
    with pytest.raises(ConsulError) as info:
        await kv.read("app/", recurse=True, timeout=TIMEOUT)
    assert str(info.value).endswith(": " + "x" * 200)
    consul.faults.next("http_500", body="")
    with pytest.raises(ConsulError, match=r"\(empty body\)"):
        await kv.read("app/", recurse=True, timeout=TIMEOUT)


async def test_an_answer_without_the_index_header_is_an_error(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    consul.faults.next("no_index")
    with pytest.raises(ConsulError, match=f"answer for 'app/' has no {INDEX_HEADER} header"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)


async def test_a_body_that_is_not_json_is_an_error(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    consul.faults.next("invalid_json")
    with pytest.raises(ConsulError, match="answer for 'app/' is not valid JSON"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("[" * 100_000, "nested too deeply"),  # a RecursionError inside json.loads
        ("[" + "7" * 5000 + "]", "an integer has more than"),  # Python's int digit limit
    ],
)
async def test_a_hostile_body_is_an_error_like_invalid_json(
    consul: ConsulServer, session: aiohttp.ClientSession, body: str, why: str
) -> None:
    consul.put("app/a", "1")
    consul.faults.next("invalid_json", body=body)
    with pytest.raises(ConsulError, match=f"answer for 'app/' is not valid JSON: {why}"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)


async def test_a_value_that_is_not_base64_is_an_error_naming_the_key(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.put("app/a", "1")
    consul.faults.next("invalid_base64")
    with pytest.raises(ConsulError, match="Consul key 'app/a': Value is not valid base64"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)


@pytest.mark.parametrize("fault", ["disconnect", "drop_after_headers", "drop_mid_body"])
async def test_a_dropped_connection_is_an_error_naming_key_and_agent(
    consul: ConsulServer, session: aiohttp.ClientSession, fault: str
) -> None:
    consul.put("app/a", "1")
    consul.faults.always(fault)  # aiohttp itself retries a GET dropped before any answer once
    with pytest.raises(ConsulError, match=f"cannot read 'app/' from Consul at {consul.url}"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)
    consul.faults.clear()


async def test_an_agent_that_is_down_is_an_error(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    await consul.go_down()
    with pytest.raises(ConsulError, match=f"cannot read 'app/' from Consul at {consul.url}"):
        await client(session, consul).read("app/", recurse=True, timeout=TIMEOUT)


async def test_an_agent_that_does_not_answer_in_time_is_an_error(
    consul: ConsulServer, session: aiohttp.ClientSession
) -> None:
    consul.faults.next("hang")
    # The client's own timeout is what is specified here; the server holds until cleared.
    with pytest.raises(ConsulError, match=f"Consul at {consul.url} did not answer within 0.2s"):
        await client(session, consul).read("app/", recurse=True, timeout=0.2)
    consul.faults.clear()


async def test_a_redirect_is_not_followed_so_the_token_stays_with_the_agent(
    session: aiohttp.ClientSession,
) -> None:
    elsewhere: list[str | None] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(request.headers.get("X-Consul-Token"))
        return web.json_response([], headers={INDEX_HEADER: "1"})

    app = web.Application()
    app.router.add_get("/v1/kv/{key:.*}", redirect)
    app.router.add_get("/elsewhere", other)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        kv = KVClient(session, f"http://127.0.0.1:{port}", token="s3cret", slow_retry=9.0)
        with pytest.raises(
            ConsulError, match="redirected the read of 'app/' to /elsewhere"
        ) as info:
            await kv.read("app/", recurse=True, timeout=TIMEOUT)
    finally:
        await runner.cleanup()
    assert info.value.retry_after == 9.0  # a redirect needs an operator, like a 403
    assert elsewhere == []


# -- decode_entries: the body's shape, also for a cached body ------------------------------


def _value(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_decode_entries_decodes_values_and_keeps_the_modify_index() -> None:
    document = [
        {"Key": "app/a", "Value": _value("1"), "ModifyIndex": 7},
        {"Key": "app/b", "Value": None},
    ]
    assert decode_entries(document, "cache") == (
        Entry("app/a", b"1", 7),
        Entry("app/b", None, 0),
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"Key": "app/a"}, "Consul's answer for 'cache' is not a list of entries"),
        ([{"Value": None}], "Consul's answer for 'cache' holds an entry without a Key"),
        (["app/a"], "Consul's answer for 'cache' holds an entry without a Key"),
        ([{"Key": 1}], "Consul's answer for 'cache' holds an entry without a Key"),
        ([{"Key": "app/a", "Value": 5}], "Consul key 'app/a': Value is not a base64 string"),
        ([{"Key": "app/a", "Value": "!!"}], "Consul key 'app/a': Value is not valid base64"),
        (
            [{"Key": "app/a", "ModifyIndex": "7"}],
            "Consul key 'app/a': ModifyIndex is not an integer",
        ),
    ],
)
def test_decode_entries_names_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ConsulError) as info:
        decode_entries(document, "cache")
    assert str(info.value) == message
