"""A loopback Consul KV HTTP server for tests (the semantics: docs/consul.md).

No Consul binary can be installed here, so tests run Consul clients against this server. It
speaks the KV part of Consul's HTTP API the way Consul does (proven by
``tests/test_consul_server.py``, which drives it with the independent ``py-consul`` client),
and lets a test inject the failures a real cluster produces.

Usage::

    async with ConsulServer() as consul:            # 127.0.0.1, a free port
        consul.put("app/config/db/url", "postgres://...")
        ...  # point a client at consul.url
        consul.faults.next("http_500")              # the next KV response is a 500
        await consul.go_down(); await consul.come_up()   # same port

or, in a test module, ``consul = consul_server_fixture(acl_tokens={"t": "read"})``.

What it implements (Consul's rules, which docs/consul.md sums up):

* ``GET /v1/kv/<key>`` (``?recurse``, ``?keys`` + ``?separator``, ``?raw``, ``?stale``,
  ``?consistent``, ``?dc``, ``?pretty``), ``PUT`` (``?flags``, ``?cas``) and ``DELETE``
  (``?recurse``, ``?cas``); ``GET /v1/status/leader``.
* Consul's index rules: a raft index that every write bumps, ``ModifyIndex``/``CreateIndex``,
  tombstones for deleted keys (a prefix's index is the max of its entries' ``ModifyIndex`` and
  its tombstones'; :meth:`ConsulServer.reap_tombstones` makes it go down as Consul's reaper
  does), indexes never reported below 1.
* Blocking queries (``?index=N&wait=W``) held on an :class:`asyncio.Event` until the result's
  index exceeds ``N`` or the wait (+ up to W/16 of jitter) expires.
* ACLs when created with ``acl_tokens`` (token from ``?token=``, ``X-Consul-Token`` or
  ``Authorization: Bearer``).
* Faults (:class:`Faults`), a request log (:attr:`ConsulServer.requests`) and going down and
  coming back on the same port.

Everything runs on the event loop of the test: call the methods from that loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "DEFAULT_WAIT",
    "MAX_VALUE_SIZE",
    "MAX_WAIT",
    "ConsulServer",
    "Fault",
    "FaultKind",
    "Faults",
    "KVEntry",
    "RecordedRequest",
    "consul_server_fixture",
    "parse_go_duration",
]

DEFAULT_WAIT = 300.0
"""Seconds a blocking query is held when ``wait`` is absent or zero (Consul: 5 minutes)."""
MAX_WAIT = 600.0
"""The cap on ``wait`` (Consul: 10 minutes)."""
JITTER_FRACTION = 16
MAX_VALUE_SIZE = 512 * 1024
"""Consul's default ``kv_max_value_size``: a larger PUT body is a 413."""

KV_PREFIX = "/v1/kv/"
TEXT = "text/plain; charset=utf-8"  # what Go's http.Error / content sniffing sends
JSON = "application/json"

Policy = Literal["read", "write", "deny"]
Rules = Policy | Mapping[str, Policy]
"""A token's rights: one policy for every key, or ``{key_prefix: policy}`` (longest wins)."""


# --------------------------------------------------------------------------------------------
# Go durations


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``5s``, ``100ms``, ``1m30s``, ``0``).

    A number without a unit (other than ``0``) is invalid, as in Go: ``ValueError``.
    """
    sign = 1.0
    rest = text
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class KVEntry:
    """One stored key, as Consul's ``DirEntry``."""

    key: str
    value: bytes
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    lock_index: int = 0
    session: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object Consul sends, fields in Consul's order."""
        out: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode("ascii") if self.value else None,
        }
        if self.session:
            out["Session"] = self.session
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out


@dataclass
class RecordedRequest:
    """What the server saw of one request (``status`` is filled in once it answered)."""

    method: str
    path: str
    key: str | None
    query: dict[str, str]
    token_header: str | None
    """The ``X-Consul-Token`` header as sent, ``None`` when absent."""
    authorization: str | None
    token: str | None
    """The token the server used: ``?token=``, else ``X-Consul-Token``, else Bearer."""
    blocking: bool
    index: int | None
    wait: str | None
    time: float = field(default_factory=time.monotonic)
    status: int | None = None
    """The HTTP status sent; ``None`` while pending or when the connection was dropped."""
    fault: FaultKind | None = None


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    entries: list[dict[str, Any]] | None = None
    """The JSON entries behind ``body`` (so faults can corrupt them); ``None`` otherwise."""
    pretty: bool = False


def _go_json(value: Any, pretty: bool = False) -> bytes:
    """JSON as Go's encoding/json writes it: compact, HTML-safe escapes, UTF-8."""
    if pretty:
        text = json.dumps(value, ensure_ascii=False, indent=4) + "\n"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # Outside strings the JSON holds none of these, so replacing them everywhere is safe.
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------------------------
# Faults


class FaultKind(StrEnum):
    """What an injected fault does to a response (see :class:`Faults`)."""

    HTTP_500 = "http_500"
    """500 with a text body, ``No cluster leader`` unless ``body=`` says otherwise."""
    HTTP_429 = "http_429"
    """429 with a text body, ``rate limit exceeded`` unless ``body=`` says otherwise."""
    HANG = "hang"
    """Never answers until :meth:`Faults.clear`/:meth:`Faults.release` (then answers normally)
    or the client gives up."""
    SLOW = "slow"
    """Answers normally after ``delay`` seconds (1 s by default)."""
    DISCONNECT = "disconnect"
    """Closes the connection without sending anything."""
    DROP_AFTER_HEADERS = "drop_after_headers"
    """Sends the status line and headers (with the full Content-Length), then closes."""
    DROP_MID_BODY = "drop_mid_body"
    """Sends the headers and half of the body, then closes."""
    INDEX_BACKWARDS = "index_backwards"
    """Answers with the current data but ``X-Consul-Index: <index>`` (1 by default): what a
    client sees after a snapshot restore or a fresh cluster."""
    NO_INDEX = "no_index"
    """Answers normally but without ``X-Consul-Index``."""
    INVALID_JSON = "invalid_json"
    """Same status and headers, but a truncated JSON body (or ``body=``)."""
    INVALID_BASE64 = "invalid_base64"
    """Every entry's ``Value`` is not base64 (entries responses only)."""
    INVALID_UTF8 = "invalid_utf8"
    """Every entry's ``Value`` decodes to bytes that are not UTF-8 (entries responses only)."""


_DEFAULT_BODIES = {
    FaultKind.HTTP_500: "No cluster leader",
    FaultKind.HTTP_429: "rate limit exceeded",
}
INVALID_JSON_BODY = b'[{"LockIndex":0,"Key":"'
INVALID_BASE64_VALUE = "not*base64!"
INVALID_UTF8_BYTES = b"\xff\xfe\xc3\x28"


@dataclass
class Fault:
    """One armed fault; ``count=None`` means until cleared. ``applied`` counts its uses."""

    kind: FaultKind
    count: int | None = 1
    body: str | None = None
    delay: float = 0.0
    index: int = 1
    methods: frozenset[str] | None = frozenset({"GET"})
    applied: int = 0

    def matches(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class Faults:
    """Runtime fault injection.

    A fault is taken by the next KV response the server *produces* after it was armed, whose
    method it matches (``GET`` only unless ``methods=`` says otherwise): for a blocking query
    that is when the query would answer (a write, or the wait expiring), unless ``interrupt=True``
    wakes the queries held right now so that they take it at once. Requests the server rejects
    (400, 403) take no fault. A write that takes an error fault (500, 429, disconnect) is not
    performed. Faults are used in the order they were armed.
    """

    def __init__(self, server: ConsulServer) -> None:
        self._server = server
        self._armed: list[Fault] = []
        self._released = asyncio.Event()
        self.history: list[FaultKind] = []
        """Every fault applied, in order."""

    def next(
        self,
        kind: FaultKind | str,
        count: int | None = 1,
        *,
        body: str | None = None,
        delay: float | None = None,
        index: int = 1,
        methods: Collection[str] | None = ("GET",),
        interrupt: bool = False,
    ) -> Fault:
        """Arm a fault for the next ``count`` responses (``None``: until :meth:`clear`).

        ``body``: the text of a 500/429, or the body of ``invalid_json``. ``delay``: seconds
        to wait before acting (any kind; ``slow`` defaults to 1). ``index``: the
        ``X-Consul-Index`` of ``index_backwards``.
        ``methods``: which request methods it hits (``None``: all). ``interrupt``: wake the
        blocking queries held now so that they take it immediately.
        """
        kind = FaultKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        if delay is None:
            delay = 1.0 if kind is FaultKind.SLOW else 0.0
        fault = Fault(
            kind=kind,
            count=count,
            body=body,
            delay=delay,
            index=index,
            methods=None if methods is None else frozenset(m.upper() for m in methods),
        )
        self._armed.append(fault)
        if interrupt:
            self._server.wake_blocking()
        return fault

    def always(self, kind: FaultKind | str, **options: Any) -> Fault:
        """Arm a fault until :meth:`clear`."""
        return self.next(kind, None, **options)

    def clear(self) -> None:
        """Disarm every fault and release the requests held by ``hang``."""
        self._armed.clear()
        self.release()

    def release(self) -> None:
        """Let the requests held by ``hang`` answer (normally)."""
        self._released.set()
        self._released = asyncio.Event()

    @property
    def armed(self) -> list[Fault]:
        return list(self._armed)

    def _take(self, method: str) -> Fault | None:
        for fault in self._armed:
            if fault.matches(method):
                fault.applied += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._armed.remove(fault)
                self.history.append(fault.kind)
                return fault
        return None


# --------------------------------------------------------------------------------------------
# The server


class _AclError(Exception):
    pass


class _BadRequest(Exception):
    pass


class ConsulServer:
    """A Consul agent's KV HTTP API on ``127.0.0.1`` (a free port unless ``port`` is given).

    ``acl_tokens``: turns ACLs on; ``{token: rules}``, rules being ``"read"``, ``"write"``,
    ``"deny"`` or ``{key_prefix: policy}``. The key ``""`` gives the rules of requests sent
    without a token (the anonymous token); other keys fall back to ``default_policy``
    (``"deny"`` here, so that ACLs on means a token is required; Consul's own default is
    ``"allow"``). ``data``: initial keys. ``jitter``: add Consul's random extra of up to W/16
    to blocking waits. ``initial_index``: the raft index before the first write.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        acl_tokens: Mapping[str, Rules] | None = None,
        default_policy: Literal["allow", "deny"] = "deny",
        data: Mapping[str, str | bytes] | None = None,
        datacenter: str = "dc1",
        jitter: bool = True,
        initial_index: int = 1,
        max_value_size: int = MAX_VALUE_SIZE,
    ) -> None:
        if initial_index < 1:
            raise ValueError("initial_index must be >= 1")
        self.host = host
        self._port = port
        self.acl_tokens: dict[str, Rules] | None = None if acl_tokens is None else dict(acl_tokens)
        self.default_policy = default_policy
        self.datacenter = datacenter
        self.jitter = jitter
        self.max_value_size = max_value_size
        self._raft_index = initial_index
        self._table_index = 0  # Consul's "kvs"/"tombstones" table index
        self._entries: dict[str, KVEntry] = {}
        self._tombstones: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._waiting = 0
        self._closing = False
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self.faults = Faults(self)
        self.requests: list[RecordedRequest] = []
        for key, value in (data or {}).items():
            self.put(key, value)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> ConsulServer:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._closing = False
        self._runner = web.ServerRunner(
            web.Server(self._handle, handler_cancellation=True),
            access_log=None,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        await self._listen()
        return self

    async def stop(self) -> None:
        """Stop listening, drop every connection and answer nothing more."""
        if self._runner is None:
            return
        self._closing = True
        self.faults.release()
        self._wake()
        self._abort_connections()
        runner, self._runner, self._site = self._runner, None, None
        await runner.cleanup()

    async def __aenter__(self) -> ConsulServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await self._site.start()
        if self._port == 0:
            self._port = int(self._runner.addresses[-1][1])

    async def go_down(self) -> None:
        """Stop listening (connections are refused) and drop every open connection."""
        if self._runner is None:
            raise RuntimeError("not started")
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        self._abort_connections()

    async def come_up(self) -> None:
        """Listen again, on the same port."""
        if self._runner is None:
            raise RuntimeError("not started")
        if self._site is None:
            await self._listen()

    @contextlib.asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """``async with server.down(): ...``: unreachable inside the block."""
        await self.go_down()
        try:
            yield
        finally:
            await self.come_up()

    @property
    def is_up(self) -> bool:
        return self._site is not None

    def _abort_connections(self) -> None:
        if self._runner is None or self._runner.server is None:
            return
        for handler in self._runner.server.connections:
            transport = handler.transport
            if transport is not None:
                transport.abort()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    # -- data, for tests -------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The raft index of the last write (≥ 1)."""
        return self._raft_index

    @property
    def entries(self) -> dict[str, KVEntry]:
        return dict(sorted(self._entries.items()))

    @property
    def tombstones(self) -> dict[str, int]:
        return dict(self._tombstones)

    def get(self, key: str) -> KVEntry | None:
        return self._entries.get(key)

    def put(self, key: str, value: str | bytes | None, flags: int = 0) -> int:
        """Write ``key`` as an HTTP PUT would; returns its new ``ModifyIndex``."""
        ok, idx = self._kv_set(key, _as_bytes(value), flags, cas=None)
        assert ok
        return idx

    def delete(self, key: str, *, recurse: bool = False) -> bool:
        """Delete ``key`` (or every key under the prefix); ``True`` if something went."""
        if recurse:
            return self._kv_delete_tree(key)
        return self._kv_delete(key, cas=None)[0]

    def reap_tombstones(self) -> None:
        """Forget deleted keys as Consul's tombstone reaper does (after ~15 minutes): a raft
        write of its own, after which a prefix's index can be lower than before."""
        if not self._tombstones:
            return
        self._tombstones.clear()
        self._table_index = self._next_index()
        self._wake()

    def wake_blocking(self) -> None:
        """Make every blocking query held now answer at once (with its current index, which
        may be unchanged), as Consul sometimes does."""
        self._wake(force=True)

    @property
    def waiting(self) -> int:
        """How many blocking queries are held right now."""
        return self._waiting

    # -- request log ----------------------------------------------------------------------------

    @property
    def blocking_queries(self) -> int:
        """How many blocking queries (GET with ``index`` > 0) arrived."""
        return sum(1 for r in self.requests if r.blocking)

    def kv_requests(self, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.key is not None and (method is None or r.method == method.upper())
        ]

    def clear_requests(self) -> None:
        self.requests.clear()

    # -- state machine (Consul's state store) ----------------------------------------------------

    def _next_index(self) -> int:
        self._raft_index += 1
        return self._raft_index

    def _wake(self, force: bool = False) -> None:
        event, self._changed = self._changed, asyncio.Event()
        if force:
            event.forced = True  # type: ignore[attr-defined]
        event.set()

    def _kv_set(self, key: str, value: bytes, flags: int, cas: int | None) -> tuple[bool, int]:
        existing = self._entries.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False, 0
            if cas != 0 and (existing is None or existing.modify_index != cas):
                return False, 0
        idx = self._next_index()
        self._entries[key] = KVEntry(
            key=key,
            value=value,
            flags=flags,
            create_index=existing.create_index if existing else idx,
            modify_index=idx,
            lock_index=existing.lock_index if existing else 0,
            session=existing.session if existing else "",
        )
        self._table_index = idx
        self._wake()
        return True, idx

    def _kv_delete(self, key: str, cas: int | None) -> tuple[bool, bool]:
        """``(result, deleted)``; a CAS delete of a missing key succeeds, as in Consul."""
        existing = self._entries.get(key)
        if existing is None:
            return True, False
        if cas is not None and existing.modify_index != cas:
            return False, False
        idx = self._next_index()
        del self._entries[key]
        self._tombstones[key] = idx
        self._table_index = idx
        self._wake()
        return True, True

    def _kv_delete_tree(self, prefix: str) -> bool:
        doomed = [k for k in self._entries if k.startswith(prefix)]
        if not doomed:
            return False
        idx = self._next_index()
        for key in doomed:
            del self._entries[key]
        self._tombstones[prefix] = idx  # Consul keeps one tombstone for a prefix delete
        self._table_index = idx
        self._wake()
        return True

    def _table_idx(self) -> int:
        return self._table_index

    def _single(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return max(self._table_idx(), 1), None

    def _prefix_index(self, prefix: str, entries: Iterable[KVEntry]) -> int:
        idx = max((e.modify_index for e in entries), default=0)
        if prefix:
            graves = (i for k, i in self._tombstones.items() if k.startswith(prefix))
            idx = max(idx, max(graves, default=0))
        else:
            idx = self._table_idx()
        if idx == 0:
            idx = self._table_idx()
        return max(idx, 1)

    def _list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        entries = [e for k, e in sorted(self._entries.items()) if k.startswith(prefix)]
        return self._prefix_index(prefix, entries), entries

    def _list_keys(self, prefix: str, separator: str) -> tuple[int, list[str]]:
        entries = [e for k, e in sorted(self._entries.items()) if k.startswith(prefix)]
        keys: list[str] = []
        for entry in entries:
            if separator:
                rest = entry.key[len(prefix) :]
                pos = rest.find(separator)
                if pos >= 0:
                    folded = entry.key[: len(prefix) + pos + len(separator)]
                    if not keys or keys[-1] != folded:
                        keys.append(folded)
                    continue
            keys.append(entry.key)
        return self._prefix_index(prefix, entries), keys

    # -- ACL -------------------------------------------------------------------------------

    @property
    def acl_enabled(self) -> bool:
        return self.acl_tokens is not None

    def _rules(self, token: str | None) -> Rules | None:
        """The token's rules (``None``: ACLs are off); raises ``_AclError`` for an unknown one."""
        if self.acl_tokens is None:
            return None
        if not token:
            return self.acl_tokens.get("", {})
        if token not in self.acl_tokens:
            raise _AclError("ACL not found")
        return self.acl_tokens[token]

    def _policy(self, rules: Rules | None, key: str) -> Policy:
        if rules is None:
            return "write"
        if isinstance(rules, str):
            return rules
        best: str | None = None
        for prefix in rules:
            if key.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        if best is not None:
            return rules[best]
        return "write" if self.default_policy == "allow" else "deny"

    def _can_read(self, rules: Rules | None, key: str) -> bool:
        return self._policy(rules, key) in ("read", "write")

    def _can_write(self, rules: Rules | None, key: str) -> bool:
        return self._policy(rules, key) == "write"

    def _can_write_prefix(self, rules: Rules | None, prefix: str) -> bool:
        if not self._can_write(rules, prefix):
            return False
        if rules is None or isinstance(rules, str):
            return True
        return all(p == "write" for k, p in rules.items() if k.startswith(prefix))

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        key = path[len(KV_PREFIX) :] if path.startswith(KV_PREFIX) else None
        query = request.query
        token = query.get("token") or request.headers.get("X-Consul-Token") or None
        if token is None:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip() or None
        index_text = query.get("index", "")
        blocking = (
            request.method == "GET"
            and key is not None
            and index_text.isdigit()
            and int(index_text) > 0
        )
        record = RecordedRequest(
            method=request.method,
            path=path,
            key=key,
            query=dict(query),
            token_header=request.headers.get("X-Consul-Token"),
            authorization=request.headers.get("Authorization"),
            token=token,
            blocking=blocking,
            index=int(index_text) if index_text.isdigit() else None,
            wait=query.get("wait"),
        )
        self.requests.append(record)
        try:
            response = await self._dispatch(request, key, token, record)
        except _BadRequest as exc:
            response = _text(400, str(exc))
        except _AclError as exc:
            response = _text(403, str(exc))
        record.status = response.status if response is not None else None
        if response is None:  # the connection was dropped on purpose
            await _never()
        assert response is not None
        return response

    async def _dispatch(
        self, request: web.BaseRequest, key: str | None, token: str | None, record: RecordedRequest
    ) -> web.StreamResponse | None:
        if request.path == "/v1/status/leader" and request.method == "GET":
            return _response(_Reply(200, _go_json("127.0.0.1:8300"), JSON))
        if key is None:
            return _text(404, "404 page not found")
        if request.method not in ("GET", "PUT", "DELETE"):
            return _text(405, f"method {request.method} not allowed")
        params = request.query
        dc = params.get("dc")
        if dc and dc != self.datacenter:
            return _text(500, "No path to datacenter")
        if request.method == "GET":
            return await self._get(request, key, token, record)
        if request.method == "PUT":
            return await self._put(request, key, token, record)
        return await self._delete(request, key, token, record)

    # GET

    async def _get(
        self, request: web.BaseRequest, key: str, token: str | None, record: RecordedRequest
    ) -> web.StreamResponse | None:
        params = request.query
        wait = 0.0
        if params.get("wait"):
            try:
                wait = parse_go_duration(params["wait"])
            except ValueError:
                raise _BadRequest("Invalid wait time") from None
        min_index = 0
        if params.get("index"):
            try:
                min_index = _parse_uint64(params["index"])
            except ValueError:
                raise _BadRequest("Invalid index") from None
        if "stale" in params and "consistent" in params:
            raise _BadRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
        consistency = (
            "stale" if "stale" in params else "consistent" if "consistent" in params else "leader"
        )
        rules = self._rules(token)
        keys_mode = "keys" in params
        recurse = "recurse" in params
        if not keys_mode and not recurse and key == "":
            raise _BadRequest("Missing key name")
        separator = params.get("separator", params.get("seperator", ""))
        pretty = "pretty" in params

        def read() -> _Reply:
            if keys_mode:
                reply = self._read_keys(key, separator, rules)
            elif recurse:
                reply = self._read_list(key, rules)
            else:
                reply = self._read_single(key, rules, raw="raw" in params)
            reply.pretty = pretty
            reply.headers["X-Consul-Effective-Consistency"] = consistency
            if self.acl_enabled:
                reply.headers["X-Consul-Default-Acl-Policy"] = self.default_policy
            return reply

        reply = read()
        if min_index > 0:
            reply = await self._block(read, reply, min_index, wait)
        return await self._respond(request, record, reply, read)

    def _meta(self, reply: _Reply, index: int) -> _Reply:
        reply.headers["X-Consul-Index"] = str(index)
        reply.headers["X-Consul-Knownleader"] = "true"
        reply.headers["X-Consul-Lastcontact"] = "0"
        return reply

    def _read_single(self, key: str, rules: Rules | None, raw: bool) -> _Reply:
        if not self._can_read(rules, key):
            raise _AclError("Permission denied")
        index, entry = self._single(key)
        if entry is None:
            return self._meta(_Reply(404), index)
        if raw:
            reply = _Reply(200, entry.value, "text/plain")
            reply.headers["X-Content-Type-Options"] = "nosniff"
            return self._meta(reply, index)
        objects = [entry.to_json()]
        return self._meta(_Reply(200, b"", JSON, entries=objects), index)

    def _read_list(self, prefix: str, rules: Rules | None) -> _Reply:
        index, entries = self._list(prefix)
        visible = [e for e in entries if self._can_read(rules, e.key)]
        reply = (
            _Reply(404)
            if not visible
            else _Reply(200, b"", JSON, entries=[e.to_json() for e in visible])
        )
        if len(visible) != len(entries):
            reply.headers["X-Consul-Results-Filtered-By-Acls"] = "true"
        return self._meta(reply, index)

    def _read_keys(self, prefix: str, separator: str, rules: Rules | None) -> _Reply:
        index, keys = self._list_keys(prefix, separator)
        visible = [k for k in keys if self._can_read(rules, k)]
        reply = _Reply(404) if not visible and prefix else _Reply(200, _go_json(visible), JSON)
        if len(visible) != len(keys):
            reply.headers["X-Consul-Results-Filtered-By-Acls"] = "true"
        return self._meta(reply, index)

    async def _block(
        self, read: Callable[[], _Reply], reply: _Reply, min_index: int, wait: float
    ) -> _Reply:
        timeout = DEFAULT_WAIT if wait <= 0 else min(wait, MAX_WAIT)
        if self.jitter:
            timeout += random.uniform(0, timeout / JITTER_FRACTION)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _reply_index(reply) <= min_index and not self._closing:
            event = self._changed
            self._waiting += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await event.wait()
            except TimeoutError:
                return read()
            finally:
                self._waiting -= 1
            reply = read()
            if getattr(event, "forced", False):
                break
        return reply

    # PUT / DELETE

    async def _put(
        self, request: web.BaseRequest, key: str, token: str | None, record: RecordedRequest
    ) -> web.StreamResponse | None:
        params = request.query
        if key == "":
            raise _BadRequest("Missing key name")
        if sum(1 for flag in ("cas", "acquire", "release") if flag in params) > 1:
            raise _BadRequest("Conflicting flags: " + request.query_string)
        if "acquire" in params or "release" in params:
            raise _BadRequest("sessions (acquire/release) are not supported by this test server")
        flags = 0
        if "flags" in params:
            try:
                flags = _parse_uint64(params["flags"])
            except ValueError:
                return _text(500, _go_parse_error(params["flags"]))
        cas: int | None = None
        if "cas" in params:
            try:
                cas = _parse_uint64(params["cas"])
            except ValueError:
                return _text(500, _go_parse_error(params["cas"]))
        length = request.content_length
        body = await request.read()
        if len(body) > self.max_value_size:
            size = length if length is not None else len(body)
            return _text(
                413,
                f"Request body({size} bytes) too large, max size: {self.max_value_size} bytes. "
                "See https://developer.hashicorp.com/docs/agent/config/config-files"
                "#kv_max_value_size.",
            )
        rules = self._rules(token)
        if not self._can_write(rules, key):
            raise _AclError("Permission denied")

        def write() -> _Reply:
            ok, _ = self._kv_set(key, body, flags, cas)
            return _Reply(200, _go_json(ok), JSON)

        return await self._respond_write(request, record, write)

    async def _delete(
        self, request: web.BaseRequest, key: str, token: str | None, record: RecordedRequest
    ) -> web.StreamResponse | None:
        params = request.query
        recurse = "recurse" in params
        if recurse and "cas" in params:
            raise _BadRequest("Conflicting flags: " + request.query_string)
        if not recurse and key == "":
            raise _BadRequest("Missing key name")
        cas: int | None = None
        if "cas" in params:
            try:
                cas = _parse_uint64(params["cas"])
            except ValueError:
                return _text(500, _go_parse_error(params["cas"]))
        rules = self._rules(token)
        allowed = self._can_write_prefix(rules, key) if recurse else self._can_write(rules, key)
        if not allowed:
            raise _AclError("Permission denied")

        def write() -> _Reply:
            if recurse:
                self._kv_delete_tree(key)
                return _Reply(200, _go_json(True), JSON)
            ok, _ = self._kv_delete(key, cas)
            return _Reply(200, _go_json(ok if cas is not None else True), JSON)

        return await self._respond_write(request, record, write)

    # responses and faults

    async def _respond_write(
        self, request: web.BaseRequest, record: RecordedRequest, write: Callable[[], _Reply]
    ) -> web.StreamResponse | None:
        fault = self.faults._take(request.method)
        if fault is None:
            return _response(write())
        record.fault = fault.kind
        early = await self._early_fault(request, fault)
        if early is not False:
            return early
        return await self._late_fault(request, fault, write())

    async def _respond(
        self,
        request: web.BaseRequest,
        record: RecordedRequest,
        reply: _Reply,
        read: Callable[[], _Reply],
    ) -> web.StreamResponse | None:
        fault = self.faults._take(request.method)
        if fault is None:
            return _response(reply)
        record.fault = fault.kind
        early = await self._early_fault(request, fault)
        if early is not False:
            return early
        # The data may have changed during a delay or a hang: answer with what is current.
        if fault.delay or fault.kind is FaultKind.HANG:
            reply = read()
        return await self._late_fault(request, fault, reply)

    async def _early_fault(
        self, request: web.BaseRequest, fault: Fault
    ) -> web.StreamResponse | Literal[False] | None:
        """Faults that replace the answer; ``False`` when the answer is still to be made."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.kind is FaultKind.HANG:
            if not self._closing:
                await self.faults._released.wait()
            return False
        if fault.kind in (FaultKind.HTTP_500, FaultKind.HTTP_429):
            status = 500 if fault.kind is FaultKind.HTTP_500 else 429
            return _text(
                status, fault.body if fault.body is not None else _DEFAULT_BODIES[fault.kind]
            )
        if fault.kind is FaultKind.DISCONNECT:
            if request.transport is not None:
                request.transport.abort()
            return None
        return False

    async def _late_fault(
        self, request: web.BaseRequest, fault: Fault, reply: _Reply
    ) -> web.StreamResponse | None:
        kind = fault.kind
        if kind is FaultKind.INDEX_BACKWARDS:
            reply.headers["X-Consul-Index"] = str(fault.index)
        elif kind is FaultKind.NO_INDEX:
            reply.headers.popall("X-Consul-Index", None)
        elif kind is FaultKind.INVALID_JSON:
            reply.entries = None
            reply.body = INVALID_JSON_BODY if fault.body is None else fault.body.encode()
        elif kind in (FaultKind.INVALID_BASE64, FaultKind.INVALID_UTF8) and reply.entries:
            bad = (
                INVALID_BASE64_VALUE
                if kind is FaultKind.INVALID_BASE64
                else base64.b64encode(INVALID_UTF8_BYTES).decode("ascii")
            )
            reply.entries = [{**entry, "Value": bad} for entry in reply.entries]
        elif kind in (FaultKind.DROP_AFTER_HEADERS, FaultKind.DROP_MID_BODY):
            await self._send_and_drop(request, reply, kind is FaultKind.DROP_MID_BODY)
            return None
        return _response(reply)

    async def _send_and_drop(self, request: web.BaseRequest, reply: _Reply, half: bool) -> None:
        transport = request.transport
        if transport is None:
            return
        body = _body(reply)
        lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'OK')}"]
        headers = CIMultiDict(reply.headers)
        if reply.content_type:
            headers["Content-Type"] = reply.content_type
        headers["Content-Length"] = str(len(body))
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head + (body[: len(body) // 2] if half else b""))
        transport.close()  # flushes what was written, then closes


_REASONS = {200: "OK", 404: "Not Found"}


async def _never() -> None:
    """Park a handler whose connection was closed on purpose until aiohttp cancels it."""
    await asyncio.Event().wait()


def _body(reply: _Reply) -> bytes:
    if reply.entries is not None:
        return _go_json(reply.entries, reply.pretty)
    return reply.body


def _response(reply: _Reply) -> web.Response:
    body = _body(reply)
    response = web.Response(status=reply.status, body=body or None)
    response.headers.extend(reply.headers)
    if reply.content_type:
        response.headers["Content-Type"] = reply.content_type
    return response


def _text(status: int, text: str) -> web.Response:
    response = web.Response(status=status, body=text.encode())
    response.headers["Content-Type"] = TEXT
    return response


def _reply_index(reply: _Reply) -> int:
    return int(reply.headers.get("X-Consul-Index", "0"))


def _parse_uint64(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError(text)
    value = int(text)
    if value >= 2**64:
        raise ValueError(text)
    return value


def _go_parse_error(text: str) -> str:
    return f'strconv.ParseUint: parsing "{text}": invalid syntax'


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


# --------------------------------------------------------------------------------------------
# pytest


def consul_server_fixture(**options: Any) -> Any:
    """A pytest fixture running a :class:`ConsulServer` for one test::

    consul = consul_server_fixture()                        # in a test module
    acl_consul = consul_server_fixture(acl_tokens={"t": "read"})

    async def test_x(consul: ConsulServer) -> None: ...
    """

    @pytest_asyncio.fixture
    async def fixture() -> AsyncIterator[ConsulServer]:
        async with ConsulServer(**options) as server:
            yield server

    return fixture
