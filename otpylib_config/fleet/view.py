"""Reading the fleet: every node announced under a prefix, and whether they agree
(docs/fleet.md).

:func:`read_fleet` is one range read of the prefix (or of one tree's part of it), bounded
by ``timeout`` across all endpoints; :class:`FleetReader` makes several through one client
(one session, one token). Each value is an announcement written by a
:class:`~otpylib_config.fleet.announcer.FleetAnnouncer`; one that does not decode (not
JSON, nested too deeply, a field missing, of the wrong type or with a control character in
its text) is skipped and named in ``Fleet.problems``, never an error. aiohttp is imported
only when etcd is read, so importing this module (``otpylib_config.fleet``) stays cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otpylib_config.errors import ConfigError
from otpylib_config.fleet.options import DEFAULT_PREFIX, check_prefix
from otpylib_config.parsers import ParseError, load_json
from otpylib_config.sources.etcd_kv import check_endpoints, ssl_context


class FleetError(ConfigError, ConnectionError):
    """etcd gave no usable answer to the read of the fleet (unreachable, refused the
    credentials, answered something else): the message says which, never a password."""


@dataclass(frozen=True)
class Node:
    """One node's announcement, as it wrote it."""

    node: str
    tree: str
    version: int
    config_hash: str
    healthy: bool
    sources: Mapping[str, bool]
    started_at: float
    """Wall-clock time the node's tree started."""
    announced_at: float
    """Wall-clock time this content was written: the announcer writes again only when it
    changes (or with a new lease), so an old one says the node has not changed, not that it
    is stuck; the lease (kept alive every ``ttl / 3``) is what shows the node is alive."""
    pid: int
    host: str
    admin_url: str | None
    key: str = ""
    """The etcd key it is announced under."""
    mod_revision: int = 0

    def age(self, now: float | None = None) -> float:
        """Seconds since this content was announced (by the reader's clock)."""
        return (time.time() if now is None else now) - self.announced_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "tree": self.tree,
            "version": self.version,
            "config_hash": self.config_hash,
            "healthy": self.healthy,
            "sources": dict(self.sources),
            "started_at": self.started_at,
            "announced_at": self.announced_at,
            "pid": self.pid,
            "host": self.host,
            "admin_url": self.admin_url,
            "key": self.key,
        }


@dataclass(frozen=True)
class Fleet:
    """Every node announced (sorted by tree, then node), and what could not be read."""

    nodes: tuple[Node, ...]
    problems: tuple[str, ...] = ()
    """One line per announcement skipped, naming its key (as a Python ``repr``, so a key
    with control characters shows them escaped) and what was wrong."""
    revision: int = 0
    """The etcd store revision the read saw."""
    hashes: dict[str, list[str]] = field(init=False)
    """Config hash → the names of the nodes that report it."""
    agree: bool = field(init=False)
    """At least one node, and every node reports the same config hash."""

    def __post_init__(self) -> None:
        hashes: dict[str, list[str]] = {}
        for node in self.nodes:
            hashes.setdefault(node.config_hash, []).append(node.node)
        object.__setattr__(self, "hashes", hashes)
        object.__setattr__(self, "agree", len(hashes) == 1)

    @property
    def healthy(self) -> bool:
        """Every node says its tree is healthy (``True`` for no node)."""
        return all(node.healthy for node in self.nodes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": [node.as_dict() for node in self.nodes],
            "agree": self.agree,
            "healthy": self.healthy,
            "hashes": self.hashes,
            "problems": list(self.problems),
            "revision": self.revision,
        }


class FleetReader:
    """Reads of the fleet through one HTTP session and one etcd client (so one token, with
    etcd authentication) for as long as it is open: ``fleet wait`` polls with one::

        async with FleetReader(endpoints, prefix, tree="shop") as reader:
            fleet = await reader.read(timeout=5.0)

    The options are :func:`read_fleet`'s, checked when it is made (a ``ValueError``)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        prefix: str = DEFAULT_PREFIX,
        *,
        tree: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.endpoints = check_endpoints(endpoints, "read_fleet")
        self.prefix = check_prefix(prefix, "read_fleet prefix")
        if (username is None) != (password is None):
            raise ValueError("read_fleet takes username= and password= together")
        if tree is not None and (not isinstance(tree, str) or not tree or "." in tree):
            raise ValueError(f"read_fleet: tree must be a config tree id, got {tree!r}")
        try:  # the files are read now: a bad one names the option and the file
            self._tls = ssl_context(ca_file, cert_file, key_file)
        except ValueError as exc:
            raise ValueError(f"read_fleet: {exc}") from None
        self.tree = tree
        self._username, self._password = username, password
        self._session: Any = None
        self.client: Any = None
        """The ``EtcdClient`` while the reader is open (one token for all its reads)."""

    async def __aenter__(self) -> FleetReader:
        import aiohttp

        from otpylib_config.sources.etcd_kv import Credentials, EtcdClient

        credentials = None
        if self._username is not None:
            credentials = Credentials(self._username, self._password or "")
        self._session = aiohttp.ClientSession()
        self.client = EtcdClient(self._session, self.endpoints, credentials, self._tls)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        session, self._session, self.client = self._session, None, None
        if session is not None:
            await session.close()

    async def read(self, timeout: float = 5.0) -> Fleet:
        """Every node announced; :class:`FleetError` if no endpoint gives a usable answer
        within ``timeout``."""
        from otpylib_config.sources.etcd_kv import EtcdError, prefix_end

        if self.client is None:
            raise RuntimeError("FleetReader.read() needs `async with FleetReader(...)`")
        tree, prefix = self.tree, self.prefix
        start = (prefix if tree is None else f"{prefix}{tree}/").encode()
        try:
            read = await self.client.range(start, prefix_end(start), timeout=timeout)
        except EtcdError as exc:
            raise FleetError(f"cannot read the fleet at {prefix!r}: {exc}") from None
        nodes: list[Node] = []
        problems: list[str] = []
        for kv in read.kvs:
            key = kv.key.decode("utf-8", "replace")
            try:
                node = decode(kv.value, key, kv.mod_revision)
            except ValueError as exc:
                problems.append(f"{key!r}: {exc}")  # repr: no control character of etcd's
                continue
            if tree is not None and node.tree != tree:
                continue  # a tree whose id starts with "<tree>/"
            nodes.append(node)
        nodes.sort(key=lambda n: (n.tree, n.node))
        return Fleet(tuple(nodes), tuple(problems), read.revision)


async def read_fleet(
    endpoints: str | Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    *,
    tree: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    timeout: float = 5.0,
) -> Fleet:
    """Every node announced under ``prefix`` (only tree ``tree``'s when given); raises
    :class:`FleetError` if no endpoint gives a usable answer within ``timeout``, and
    ``ValueError`` for a bad option (a TLS file that cannot be read names the option and
    the file). ``ca_file``/``cert_file``/``key_file``: TLS for ``https`` endpoints."""
    reader = FleetReader(
        endpoints,
        prefix,
        tree=tree,
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )
    async with reader:
        return await reader.read(timeout)


def decode(raw: bytes, key: str = "", mod_revision: int = 0) -> Node:
    """One announcement; a ``ValueError`` saying what is wrong with it."""
    try:
        document = load_json(raw)  # not JSON, not UTF-8, nested too deeply, a huge integer
    except ParseError as exc:
        raise ValueError(f"not a JSON announcement ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    sources = _field(document, "sources", dict)
    if not all(isinstance(k, str) and isinstance(v, bool) for k, v in sources.items()):
        raise ValueError("sources must map names to true/false")
    if not all(k.isprintable() for k in sources):
        raise ValueError("sources: a source name is not printable text")
    admin_url = document.get("admin_url")
    if admin_url is not None and not isinstance(admin_url, str):
        raise ValueError("admin_url must be a string or null")
    if admin_url is not None and not admin_url.isprintable():
        raise ValueError("admin_url is not printable text")
    return Node(
        node=_text(document, "node"),
        tree=_text(document, "tree"),
        version=_field(document, "version", int),
        config_hash=_text(document, "config_hash"),
        healthy=_field(document, "healthy", bool),
        sources=dict(sources),
        started_at=_time(document, "started_at"),
        announced_at=_time(document, "announced_at"),
        pid=_field(document, "pid", int),
        host=_printable(document, "host"),
        admin_url=admin_url,
        key=key,
        mod_revision=mod_revision,
    )


def _field(document: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = "missing" if name not in document else f"{type(value).__name__}"
        raise ValueError(f"{name} must be a {kind.__name__}, got {shown}")
    return value


def _printable(document: Mapping[str, Any], name: str) -> str:
    """A text field that the CLI prints: no control character, no escape sequence (nothing
    in etcd can write to the operator's terminal)."""
    value: str = _field(document, name, str)
    if not value.isprintable():
        raise ValueError(f"{name} is not printable text")
    return value


def _text(document: Mapping[str, Any], name: str) -> str:
    value = _printable(document, name)
    if not value:
        raise ValueError(f"{name} is empty")
    return value


def _time(document: Mapping[str, Any], name: str) -> float:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number (a wall-clock time)")
    return float(value)
