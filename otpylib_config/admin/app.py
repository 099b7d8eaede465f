"""The admin API's routes and handlers, as an aiohttp application (docs/admin.md).

A request goes through two middlewares, then its handler:

* ``_errors`` turns every failure into a JSON answer with the status docs/admin.md lists
  (the library's errors by type; aiohttp's own 404/405/413 too), so no request can crash
  the server or show a traceback;
* ``_guard`` authenticates (unless the route is public), checks the scope, bounds the time
  a request may take, and audits every write.

Handlers call the tree the way an application does (``ConfigClient`` bound to this table):
reads answer from the published snapshot, writes are requests to the manager like any
``Config.put``, so the admin API adds no path into the state that the rest of the library
does not already guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiohttp import web

from otpylib_config.admin import audit
from otpylib_config.admin.auth import CHALLENGE, Writable, authenticate
from otpylib_config.admin.events import EventLog, Stream, parse_last_id, sse
from otpylib_config.admin.options import AdminSpec, AdminToken, Scope
from otpylib_config.client import ConfigClient, dump, dump_at
from otpylib_config.errors import (
    ConfigError,
    ConfigTimeoutError,
    InvalidPathError,
    InvalidValueError,
    NotRunningError,
    ValidationError,
)
from otpylib_config.jsonable import dumps
from otpylib_config.paths import Path, parse_path, parse_pattern
from otpylib_config.table import ConfigTable, Status
from otpylib_config.tree import MISSING
from otpylib_config.values import thaw

logger = logging.getLogger("otpylib_config.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_STREAMS = 256
"""Open ``/events`` streams at most; one more is refused with 503."""


class Problem(Exception):
    """A request that cannot be served: the status and the message for the client."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra
        self.headers = dict(headers or {})


class Admin:
    """What every handler needs, kept in the application."""

    def __init__(self, table: ConfigTable, spec: AdminSpec, events: EventLog) -> None:
        self.table, self.spec, self.events = table, spec, events
        self.client = ConfigClient(lambda: table)
        self.writable = Writable(spec.writable)

    def version(self) -> int:
        snapshot = self.table.snapshot
        return 0 if snapshot is None else snapshot.version

    def status(self) -> Status:
        return self.table.status(_manager_running(self.table))


ADMIN = web.AppKey("admin", Admin)
TOKEN = web.RequestKey("token", AdminToken)


def _manager_running(table: ConfigTable) -> bool:
    from otpylib import process

    return process.whereis(table.manager_name) is not None


# -- responses ------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=dumps(body), status=status, content_type="application/json", headers=headers
    )


def _problem(problem: Problem) -> web.Response:
    headers = dict(problem.headers)
    if problem.status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    response = _json({"error": problem.message, **problem.extra}, problem.status, headers)
    if problem.status == 408:  # the rest of its body may still be on its way: hang up
        response.force_close()
    return response


def _read(admin: Admin, path: str | None) -> web.Response:
    """A value or the whole configuration, redacted as ``dump`` redacts, with its version."""
    table = admin.table
    snapshot = table.snapshot
    assert snapshot is not None
    headers = {"X-Config-Version": str(snapshot.version)}
    if path is None:
        return _json(dump(table), headers=headers)
    _checked(path)
    value = dump_at(table, path)
    if value is MISSING:
        raise Problem(404, f"no value at {path}", path=path)
    return _json(value, headers=headers)


# -- input ----------------------------------------------------------------------------------


def _checked(path: str) -> Path:
    if "/" in path:
        dotted = ".".join(p for p in path.split("/") if p)
        raise InvalidPathError(f"invalid path {path!r}: paths are dotted ({dotted!r})")
    return parse_path(path)


def _path_of(request: web.Request) -> tuple[str, Path]:
    path = request.match_info["path"]
    return path, _checked(path)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON has no infinity, and no reader could use it
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


async def _body(request: web.Request, max_body: int) -> Any:
    """The request's JSON body; refused before it is read whole when over the limit."""
    if request.content_type != "application/json":
        given = request.headers.get("Content-Type")
        sent = f"not {given}" if given else "and the request has no Content-Type"
        raise Problem(415, f"the body must be application/json, {sent}")
    length = request.content_length
    if length is not None and length > max_body:
        raise Problem(413, f"the body is {length} bytes; the limit is {max_body}")
    raw = await request.read()  # aiohttp stops at client_max_size (= max_body) too
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite)
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the body is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise Problem(400, "the body is nested too deeply") from None
    except ValueError as exc:
        raise Problem(400, f"the body is not JSON: {exc}") from None


def _may_write(request: web.Request, admin: Admin, path: str, segments: Path) -> None:
    if not admin.writable.allows(segments):
        token = request[TOKEN]
        globs = ", ".join(admin.writable.globs) or "none are configured"
        raise Problem(
            403, f"token {token.name!r} may not write {path}: no writable glob covers it ({globs})"
        )


# -- handlers -------------------------------------------------------------------------------


async def get_config(request: web.Request) -> web.StreamResponse:
    return _read(request.app[ADMIN], request.query.get("path"))


async def get_path(request: web.Request) -> web.StreamResponse:
    return _read(request.app[ADMIN], request.match_info["path"])


async def get_explain(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    path, _ = _path_of(request)
    found = await admin.client.explain(path)
    if not found.contributions and found.value is None:
        raise Problem(404, f"no value at {path}", path=path)
    contributions = [dataclasses.asdict(c) for c in found.contributions]
    body = {
        "path": found.path,
        "value": thaw(found.value),
        "source": found.source,
        "origin": found.origin,
        "contributions": thaw(contributions),
    }
    return _json(body)


async def put_path(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    path, segments = _path_of(request)
    request[audit.PATHS] = (path,)
    _may_write(request, admin, path, segments)
    value = await _body(request, admin.spec.max_body)
    await admin.client.put(path, value)
    return _json({"path": path, "version": admin.version()})


async def patch_config(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    values = await _body(request, admin.spec.max_body)
    if not isinstance(values, dict) or not values:
        raise Problem(400, "the body must be a non-empty JSON object of path to value")
    request[audit.PATHS] = tuple(values)
    for path in values:
        _may_write(request, admin, path, _checked(path))
    await admin.client.put_many(values)
    return _json({"paths": list(values), "version": admin.version()})


async def delete_path(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    path, segments = _path_of(request)
    request[audit.PATHS] = (path,)
    _may_write(request, admin, path, segments)
    removed = await admin.client.delete(path)
    return _json({"path": path, "removed": removed, "version": admin.version()})


async def post_reload(request: web.Request) -> web.StreamResponse:
    result = await request.app[ADMIN].client.reload()
    body = {"version": result.version, "changed": list(result.changed), "errors": result.errors}
    return _json(body)


async def get_status(request: web.Request) -> web.StreamResponse:
    status = request.app[ADMIN].status()
    return _json({**dataclasses.asdict(status), "healthy": status.healthy})


async def get_health(request: web.Request) -> web.StreamResponse:
    reasons = request.app[ADMIN].status().reasons()
    return _json({"healthy": not reasons, "reasons": reasons}, 503 if reasons else 200)


async def get_metrics(request: web.Request) -> web.StreamResponse:
    from otpylib_config import metrics

    try:
        body, content_type = metrics.exposition(request.app[ADMIN].table.spec.id)
    except metrics.MetricsUnavailableError as exc:
        raise Problem(501, str(exc)) from None
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: a snapshot or the missed changes, then every change as it comes.
    Once the answer has started, a failure can only end the stream, never answer again."""
    admin = request.app[ADMIN]
    segments = parse_pattern(request.query.get("pattern", "**"))
    log = admin.events
    if len(log.streams) >= MAX_STREAMS:
        raise Problem(503, f"too many event streams are open ({MAX_STREAMS})")
    stream = log.open(segments)  # before the backlog is taken: nothing falls in between
    response = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        first = _backlog(admin, stream, parse_last_id(request.headers.get("Last-Event-ID")))
        await response.prepare(request)
        await _send(response, b"".join(first), admin.spec.request_timeout)
        await _follow(response, stream, admin.spec)
    except (TimeoutError, ConnectionError):  # a client that stopped reading, or left
        if request.transport is not None:
            request.transport.abort()
    finally:
        log.release(stream)
    return response


_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _backlog(admin: Admin, stream: Stream, last_id: int | None) -> list[bytes]:
    """What a stream starts with: the kept changes after ``last_id``, or a snapshot."""
    version = admin.version()
    kept = None if last_id is None else admin.events.since(last_id, version, stream)
    if kept is None:
        snapshot = {"version": version, "config": dump(admin.table)}
        return [sse("snapshot", version, snapshot)]
    return kept


async def _follow(response: web.StreamResponse, stream: Stream, spec: AdminSpec) -> None:
    while True:
        try:
            async with asyncio.timeout(spec.heartbeat):
                events = await stream.take()
        except TimeoutError:
            await _send(response, b": keep-alive\n\n", spec.request_timeout)
            continue
        if events is None:  # overflowed or the server stops: the client resumes by id
            return
        await _send(response, b"".join(events), spec.request_timeout)


async def _send(response: web.StreamResponse, chunk: bytes, timeout: float) -> None:
    """Write, or give up on a client that stopped reading: its stream ends."""
    async with asyncio.timeout(timeout):
        await response.write(chunk)


# -- middlewares ----------------------------------------------------------------------------


class Route(NamedTuple):
    name: str
    method: str
    path: str
    handler: Handler
    scope: Scope
    streaming: bool = False


ROUTES = (
    Route("config", "GET", "/config", get_config, "read"),
    Route("config.path", "GET", "/config/{path:.+}", get_path, "read"),
    Route("explain", "GET", "/explain/{path:.+}", get_explain, "read"),
    Route("put", "PUT", "/config/{path:.+}", put_path, "write"),
    Route("patch", "PATCH", "/config", patch_config, "write"),
    Route("delete", "DELETE", "/config/{path:.+}", delete_path, "write"),
    Route("reload", "POST", "/reload", post_reload, "write"),
    Route("status", "GET", "/status", get_status, "read"),
    Route("health", "GET", "/health", get_health, "read"),
    Route("metrics", "GET", "/metrics", get_metrics, "read"),
    Route("events", "GET", "/events", get_events, "read", streaming=True),
)
_BY_NAME = {route.name: route for route in ROUTES}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return _problem(problem)
    except Exception as exc:
        return _problem(_classify(request, exc))


def _classify(request: web.Request, exc: Exception) -> Problem:
    """The answer for an error aiohttp or the library raised (or a bug: logged, never
    shown)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, web.HTTPException):  # aiohttp's: no route, wrong method, body too big
        return _http_problem(request, exc)
    if isinstance(exc, ValidationError):
        problems = [{"path": path, "message": message} for path, message in exc.problems]
        return Problem(422, str(exc), problems=problems)
    if isinstance(exc, InvalidPathError | InvalidValueError):
        return Problem(400, str(exc))
    if isinstance(exc, ConfigTimeoutError | NotRunningError):
        return Problem(503, str(exc))
    if isinstance(exc, TimeoutError):
        return Problem(408, "the request took too long to arrive and be answered")
    if isinstance(exc, ConfigError):
        return Problem(503, str(exc))
    logger.exception("admin API failed on %s %s", request.method, request.rel_url.path)
    return Problem(500, f"internal error ({type(exc).__name__}); see the server's log")


def _http_problem(request: web.Request, exc: web.HTTPException) -> Problem:
    if exc.status == 413:
        limit = request.app[ADMIN].spec.max_body
        return Problem(413, f"the body is over the limit of {limit} bytes")
    allow = exc.headers.get("Allow")
    return Problem(exc.status, exc.reason, {"Allow": allow} if allow else None)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = _BY_NAME.get(request.match_info.route.name or "")
    if route is None:  # no such route: aiohttp answers 404 or 405
        return await handler(request)
    admin = request.app[ADMIN]
    if route.name not in admin.spec.public:
        _authorize(request, admin, route)
    if route.streaming:
        return await handler(request)
    if route.scope == "write":
        return await _audited(request, handler, admin)
    async with asyncio.timeout(admin.spec.request_timeout):
        return await handler(request)


def _authorize(request: web.Request, admin: Admin, route: Route) -> None:
    header = request.headers.get("Authorization")
    token = authenticate(admin.spec.tokens, header)
    if token is None:
        why = "a bearer token is required" if header is None else "the token is not valid"
        if route.scope == "write":
            audit.record(
                request, admin.table.spec.id, None, 401, "unauthorized", admin.version(), 0.0
            )
        raise Problem(401, why)
    request[TOKEN] = token
    if not token.allows(route.scope):
        audit.record(request, admin.table.spec.id, token, 403, "denied", admin.version(), 0.0)
        raise Problem(403, f"token {token.name!r} is read-only; {route.method} needs write")


async def _audited(request: web.Request, handler: Handler, admin: Admin) -> web.StreamResponse:
    """Run a write and record what it did: who, what, the outcome, the version."""
    started = time.perf_counter()
    status, outcome = 500, "error"
    try:
        async with asyncio.timeout(admin.spec.request_timeout):
            response = await handler(request)
    except asyncio.CancelledError:  # the client left: the write may still have been applied
        status, outcome = 499, "cancelled"
        raise
    except Exception as exc:
        problem = _classify(request, exc)
        status, outcome = problem.status, audit.outcome_of(problem.status)
        raise problem from None
    else:
        status, outcome = response.status, "ok"
        return response
    finally:
        duration = time.perf_counter() - started
        audit.record(
            request,
            admin.table.spec.id,
            request.get(TOKEN),
            status,
            outcome,
            admin.version(),
            duration,
        )


def build(table: ConfigTable, spec: AdminSpec, events: EventLog) -> web.Application:
    """The application for ``table``'s admin API."""
    app = web.Application(client_max_size=spec.max_body, middlewares=[_errors, _guard])
    app[ADMIN] = Admin(table, spec, events)
    for route in ROUTES:
        app.router.add_route(route.method, spec.prefix + route.path, route.handler, name=route.name)
    return app
