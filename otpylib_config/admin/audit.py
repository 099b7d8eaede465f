"""The audit trail of the admin API's writes: one log line and one ``config.admin.write``
telemetry event per write request, allowed or not, naming the token (never its secret),
the method, the path(s), the outcome, the status and the version. Values are never
recorded: an audit log is read by more people than the configuration's secrets are for."""

from __future__ import annotations

import logging

from aiohttp import web

from otpylib_config import telemetry
from otpylib_config.admin.options import AdminToken

logger = logging.getLogger("otpylib_config.admin")

PATHS = web.RequestKey("otpylib_config.audit_paths", tuple)
"""The paths a write addresses, set by its handler once it knows them (a ``PATCH``'s keys)."""

_OUTCOMES = {
    400: "invalid",
    401: "unauthorized",
    403: "denied",
    404: "invalid",
    408: "timeout",
    499: "cancelled",
    413: "invalid",
    415: "invalid",
    422: "rejected",
}


def outcome_of(status: int) -> str:
    """``ok``, ``invalid`` (a bad request), ``unauthorized``, ``denied`` (scope or
    writable), ``rejected`` (validation), ``timeout`` (the request took too long),
    ``cancelled`` (499: the client left; the write may have been applied), or ``error``
    (the tree could not do it)."""
    return "ok" if status < 400 else _OUTCOMES.get(status, "error")


def record(
    request: web.Request,
    tree: str,
    token: AdminToken | None,
    status: int,
    outcome: str,
    version: int,
    duration: float,
) -> None:
    paths: tuple[str, ...] = request.get(PATHS) or (_route_path(request),)
    name = token.name if token is not None else None
    log = logger.info if outcome == "ok" else logger.warning
    log(
        "admin %s %s by %s: %s (%d), version %d",
        request.method,
        _shown(paths),
        "no valid token" if name is None else f"token {name!r}",
        outcome,
        status,
        version,
    )
    telemetry.execute(
        telemetry.ADMIN_WRITE,
        {"duration_s": duration},
        {
            "id": tree,
            "token": name,
            "method": request.method,
            "path": paths[0] if len(paths) == 1 else list(paths),
            "outcome": outcome,
            "status": status,
            "version": version,
        },
    )


def _shown(paths: tuple[str, ...]) -> str:
    """The paths as ``repr``s, each cut short: a path a client sent may hold a newline,
    and one audit record must stay one line."""
    return ", ".join(repr(path if len(path) <= 200 else path[:200] + "...") for path in paths)


def _route_path(request: web.Request) -> str:
    """What a write addressed before its path was read: the route's ``{path}``, else the
    URL path (``/reload``)."""
    return request.match_info.get("path") or request.rel_url.path
