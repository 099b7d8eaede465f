"""The exception tree of otpylib-config.

Every error names its subject (path, source, file, variable) so that the message alone tells
an operator what was wrong and where::

    ConfigError                      base of everything raised by this package
    ├── InvalidPathError (ValueError)     a path or pattern that is not dot-separated segments
    ├── InvalidValueError (ValueError)    a value that is not JSON-like data, with its path
    ├── SourceError                       a source could not be loaded (file, line, variable)
    ├── ValidationError (ValueError)      the merged configuration failed the schema
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
    """

    def __init__(self, source: str, message: str, fallback: Section | None = None) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message
        self.fallback = fallback


class ValidationError(ConfigError, ValueError):
    """Raised when the merged configuration fails validation; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        lines = "; ".join(f"{path or '<root>'}: {msg}" for path, msg in self.problems)
        super().__init__(f"configuration is invalid: {lines}")


class NotRunningError(ConfigError):
    """Raised when no configuration tree has been started (or it has been stopped)."""


class ConfigTimeoutError(ConfigError, TimeoutError):
    """Raised when the manager did not complete a write within the timeout."""
