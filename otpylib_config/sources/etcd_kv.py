"""A small client for etcd's v3 API through its JSON gRPC gateway (docs/etcd.md).

Why the gateway over HTTP and not an asyncio etcd client: aiohttp is already a dependency
(the Consul source uses it), so this needs nothing new; the gateway (``POST /v3/kv/range``,
``/v3/watch``, ``/v3/auth/authenticate``) is served by every etcd 3.4+ server on its client
port, with no flag to turn on; and the few calls a configuration source makes (a range
read, one watch stream, authenticate) are plain JSON, while the asyncio etcd clients on
PyPI are either unmaintained or pull in grpcio and generated protobuf code.

What this module does: one request to one of several endpoints, failing over to the next
on connection errors, timeouts and 5xx (an etcd member without a leader answers 503);
authentication (a token in the ``Authorization`` header, obtained again once when etcd
says it is invalid or expired); the watch stream as a sequence of :class:`WatchMessage`.
Everything etcd can answer becomes either a decoded value or an :class:`EtcdError` whose
message says what went wrong and where, and never carries the password or the token.
What the keys and values mean is the source's business (:mod:`otpylib_config.sources.etcd`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

logger = logging.getLogger("otpylib_config")

MAX_MESSAGE = 64 << 20
"""The largest answer (a range read, or one message of the watch stream) read, in bytes:
etcd stores values up to ``--max-request-bytes`` (1.5 MiB by default), so this leaves room
for many of them while a misbehaving server cannot make us buffer without bound."""

CHUNK = 64 << 10

# gRPC codes the gateway puts in ``code`` (https://grpc.io/docs/guides/status-codes/).
UNAUTHENTICATED = 16
PERMISSION_DENIED = 7
FAILED_PRECONDITION = 9
AUTH_NOT_ENABLED = "authentication is not enabled"

REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}
"""Sent with the watch: the member ends the stream when it loses its leader (what etcd's own
client calls ``WithRequireLeader``), so a watch on a member cut off from the cluster fails
over instead of waiting silently."""


class EtcdError(Exception):
    """A request that gave no usable answer. ``retry_after``: retry no sooner (credentials,
    permissions: they need an operator)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(EtcdError):
    """This endpoint did not answer (or answered 5xx): the next one may. ``stale``: it
    closed a kept-alive connection (it restarted, say): the same endpoint may answer."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class TokenRejected(EtcdError):
    """etcd called the token invalid or expired: authenticate again."""


class LeaseNotFound(EtcdError):
    """etcd does not know the lease (it expired, was revoked, or etcd lost its data)."""


LEASE_NOT_FOUND = "requested lease not found"


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    version: int = 0


@dataclass(frozen=True, slots=True)
class RangeRead:
    revision: int
    """``header.revision``: the store's revision the read saw; a watch resumes after it."""
    kvs: tuple[KV, ...]


@dataclass(frozen=True, slots=True)
class Event:
    deleted: bool
    kv: KV
    prev_kv: KV | None


@dataclass(frozen=True, slots=True)
class WatchMessage:
    """One ``result`` of the watch stream. With no events and neither created nor canceled,
    it is a progress notification: every event up to ``revision`` has been sent."""

    revision: int
    events: tuple[Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""

    @property
    def progress(self) -> bool:
        return not (self.events or self.created or self.canceled)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range read or a watch cover every key starting with
    ``prefix`` (etcd's ``clientv3.GetPrefixRangeEnd``); ``b"\\0"`` (all keys) for ``b""``."""
    for index in range(len(prefix) - 1, -1, -1):
        if prefix[index] < 0xFF:
            return prefix[:index] + bytes([prefix[index] + 1])
    return b"\0"


def ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """The TLS context for ``https`` endpoints: ``None`` (aiohttp's defaults) when no file
    is given; else the system's trust store or ``ca_file``, and the client certificate."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if key_file is not None and cert_file is None:
        raise ValueError("key_file= needs cert_file=")
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(eq=False)
class EtcdClient:
    """Requests to the etcd members at ``endpoints``, one session, one token.

    ``current`` is the endpoint that answered last: requests start there and move on to the
    next (in the order given, wrapping around) when it does not answer.
    """

    session: aiohttp.ClientSession
    endpoints: Sequence[str]
    credentials: Credentials | None = None
    tls: ssl.SSLContext | None = None
    slow_retry: float = 30.0
    current: int = 0
    _token: str | None = field(default=None, repr=False)
    _authenticated: bool = False

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    # -- reads -----------------------------------------------------------------------------

    async def range(self, key: bytes, range_end: bytes | None, *, timeout: float) -> RangeRead:
        """``POST /v3/kv/range``: every key in ``[key, range_end)``, or just ``key``."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        what = f"range {_show(key)}" if range_end is not None else f"key {_show(key)}"
        answer = await self.call("/v3/kv/range", body, what=what, timeout=timeout)
        kvs = answer.get("kvs", [])
        if not isinstance(kvs, list):
            raise EtcdError(f"etcd's answer for {what}: kvs is not a list")
        return RangeRead(_revision(answer, what), tuple(decode_kv(kv, what) for kv in kvs))

    async def call(
        self, path: str, body: dict[str, Any], *, what: str, timeout: float
    ) -> dict[str, Any]:
        """One unary request, tried on each endpoint in turn until one answers; with a
        token obtained again once if etcd calls it invalid. Bounded by ``timeout`` in all."""
        try:
            async with asyncio.timeout(timeout):
                return await self._call(path, body, what, timeout)
        except TimeoutError:
            raise EtcdError(f"etcd did not answer {what} within {timeout:g}s") from None

    async def _call(
        self, path: str, body: dict[str, Any], what: str, timeout: float
    ) -> dict[str, Any]:
        try:
            return await self._failover(path, body, what, timeout)
        except TokenRejected:
            self.forget_token()  # expired, or etcd restarted: once more
            return await self._failover(path, body, what, timeout)

    async def _failover(
        self, path: str, body: dict[str, Any], what: str, timeout: float
    ) -> dict[str, Any]:
        failures: list[str] = []
        stale_retried = False
        while len(failures) < len(self.endpoints):
            try:
                await self._ensure_token(timeout)
                return await self._post(path, body, what, timeout / len(self.endpoints))
            except Unreachable as exc:
                if exc.stale and not stale_retried:
                    stale_retried = True  # once, on a new connection to the same member
                    continue
                failures.append(str(exc))
                self.rotate()
        raise EtcdError(f"no etcd endpoint answered {what}: " + "; ".join(failures))

    def rotate(self) -> None:
        """Move on to the next endpoint (after the last one, the first again)."""
        self.current = (self.current + 1) % len(self.endpoints)

    async def _post(
        self, path: str, body: dict[str, Any], what: str, limit: float
    ) -> dict[str, Any]:
        """One request to the current endpoint, bounded by ``limit`` (its share of the
        whole call's timeout, so that a member that hangs leaves time for the next)."""
        endpoint = self.endpoint
        try:
            async with self.session.post(
                endpoint.rstrip("/") + path,
                json=body,
                headers=self._headers(),
                ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,  # a redirect would carry the token elsewhere
            ) as response:
                raw = await read_bounded(response.content, what)
                return self._answer(endpoint, response.status, raw, what)
        except TimeoutError:
            raise Unreachable(f"{endpoint} did not answer within {limit:g}s") from None
        except aiohttp.ClientError as exc:
            stale = isinstance(exc, aiohttp.ServerDisconnectedError)
            raise Unreachable(f"{endpoint}: {_reason(exc)}", stale=stale) from None

    def _answer(self, endpoint: str, status: int, raw: bytes, what: str) -> dict[str, Any]:
        if status >= 500:
            raise Unreachable(f"{endpoint} answered {status}: {_text(raw)}")
        answer = _json(raw, f"{what} from {endpoint}")
        if status == 200 and isinstance(answer, dict):
            return answer
        raise self._failure(endpoint, status, answer, what)

    def _failure(self, endpoint: str, status: int, answer: Any, what: str) -> EtcdError:
        message = _message(answer) or f"HTTP {status}"
        code = answer.get("code") if isinstance(answer, dict) else None
        if code == UNAUTHENTICATED and "token" in message and self.credentials is not None:
            return TokenRejected(f"etcd at {endpoint} rejected the auth token: {message}")
        if code in (UNAUTHENTICATED, PERMISSION_DENIED):
            return EtcdError(
                f"etcd at {endpoint} refused {what}: {message}", retry_after=self.slow_retry
            )
        return EtcdError(f"etcd at {endpoint} answered {status} to {what}: {message}")

    # -- writes and leases (the fleet announcer: docs/fleet.md) ----------------------------

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, timeout: float) -> int:
        """``POST /v3/kv/put``: write ``key`` (attached to ``lease`` unless 0); the revision
        of the write. Raises :class:`LeaseNotFound` if etcd does not know the lease."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        answer = await self._lease_call("/v3/kv/put", body, f"the put of {_show(key)}", timeout)
        return _revision(answer, f"the put of {_show(key)}")

    async def delete(self, key: bytes, *, timeout: float) -> int:
        """``POST /v3/kv/deleterange`` of one key; how many keys were deleted (0 or 1)."""
        what = f"the delete of {_show(key)}"
        answer = await self.call(
            "/v3/kv/deleterange", {"key": _b64(key)}, what=what, timeout=timeout
        )
        return _int(answer, "deleted", what)

    async def grant(self, ttl: int, *, timeout: float) -> tuple[int, int]:
        """``POST /v3/lease/grant``: a new lease of ``ttl`` seconds; its ``(id, ttl)``."""
        what = f"the grant of a {ttl}s lease"
        answer = await self.call("/v3/lease/grant", {"TTL": str(ttl)}, what=what, timeout=timeout)
        if answer.get("error"):
            raise EtcdError(f"etcd refused {what}: {answer['error']}")
        lease, granted = _int(answer, "ID", what), _int(answer, "TTL", what)
        if lease == 0 or granted <= 0:
            raise EtcdError(f"etcd's answer to {what} holds no lease")
        return lease, granted

    async def keepalive(self, lease: int, *, timeout: float) -> int:
        """One ``POST /v3/lease/keepalive`` round: the lease's TTL from now, in seconds;
        0 when etcd no longer has the lease (expired, revoked, or lost with etcd's data)."""
        what = f"the keepalive of lease {lease:x}"
        try:
            answer = await self._lease_call(
                "/v3/lease/keepalive", {"ID": str(lease)}, what, timeout
            )
        except LeaseNotFound:
            return 0
        error = answer.get("error")
        if error is not None:  # a stream's error comes with status 200
            text = _message(error) or "unknown error"
            if LEASE_NOT_FOUND in text:
                return 0
            raise EtcdError(f"etcd failed {what}: {text}")
        result = answer.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"etcd's answer to {what} has no result")
        return _int(result, "TTL", what)

    async def revoke(self, lease: int, *, timeout: float) -> bool:
        """``POST /v3/lease/revoke``: end the lease and delete every key attached to it;
        ``False`` if etcd did not know it (already gone)."""
        what = f"the revoke of lease {lease:x}"
        try:
            await self._lease_call("/v3/lease/revoke", {"ID": str(lease)}, what, timeout)
        except LeaseNotFound:
            return False
        return True

    async def _lease_call(
        self, path: str, body: dict[str, Any], what: str, timeout: float
    ) -> dict[str, Any]:
        """:meth:`call`, with etcd's "requested lease not found" as :class:`LeaseNotFound`."""
        try:
            return await self.call(path, body, what=what, timeout=timeout)
        except LeaseNotFound:
            raise
        except EtcdError as exc:
            if LEASE_NOT_FOUND in str(exc) and not isinstance(exc, Unreachable):
                raise LeaseNotFound(f"etcd does not know the lease of {what}") from None
            raise

    # -- authentication --------------------------------------------------------------------

    async def _ensure_token(self, timeout: float) -> None:
        """Authenticate before the first request, and again after a token was rejected."""
        if self.credentials is None or self._authenticated:
            return
        body = {"name": self.credentials.username, "password": self.credentials.password}
        user = self.credentials.username
        logger.debug("authenticating to etcd at %s as user %r", self.endpoint, user)
        what = f"the authentication of user {user!r}"
        try:
            answer = await self._post("/v3/auth/authenticate", body, what, timeout)
        except EtcdError as exc:
            if AUTH_NOT_ENABLED in str(exc):
                self._token, self._authenticated = None, True  # as etcd's own client does
                return
            if isinstance(exc, Unreachable):
                raise
            raise EtcdError(
                f"etcd refused the credentials of user {user!r}: {_after_colon(exc)}",
                retry_after=self.slow_retry,
            ) from None
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdError(f"etcd's answer to {what} holds no token")
        self._token, self._authenticated = token, True

    def forget_token(self) -> None:
        """etcd rejected the token: the next request authenticates first."""
        self._token, self._authenticated = None, False

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _ssl(self) -> ssl.SSLContext | bool:
        return self.tls if self.tls is not None else True

    # -- watching --------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, key: bytes, range_end: bytes | None, start_revision: int, *, connect: float
    ) -> AsyncIterator[WatchStream]:
        """Open one watch stream on the current endpoint, from ``start_revision``, with
        ``prev_kv`` and ``progress_notify``. Raises ``Unreachable`` if the endpoint does not
        answer (the caller moves on to the next) and ``TokenRejected`` for a rejected token."""
        await self._ensure_token(connect)
        request: dict[str, Any] = {
            "key": _b64(key),
            "start_revision": str(start_revision),
            "prev_kv": True,
            "progress_notify": True,
        }
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        endpoint, what = self.endpoint, f"the watch of {_show(key)}"
        try:
            response = await self.session.post(
                endpoint.rstrip("/") + "/v3/watch",
                json={"create_request": request},
                headers={**self._headers(), **REQUIRE_LEADER},
                ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect),
                allow_redirects=False,
            )
        except TimeoutError:
            raise Unreachable(f"{endpoint} did not connect within {connect:g}s") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"{endpoint}: {_reason(exc)}") from None
        try:
            if response.status != 200:
                raw = await read_bounded(response.content, what)
                raise self._answer_error(endpoint, response.status, raw, what)
            yield WatchStream(self, response, endpoint, what)
        finally:
            response.close()  # a stream: the connection is not reused

    def _answer_error(self, endpoint: str, status: int, raw: bytes, what: str) -> EtcdError:
        if status >= 500:
            return Unreachable(f"{endpoint} answered {status}: {_text(raw)}")
        return self._failure(endpoint, status, _json(raw, what), what)

    def _watch_message(self, document: Any, endpoint: str, what: str) -> WatchMessage:
        if not isinstance(document, dict):
            raise EtcdError(f"etcd sent {what} a message that is not an object")
        if "error" in document:
            raise self._stream_error(document["error"], endpoint, what)
        result = document.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"etcd sent {what} a message without a result")
        message = decode_watch(result, what)
        if message.canceled and "invalid auth token" in message.cancel_reason:
            raise TokenRejected(f"etcd at {endpoint} rejected the auth token of {what}")
        return message

    def _stream_error(self, error: Any, endpoint: str, what: str) -> EtcdError:
        text = _message(error) or "unknown error"
        code = error.get("grpc_code", error.get("code")) if isinstance(error, dict) else None
        if code == UNAUTHENTICATED and "token" in text:
            return TokenRejected(f"etcd at {endpoint} rejected the auth token of {what}")
        return Unreachable(f"{endpoint} ended {what}: {text}")


class WatchStream:
    """The messages of one open watch stream, read one at a time.

    ``next`` may be cancelled (a timeout) and called again: what was read of a message so
    far stays in the buffer. Not ``readline``: aiohttp refuses lines longer than its
    buffer (128 KiB), and one event with a large value is longer.
    """

    def __init__(
        self, client: EtcdClient, response: aiohttp.ClientResponse, endpoint: str, what: str
    ) -> None:
        self.client, self.response, self.endpoint, self.what = client, response, endpoint, what
        self._buffer = bytearray()

    async def next(self) -> WatchMessage:
        line = await self._line()
        document = _json(line, f"{self.what} from {self.endpoint}")
        return self.client._watch_message(document, self.endpoint, self.what)

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return line
                continue
            if len(self._buffer) > MAX_MESSAGE:
                raise EtcdError(f"etcd sent {self.what} a message larger than {MAX_MESSAGE} bytes")
            self._buffer += await self._chunk()

    async def _chunk(self) -> bytes:
        try:
            chunk = await self.response.content.readany()
        except aiohttp.ClientError as exc:
            raise Unreachable(f"{self.endpoint} broke off {self.what}: {_reason(exc)}") from None
        if not chunk:
            raise Unreachable(f"{self.endpoint} closed {self.what}")
        return chunk


# -- decoding ----------------------------------------------------------------------------------


def decode_kv(item: Any, where: str) -> KV:
    """One ``mvccpb.KeyValue`` as the gateway sends it: base64 bytes, int64 as strings."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise EtcdError(f"etcd's answer for {where} holds an entry without a key")
    key = _unb64(item["key"], where, "key")
    value = _unb64(item.get("value", ""), where, f"the value of {_show(key)}")
    return KV(key, value, _int(item, "mod_revision", where), _int(item, "version", where))


def decode_watch(result: dict[str, Any], what: str) -> WatchMessage:
    events = result.get("events", [])
    if not isinstance(events, list):
        raise EtcdError(f"etcd sent {what} events that are not a list")
    return WatchMessage(
        revision=_revision(result, what, required=False),
        events=tuple(_event(event, what) for event in events),
        created=result.get("created") is True,
        canceled=result.get("canceled") is True,
        compact_revision=_int(result, "compact_revision", what),
        cancel_reason=str(result.get("cancel_reason", "")),
    )


def _event(item: Any, what: str) -> Event:
    if not isinstance(item, dict) or "kv" not in item:
        raise EtcdError(f"etcd sent {what} an event without a kv")
    kind = item.get("type", "PUT")
    if kind not in ("PUT", "DELETE"):
        raise EtcdError(f"etcd sent {what} an event of type {kind!r}")
    prev = item.get("prev_kv")
    prev_kv = decode_kv(prev, what) if prev else None
    return Event(kind == "DELETE", decode_kv(item["kv"], what), prev_kv)


def _revision(answer: dict[str, Any], what: str, *, required: bool = True) -> int:
    header = answer.get("header")
    if not isinstance(header, dict) or (required and "revision" not in header):
        if not required:
            return 0
        raise EtcdError(f"etcd's answer for {what} has no header.revision")
    return _int(header, "revision", what)


def _int(item: dict[str, Any], name: str, where: str) -> int:
    """proto3 JSON sends int64 as a decimal string, and leaves out zeros."""
    raw = item.get(name, 0)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise EtcdError(f"etcd's answer for {where}: {name} {raw!r} is not an integer") from None


def _unb64(text: Any, where: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise EtcdError(f"etcd's answer for {where}: {what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EtcdError(f"etcd's answer for {where}: {what} is not valid base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _show(key: bytes) -> str:
    """A key as messages name it: text if it is UTF-8, else its bytes' repr."""
    try:
        return repr(key.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(key)


# -- reading bodies ------------------------------------------------------------------------------


async def read_bounded(content: aiohttp.StreamReader, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise EtcdError(f"etcd's answer for {what} is larger than {MAX_MESSAGE} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EtcdError(f"etcd's answer for {what} is not valid JSON: {exc}") from None


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        text = answer.get("message") or answer.get("error")
        return str(text).removeprefix("etcdserver: ") if isinstance(text, str) else ""
    return ""


def _after_colon(exc: EtcdError) -> str:
    return str(exc).rsplit(": ", 1)[-1]


def _reason(exc: aiohttp.ClientError) -> str:
    return str(exc) or type(exc).__name__


def _text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
