"""Secret redaction for everything that leaves the server as text (DESIGN §6).

A path is secret when any of its segments matches one of the patterns (fnmatch, compared in
lower case). ``get`` still returns secrets: only dumps, logs, telemetry and status redact.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from otpylib_config.values import Section

DEFAULT_SECRET_PATTERNS = ("*password*", "*secret*", "*token*", "*key*")
REDACTED = "**redacted**"


class Redactor:
    """Decides which paths are secret and masks their values."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> None:
        self.patterns = tuple(pattern.lower() for pattern in patterns)
        self._matches = lru_cache(maxsize=4096)(self._match)
        #: Paths of every leaf that a secret source provides; set by the manager.
        self.secret_leaves: frozenset[str] = frozenset()
        #: The set before the last reload: a secret that a source just dropped is still
        #: reported as the ``old_value`` of its change, and must stay masked there.
        self.previous_leaves: frozenset[str] = frozenset()

    def replace_leaves(self, leaves: frozenset[str]) -> None:
        self.previous_leaves, self.secret_leaves = self.secret_leaves, leaves

    def is_secret(self, path: str) -> bool:
        return path in self.secret_leaves or path in self.previous_leaves or self._matches(path)

    def _match(self, path: str) -> bool:
        return any(
            fnmatchcase(segment.lower(), pattern)
            for segment in path.split(".")
            for pattern in self.patterns
        )

    def value(self, path: str, value: Any) -> Any:
        """``value`` with every secret leaf below ``path`` replaced by a marker."""
        if value is None:
            return None
        if self.is_secret(path):
            return REDACTED
        if isinstance(value, Section):
            return {key: self.value(f"{path}.{key}", item) for key, item in value.items()}
        if isinstance(value, tuple):
            return tuple(self.value(path, item) for item in value)
        return value

    def __repr__(self) -> str:
        return f"Redactor(patterns={self.patterns!r})"
