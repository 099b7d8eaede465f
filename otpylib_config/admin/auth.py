"""Who is calling and what they may do: bearer tokens and the writable globs
(docs/admin.md, Auth)."""

from __future__ import annotations

from collections.abc import Sequence

from otpylib_config.admin.options import AdminToken
from otpylib_config.paths import Path, parse_pattern
from otpylib_config.patterns import PatternIndex

CHALLENGE = 'Bearer realm="otpylib-config"'
"""The ``WWW-Authenticate`` header of a 401 (RFC 6750)."""


def authenticate(tokens: Sequence[AdminToken], header: str | None) -> AdminToken | None:
    """The token whose secret ``header`` (``Authorization``) presents, or ``None``.

    Every token is compared, with no early exit, so the time taken says nothing about
    which token (if any) came close."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    presented = credentials.strip().encode("utf-8", "surrogateescape")
    found: AdminToken | None = None
    for token in tokens:
        if token.matches(presented):
            found = token
    return found


class Writable:
    """The paths a write token may change: those that a glob covers, or that lie below a
    section a glob covers (the matcher's ancestor-or-self rule, docs/matching.md)."""

    def __init__(self, globs: Sequence[str]) -> None:
        self.globs = tuple(globs)
        self._index: PatternIndex[str] = PatternIndex()
        for glob in self.globs:
            self._index.add(parse_pattern(glob), glob)

    def allows(self, path: Path) -> bool:
        return self._index.matches(path)
