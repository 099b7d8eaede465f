"""The admin API client (docs/admin.md): one aiohttp session, bounded by timeouts.

Every failure becomes a :class:`CliError` with the exit code of its kind, carrying the
server's ``{"error": ...}`` message: the server names what was wrong and where, so the CLI
adds only what to do about it. The token goes into the ``Authorization`` header and
nowhere else: no message, no URL, no repr holds it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from otpylib_config.cli._errors import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_SERVER,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    UsageError,
)

if TYPE_CHECKING:
    import aiohttp

URL_ENV = "OTPYLIB_CONFIG_URL"
TOKEN_ENV = "OTPYLIB_CONFIG_TOKEN"
STREAM_READ_TIMEOUT = 45.0
"""Seconds ``/events`` may be silent: three keep-alive periods, then the peer is dead."""
_NO_BODY: Any = object()


class Unreachable(CliError):
    """The server could not be reached or could not serve (exit 3): worth a reconnect."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


@dataclass(frozen=True)
class Answer:
    """A successful answer: status, parsed JSON body, headers."""

    status: int
    body: Any
    headers: Mapping[str, str]


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: what messages may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def base_url(url: str) -> str:
    """The admin API's base URL, checked: ``http(s)://host[:port][/prefix]``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError as exc:
        raise UsageError(f"--url is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--url {safe_url(url)!r} is not an http(s) URL "
            "(for example http://127.0.0.1:8081, or what status().admin_url says)"
        )
    return url.rstrip("/")


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError:  # a core dependency: only a broken install gets here
        raise CliError(
            "the online commands need aiohttp: pip install otpylib-config", EXIT_USAGE
        ) from None
    return aiohttp


class AdminClient:
    """``async with AdminClient(url, token, timeout) as client``: requests to one server."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = base_url(url)
        self.shown_url = safe_url(self.url)
        self.has_token = bool(token)
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AdminClient({self.shown_url!r})"

    async def __aenter__(self) -> AdminClient:
        aiohttp = _aiohttp()
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def route(self, *parts: str) -> str:
        """The URL of a route; a configuration path is one percent-encoded segment."""
        return self.url + "".join("/" + quote(part, safe=".") for part in parts)

    async def request(
        self,
        method: str,
        route: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = _NO_BODY,
    ) -> Answer:
        """One request; an answer outside 2xx raises the :class:`CliError` of its status."""
        aiohttp = _aiohttp()
        assert self._session is not None
        data = None if body is _NO_BODY else json.dumps(body)
        headers = {} if data is None else {"Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._session.request(
                method, route, params=params, data=data, headers=headers, timeout=timeout
            ) as response:
                text = await response.text()
                return self._answer(response.status, text, response.headers)
        except TimeoutError:  # first: a TimeoutError is an OSError too
            raise Unreachable(
                f"{self.shown_url} did not answer within {self.timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self.unreachable(exc) from None

    @asynccontextmanager
    async def stream(
        self, route: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """A long-lived ``GET`` (``/events``): its body as a stream, once it answered 200."""
        aiohttp = _aiohttp()
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=STREAM_READ_TIMEOUT
        )
        accept = {"Accept": "text/event-stream", **headers}
        try:
            async with self._session.get(
                route, params=params, headers=accept, timeout=timeout
            ) as response:
                if response.status != 200:
                    self._answer(response.status, await response.text(), response.headers)
                yield response.content
        except TimeoutError:
            raise Unreachable(f"{self.shown_url} went silent (no answer, no keep-alive)") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self.unreachable(exc) from None

    def unreachable(self, exc: BaseException) -> Unreachable:
        """A transport failure, named without the request (whose headers hold the token)."""
        text = str(exc) or type(exc).__name__
        return Unreachable(f"cannot reach {self.shown_url}: {text}")

    def _answer(self, status: int, text: str, headers: Mapping[str, str]) -> Answer:
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = ABSENT_BODY
        if 200 <= status < 300:
            if body is ABSENT_BODY:
                raise CliError(
                    f"{self.shown_url} answered {status} with a body that is not JSON", EXIT_SERVER
                )
            return Answer(status, body, headers)
        raise self._failure(status, body)

    def _failure(self, status: int, body: Any) -> CliError:
        message = _error_of(body) or f"HTTP {status}"
        if status == 401:
            hint = (
                "the server did not accept the token"
                if self.has_token
                else f"the server needs a token: pass --token or set ${TOKEN_ENV}"
            )
            return CliError(f"{hint} (401: {message})", EXIT_UNREACHABLE)
        if status == 403:
            return CliError(f"not allowed (403): {message}", EXIT_UNREACHABLE)
        if status == 404:
            return CliError(message, EXIT_NOT_FOUND)
        if status == 422:
            return CliError(f"rejected (422): {message}", EXIT_FAILED, _problems(body))
        if status in (400, 413):
            return CliError(f"refused ({status}): {message}", EXIT_USAGE)
        if status == 503:
            return Unreachable(f"{self.shown_url} is unavailable (503): {message}")
        return CliError(f"{self.shown_url} answered {status}: {message}", EXIT_SERVER)


ABSENT_BODY: Any = object()


def _error_of(body: Any) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return str(body["error"])
    return None


def _problems(body: Any) -> list[str]:
    """``problems: [{path, message}]`` of a 422, one line each."""
    problems = body.get("problems") if isinstance(body, Mapping) else None
    lines = []
    for problem in problems if isinstance(problems, list) else ():
        if isinstance(problem, Mapping):
            path, message = problem.get("path"), problem.get("message")
            lines.append(f"{path}: {message}" if path else str(message))
    return lines
