"""Secret redaction for everything that leaves the server as text (DESIGN §6).

A path is secret when any of its segments matches one of the patterns (fnmatch, compared in
lower case). ``get`` still returns secrets: only dumps, logs, telemetry and status redact.
Text that was not built from paths, such as a validator's message, is scrubbed instead:
every secret value of the tree that appears in it is replaced (:meth:`Redactor.scrub`).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from otpylib_config.values import Section

DEFAULT_SECRET_PATTERNS = ("*password*", "*secret*", "*token*", "*key*")
REDACTED = "**redacted**"

MIN_SCRUBBED_LENGTH = 4
"""Secret values shorter than this are not scrubbed from text: replacing every ``1`` or
``on`` in a message would make it unreadable, and so short a value guards little anyway."""


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

    def scrub(self, text: str, tree: Section) -> str:
        """``text`` with the text form of every secret leaf of ``tree`` replaced by REDACTED.

        For messages written by code that knows nothing of secrets (a validator quoting the
        value it refused). Longer values go first, so a secret holding another is replaced
        whole; bools, ``None`` and values under :data:`MIN_SCRUBBED_LENGTH` are left alone.
        """
        return self.scrub_all([text], tree)[0]

    def scrub_all(self, texts: Iterable[str], tree: Section) -> list[str]:
        """:meth:`scrub` of each of ``texts``, walking ``tree`` for its secrets only once."""
        found = {spelling for leaf in self._secret_leaves(tree, "") for spelling in _texts(leaf)}
        secrets = sorted(found, key=len, reverse=True)
        return [_replace_all(text, secrets) for text in texts]

    def _secret_leaves(self, value: Any, path: str) -> Iterator[Any]:
        """Every value below ``path`` that sits at a secret path (lists keep their path)."""
        if isinstance(value, Section):
            for key, item in value.items():
                yield from self._secret_leaves(item, f"{path}.{key}" if path else key)
        elif path and self.is_secret(path):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                yield from self._secret_leaves(item, path)

    def __repr__(self) -> str:
        return f"Redactor(patterns={self.patterns!r})"


def _texts(value: Any) -> Iterator[str]:
    """How a secret value may be spelled in a message: the ``str`` of each scalar in it and,
    for strings, the inside of its ``repr`` too (a message quoting ``'a\\nb'`` shows escapes)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, Section | tuple):
        for item in value.values() if isinstance(value, Section) else value:
            yield from _texts(item)
        return
    text = str(value)
    for spelling in {text, repr(text)[1:-1]} if isinstance(value, str) else (text,):
        if len(spelling) >= MIN_SCRUBBED_LENGTH:
            yield spelling


def _replace_all(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def frames_and(exc: BaseException, message: str) -> str:
    """A traceback for the log with ``message`` (already scrubbed) in place of the
    exception's own text, which may quote a secret value: the frames show code, not data."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{message}"
