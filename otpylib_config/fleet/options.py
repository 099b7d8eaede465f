"""``FleetSpec``: where and as what a tree announces itself in etcd (docs/fleet.md).

Option objects only: nothing here imports aiohttp (``etcd_kv``, whose endpoint checks and
TLS files are used here, imports it only to talk to etcd), so a ``ConfigSpec`` can name a
``FleetSpec`` without paying for the etcd client until the tree starts its announcer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from otpylib_config.sources.etcd_kv import DEFAULT_ENDPOINT, check_endpoints, ssl_context

DEFAULT_ENDPOINTS = (DEFAULT_ENDPOINT,)
DEFAULT_PREFIX = "/otpylib-config/fleet/"
DEFAULT_TTL = 10.0
MIN_TTL = 2.0
"""The shortest lease, in seconds: keepalives go every ``ttl / 3``, and below 2 s a loaded
machine's scheduling delay alone could let the lease lapse."""


def check_prefix(prefix: str, what: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError(f"{what} must start and end with '/', got {prefix!r}")
    if not prefix.isprintable() or "//" in prefix:
        raise ValueError(f"{what} must be printable, without '//', got {prefix!r}")
    return prefix


@dataclass(frozen=True, repr=False)
class FleetSpec:
    """Announce the tree in etcd as ``node`` (``ConfigSpec(fleet=...)``), off unless given.

    The announcement is the key ``{prefix}{tree id}/{node}``, attached to a lease of ``ttl``
    seconds that the announcer keeps alive: a node that dies disappears after ``ttl``, one
    that stops gracefully at once. ``endpoints``: the etcd members (tried in order, the one
    that answered last first). ``username``/``password``: etcd authentication (the user
    needs write access to the prefix). ``ca_file``/``cert_file``/``key_file``: TLS for
    ``https`` endpoints; each must be readable when the spec is made (a ``ValueError``
    naming the option and the file otherwise).
    """

    node: str
    endpoints: Sequence[str] = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_PREFIX
    ttl: float = DEFAULT_TTL
    username: str | None = None
    password: str | None = field(default=None, compare=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        node = self.node
        if not isinstance(node, str) or not node or not node.isprintable() or "/" in node:
            raise ValueError(
                f"FleetSpec.node must be a non-empty printable str without '/', got {node!r}"
            )
        if node != node.strip():
            raise ValueError(f"FleetSpec.node must not start or end with spaces, got {node!r}")
        object.__setattr__(
            self, "endpoints", check_endpoints(self.endpoints, "FleetSpec.endpoints")
        )
        check_prefix(self.prefix, "FleetSpec.prefix")
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= MIN_TTL:
            raise ValueError(
                f"FleetSpec.ttl must be a number of seconds >= {MIN_TTL:g}, got {ttl!r}"
            )
        if ttl != ttl or ttl == float("inf"):
            raise ValueError(f"FleetSpec.ttl must be a finite number, got {ttl!r}")
        object.__setattr__(self, "ttl", float(ttl))
        if (self.username is None) != (self.password is None):
            raise ValueError("FleetSpec takes username= and password= together")
        if self.username is not None and (not isinstance(self.username, str) or not self.username):
            raise ValueError(f"FleetSpec.username must be a non-empty str, got {self.username!r}")
        if self.password is not None and not isinstance(self.password, str):
            raise ValueError("FleetSpec.password must be a str")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("FleetSpec.key_file needs cert_file=")
        try:  # the files are read now (and again when the announcer starts)
            ssl_context(self.ca_file, self.cert_file, self.key_file)
        except ValueError as exc:  # each names its option: "ca_file '/typo': No such file ..."
            raise ValueError(f"FleetSpec.{exc}") from None

    def key(self, tree: str) -> str:
        """The key this node of tree ``tree`` announces itself under."""
        return f"{self.prefix}{tree}/{self.node}"

    def __repr__(self) -> str:
        password = "" if self.password is None else ", password=***"
        user = "" if self.username is None else f", username={self.username!r}"
        return (
            f"FleetSpec(node={self.node!r}, endpoints={list(self.endpoints)!r}, "
            f"prefix={self.prefix!r}, ttl={self.ttl:g}{user}{password})"
        )
