"""Secret redaction for everything that leaves the server as text
(docs/architecture.md, Data flow).

A path is secret when one of its segments is: the leaf's own name, or the name of a section
it sits in (a ``credentials`` section hides everything in it, so a change to
``credentials.user`` is masked like a dump of the whole section). A segment is secret when
it matches one of the patterns, which come in two kinds:

* a word such as ``token`` or ``private_key`` (the default kind): the segment, split into
  words at ``_``, ``-``, other punctuation, case changes (``clientSecret``, ``APIKey``) and
  digits, ends in the pattern's words. So ``jwt_secret``, ``apiKey`` and ``API-KEY`` are
  secret while ``access_token_expire_minutes``, ``key_prefix`` and ``tokenizer`` are shown;
  trailing digits are ignored, so ``password2`` is secret too. This is the rule of Spring
  Boot's sanitizer: a name describes what its value *is* by its last word.
* a glob (it has ``*``, ``?`` or ``[``): fnmatch on the lower-cased segment, as before the
  word rule existed, for configurations that relied on ``*password*`` and the like. It is
  matched by the one glob matcher (docs/matching.md), folding case, as a pattern of one
  segment: a dot in it never matches, since no segment holds one.

Every string that is not secret is still shown with the password of any URL in it masked
(``postgresql://app:****@db/app``): a connection string is a secret's usual hiding place,
whatever its name. ``get`` still returns secrets: only dumps, logs, telemetry and status
redact. Text that was not built from paths, such as a validator's message, is scrubbed
instead: every secret value of the tree that appears in it is replaced, and URL passwords
are masked (:meth:`Redactor.scrub`).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from otpylib_config.paths import GLOB_CHARS
from otpylib_config.patterns import PatternIndex
from otpylib_config.values import Section

DEFAULT_SECRET_PATTERNS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "apikey",
    "credentials",
    "private_key",
)
"""The built-in rule: a name ending in one of these words is secret (see the module doc).
Extend it rather than replace it: ``secret_patterns=(*DEFAULT_SECRET_PATTERNS, "dsn")``."""

REDACTED = "**redacted**"
URL_PASSWORD_MASK = "****"
"""What stands for the password of a URL: a fixed marker, so its length tells nothing."""

MIN_SCRUBBED_LENGTH = 4
"""Secret values shorter than this are not scrubbed from text: replacing every ``1`` or
``on`` in a message would make it unreadable, and so short a value guards little anyway."""

_GLOB_CHARS = GLOB_CHARS - {"]"}
"""What makes a secret pattern a glob (README, Provenance and secrets): a lone ``]`` starts no
set, so ``a]`` stays a word pattern, as it always was."""
_WORD = re.compile(r"[A-Z]+(?![^\W\dA-Z_])|[A-Z]?[^\W\dA-Z_]+|\d+")
"""One word of a name: an upper-case run (an acronym, up to the capital that starts the
next word), a capitalised or lower-case word (letters outside ASCII count as lower case,
so they never split a word), or a run of digits. Anything else separates words."""

_AUTHORITY = re.compile(r"://([^\s/]*)")
"""What follows ``://`` up to the path or the end of the word: the URL's authority."""


class Redactor:
    """Decides which paths are secret and masks their values."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> None:
        if isinstance(patterns, str):  # would silently become one pattern per character
            raise TypeError(f"secret patterns must be a sequence of str, not {patterns!r}")
        given = tuple(patterns)
        self.patterns = tuple(pattern.lower() for pattern in given)
        self._globs: PatternIndex[str] = PatternIndex(fold_case=True)
        for pattern in self.patterns:
            if _is_glob(pattern):
                self._globs.add((pattern,), pattern)
        self._endings = tuple(_ending(pattern) for pattern in given if not _is_glob(pattern))
        self._matches = lru_cache(maxsize=4096)(self._match)
        self._segment_matches = lru_cache(maxsize=4096)(self._match_segment)
        #: Paths of every leaf that a secret source provides; set by the manager.
        self.secret_leaves: frozenset[str] = frozenset()
        #: The set before the last reload: a secret that a source just dropped is still
        #: reported as the ``old_value`` of its change, and must stay masked there.
        self.previous_leaves: frozenset[str] = frozenset()
        #: Paths whose value the schema types as secret (``SecretStr``); they only grow, since
        #: a dropped one may still be the ``old_value`` of a change.
        self.schema_leaves: frozenset[str] = frozenset()

    def replace_leaves(self, leaves: frozenset[str]) -> None:
        self.previous_leaves, self.secret_leaves = self.secret_leaves, leaves

    def is_secret(self, path: str) -> bool:
        return (
            path in self.secret_leaves
            or path in self.previous_leaves
            or path in self.schema_leaves
            or self._matches(path)
        )

    def _match(self, path: str) -> bool:
        """Any segment counts, ancestors included: below a secret section all is secret."""
        return any(self._segment_matches(segment) for segment in path.split("."))

    def _match_segment(self, segment: str) -> bool:
        found = words(segment)
        if any(_ends_with(found, ending) for ending in self._endings):
            return True
        return self._globs.matches((segment,))

    def value(self, path: str, value: Any) -> Any:
        """``value`` with every secret leaf below ``path`` replaced by a marker, and the
        password of every URL in the strings left shown masked."""
        if value is None:
            return None
        if self.is_secret(path):
            return REDACTED
        if isinstance(value, str):
            return mask_url_passwords(value)
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
        Then the password of any URL left in the text is masked, whatever path it came
        from: a connection error quotes the URL it failed on.
        """
        return self.scrub_all([text], tree)[0]

    def scrub_all(self, texts: Iterable[str], tree: Section) -> list[str]:
        """:meth:`scrub` of each of ``texts``, walking ``tree`` for its secrets only once."""
        found = {spelling for leaf in self._secret_leaves(tree, "") for spelling in _texts(leaf)}
        secrets = sorted(found, key=len, reverse=True)
        return [mask_url_passwords(_replace_all(text, secrets)) for text in texts]

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


def words(name: str) -> tuple[str, ...]:
    """The lower-cased words of ``name`` (``"clientSecret2"`` -> ``("client", "secret")``).

    Trailing numbers are dropped: ``password2`` or ``api_key_1`` is a numbered secret, and
    a number alone describes nothing."""
    found = [word.lower() for word in _WORD.findall(name)]
    while found and found[-1].isdigit():
        found.pop()
    return tuple(found)


def _is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


def _ending(pattern: str) -> tuple[str, ...]:
    """The words a secret name must end in. A pattern without any would match every name."""
    ending = words(pattern)
    if not ending:
        raise ValueError(f"secret pattern {pattern!r} has no word in it")
    return ending


def _ends_with(found: tuple[str, ...], ending: tuple[str, ...]) -> bool:
    return len(found) >= len(ending) and found[len(found) - len(ending) :] == ending


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced
    by :data:`URL_PASSWORD_MASK`; user and host stay, so the URL still says where it goes.

    The password runs from the first ``:`` of the userinfo to the *last* ``@`` before the
    path, as URL parsers read it, so a raw ``@``, ``:``, ``?`` or ``#`` in a password is
    masked with it. (A ``?`` or ``#`` would start the query strictly speaking, but clients
    such as libpq accept them raw in passwords: masking a query that follows a port and
    holds an ``@`` is the price of never showing such a password.) A string without
    ``://`` is returned at once, since this runs on every string shown.
    """
    if "://" not in text:
        return text
    return _AUTHORITY.sub(_masked_authority, text)


def _masked_authority(match: re.Match[str]) -> str:
    userinfo, at, host = match.group(1).rpartition("@")
    user, _, password = userinfo.partition(":")
    if not at or not password:  # no userinfo, or no password in it: nothing to hide
        return match.group(0)
    return f"://{user}:{URL_PASSWORD_MASK}@{host}"


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
