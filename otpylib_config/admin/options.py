"""``AdminSpec`` and ``AdminToken``: what the admin API serves and to whom (docs/admin.md).

Option objects only: nothing here imports aiohttp, so a ``ConfigSpec`` can name an
``AdminSpec`` without paying for the server until the tree starts it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Literal

from otpylib_config.errors import ConfigError, InvalidPathError
from otpylib_config.paths import parse_pattern

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
DEFAULT_MAX_BODY = 1024 * 1024
"""The largest request body, in bytes: a bigger one is refused (413) before it is read."""
DEFAULT_REQUEST_TIMEOUT = 10.0
"""Seconds a request may take to arrive whole and be answered (slow or half-open clients)."""
DEFAULT_KEEPALIVE_TIMEOUT = 15.0
"""Seconds an idle keep-alive connection stays open."""
DEFAULT_HEARTBEAT = 15.0
"""Seconds between keep-alive comments on an idle ``/events`` stream."""
DEFAULT_EVENTS_KEPT = 1024
"""Changes kept for ``/events`` reconnects (``Last-Event-ID``); an older id gets a snapshot."""
MIN_SECRET_LENGTH = 16
PUBLIC_ENDPOINTS = frozenset({"health", "metrics", "status"})


class AdminTokenError(ConfigError, ValueError):
    """Raised when a token cannot be made: no secret, too short, unreadable. The message
    names the token, the variable or the file, never the secret."""


@dataclass(frozen=True, repr=False)
class AdminToken:
    """A bearer token of the admin API: ``name`` is what the audit log shows, ``secret``
    what a client sends (``Authorization: Bearer <secret>``), ``scope`` what it may do
    (``write`` includes ``read``). Only the secret's digest is kept, so no ``repr``,
    ``dataclasses.asdict`` or dump of a spec can show the secret."""

    name: str
    secret: InitVar[str]
    scope: Scope = "read"
    _digest: bytes = field(init=False, compare=False)

    def __post_init__(self, secret: str) -> None:
        if not isinstance(self.name, str) or not self.name.isprintable() or not self.name:
            raise AdminTokenError(f"AdminToken name must be a printable str, got {self.name!r}")
        if self.scope not in SCOPES:
            raise AdminTokenError(
                f"AdminToken {self.name!r}: scope must be 'read' or 'write', got {self.scope!r}"
            )
        if not isinstance(secret, str):
            raise AdminTokenError(f"AdminToken {self.name!r}: the secret must be a str")
        secret = secret.strip()
        if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() for c in secret):
            raise AdminTokenError(
                f"AdminToken {self.name!r}: the secret must be at least {MIN_SECRET_LENGTH} "
                "characters without spaces"
            )
        object.__setattr__(self, "_digest", _digest(secret.encode()))

    @classmethod
    def from_env(
        cls,
        name: str,
        variable: str,
        *,
        scope: Scope = "read",
        environ: Mapping[str, str] | None = None,
    ) -> AdminToken:
        """The token whose secret is the value of environment variable ``variable``."""
        value = (os.environ if environ is None else environ).get(variable)
        if not value:
            raise AdminTokenError(f"AdminToken {name!r}: ${variable} is not set")
        try:
            return cls(name, value, scope)
        except AdminTokenError as exc:
            raise AdminTokenError(f"{exc} (from ${variable})") from None

    @classmethod
    def from_file(
        cls, name: str, path: str | os.PathLike[str], *, scope: Scope = "read"
    ) -> AdminToken:
        """The token whose secret is the content of ``path`` (a mounted secret), stripped."""
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise AdminTokenError(f"AdminToken {name!r}: cannot read {path}: {reason}") from None
        try:
            return cls(name, value, scope)
        except AdminTokenError as exc:
            raise AdminTokenError(f"{exc} (from {path})") from None

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` is the secret, in time that does not depend on either."""
        return hmac.compare_digest(self._digest, _digest(presented))

    def allows(self, scope: Scope) -> bool:
        return self.scope == "write" or scope == "read"

    def __repr__(self) -> str:
        return f"AdminToken(name={self.name!r}, secret='****', scope={self.scope!r})"


def _digest(secret: bytes) -> bytes:
    """Equal-length digests, so the comparison does not reveal the secret's length."""
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, kw_only=True)
class AdminSpec:
    """The admin HTTP API of a tree (``ConfigSpec(admin=...)``), off unless given.

    ``host``/``port``: where it listens (loopback by default; ``port=0`` picks a free one,
    kept across restarts of the admin process). ``prefix``: where its routes start
    (``"/admin"``). ``tokens``: who may call it. ``writable``: the globs of the paths a
    write token may put or delete (a path is writable when it or a section above it
    matches one); nothing is writable unless listed. ``public``: endpoints served without
    a token (``health`` by default; also ``metrics``, ``status``). ``max_body``,
    ``request_timeout``, ``keepalive_timeout``: the limits a request meets.
    ``events_kept``: how many changes ``/events`` keeps for a client that reconnects;
    ``heartbeat``: seconds between keep-alive comments on an idle stream.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tokens: Sequence[AdminToken] = ()
    writable: Sequence[str] = ()
    prefix: str = ""
    public: Sequence[str] = ("health",)
    max_body: int = DEFAULT_MAX_BODY
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    events_kept: int = DEFAULT_EVENTS_KEPT
    heartbeat: float = DEFAULT_HEARTBEAT

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"AdminSpec.host must be a non-empty str, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"AdminSpec.port must be an int, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"AdminSpec.port must be in 0..65535, got {self.port}")
        self._check_tokens()
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "writable", self._checked_writable())
        object.__setattr__(self, "prefix", self._checked_prefix())
        public = tuple(self.public)
        unknown = sorted(set(public) - PUBLIC_ENDPOINTS)
        if unknown:
            raise ValueError(
                f"AdminSpec.public: {unknown} cannot be public (only {sorted(PUBLIC_ENDPOINTS)})"
            )
        object.__setattr__(self, "public", public)
        for name in ("max_body", "events_kept"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"AdminSpec.{name} must be a positive int, got {value!r}")
        for name in ("request_timeout", "keepalive_timeout", "heartbeat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"AdminSpec.{name} must be a positive number, got {value!r}")

    def _check_tokens(self) -> None:
        if isinstance(self.tokens, AdminToken | str):
            raise ValueError("AdminSpec.tokens must be a sequence of AdminToken")
        names: set[str] = set()
        for token in self.tokens:
            if not isinstance(token, AdminToken):
                raise ValueError(f"AdminSpec.tokens: {type(token).__name__} is not an AdminToken")
            if token.name in names:
                raise ValueError(f"AdminSpec.tokens: two tokens are named {token.name!r}")
            names.add(token.name)
        digests = [t._digest for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("AdminSpec.tokens: two tokens have the same secret")

    def _checked_writable(self) -> tuple[str, ...]:
        if isinstance(self.writable, str):
            raise ValueError(
                f"AdminSpec.writable must be a sequence of globs, got the str {self.writable!r}"
            )
        globs = tuple(self.writable)
        for glob in globs:
            try:
                parse_pattern(glob)
            except InvalidPathError as exc:
                raise ValueError(f"AdminSpec.writable: {exc}") from None
        return globs

    def _checked_prefix(self) -> str:
        prefix = self.prefix
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise ValueError(f"AdminSpec.prefix must be '' or start with '/', got {prefix!r}")
        if prefix.endswith("/") or "//" in prefix or any(c in prefix for c in "?#{} "):
            raise ValueError(f"AdminSpec.prefix must be a plain path like '/admin', got {prefix!r}")
        return prefix
