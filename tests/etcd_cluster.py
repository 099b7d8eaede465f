"""Real etcd processes for tests: one member, or a 3-member static cluster, on loopback.

Each member runs ``etcd`` (Debian's etcd-server, 3.4) on free 127.0.0.1 ports with its data
in a temporary directory, quick elections (``--heartbeat-interval 50 --election-timeout
500``) and quiet logs (``--logger=zap --log-level=error``; the log goes to a file in the
member's directory, shown when it fails to start). Process handling is synchronous, so a
cluster may outlive one test's event loop (a module fixture); what talks to etcd is async
and uses etcd's own HTTP API (the JSON gRPC gateway) through aiohttp, never the code under
test.

Usage::

    cluster = EtcdCluster.start(tmp_path, members=3)
    await cluster.put("/app/config/a", "1")
    leader = await cluster.leader()
    leader.kill(); leader.start()
    await cluster.compact(await cluster.revision())
    await cluster.enable_auth(root_password="...", users={"app": ("pw", "/app/")})
    cluster.stop()

or the fixtures :func:`etcd` (one member, for one test) and :func:`etcd_module` (one member
shared by a module: tests use their own prefixes). Without an ``etcd`` binary every test
that needs one is skipped, saying so.

:class:`Proxy` breaks the network between the source and a member; :class:`FakeGateway`
plays an etcd that misbehaves in ways a real one does not (garbage answers, a watch
created and dropped at once, a member that accepts and never answers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
SKIP_REASON = (
    "etcd-server could not be installed: no etcd binary on PATH or at /usr/bin/etcd "
    "(apt-get install etcd-server)"
)
requires_etcd = pytest.mark.skipif(ETCD is None, reason=SKIP_REASON)

START_TIMEOUT = 30.0
"""Seconds a cluster may take to become healthy (a loaded 2-core machine is slow)."""
STOP_TIMEOUT = 5.0
"""Seconds a member has after SIGTERM before it is killed."""
REQUEST_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


@dataclass
class Member:
    name: str
    directory: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    arguments: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log(self) -> Path:
        return self.directory / "etcd.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart, with the same data and ports) the member's process."""
        assert ETCD is not None, SKIP_REASON
        assert not self.running, f"{self.name} is running already"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [ETCD, *self.arguments], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: the member dies at once, as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)
            self.process.wait(STOP_TIMEOUT)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=0.5) as answer:
                return b'"true"' in answer.read()
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.running:
                raise RuntimeError(f"etcd {self.name} exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {self.name} not healthy in {timeout:g}s")
            time.sleep(0.05)


_counter = itertools.count()


class EtcdCluster:
    """``members`` etcd processes forming one cluster, and an HTTP client to write to it."""

    def __init__(self, directory: Path, members: int = 1, **flags: str) -> None:
        token = f"otpylib-config-test-{uuid.uuid4().hex[:12]}"
        self.members = [Member(f"m{i}", directory / f"m{i}") for i in range(members)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.directory.mkdir(parents=True)
            member.arguments = _arguments(member, initial, token, flags)
        self.root: tuple[str, str] | None = None
        self._token: str | None = None

    @classmethod
    def start(cls, directory: Path, members: int = 1, **flags: str) -> EtcdCluster:
        """A cluster of ``members``, started (:meth:`launch`)."""
        cluster = cls(directory, members, **flags)
        cluster.launch()
        return cluster

    def launch(self) -> None:
        """Start every member and wait until each is healthy (the cluster has a leader)."""
        try:
            for member in self.members:
                member.start()
            for member in self.members:
                member.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    @property
    def url(self) -> str:
        return self.members[0].client_url

    def alive(self) -> list[Member]:
        return [member for member in self.members if member.running]

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        for member in self.alive():
            member.wait_healthy(timeout)

    def restart(self, member: Member | None = None) -> None:
        """Start a stopped member again (the first by default) and wait until it is healthy."""
        member = member or self.members[0]
        member.start()
        member.wait_healthy()

    # -- the HTTP API ----------------------------------------------------------------------

    async def call(self, path: str, body: Mapping[str, Any], member: Member | None = None) -> Any:
        """``POST path`` to ``member`` (else to the first running one), as root once auth is
        on; raises ``RuntimeError`` with etcd's answer for anything but 200."""
        target = member or self.alive()[0]
        for attempt in range(2):
            headers = await self._auth_headers(target, fresh=attempt > 0)
            status, answer = await _post(target.client_url + path, body, headers)
            if status == 200:
                return answer
            if status != 401 or self.root is None:
                break
        raise RuntimeError(f"etcd {target.name} answered {status} to {path}: {answer}")

    async def _auth_headers(self, member: Member, *, fresh: bool) -> dict[str, str]:
        if self.root is None:
            return {}
        if fresh or self._token is None:
            body = {"name": self.root[0], "password": self.root[1]}
            status, answer = await _post(member.client_url + "/v3/auth/authenticate", body, {})
            if status != 200:
                raise RuntimeError(f"cannot authenticate as root: {answer}")
            self._token = answer["token"]
        assert self._token is not None
        return {"Authorization": self._token}

    async def put(self, key: str | bytes, value: str | bytes, member: Member | None = None) -> int:
        """Write ``key``; the revision of the write."""
        answer = await self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)}, member)
        return int(answer["header"]["revision"])

    async def delete(self, key: str | bytes, member: Member | None = None) -> int:
        answer = await self.call("/v3/kv/deleterange", {"key": b64(key)}, member)
        return int(answer["header"]["revision"])

    async def revision(self) -> int:
        answer = await self.call("/v3/kv/range", {"key": b64("\0")})
        return int(answer["header"]["revision"])

    async def compact(self, revision: int) -> None:
        """Compact the store up to ``revision``: older revisions cannot be read or watched."""
        await self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def status(self, member: Member) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("/v3/maintenance/status", {}, member)
        return answer

    async def leader(self) -> Member:
        """The member that is the raft leader now (``leader`` == its ``header.member_id``)."""
        for member in self.alive():
            answer = await self.status(member)
            if answer.get("leader") == answer["header"]["member_id"]:
                return member
        raise RuntimeError("no member is the leader")

    async def enable_auth(
        self, root_password: str, users: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        """Add root and each ``user: (password, key prefix it may read)``, then turn auth on."""
        await self._add_user("root", root_password, "root", None)
        for number, (user, (password, prefix)) in enumerate((users or {}).items()):
            await self._add_user(user, password, f"reader{number}", prefix)
        await self.call("/v3/auth/enable", {})
        self.root, self._token = ("root", root_password), None

    async def _add_user(self, user: str, password: str, role: str, prefix: str | None) -> None:
        await self.call("/v3/auth/user/add", {"name": user, "password": password})
        await self.call("/v3/auth/role/add", {"name": role})
        if prefix is not None:
            end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            perm = {"permType": "READ", "key": b64(prefix), "range_end": b64(end)}
            await self.call("/v3/auth/role/grant", {"name": role, "perm": perm})
        await self.call("/v3/auth/user/grant", {"user": user, "role": role})


def _arguments(member: Member, initial: str, token: str, flags: Mapping[str, str]) -> list[str]:
    arguments = {
        "name": member.name,
        "data-dir": str(member.directory / "data"),
        "listen-client-urls": member.client_url,
        "advertise-client-urls": member.client_url,
        "listen-peer-urls": member.peer_url,
        "initial-advertise-peer-urls": member.peer_url,
        "initial-cluster": initial,
        "initial-cluster-state": "new",
        "initial-cluster-token": token,
        "heartbeat-interval": "50",
        "election-timeout": "500",
        "logger": "zap",
        "log-level": "error",
        **flags,
    }
    return [f"--{name}={value}" for name, value in arguments.items()]


async def _post(url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


def next_prefix() -> str:
    """A prefix no other test of this run uses (for a shared cluster)."""
    return f"/t{next(_counter)}/config/"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """One etcd member for one test, stopped after it."""
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster.start(tmp_path / "etcd")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def etcd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member shared by the tests of a module: each uses :func:`next_prefix`."""
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster for one test."""
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster.start(tmp_path / "etcd", members=3)
    yield cluster
    cluster.stop()


class Proxy:
    """A TCP proxy on a free port to ``target`` (a member's client port), which a test can
    break the way networks break: :meth:`drop` closes every open connection (new ones are
    accepted), :meth:`cut` also refuses new ones until :meth:`restore`, :meth:`freeze`
    leaves open connections open but silent (new ones pass)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    restore = start

    def drop(self) -> None:
        for connection in list(self._connections):
            connection.close()

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop()

    stop = cut

    def freeze(self) -> None:
        for connection in self._connections:
            connection.flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        connection = _Connection(writer, upstream[1])
        self._connections.add(connection)
        try:
            await asyncio.gather(
                connection.pipe(reader, upstream[1]), connection.pipe(upstream[0], writer)
            )
        finally:
            self._connections.discard(connection)
            connection.close()


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(1 << 16):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        self.close()

    def close(self) -> None:
        self.flowing.set()  # a frozen pipe wakes up, finds its writer closed, and ends
        for writer in self.writers:
            writer.close()


# -- a fake gateway, for what a real etcd never does ---------------------------------------------


@dataclass
class Request:
    """One request a :class:`FakeGateway` received."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


class FakeGateway:
    """A loopback HTTP/1.1 server that answers each path with a :data:`Handler` the test
    gives (``routes``, changeable while it runs), and records every request: an etcd that
    answers garbage, creates a watch and drops it at once, or never answers at all.
    Every answer is sent with ``Connection: close`` (one request per connection)."""

    def __init__(self, routes: Mapping[str, Handler] | None = None) -> None:
        self.routes: dict[str, Handler] = dict(routes or {})
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""
        """``http://127.0.0.1:port``, once started (and after it is closed)."""

    async def start(self) -> FakeGateway:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers.get("Content-Length", "0"))
            body = await reader.readexactly(length) if length else b""
            request = Request(path, headers, body)
            self.requests.append(request)
            handler = self.routes.get(path, not_found)
            await handler(request, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def http_head(status: int = 200, length: int | None = None) -> bytes:
    size = "" if length is None else f"Content-Length: {length}\r\n"
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{size}Connection: close\r\n\r\n"
    ).encode()


def answer(body: Any, status: int = 200) -> Handler:
    """A handler that answers ``body`` (JSON unless bytes) and closes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(http_head(status, len(raw)) + raw)
        await writer.drain()

    return handle


def raw_answer(data: bytes) -> Handler:
    """A handler that sends ``data`` as it is (a malformed answer, say) and closes."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return handle


def stream(*messages: Any, then_wait: bool = False) -> Handler:
    """A watch handler: an open-ended 200 answer with ``messages``, one JSON line each, then
    the connection closed (or, ``then_wait``, held open and silent)."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(http_head(200))
        for message in messages:
            writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        if then_wait:
            await asyncio.Event().wait()

    return handle


async def silent(request: Request, writer: asyncio.StreamWriter) -> None:
    """A handler that never answers (the connection stays open)."""
    await asyncio.Event().wait()


not_found = answer({"code": 5, "message": "Not Found"}, status=404)


def range_answer(revision: int, kvs: Mapping[str, str] | None = None) -> Handler:
    """A ``/v3/kv/range`` answer at ``revision`` with ``kvs`` (mod_revision ``revision``)."""
    items = [
        {"key": b64(k), "value": b64(v), "mod_revision": str(revision), "version": "1"}
        for k, v in (kvs or {}).items()
    ]
    return answer({"header": {"revision": str(revision)}, "kvs": items, "count": str(len(items))})


def created(revision: int) -> dict[str, Any]:
    """The watch stream's first message."""
    return {"result": {"header": {"revision": str(revision)}, "created": True}}
