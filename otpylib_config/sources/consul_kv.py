"""One read of Consul's KV HTTP API, checked against docs/consul.md.

Everything Consul can answer is turned into either a :class:`KVRead` (the entries and the
index) or a :class:`ConsulError` whose message says what was wrong and where: unreachable,
timed out, 403 (token), 429, 5xx, a response without ``X-Consul-Index``, a body that is not
the JSON Consul sends, a ``Value`` that is not base64. What the values mean is the source's
business (:mod:`otpylib_config.sources.consul`); this module only speaks HTTP.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from otpylib_config.parsers import ParseError, load_json

INDEX_HEADER = "X-Consul-Index"
TOKEN_HEADER = "X-Consul-Token"
_SLOW_STATUSES = {400: "Consul rejected the request", 403: "Consul refused the ACL token"}


class ConsulError(Exception):
    """A read that gave no usable answer. ``retry_after``: retry no sooner (403, 400)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes | None
    """``None`` for a key stored with an empty value."""
    modify_index: int


@dataclass(frozen=True)
class KVRead:
    index: int
    """``X-Consul-Index``; a zero index counts as 1."""
    entries: tuple[Entry, ...]
    document: list[Any]
    """The decoded JSON body, kept for the last-known-good cache."""


@dataclass(frozen=True)
class KVClient:
    """Reads under one Consul agent ``url`` with an optional ACL token."""

    session: aiohttp.ClientSession
    url: str
    token: str | None = field(default=None, repr=False)
    slow_retry: float = 30.0
    """How long to wait before retrying after a 403 or a 400: they need an operator."""

    async def read(
        self,
        key: str,
        *,
        recurse: bool,
        timeout: float,
        index: int = 0,
        wait: float | None = None,
    ) -> KVRead:
        """``GET /v1/kv/<key>``: a blocking query when ``index`` > 0 and ``wait`` is given."""
        params = {"recurse": ""} if recurse else {}
        if index > 0 and wait is not None:
            params.update(index=str(index), wait=f"{max(1, round(wait * 1000))}ms")
        url = URL(f"{self.url.rstrip('/')}/v1/kv/{quote(key, safe='/')}", encoded=True)
        headers = {TOKEN_HEADER: self.token} if self.token else {}
        try:
            async with self.session.get(
                url,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,  # a redirect would carry the token elsewhere
            ) as response:
                body = await response.read()
                return self._answer(key, response.status, response.headers, body)
        except TimeoutError:
            raise ConsulError(f"Consul at {self.url} did not answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise ConsulError(f"cannot read {key!r} from Consul at {self.url}: {exc}") from None

    def _answer(self, key: str, status: int, headers: Any, body: bytes) -> KVRead:
        if status in _SLOW_STATUSES:
            message = f"{_SLOW_STATUSES[status]} reading {key!r}: {status} {_text(body)}"
            raise ConsulError(message, retry_after=self.slow_retry)
        if 300 <= status < 400:
            where = headers.get("Location", "?")
            message = f"Consul redirected the read of {key!r} to {where}; not followed"
            raise ConsulError(message, retry_after=self.slow_retry)
        if status not in (200, 404):
            raise ConsulError(f"Consul answered {status} reading {key!r}: {_text(body)}")
        index = _index(headers.get(INDEX_HEADER), key)
        if status == 404:
            return KVRead(index, (), [])
        document = _json(body, key)
        return KVRead(index, decode_entries(document, key), document)


def decode_entries(document: Any, where: str) -> tuple[Entry, ...]:
    """Check and decode Consul's entry list (from HTTP or from the cache)."""
    if not isinstance(document, list):
        raise ConsulError(f"Consul's answer for {where!r} is not a list of entries")
    return tuple(_entry(item, where) for item in document)


def _entry(item: Any, where: str) -> Entry:
    if not isinstance(item, dict) or not isinstance(item.get("Key"), str):
        raise ConsulError(f"Consul's answer for {where!r} holds an entry without a Key")
    key, value, modify = item["Key"], item.get("Value"), item.get("ModifyIndex", 0)
    if value is not None and not isinstance(value, str):
        raise ConsulError(f"Consul key {key!r}: Value is not a base64 string")
    if not isinstance(modify, int):
        raise ConsulError(f"Consul key {key!r}: ModifyIndex is not an integer")
    try:
        raw = None if value is None else base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConsulError(f"Consul key {key!r}: Value is not valid base64") from None
    return Entry(key, raw, modify)


def _index(header: str | None, key: str) -> int:
    if header is None:
        raise ConsulError(f"Consul's answer for {key!r} has no {INDEX_HEADER} header")
    try:
        index = int(header)
    except ValueError:
        raise ConsulError(f"Consul's answer for {key!r}: {INDEX_HEADER} {header!r}") from None
    if index < 0:
        raise ConsulError(f"Consul's answer for {key!r}: negative {INDEX_HEADER} {index}")
    return max(index, 1)


def _json(body: bytes, key: str) -> Any:
    """``body`` decoded as JSON (:func:`~otpylib_config.parsers.load_json`: deep nesting
    and over-long integers are refused as invalid JSON is), or a :class:`ConsulError`."""
    try:
        return load_json(body)
    except ParseError as exc:
        problem = str(exc)
    raise ConsulError(f"Consul's answer for {key!r} is not valid JSON: {problem}")


def _text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
