"""The loopback Consul server speaks Consul's KV API as docs/consul.md describes it.

Conformance is shown by the independent ``py-consul`` client, unchanged (its sync API in a
thread, and its aiohttp API once); the details a client depends on (headers, index rules,
faults) by plain aiohttp requests. Timeouts only bound a hang: no test asserts on speed.
Blocking-query tests wait until the server holds the query (``server.waiting``) before they
write, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import aiohttp
import consul
import consul.aio
import pytest
import pytest_asyncio
from multidict import CIMultiDictProxy

from .conftest import eventually
from .consul_server import (
    INVALID_UTF8_BYTES,
    ConsulServer,
    FaultKind,
    consul_server_fixture,
    parse_go_duration,
)

TIMEOUT = 10.0
TOKEN = "secret-token"
READER = "reader-token"

server = consul_server_fixture()
acl_server = consul_server_fixture(
    acl_tokens={TOKEN: "write", READER: "read", "scoped": {"app/": "read", "app/private/": "deny"}},
    default_policy="deny",
)


def client(srv: ConsulServer, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=srv.port, token=token)


async def call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking py-consul call in a thread, bounded."""
    return await asyncio.wait_for(asyncio.to_thread(func, *args, **kwargs), TIMEOUT)


class Reply:
    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def index(self) -> int:
        return int(self.headers["X-Consul-Index"])

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    srv: ConsulServer,
    path: str,
    method: str = "GET",
    *,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> Reply:
    """One request on a fresh connection (so aiohttp never retries a dropped one)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session,
        session.request(method, srv.url + path, data=data, headers=headers) as response,
    ):
        return Reply(response.status, response.headers, await response.read())


# --------------------------------------------------------------------------------------------
# py-consul, unchanged


T = TypeVar("T")


async def hold(server: ConsulServer, query: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start a blocking query and return once the server holds it."""
    waiting = server.waiting
    task = asyncio.create_task(query)
    await eventually(lambda: server.waiting == waiting + 1)
    return task


async def test_py_consul_get_single_key(server: ConsulServer) -> None:
    modify = server.put("app/config/db/url", "postgres://db/app")
    index, entry = await call(client(server).kv.get, "app/config/db/url")
    assert int(index) == modify
    assert entry == {
        "LockIndex": 0,
        "Key": "app/config/db/url",
        "Flags": 0,
        "Value": b"postgres://db/app",
        "CreateIndex": modify,
        "ModifyIndex": modify,
    }


async def test_py_consul_missing_key_is_none_with_an_index(server: ConsulServer) -> None:
    index, entry = await call(client(server).kv.get, "app/nothing")
    assert entry is None
    assert int(index) >= 1


async def test_py_consul_recursive_read(server: ConsulServer) -> None:
    server.put("app/config/b", "2")
    server.put("app/config/a", "1")
    server.put("app/configx", "raw prefix match")
    server.put("other/c", "3")
    index, entries = await call(client(server).kv.get, "app/config", recurse=True)
    assert [e["Key"] for e in entries] == ["app/config/a", "app/config/b", "app/configx"]
    assert int(index) == max(e["ModifyIndex"] for e in entries)
    _, entries = await call(client(server).kv.get, "app/config/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [
        ("app/config/a", b"1"),
        ("app/config/b", b"2"),
    ]
    _, none = await call(client(server).kv.get, "missing/", recurse=True)
    assert none is None


async def test_py_consul_keys_listing(server: ConsulServer) -> None:
    _, root = await call(client(server).kv.get, "", keys=True)
    assert root == []
    for key in ("app/a", "app/sub/x", "app/sub/y", "app/sub2/z", "top"):
        server.put(key, "v")
    _, keys = await call(client(server).kv.get, "app/", keys=True)
    assert keys == ["app/a", "app/sub/x", "app/sub/y", "app/sub2/z"]
    _, folded = await call(client(server).kv.get, "app/", keys=True, separator="/")
    assert folded == ["app/a", "app/sub/", "app/sub2/"]
    _, everything = await call(client(server).kv.get, "", keys=True, separator="/")
    assert everything == ["app/", "top"]
    _, none = await call(client(server).kv.get, "nope/", keys=True)
    assert none is None


async def test_py_consul_blocking_read_returns_after_a_write(server: ConsulServer) -> None:
    server.put("app/config/a", "1")
    c = client(server)
    index, _ = await call(c.kv.get, "app/config/", recurse=True)
    pending = await hold(
        server, call(c.kv.get, "app/config/", recurse=True, index=index, wait="10s")
    )
    assert await call(client(server).kv.put, "app/config/b", "2")  # an HTTP write wakes it
    new_index, entries = await pending
    assert int(new_index) > int(index)
    assert [(e["Key"], e["Value"]) for e in entries] == [
        ("app/config/a", b"1"),
        ("app/config/b", b"2"),
    ]
    assert server.blocking_queries == 1
    blocking = [r for r in server.requests if r.blocking]
    assert blocking[0].index == int(index)
    assert blocking[0].wait == "10s"


async def test_py_consul_blocking_read_on_a_missing_key_sees_its_creation(
    server: ConsulServer,
) -> None:
    c = client(server)
    index, entry = await call(c.kv.get, "app/flag")
    assert entry is None
    pending = await hold(server, call(c.kv.get, "app/flag", index=index, wait="10s"))
    server.put("app/flag", "on")  # a direct write wakes it like an HTTP one
    new_index, entry = await pending
    assert entry is not None
    assert entry["Value"] == b"on"
    assert int(new_index) == entry["ModifyIndex"] > int(index)


async def test_py_consul_blocking_read_times_out_with_the_same_index(
    server: ConsulServer,
) -> None:
    server.put("app/config/a", "1")
    c = client(server)
    index, entries = await call(c.kv.get, "app/config/", recurse=True)
    same_index, same = await call(c.kv.get, "app/config/", recurse=True, index=index, wait="1s")
    assert same_index == index
    assert same == entries


async def test_py_consul_writes(server: ConsulServer) -> None:
    c = client(server)
    assert await call(c.kv.put, "app/v", "text") is True
    assert await call(c.kv.put, "app/bin", b"\x00\xff") is True
    assert await call(c.kv.put, "app/empty", "") is True
    assert server.get("app/bin") is not None
    _, entry = await call(c.kv.get, "app/bin")
    assert entry["Value"] == b"\x00\xff"
    _, entry = await call(c.kv.get, "app/empty")
    assert entry["Value"] is None  # Consul sends null for an empty value

    # flags are stored, and reset to 0 by a PUT without them
    assert await call(c.kv.put, "app/flagged", "x", flags=42) is True
    _, entry = await call(c.kv.get, "app/flagged")
    assert entry["Flags"] == 42
    await call(c.kv.put, "app/flagged", "y")
    _, entry = await call(c.kv.get, "app/flagged")
    assert entry["Flags"] == 0

    # cas=0 creates only; cas=<ModifyIndex> updates only that version
    assert await call(c.kv.put, "app/cas", "1", cas=0) is True
    assert await call(c.kv.put, "app/cas", "2", cas=0) is False
    _, entry = await call(c.kv.get, "app/cas")
    assert await call(c.kv.put, "app/cas", "2", cas=entry["ModifyIndex"]) is True
    assert await call(c.kv.put, "app/cas", "3", cas=entry["ModifyIndex"]) is False
    assert await call(c.kv.put, "app/new", "3", cas=entry["ModifyIndex"]) is False
    _, updated = await call(c.kv.get, "app/cas")
    assert updated["Value"] == b"2"
    assert updated["CreateIndex"] == entry["CreateIndex"]
    assert updated["ModifyIndex"] > entry["ModifyIndex"]


async def test_py_consul_deletes(server: ConsulServer) -> None:
    c = client(server)
    for key in ("app/a", "app/b/c", "app/b/d", "keep"):
        server.put(key, "v")
    assert await call(c.kv.delete, "app/a") is True
    assert server.get("app/a") is None
    assert await call(c.kv.delete, "app/a") is True  # deleting nothing is not an error
    assert await call(c.kv.delete, "app/b/", recurse=True) is True
    _, none = await call(c.kv.get, "app/", recurse=True)
    assert none is None
    _, entry = await call(c.kv.get, "keep")
    assert await call(c.kv.delete, "keep", cas=entry["ModifyIndex"] + 100) is False
    assert server.get("keep") is not None
    assert await call(c.kv.delete, "keep", cas=entry["ModifyIndex"]) is True
    assert list(server.entries) == []


async def test_py_consul_acl(acl_server: ConsulServer) -> None:
    acl_server.put("app/config/a", "1")
    acl_server.put("app/private/secret", "s")
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        await call(client(acl_server).kv.get, "app/config/a")
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        await call(client(acl_server, "wrong-token").kv.get, "app/config/a")
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        await call(client(acl_server, READER).kv.put, "app/config/a", "2")
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        await call(client(acl_server, "scoped").kv.get, "app/private/secret")

    _, entry = await call(client(acl_server, READER).kv.get, "app/config/a")
    assert entry["Value"] == b"1"
    assert await call(client(acl_server, TOKEN).kv.put, "app/config/a", "2") is True
    assert await call(client(acl_server, TOKEN).kv.delete, "app/config/a") is True
    # a per-call token wins over the client's
    _, entry = await call(client(acl_server).kv.get, "app/private/secret", token=TOKEN)
    assert entry["Value"] == b"s"

    # a recursive read silently drops what the token can't read
    _, visible = await call(client(acl_server, "scoped").kv.get, "app/", recurse=True)
    assert visible is None  # only app/private/secret is left, and it is hidden
    acl_server.put("app/config/b", "2")
    _, visible = await call(client(acl_server, "scoped").kv.get, "app/", recurse=True)
    assert [e["Key"] for e in visible] == ["app/config/b"]

    sent = [r for r in acl_server.requests if r.token == READER]
    assert sent
    assert all(r.token_header == READER and "token" not in r.query for r in sent)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # py-consul's own aiohttp arguments
async def test_py_consul_aio_client(server: ConsulServer) -> None:
    server.put("app/a", "1")
    c = consul.aio.Consul(host="127.0.0.1", port=server.port)
    try:
        index, entry = await c.kv.get("app/a")
        assert entry["Value"] == b"1"
        pending = await hold(server, c.kv.get("app/a", index=index, wait="10s"))
        assert await c.kv.put("app/a", "2") is True
        new_index, entry = await asyncio.wait_for(pending, TIMEOUT)
        assert entry["Value"] == b"2"
        assert int(new_index) > int(index)
    finally:
        await c.close()


async def test_py_consul_reports_faults(server: ConsulServer) -> None:
    server.put("app/a", "1")
    c = client(server)
    server.faults.next("http_500")
    with pytest.raises(consul.ConsulException, match="500 No cluster leader"):
        await call(c.kv.get, "app/a")
    server.faults.next("no_index")
    with pytest.raises(consul.ConsulException, match="Missing index header"):
        await call(c.kv.get, "app/a")
    server.faults.next("invalid_json")
    with pytest.raises(consul.ConsulException, match="Failed to decode JSON"):
        await call(c.kv.get, "app/a")
    _, entry = await call(c.kv.get, "app/a")
    assert entry["Value"] == b"1"


# --------------------------------------------------------------------------------------------
# The wire format


async def test_entry_json_is_compact_in_consuls_field_order(server: ConsulServer) -> None:
    server.put("app/a", "<&>", flags=7)
    reply = await fetch(server, "/v1/kv/app/a")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    idx = reply.index
    assert reply.body == (
        b'[{"LockIndex":0,"Key":"app/a","Flags":7,"Value":"' + base64.b64encode(b"<&>") + b'",'
        b'"CreateIndex":' + str(idx).encode() + b',"ModifyIndex":' + str(idx).encode() + b"}]"
    )
    assert "Session" not in reply.json()[0]


async def test_get_headers_on_200_and_404(server: ConsulServer) -> None:
    server.put("app/a", "1")
    for path, status in (("/v1/kv/app/a", 200), ("/v1/kv/app/missing", 404)):
        reply = await fetch(server, path)
        assert reply.status == status
        assert reply.index >= 1
        # Go canonicalises the names: X-Consul-Knownleader, X-Consul-Lastcontact.
        assert reply.headers["X-Consul-KnownLeader"] == "true"
        assert reply.headers["X-Consul-LastContact"] == "0"
        assert "X-Consul-Knownleader" in {name for name in reply.headers}
    missing = await fetch(server, "/v1/kv/app/missing")
    assert missing.body == b""


async def test_raw_and_boolean_flags(server: ConsulServer) -> None:
    server.put("app/a", b"\x00raw bytes")
    raw = await fetch(server, "/v1/kv/app/a?raw")
    assert raw.status == 200
    assert raw.body == b"\x00raw bytes"
    assert raw.headers["Content-Type"] == "text/plain"
    # flags are on when present, whatever their value
    listed = await fetch(server, "/v1/kv/app/?recurse=false")
    assert [e["Key"] for e in listed.json()] == ["app/a"]
    keys = await fetch(server, "/v1/kv/app/?keys=0")
    assert keys.json() == ["app/a"]


@pytest.mark.parametrize(
    ("path", "method", "message"),
    [
        ("/v1/kv/app/a?wait=60", "GET", "Invalid wait time"),
        ("/v1/kv/app/a?index=abc", "GET", "Invalid index"),
        ("/v1/kv/app/a?index=-1", "GET", "Invalid index"),
        ("/v1/kv/app/a?stale&consistent", "GET", "Cannot specify ?stale with ?consistent"),
        ("/v1/kv/", "GET", "Missing key name"),
        ("/v1/kv/", "PUT", "Missing key name"),
        ("/v1/kv/", "DELETE", "Missing key name"),
    ],
)
async def test_bad_requests_are_400(
    server: ConsulServer, path: str, method: str, message: str
) -> None:
    reply = await fetch(server, path, method)
    assert reply.status == 400
    assert reply.body.decode().startswith(message)


async def test_put_limits_and_answers(server: ConsulServer) -> None:
    too_big = await fetch(server, "/v1/kv/app/big", "PUT", data=b"x" * (512 * 1024 + 1))
    assert too_big.status == 413
    assert server.get("app/big") is None
    ok = await fetch(server, "/v1/kv/app/a?flags=3", "PUT", data=b"v")
    assert (ok.status, ok.body, ok.headers["Content-Type"]) == (200, b"true", "application/json")
    assert "X-Consul-Index" not in ok.headers  # writes carry no index headers
    entry = server.get("app/a")
    assert entry is not None
    assert (entry.value, entry.flags) == (b"v", 3)
    stale = await fetch(server, "/v1/kv/app/a?cas=1", "PUT", data=b"w")
    assert stale.body == b"false"


def test_go_durations() -> None:
    assert parse_go_duration("5s") == 5
    assert parse_go_duration("100ms") == pytest.approx(0.1)
    assert parse_go_duration("1m") == 60
    assert parse_go_duration("1m30s") == 90
    assert parse_go_duration("1.5h") == 5400
    assert parse_go_duration("0") == 0
    for bad in ("60", "", "5x", "s", "5 s"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


# --------------------------------------------------------------------------------------------
# Index rules


async def test_fresh_server_indexes_are_at_least_1(server: ConsulServer) -> None:
    for path in ("/v1/kv/a", "/v1/kv/a/?recurse", "/v1/kv/?keys", "/v1/kv/?recurse"):
        reply = await fetch(server, path)
        assert reply.index >= 1
    root = await fetch(server, "/v1/kv/?keys")
    assert (root.status, root.json()) == (200, [])


async def test_prefix_index_is_the_max_modify_index_under_it(server: ConsulServer) -> None:
    a = server.put("app/a", "1")
    b = server.put("app/b", "2")
    server.put("other/x", "3")  # a write elsewhere moves the raft index, not app/'s
    assert server.index > b
    assert (await fetch(server, "/v1/kv/app/?recurse")).index == b
    assert (await fetch(server, "/v1/kv/app/a")).index == a
    assert (await fetch(server, "/v1/kv/app/?keys")).index == b
    # a missing key reports the table's index
    assert (await fetch(server, "/v1/kv/app/missing")).index == server.index


async def test_deletes_bump_a_prefixs_index_and_reaping_lowers_it(server: ConsulServer) -> None:
    server.put("app/a", "1")
    b = server.put("app/b", "2")
    server.delete("app/b")
    after_delete = (await fetch(server, "/v1/kv/app/?recurse")).index
    assert after_delete > b  # the tombstone counts
    assert server.tombstones == {"app/b": after_delete}
    server.delete("app/", recurse=True)
    gone = await fetch(server, "/v1/kv/app/?recurse")
    assert gone.status == 404
    assert gone.index > after_delete

    a = server.put("app/a", "again")
    server.put("app/c", "3")
    assert server.delete("app/c")
    c_index = server.index
    assert (await fetch(server, "/v1/kv/app/?recurse")).index == c_index
    server.reap_tombstones()
    assert (await fetch(server, "/v1/kv/app/?recurse")).index == a  # went down


async def test_http_delete_bumps_the_index(server: ConsulServer) -> None:
    server.put("app/a", "1")
    before = server.index
    reply = await fetch(server, "/v1/kv/app/a", "DELETE")
    assert (reply.status, reply.body) == (200, b"true")
    assert server.index == before + 1
    missing = await fetch(server, "/v1/kv/app/a")
    assert missing.status == 404
    assert missing.index == server.index


async def test_blocking_query_ignores_writes_elsewhere(server: ConsulServer) -> None:
    server.put("app/a", "1")
    first = await fetch(server, "/v1/kv/app/?recurse")
    pending = await hold(server, fetch(server, f"/v1/kv/app/?recurse&index={first.index}&wait=1s"))
    server.put("other/x", "woken, but app/'s index did not move")
    reply = await pending
    assert reply.index == first.index
    assert reply.json() == first.json()


async def test_blocking_query_woken_by_a_delete(server: ConsulServer) -> None:
    server.put("app/a", "1")
    server.put("app/b", "2")
    first = await fetch(server, "/v1/kv/app/?recurse")
    pending = await hold(server, fetch(server, f"/v1/kv/app/?recurse&index={first.index}&wait=10s"))
    assert server.delete("app/a")
    reply = await pending
    assert reply.index > first.index
    assert [e["Key"] for e in reply.json()] == ["app/b"]


async def test_wake_blocking_answers_with_the_same_index(server: ConsulServer) -> None:
    server.put("app/a", "1")
    first = await fetch(server, "/v1/kv/app/a")
    pending = await hold(server, fetch(server, f"/v1/kv/app/a?index={first.index}&wait=10s"))
    server.wake_blocking()
    reply = await pending
    assert reply.index == first.index
    assert server.waiting == 0


async def test_index_0_does_not_block(server: ConsulServer) -> None:
    server.put("app/a", "1")
    reply = await fetch(server, "/v1/kv/app/a?index=0&wait=10m")
    assert reply.status == 200
    assert server.blocking_queries == 0


# --------------------------------------------------------------------------------------------
# ACL over the wire


async def test_acl_token_sources(acl_server: ConsulServer) -> None:
    acl_server.put("app/a", "1")
    assert (await fetch(acl_server, "/v1/kv/app/a")).status == 403
    by_query = await fetch(acl_server, f"/v1/kv/app/a?token={READER}")
    by_header = await fetch(acl_server, "/v1/kv/app/a", headers={"X-Consul-Token": READER})
    by_bearer = await fetch(
        acl_server, "/v1/kv/app/a", headers={"Authorization": f"Bearer {READER}"}
    )
    assert [by_query.status, by_header.status, by_bearer.status] == [200, 200, 200]
    # ?token= wins over the header
    both = await fetch(acl_server, f"/v1/kv/app/a?token={READER}", headers={"X-Consul-Token": "x"})
    assert both.status == 200
    unknown = await fetch(acl_server, "/v1/kv/app/a", headers={"X-Consul-Token": "nope"})
    assert (unknown.status, unknown.body) == (403, b"ACL not found")
    denied = await fetch(acl_server, "/v1/kv/app/a")
    assert denied.body == b"Permission denied"
    assert acl_server.requests[-1].token is None
    assert acl_server.requests[1].token_header is None
    assert acl_server.requests[2].token_header == READER


async def test_acl_keys_listing_is_filtered(acl_server: ConsulServer) -> None:
    acl_server.put("app/public", "1")
    acl_server.put("app/private/secret", "2")
    reply = await fetch(acl_server, "/v1/kv/app/?keys", headers={"X-Consul-Token": "scoped"})
    assert reply.json() == ["app/public"]
    assert reply.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"


async def test_acl_off_ignores_tokens(server: ConsulServer) -> None:
    server.put("app/a", "1")
    reply = await fetch(server, "/v1/kv/app/a", headers={"X-Consul-Token": "anything"})
    assert reply.status == 200
    assert server.requests[-1].token_header == "anything"


# --------------------------------------------------------------------------------------------
# Faults


@pytest_asyncio.fixture
async def loaded(server: ConsulServer) -> AsyncIterator[ConsulServer]:
    server.put("app/a", "1")
    server.put("app/b", "2")
    yield server


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [("http_500", 500, "No cluster leader"), ("http_429", 429, "rate limit exceeded")],
)
async def test_fault_http_errors(loaded: ConsulServer, kind: str, status: int, body: str) -> None:
    loaded.faults.next(kind, count=2)
    for _ in range(2):
        reply = await fetch(loaded, "/v1/kv/app/?recurse")
        assert (reply.status, reply.body.decode()) == (status, body)
        assert "X-Consul-Index" not in reply.headers
    assert (await fetch(loaded, "/v1/kv/app/?recurse")).status == 200
    assert loaded.faults.history == [FaultKind(kind)] * 2
    assert [r.fault for r in loaded.requests] == [FaultKind(kind)] * 2 + [None]


async def test_fault_custom_body_and_always(loaded: ConsulServer) -> None:
    fault = loaded.faults.always("http_500", body="rpc error: oops")
    for _ in range(3):
        reply = await fetch(loaded, "/v1/kv/app/a")
        assert reply.body == b"rpc error: oops"
    assert fault.applied == 3
    loaded.faults.clear()
    assert (await fetch(loaded, "/v1/kv/app/a")).status == 200


async def test_faults_hit_only_gets_unless_told(loaded: ConsulServer) -> None:
    loaded.faults.next("http_500")
    assert (await fetch(loaded, "/v1/kv/app/c", "PUT", data=b"3")).status == 200
    assert (await fetch(loaded, "/v1/kv/app/c")).status == 500
    loaded.faults.next("http_500", methods=["PUT"])
    assert (await fetch(loaded, "/v1/kv/app/d", "PUT", data=b"4")).status == 500
    assert loaded.get("app/d") is None  # an error fault on a write does not write


async def test_fault_hang_until_cleared(loaded: ConsulServer) -> None:
    loaded.faults.next("hang")
    pending = asyncio.create_task(fetch(loaded, "/v1/kv/app/a"))
    await eventually(lambda: loaded.faults.history == [FaultKind.HANG])
    loaded.put("app/a", "changed while hanging")
    later = await fetch(loaded, "/v1/kv/app/a")  # a request made after the write is answered
    assert later.status == 200
    assert not pending.done()  # while the hung one still waits
    loaded.faults.clear()
    reply = await pending
    assert reply.status == 200
    assert base64.b64decode(reply.json()[0]["Value"]) == b"changed while hanging"


async def test_fault_hang_until_the_client_gives_up(loaded: ConsulServer) -> None:
    loaded.faults.always("hang")  # the client's timeouts below are what is specified
    with pytest.raises(asyncio.TimeoutError):
        await fetch(loaded, "/v1/kv/app/a", timeout=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await fetch(loaded, "/v1/kv/app/a", timeout=0.2)
    loaded.faults.clear()
    assert (await fetch(loaded, "/v1/kv/app/a")).status == 200


async def test_fault_slow(loaded: ConsulServer) -> None:
    loaded.faults.next("slow", delay=0.05)
    reply = await fetch(loaded, "/v1/kv/app/a")
    assert reply.status == 200
    assert loaded.faults.history == [FaultKind.SLOW]


async def test_fault_disconnect(loaded: ConsulServer) -> None:
    # aiohttp retries an idempotent request once on a dropped connection: drop both.
    loaded.faults.next("disconnect", count=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(loaded, "/v1/kv/app/a")
    assert [(r.fault, r.status) for r in loaded.requests] == [(FaultKind.DISCONNECT, None)] * 2
    assert (await fetch(loaded, "/v1/kv/app/a")).status == 200


async def test_fault_disconnect_interrupts_a_blocking_query(loaded: ConsulServer) -> None:
    first = await fetch(loaded, "/v1/kv/app/?recurse")
    pending = await hold(loaded, fetch(loaded, f"/v1/kv/app/?recurse&index={first.index}&wait=10s"))
    loaded.faults.next("disconnect", interrupt=True)
    await eventually(lambda: loaded.faults.history == [FaultKind.DISCONNECT])
    assert (loaded.requests[1].fault, loaded.requests[1].status) == (FaultKind.DISCONNECT, None)
    # aiohttp resends the dropped query once, and that one is held again
    await eventually(lambda: loaded.waiting == 1 and len(loaded.requests) == 3)
    loaded.put("app/c", "3")
    reply = await pending
    assert reply.index > first.index
    assert loaded.blocking_queries == 2


@pytest.mark.parametrize("kind", ["drop_after_headers", "drop_mid_body"])
async def test_fault_drop_mid_response(loaded: ConsulServer, kind: str) -> None:
    loaded.faults.next(kind)
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(loaded.url + "/v1/kv/app/?recurse") as response,
    ):
        assert response.status == 200  # the headers arrived
        assert int(response.headers["X-Consul-Index"]) >= 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert (await fetch(loaded, "/v1/kv/app/?recurse")).status == 200


async def test_fault_index_backwards(loaded: ConsulServer) -> None:
    real = await fetch(loaded, "/v1/kv/app/?recurse")
    loaded.faults.next("index_backwards")
    reply = await fetch(loaded, "/v1/kv/app/?recurse")
    assert reply.index == 1 < real.index
    assert reply.json() == real.json()
    loaded.faults.next("index_backwards", index=2)
    assert (await fetch(loaded, "/v1/kv/app/?recurse")).index == 2


async def test_fault_index_backwards_on_a_woken_blocking_query(loaded: ConsulServer) -> None:
    first = await fetch(loaded, "/v1/kv/app/?recurse")
    pending = await hold(loaded, fetch(loaded, f"/v1/kv/app/?recurse&index={first.index}&wait=10s"))
    loaded.faults.next("index_backwards")  # taken when the held query answers
    assert loaded.waiting == 1
    loaded.put("app/c", "3")
    reply = await pending
    assert reply.index == 1
    assert [e["Key"] for e in reply.json()] == ["app/a", "app/b", "app/c"]


async def test_fault_no_index(loaded: ConsulServer) -> None:
    loaded.faults.next("no_index")
    reply = await fetch(loaded, "/v1/kv/app/?recurse")
    assert reply.status == 200
    assert "X-Consul-Index" not in reply.headers
    assert len(reply.json()) == 2


async def test_fault_invalid_json(loaded: ConsulServer) -> None:
    loaded.faults.next("invalid_json")
    reply = await fetch(loaded, "/v1/kv/app/?recurse")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        reply.json()


async def test_fault_invalid_base64(loaded: ConsulServer) -> None:
    loaded.faults.next("invalid_base64")
    reply = await fetch(loaded, "/v1/kv/app/?recurse")
    entries = reply.json()
    assert [e["Key"] for e in entries] == ["app/a", "app/b"]
    for entry in entries:
        with pytest.raises(binascii.Error):
            base64.b64decode(entry["Value"], validate=True)


async def test_fault_invalid_utf8(loaded: ConsulServer) -> None:
    loaded.faults.next("invalid_utf8")
    reply = await fetch(loaded, "/v1/kv/app/a")
    value = base64.b64decode(reply.json()[0]["Value"], validate=True)
    assert value == INVALID_UTF8_BYTES
    with pytest.raises(UnicodeDecodeError):
        value.decode("utf-8")


async def test_down_and_up_on_the_same_port(loaded: ConsulServer) -> None:
    port = loaded.port
    first = await fetch(loaded, "/v1/kv/app/?recurse")
    held = await hold(loaded, fetch(loaded, f"/v1/kv/app/?recurse&index={first.index}&wait=10s"))
    await loaded.go_down()
    assert not loaded.is_up
    with pytest.raises(aiohttp.ClientError):
        await held  # the held query's connection was dropped
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(loaded, "/v1/kv/app/a")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    loaded.put("app/c", "written while down")
    await loaded.come_up()
    assert loaded.port == port
    reply = await fetch(loaded, "/v1/kv/app/?recurse")
    assert [e["Key"] for e in reply.json()] == ["app/a", "app/b", "app/c"]
    async with loaded.down():
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(loaded, "/v1/kv/app/a")
    assert (await fetch(loaded, "/v1/kv/app/a")).status == 200


async def test_blocking_queries_are_counted(loaded: ConsulServer) -> None:
    index = (await fetch(loaded, "/v1/kv/app/?recurse")).index
    loaded.faults.next("index_backwards", count=3)
    for _ in range(3):
        await fetch(loaded, f"/v1/kv/app/?recurse&index={index - 1}&wait=10s")
    assert loaded.blocking_queries == 3
    assert len(loaded.kv_requests("GET")) == 4
    loaded.clear_requests()
    assert loaded.blocking_queries == 0


async def test_context_manager_and_stop_release_held_queries() -> None:
    async with ConsulServer(data={"app/a": "1"}, jitter=False) as srv:
        url = srv.url
        index = (await fetch(srv, "/v1/kv/app/a")).index
        held = await hold(srv, fetch(srv, f"/v1/kv/app/a?index={index}&wait=10m"))
        srv.faults.always("hang")
        hung = asyncio.create_task(fetch(srv, "/v1/kv/app/a"))
        await eventually(lambda: len(srv.faults.history) == 1)
    assert url.startswith("http://127.0.0.1:")
    for task in (held, hung):
        with pytest.raises(aiohttp.ClientError):
            await task
