"""Dot-separated configuration paths (docs/architecture.md, Paths, patterns and events).

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

MAX_SEGMENTS = 64
"""The most segments a path or pattern may have. Values may not nest deeper either
(``values.MAX_DEPTH`` is this number), so every stored node has a path that parses."""

MAX_PATH_LENGTH = 4096
"""The longest path or pattern, in characters. Checked before parsing, so an oversized
path from a request is refused without being split or cached."""


def parse_path(path: str) -> Path:
    """Split a concrete path into segments, rejecting anything ambiguous."""
    if not isinstance(path, str):
        raise InvalidPathError(f"a path must be a str, got {type(path).__name__}: {_shown(path)}")
    _check_length(path, "path")
    return _parse_path(path)


def parse_pattern(pattern: str) -> Path:
    """Split a glob pattern into segments (``*``, ``**``, fnmatch wildcards allowed)."""
    if not isinstance(pattern, str):
        raise InvalidPathError(
            f"a pattern must be a str, got {type(pattern).__name__}: {_shown(pattern)}"
        )
    _check_length(pattern, "pattern")
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
    segments = _split(pattern, "pattern")
    for segment in segments:
        problem = _bracket_problem(segment)
        if problem is not None:
            raise InvalidPathError(
                f"invalid pattern {pattern!r}: segment {segment!r} is malformed ({problem})"
            )
    return segments


def _shown(thing: object, limit: int = 60) -> str:
    """A short repr of something passed as a path: some objects cannot even be shown
    (``repr(10**5000)`` raises), and none should make an error message enormous."""
    try:
        text = repr(thing)
    except Exception:
        return "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_length(text: str, what: str) -> None:
    """Refuse an oversized path before it is hashed into a cache or quoted in full."""
    if len(text) > MAX_PATH_LENGTH:
        raise InvalidPathError(
            f"invalid {what} {text[:40]!r}...: longer than {MAX_PATH_LENGTH} characters"
        )


def _bracket_problem(segment: str) -> str | None:
    """Why the ``[...]`` sets of ``segment`` are malformed, or ``None`` if they are not.

    Sets are read as fnmatch reads them (``[!...]`` negates; a ``]`` right after ``[`` or
    ``[!`` is a member). fnmatch itself would take an unclosed ``[`` or a stray ``]`` as a
    literal character, but no key can contain one, so such a pattern could never match:
    almost certainly a typo, and refused as one.
    """
    if "[" not in segment and "]" not in segment:
        return None
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "]":
            return "']' without a matching '['"
        if char == "[":
            start = i + segment.startswith("!", i)  # a negated set
            start += segment.startswith("]", start)  # a leading ']' is a member
            end = segment.find("]", start)
            if end < 0:
                return "'[' is never closed"
            i = end + 1
    return None


def _split(text: str, what: str) -> Path:
    if not text:
        raise InvalidPathError(f"invalid {what}: empty string")
    segments = tuple(text.split("."))
    if "" in segments:
        raise InvalidPathError(f"invalid {what} {text!r}: empty segment")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidPathError(
            f"invalid {what} {text[:40]!r}...: more than {MAX_SEGMENTS} segments"
        )
    return segments


def join(segments: Path) -> str:
    """Join segments back into a dotted path."""
    return ".".join(segments)
