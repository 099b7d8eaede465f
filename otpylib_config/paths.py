"""Dot-separated configuration paths (DESIGN §3).

A path is one or more non-empty segments joined by ``.``. Concrete paths (for get, put,
delete) may not contain glob characters; patterns (for subscribe) may. Parsing is cached
in a bounded LRU so that paths arriving from requests cannot grow memory without bound —
and no path ever becomes an otpylib atom.
"""

from __future__ import annotations

from functools import lru_cache

from otpylib_config.errors import InvalidPathError

Path = tuple[str, ...]
GLOB_CHARS = frozenset("*?[]")


def parse_path(path: str) -> Path:
    """Split a concrete path into segments, rejecting anything ambiguous."""
    if not isinstance(path, str):
        raise InvalidPathError(f"a path must be a str, got {type(path).__name__}: {path!r}")
    return _parse_path(path)


def parse_pattern(pattern: str) -> Path:
    """Split a glob pattern into segments (``*``, ``**``, fnmatch wildcards allowed)."""
    if not isinstance(pattern, str):
        raise InvalidPathError(
            f"a pattern must be a str, got {type(pattern).__name__}: {pattern!r}"
        )
    return _parse_pattern(pattern)


@lru_cache(maxsize=8192)
def _parse_path(path: str) -> Path:
    segments = _split(path, "path")
    for segment in segments:
        if GLOB_CHARS.intersection(segment):
            raise InvalidPathError(
                f"invalid path {path!r}: segment {segment!r} contains a glob character"
            )
    return segments


@lru_cache(maxsize=4096)
def _parse_pattern(pattern: str) -> Path:
    return _split(pattern, "pattern")


def _split(text: str, what: str) -> Path:
    if not text:
        raise InvalidPathError(f"invalid {what}: empty string")
    segments = tuple(text.split("."))
    if "" in segments:
        raise InvalidPathError(f"invalid {what} {text!r}: empty segment")
    return segments


def join(segments: Path) -> str:
    """Join segments back into a dotted path."""
    return ".".join(segments)
