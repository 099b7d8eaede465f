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
message says what went wrong and where, and never carries the password or the token: every
error is raised outside the ``except`` block that caught its cause, so its ``__context__``
(an aiohttp error whose ``request_info.headers`` hold the token, say) is ``None``.
What the keys and values mean is the source's business (:mod:`otpylib_config.sources.etcd`).

Importing this module does not import aiohttp (the functions that talk to etcd do), so
option objects can use :func:`check_endpoints` and :data:`DEFAULT_ENDPOINT` for nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("otpylib_config")

MAX_MESSAGE = 64 << 20
"""The largest answer (a range read, or one message of the watch stream) read, in bytes:
etcd stores values up to ``--max-request-bytes`` (1.5 MiB by default), so this leaves room
for many of them while a misbehaving server cannot make us buffer without bound."""

CHUNK = 64 << 10

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
"""etcd's client URL on the local machine, where ``etcdctl`` looks by default."""

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


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """``(key, range_end)`` of every key starting with ``prefix``, as ``clientv3.WithPrefix``
    makes it: etcd refuses an empty ``key``, so the empty prefix (the whole keyspace) is
    ``(b"\\0", b"\\0")``: from the smallest key on, with no end."""
    if not prefix:
        return b"\0", b"\0"
    return prefix, prefix_end(prefix)


def check_endpoints(endpoints: str | Sequence[str], what: str) -> tuple[str, ...]:
    """``endpoints`` (one URL or several) as a tuple of ``http(s)://host[:port]`` URLs; a
    ``ValueError`` naming ``what`` otherwise. An endpoint with credentials in it is refused
    without being echoed; one with a path, a query or a fragment is refused (requests go to
    ``endpoint + "/v3/..."``), named without its query or fragment."""
    found = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
    if not found:
        raise ValueError(f"{what} needs at least one etcd endpoint")
    for endpoint in found:
        if not isinstance(endpoint, str) or "@" in endpoint:  # never echo what may be a secret
            raise ValueError(
                f"{what}: an etcd endpoint is a URL without credentials: use username="
            )
        problem = _endpoint_problem(endpoint)
        if problem:
            shown = endpoint.split("?", 1)[0].split("#", 1)[0]
            raise ValueError(
                f"{what}: an etcd endpoint is an http(s)://host:port URL, got {shown!r} ({problem})"
            )
    return found


def _endpoint_problem(endpoint: str) -> str:
    """What is wrong with ``endpoint`` as a base URL; ``""`` if nothing."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 (raises ValueError for a port that is no number or too big)
    except ValueError:
        return "not a URL with a valid port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not http(s)://host"
    if parts.path not in ("", "/"):
        return "it has a path"
    if parts.query or "?" in endpoint:
        return "it has a query"
    if parts.fragment or "#" in endpoint:
        return "it has a fragment"
    return ""


class _Encrypted(Exception):
    """The key file is encrypted: OpenSSL asked for a password (we have none to give)."""


def ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """The TLS context for ``https`` endpoints: ``None`` (aiohttp's defaults) when no file
    is given; else the system's trust store or ``ca_file``, and the client certificate.

    The files are read now: one that is missing, unreadable or not what it should be is a
    ``ValueError`` naming the option and the path (``ca_file '/typo': No such file or
    directory``); the caller puts its own name in front."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if key_file is not None and cert_file is None:
        raise ValueError("key_file= needs cert_file=")
    for option, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if path is not None:
            _check_readable(option, path)
    try:
        context = ssl.create_default_context(cafile=ca_file)  # else the system's trust store
    except (OSError, ValueError) as exc:
        reason = _ssl(exc)
        raise ValueError(f"ca_file {ca_file!r}: holds no PEM certificate ({reason})") from None
    if cert_file is not None:
        problem = _load_cert_chain(context, cert_file, key_file)
        if problem is not None:
            raise ValueError(problem)
    return context


def _check_readable(option: str, path: str) -> None:
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ValueError(f"{option} must be a path, got {path!r}")
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"{option} {os.fspath(path)!r}: {reason}") from None


def _load_cert_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> str | None:
    """Load the client certificate; what is wrong with which file, or ``None``."""

    def no_password() -> str:
        raise _Encrypted  # never OpenSSL's prompt on the terminal

    try:
        context.load_cert_chain(cert_file, key_file, password=no_password)
    except _Encrypted:
        where = f"key_file {key_file!r}" if key_file else f"cert_file {cert_file!r}"
        return f"{where}: the private key is encrypted (give an unencrypted key)"
    except (OSError, ValueError) as exc:
        reason = _ssl(exc)
    else:
        return None
    if "KEY_VALUES_MISMATCH" in reason:
        if key_file is None:
            return f"cert_file {cert_file!r}: its private key does not match its certificate"
        return f"key_file {key_file!r}: does not match the certificate of cert_file {cert_file!r}"
    try:  # which file is wrong: does the certificate file hold a certificate?
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except (OSError, ValueError):
        return f"cert_file {cert_file!r}: holds no PEM certificate ({reason})"
    if key_file is None:
        return f"cert_file {cert_file!r}: holds no private key (give key_file=) ({reason})"
    return f"key_file {key_file!r}: holds no PEM private key ({reason})"


def _ssl(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


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
        what = describe(key, range_end)
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await self._call(path, body, what, timeout)
        raise EtcdError(f"etcd did not answer {what} within {timeout:g}s")

    async def _call(
        self, path: str, body: dict[str, Any], what: str, timeout: float
    ) -> dict[str, Any]:
        try:
            return await self._failover(path, body, what, timeout)
        except TokenRejected:
            self.forget_token()  # expired, or etcd restarted: once more (outside the except)
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
        import aiohttp

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
            error = Unreachable(f"{endpoint} did not answer within {limit:g}s")
        except aiohttp.ClientError as exc:
            stale = isinstance(exc, aiohttp.ServerDisconnectedError)
            error = Unreachable(f"{endpoint}: {_reason(exc)}", stale=stale)
        raise error  # outside the except: no __context__ (its request_info holds the token)

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
        answer = await self._lease_call("/v3/kv/put", body, f"the put of {show_key(key)}", timeout)
        return _revision(answer, f"the put of {show_key(key)}")

    async def delete(self, key: bytes, *, timeout: float) -> int:
        """``POST /v3/kv/deleterange`` of one key; how many keys were deleted (0 or 1)."""
        what = f"the delete of {show_key(key)}"
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
            if LEASE_NOT_FOUND not in str(exc) or isinstance(exc, Unreachable):
                raise
        raise LeaseNotFound(f"etcd does not know the lease of {what}")

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
            refused: str | None = _after_colon(exc)
        else:
            refused = None
        if refused is not None:
            raise EtcdError(
                f"etcd refused the credentials of user {user!r}: {refused}",
                retry_after=self.slow_retry,
            )
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
        ``prev_kv`` and ``progress_notify``; it is open once etcd sent its first message
        (``created``), which the stream's first ``next`` returns. Raises ``Unreachable`` if
        the endpoint does not answer, or does not open the stream within ``connect`` (the
        caller moves on to the next) and ``TokenRejected`` for a rejected token."""
        await self._ensure_token(connect)
        request: dict[str, Any] = {
            "key": _b64(key),
            "start_revision": str(start_revision),
            "prev_kv": True,
            "progress_notify": True,
        }
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        whole = key == b"\0" and range_end == b"\0"
        what = "the watch of the whole keyspace" if whole else f"the watch of {show_key(key)}"
        stream = await self._open_watch(request, what, connect)
        try:
            yield stream
        finally:
            stream.response.close()  # a stream: the connection is not reused

    async def _open_watch(self, request: dict[str, Any], what: str, connect: float) -> WatchStream:
        """``POST /v3/watch`` and its first message, both within ``connect``: a member that
        accepts the connection and never answers (or never creates the watch) is
        ``Unreachable``, as one that refuses it is."""
        import aiohttp

        endpoint = self.endpoint
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(connect):
                response = await self.session.post(
                    endpoint.rstrip("/") + "/v3/watch",
                    json={"create_request": request},
                    headers={**self._headers(), **REQUIRE_LEADER},
                    ssl=self._ssl(),
                    timeout=aiohttp.ClientTimeout(total=None),  # a stream: bounded above
                    allow_redirects=False,
                )
                if response.status != 200:
                    raw = await read_bounded(response.content, what)
                    error = self._answer_error(endpoint, response.status, raw, what)
                else:
                    stream = WatchStream(self, response, endpoint, what)
                    await stream.open()
                    return stream
        except TimeoutError:
            error = Unreachable(f"{endpoint} did not open {what} within {connect:g}s")
        except aiohttp.ClientError as exc:
            error = Unreachable(f"{endpoint}: {_reason(exc)}")
        except BaseException:
            if response is not None:
                response.close()
            raise
        if response is not None:
            response.close()
        raise error  # outside the except: no __context__ (its request_info holds the token)

    def _answer_error(self, endpoint: str, status: int, raw: bytes, what: str) -> EtcdError:
        if status >= 500:
            return Unreachable(f"{endpoint} answered {status}: {_text(raw)}")
        return self._failure(endpoint, status, _json(raw, f"{what} from {endpoint}"), what)

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
        self._lines = Lines(what)
        self._first: WatchMessage | None = None

    async def open(self) -> None:
        """Wait for etcd's first message (``created``); the first ``next`` returns it."""
        self._first = await self._read()

    async def next(self) -> WatchMessage:
        first, self._first = self._first, None
        return first if first is not None else await self._read()

    async def _read(self) -> WatchMessage:
        line = self._lines.pop()
        while line is None:
            self._lines.feed(await self._chunk())
            line = self._lines.pop()
        document = _json(line, f"{self.what} from {self.endpoint}")
        return self.client._watch_message(document, self.endpoint, self.what)

    async def _chunk(self) -> bytes:
        import aiohttp

        try:
            chunk = await self.response.content.readany()
        except aiohttp.ClientError as exc:
            error = Unreachable(f"{self.endpoint} broke off {self.what}: {_reason(exc)}")
        else:
            if chunk:
                return chunk
            error = Unreachable(f"{self.endpoint} closed {self.what}")
        raise error  # outside the except: no __context__


class Lines:
    """Newline-delimited messages out of chunks, in linear time: each byte is searched for
    a newline once (a scan goes on from where the last one ended), however many chunks a
    long line comes in. Blank lines are skipped; a line longer than ``MAX_MESSAGE`` is an
    :class:`EtcdError`."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._buffer = bytearray()
        self._searched = 0
        """How much of the buffer is known to hold no newline."""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def pop(self) -> bytes | None:
        """The next non-blank line, without its newline; ``None`` until one is complete."""
        while True:
            end = self._buffer.find(b"\n", self._searched)
            if end < 0:
                self._searched = len(self._buffer)
                if self._searched > MAX_MESSAGE:
                    raise EtcdError(
                        f"etcd sent {self.what} a message larger than {MAX_MESSAGE} bytes"
                    )
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._searched = 0
            if line.strip():
                return line


# -- decoding ----------------------------------------------------------------------------------


def decode_kv(item: Any, where: str) -> KV:
    """One ``mvccpb.KeyValue`` as the gateway sends it: base64 bytes, int64 as strings."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise EtcdError(f"etcd's answer for {where} holds an entry without a key")
    key = _unb64(item["key"], where, "key")
    value = _unb64(item.get("value", ""), where, f"the value of {show_key(key)}")
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
        shown = repr(raw)[:40]
        raise EtcdError(f"etcd's answer for {where}: {name} {shown} is not an integer") from None


def _unb64(text: Any, where: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise EtcdError(f"etcd's answer for {where}: {what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EtcdError(f"etcd's answer for {where}: {what} is not valid base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def describe(key: bytes, range_end: bytes | None) -> str:
    """What messages call a read of ``[key, range_end)``."""
    if range_end is None:
        return f"key {show_key(key)}"
    if key == b"\0" and range_end == b"\0":
        return "the whole keyspace"
    return f"range {show_key(key)}"


def show_key(key: bytes) -> str:
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
    """``raw`` decoded as JSON, or an :class:`EtcdError` naming ``what`` (which names the
    endpoint): not UTF-8, not JSON, nested too deeply for the decoder (``RecursionError``),
    or an integer longer than Python converts (4300 digits: a ``ValueError``)."""
    try:
        return json.loads(raw)
    except RecursionError:
        problem = "is nested too deeply"
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, an integer too long
        problem = f"is not valid JSON: {str(exc)[:200]}"
    raise EtcdError(f"etcd's answer for {what} {problem}")


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        text = answer.get("message") or answer.get("error")
        return str(text).removeprefix("etcdserver: ") if isinstance(text, str) else ""
    return ""


def _after_colon(exc: EtcdError) -> str:
    return str(exc).rsplit(": ", 1)[-1]


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
