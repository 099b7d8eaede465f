"""The exception tree of otpylib-config.

Every error names its subject (path, source, file, variable) so that the message alone tells
an operator what was wrong and where::

    ConfigError                      base of everything raised by this package
    ├── InvalidPathError (ValueError)     a path or pattern that is not dot-separated segments
    ├── InvalidValueError (ValueError)    a value that is not JSON-like data, with its path
    ├── SourceError                       a source could not be loaded (file, line, variable)
    ├── ValidationError (ValueError)      the merged configuration failed the schema
    │   └── LoadError (also a SourceError) start-up failed: every problem at once
    ├── NotRunningError                   no configuration tree is running for this id
    └── ConfigTimeoutError (TimeoutError) the manager did not answer a write in time
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otpylib_config.values import Section


class ConfigError(Exception):
    """Base class of every error raised by otpylib-config."""


class InvalidPathError(ConfigError, ValueError):
    """Raised when a path or pattern is empty, has an empty segment or is not a string."""


class InvalidValueError(ConfigError, ValueError):
    """Raised when a value is not JSON-like data; ``path`` says where inside it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class SourceError(ConfigError):
    """Raised when a source cannot produce a layer; the source keeps its last good layer.

    ``fallback``: a layer the source saved in an earlier run (a last-known-good cache). It
    is served only while the source has no good layer of its own in this run, and the
    source still counts as failing in ``status()``.

    ``problems``: ``(path, message)`` pairs when the source knows which keys were bad, and
    ``partial``: its layer without them, so that start-up can validate the rest and report
    every problem at once.
    """

    def __init__(
        self,
        source: str,
        message: str,
        fallback: Section | None = None,
        *,
        problems: Sequence[tuple[str, str]] = (),
        partial: Section | None = None,
    ) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message
        self.fallback = fallback
        self.problems = tuple(problems)
        self.partial = partial


class ValidationError(ConfigError, ValueError):
    """Raised when the merged configuration fails validation; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        lines = "; ".join(f"{path or '<root>'}: {msg}" for path, msg in self.problems)
        super().__init__(f"configuration is invalid: {lines}")


class LoadError(SourceError, ValidationError):
    """Raised by start-up (``start``, ``load``; an embedded tree's first load fails its
    parent's ``start_link`` with a ``RuntimeError`` that quotes it) when the
    configuration cannot be loaded: every failed source and every validation problem, each
    naming the path and where its value came from. A ``SourceError`` (``source`` is the
    first failed source, or ``"validation"``) and a ``ValidationError`` (``problems`` lists
    them all) at once, so code written for either keeps working."""

    def __init__(
        self, failed: Sequence[SourceError], invalid: ValidationError | None = None
    ) -> None:
        problems = [p for error in failed for p in (error.problems or [("", str(error))])]
        known = {path for path, _ in problems if path}  # "field required" there says no more
        problems += [p for p in (invalid.problems if invalid else ()) if p[0] not in known]
        self.problems = tuple(problems)
        self.failed = tuple(failed)
        lines = "; ".join(f"{path}: {msg}" if path else msg for path, msg in self.problems)
        Exception.__init__(self, f"configuration cannot be loaded: {lines}")
        self.source = failed[0].source if failed else "validation"
        self.reason = lines
        self.fallback = None
        self.partial = None


class NotRunningError(ConfigError):
    """Raised when no configuration tree has been started (or it has been stopped)."""


class ConfigTimeoutError(ConfigError, TimeoutError):
    """Raised when the manager did not complete a write within the timeout."""
