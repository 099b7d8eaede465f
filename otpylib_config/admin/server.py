"""``AdminServer``: the supervised process that serves a tree's admin API
(docs/admin.md, docs/supervision.md).

Like a source watcher, the process owns one task (bound with ``_otp_compat.bind_task``) in
which the aiohttp server runs, outside any process context: however the process ends, the
task is cancelled, its event log is detached and its sockets closed. ``init`` waits until
the task of a predecessor has finished that, then binds again.

Binding: the first start of a tree fails if the address cannot be bound, so a typo or a
port in use stops ``start()`` with a clear error. A restarted process binds the port the
first one got (``port=0`` picks one once, so ``status().admin_url`` stays the same across
restarts) and, if that fails now, retries with a backoff instead of failing: a port taken
for a moment must not take the configuration tree down with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from aiohttp import web
from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat
from otpylib_config.admin.app import build
from otpylib_config.admin.events import EventLog
from otpylib_config.admin.options import AdminSpec
from otpylib_config.errors import ConfigError
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config.admin")

BIND_RETRY_FIRST_S = 0.5
BIND_RETRY_MAX_S = 10.0
_SHUTDOWN_TIMEOUT_S = 2.0


class AdminBindError(ConfigError, OSError):
    """Raised by a tree's start when its admin API cannot listen where it was told to."""


class AdminServer(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ConfigTable:
        first = table.track("admin") == 1
        await stop(table)
        bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(
            _serve(table, bound, retry=not first), context=contextvars.Context()
        )
        table.admin_task = task
        _otp_compat.bind_task(process.self(), task)
        if first:
            await asyncio.shield(bound)  # raises AdminBindError: the tree does not start
        return table

    async def handle_call(self, request: Any, from_: Any, table: ConfigTable) -> Any:
        return (Reply(ConfigError("AdminServer takes no calls")), table)

    async def handle_cast(self, request: Any, table: ConfigTable) -> Any:
        return (NoReply(), table)

    async def handle_info(self, message: Any, table: ConfigTable) -> Any:
        logger.warning("admin server ignored an unexpected %s", type(message).__name__)
        return (NoReply(), table)

    async def terminate(self, reason: Any, table: ConfigTable) -> None:
        """Never called by otpylib 0.5.18; the bound task cleans up instead."""


async def stop(table: ConfigTable) -> None:
    """Stop the admin server's task, if it runs, and wait until its sockets are closed."""
    task, table.admin_task = table.admin_task, None
    if task is None:
        return
    task.cancel()
    _, pending = await asyncio.wait([task], timeout=_SHUTDOWN_TIMEOUT_S * 2)
    if pending:
        logger.warning("the admin server of %s did not stop in time", table.spec.id)


async def _serve(table: ConfigTable, bound: asyncio.Future[str], *, retry: bool) -> None:
    spec = table.spec.admin
    assert spec is not None
    version = table.snapshot.version if table.snapshot is not None else 0
    events = EventLog(table.spec.id, spec.events_kept, version)
    runner = web.AppRunner(
        build(table, spec, events),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=spec.keepalive_timeout,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        handler_cancellation=True,
    )
    events.attach()
    try:
        await runner.setup()
        try:
            url = await _bind(runner, table, spec, retry=retry)
        except AdminBindError as exc:  # the first start: init raises it, the tree stops
            bound.set_exception(exc)
            return
        table.admin_url = url
        logger.info("admin API of config tree %s listening on %s", table.spec.id, url)
        bound.set_result(url)
        await asyncio.Event().wait()  # serve until cancelled
    finally:
        table.admin_url = None
        events.close()  # open streams end first, so the cleanup does not wait for them
        await runner.cleanup()


async def _bind(runner: web.AppRunner, table: ConfigTable, spec: AdminSpec, *, retry: bool) -> str:
    """Listen where the spec says (on a restart: on the port the first start got), and
    return the base URL; without ``retry``, raise :class:`AdminBindError` if it cannot."""
    host = spec.host
    port = spec.port if table.admin_port is None else table.admin_port
    delay = BIND_RETRY_FIRST_S
    while True:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except Exception as exc:  # OSError mostly; a host name IDNA refuses, say
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            error = AdminBindError(
                f"config tree {table.spec.id!r}: the admin API cannot listen on "
                f"{host}:{port}: {reason}"
            )
            if not retry:
                raise error from None
            logger.warning("%s; retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BIND_RETRY_MAX_S)
            continue
        bound_host, table.admin_port = _address(site)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{table.admin_port}{spec.prefix}"


def _address(site: web.TCPSite) -> tuple[str, int]:
    server = site._server  # aiohttp has no public accessor for the bound socket
    assert isinstance(server, asyncio.Server) and server.sockets
    host, port = server.sockets[0].getsockname()[:2]
    return str(host), int(port)
