"""``FleetAnnouncer``: the supervised process that announces a tree in etcd (docs/fleet.md).

Like the admin server, the process owns one task (bound with ``_otp_compat.bind_task``, in
an empty ``contextvars`` context) that does the work outside any process context: however
the process ends, the task is cancelled, withdraws the announcement and detaches its
telemetry handler. ``init`` waits until the task of a predecessor has finished that.

The task grants a lease of ``FleetSpec.ttl`` seconds (etcd may grant more: its minimum
lease TTL grows with its election timeout; the granted TTL is logged) and puts the key
``{prefix}{tree}/{node}`` with it, holding what ``status()`` says of the tree (version,
config hash, health, per-source health) and of the node (pid, host, admin URL, when it
started). It keeps the lease alive every ``ttl / 3``, which is what shows the node is
alive, and checks then whether the announcement would say something new (a safety net for
a change no event reported). It puts the announcement only when its content changed, so an
idle node writes no etcd revision: at once (after a short coalescing delay) when a
telemetry event of the tree says its version, hash or health may have changed. A lease
etcd no longer knows (it expired during an outage, or etcd lost its data) is replaced by a
new one and the node announced again. While etcd does not answer, or anything else fails
(a TLS file that cannot be read, a bug), it retries with a backoff and the tree goes on:
the announcer is best effort, its task never ends on its own, and it says it is failing in
its log, its telemetry (``config.fleet.error``) and :func:`state_of`. On cancellation it
revokes the lease (bounded by :data:`REVOKE_TIMEOUT_S`), so a node that stops disappears at
once; one that is killed disappears when the lease lapses, the granted TTL later.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import random
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any

import aiohttp
from otpylib import process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule

from otpylib_config import _otp_compat, telemetry
from otpylib_config.errors import ConfigError
from otpylib_config.fleet.options import FleetSpec
from otpylib_config.sources.etcd_kv import (
    Credentials,
    EtcdClient,
    EtcdError,
    LeaseNotFound,
    ssl_context,
)
from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config.fleet")


WAKE_EVENTS = (
    telemetry.CHANGED,
    telemetry.RELOAD_STOP,
    telemetry.SOURCE_ERROR,
    telemetry.SOURCE_LOADED,
    telemetry.PROCESS_EXITED,
    telemetry.TREE_STOPPED,
)
"""The tree's events after which its version, hash or health may differ."""

COALESCE_S = 0.05
"""How long the announcer waits after a wake-up event for more (one put per burst)."""
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
"""The backoff while etcd does not answer: doubled from the first, never above the max
(nor above ``ttl / 3``, so a lease survives an outage shorter than its TTL), jittered."""
REVOKE_TIMEOUT_S = 1.0
_STOP_WAIT_S = 2 * REVOKE_TIMEOUT_S + 1.0

_HOST = socket.gethostname()


@dataclass(eq=False)
class FleetState:
    """What the announcer of one tree is doing, across restarts of its process."""

    key: str
    started_at: float
    """Wall-clock time the tree's first announcer started (≈ when the tree started)."""
    lease: int | None = None
    lease_ttl: int | None = None
    """The TTL etcd granted the lease, in seconds: ``ceil(ttl)``, or more when etcd's minimum
    lease TTL (1.5 x its election timeout) is higher."""
    announced_at: float | None = None
    """Wall-clock time the content now announced was written (a put happens only when the
    content changes, or with a new lease)."""
    announcements: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    """Failed attempts (etcd errors, or anything else) since the tree started."""

    @property
    def announcing(self) -> bool:
        """The last attempt worked: the node is in etcd now (as far as it knows)."""
        return self.lease is not None and self.last_error is None


_states: weakref.WeakKeyDictionary[ConfigTable, FleetState] = weakref.WeakKeyDictionary()


def state_of(table: ConfigTable) -> FleetState | None:
    """The announcer's state of ``table``'s tree, ``None`` if it never ran one."""
    return _states.get(table)


class FleetAnnouncer(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    async def init(self, table: ConfigTable) -> ConfigTable:
        table.track("fleet")
        await stop(table)  # a predecessor's task withdraws first
        spec = table.spec.fleet
        assert spec is not None
        state = _states.get(table)
        if state is None:
            state = _states[table] = FleetState(spec.key(table.spec.id), time.time())
        task = asyncio.get_running_loop().create_task(
            _announce(table, spec, state), context=contextvars.Context()
        )
        table.fleet_task = task
        _otp_compat.bind_task(process.self(), task)
        return table

    async def handle_call(self, request: Any, from_: Any, table: ConfigTable) -> Any:
        return (Reply(ConfigError("FleetAnnouncer takes no calls")), table)

    async def handle_cast(self, request: Any, table: ConfigTable) -> Any:
        return (NoReply(), table)

    async def handle_info(self, message: Any, table: ConfigTable) -> Any:
        logger.warning("fleet announcer ignored an unexpected %s", type(message).__name__)
        return (NoReply(), table)

    async def terminate(self, reason: Any, table: ConfigTable) -> None:
        """Never called by otpylib 0.5.18; the bound task cleans up instead."""


async def stop(table: ConfigTable) -> None:
    """Stop the announcer's task, if it runs, and wait until it has withdrawn the
    announcement (revoked its lease) or given up on it (bounded)."""
    task, table.fleet_task = table.fleet_task, None
    if task is None:
        return
    if not task.cancelling():  # a second cancel would interrupt the revoke under way
        task.cancel()
    _, pending = await asyncio.wait([task], timeout=_STOP_WAIT_S)
    if pending:
        logger.warning("the fleet announcer of %s did not stop in time", table.spec.id)


async def _announce(table: ConfigTable, spec: FleetSpec, state: FleetState) -> None:
    announcer = _Announcer(table, spec, state)
    handler = f"otpylib_config.fleet.{table.spec.id}.{id(announcer)}"
    telemetry.attach_many(handler, WAKE_EVENTS, announcer.on_event)
    try:
        async with aiohttp.ClientSession() as session:
            try:
                await announcer.run(session)
            finally:
                await announcer.withdraw()
    finally:
        telemetry.detach(handler)


def _client(spec: FleetSpec, session: aiohttp.ClientSession) -> EtcdClient:
    """The etcd client; raises if a TLS file cannot be read or holds no certificate/key."""
    credentials = None
    if spec.username is not None:
        credentials = Credentials(spec.username, spec.password or "")
    tls = ssl_context(spec.ca_file, spec.cert_file, spec.key_file)
    return EtcdClient(session, spec.endpoints, credentials, tls, slow_retry=RETRY_MAX_S)


class _Announcer:
    """The loop of one announcer task; its fields live as long as the task."""

    def __init__(self, table: ConfigTable, spec: FleetSpec, state: FleetState) -> None:
        self.table, self.spec, self.state = table, spec, state
        self.tree = table.spec.id
        self.key = state.key
        self.interval = spec.ttl / 3
        self.timeout = min(2.0, self.interval)
        self.retry_max = min(RETRY_MAX_S, self.interval)
        self.wake = asyncio.Event()
        self.client: EtcdClient | None = None
        self.lease: int | None = None
        self.announced: Any = None
        """What the last announcement etcd took said (without its time), to skip a put
        that would say nothing new."""

    def on_event(self, _event: str, _m: Any, metadata: Any, _config: Any) -> None:
        """Telemetry, in the emitter's task: only flags that a put may be due."""
        if metadata.get("id") == self.tree and metadata.get("role") != "fleet":
            self.wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Announce until cancelled. Whatever fails (etcd, a TLS file, a bug) is logged,
        counted and retried with a backoff: the task never ends on its own, so a node is
        never silently left out of the fleet while its process lives."""
        failures = lost = 0
        refresh_at = 0.0
        reason = "start"
        while True:
            stage = "grant"
            try:
                if self.client is None:
                    self.client = _client(self.spec, session)  # the TLS files are read here
                client = self.client
                if self.lease is None:
                    self.lease, granted = await client.grant(
                        math.ceil(self.spec.ttl), timeout=self.timeout
                    )
                    self._granted(granted)
                    refresh_at = time.monotonic() + self.interval
                    self.announced = None  # a new lease: the key is written again
                elif time.monotonic() >= refresh_at:
                    stage = "keepalive"
                    if await client.keepalive(self.lease, timeout=self.timeout) <= 0:
                        raise LeaseNotFound("etcd no longer has the lease")
                    refresh_at = time.monotonic() + self.interval
                stage = "put"
                await self._put(client, reason)  # only if the content changed
                if self.state.last_error is not None:  # etcd answers again, nothing new to put
                    self.state.last_error = None
                    logger.info(
                        "config tree %s is announced in etcd again as %s", self.tree, self.key
                    )
                failures = lost = 0
                reason = await self._wait(refresh_at)
                continue
            except LeaseNotFound as exc:
                self._lease_lost(stage)
                reason = "new lease"
                lost += 1
                if lost == 1:
                    continue  # at once; a new lease lost again backs off (below)
                self._failed(stage, str(exc))
            except EtcdError as exc:
                self._failed(stage, str(exc))
            except Exception as exc:  # a TLS file, a bug: never ends the task (nor cancels it)
                self._failed(stage, f"{type(exc).__name__}: {exc}", unexpected=exc)
            delay = min(RETRY_FIRST_S * 2**failures, self.retry_max)
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _granted(self, granted: int) -> None:
        assert self.lease is not None
        self.state.lease, self.state.lease_ttl = self.lease, granted
        asked = math.ceil(self.spec.ttl)
        if granted != asked:
            logger.warning(
                "config tree %s: etcd granted the lease of %s a TTL of %ds, not the %ds asked "
                "(its minimum grows with its election timeout): a node killed disappears "
                "after %ds",
                self.tree,
                self.key,
                granted,
                asked,
                granted,
            )
        else:
            logger.info(
                "config tree %s: lease %x granted for %s, TTL %ds",
                self.tree,
                self.lease,
                self.key,
                granted,
            )

    async def _wait(self, refresh_at: float) -> str:
        """Until the next refresh is due, or a change (coalesced): which it was."""
        try:
            async with asyncio.timeout(max(0.0, refresh_at - time.monotonic())):
                await self.wake.wait()
        except TimeoutError:
            return "refresh"
        await asyncio.sleep(COALESCE_S)
        self.wake.clear()
        return "change"

    async def _put(self, client: EtcdClient, reason: str) -> None:
        assert self.lease is not None
        status = self.table.status(process.whereis(self.table.manager_name) is not None)
        content = {
            "node": self.spec.node,
            "tree": self.tree,
            "version": status.version,
            "config_hash": status.config_hash,
            "healthy": status.healthy,
            "sources": {s.name: s.healthy for s in status.sources},
            "started_at": self.state.started_at,
            "pid": os.getpid(),
            "host": _HOST,
            "admin_url": status.admin_url,
        }
        if content == self.announced:
            return
        now = time.time()
        value = json.dumps({**content, "announced_at": now}, separators=(",", ":"))
        began = time.perf_counter()
        await client.put(self.key.encode(), value.encode(), lease=self.lease, timeout=self.timeout)
        self.announced = content
        recovered = self.state.last_error is not None
        self.state.announced_at, self.state.last_error = now, None
        self.state.announcements += 1
        (logger.info if recovered or reason == "start" else logger.debug)(
            "config tree %s announced as %s in etcd (%s, version %s)",
            self.tree,
            self.key,
            reason,
            status.version,
        )
        telemetry.execute(
            telemetry.FLEET_ANNOUNCED,
            {"duration_s": time.perf_counter() - began},
            {
                "id": self.tree,
                "node": self.spec.node,
                "key": self.key,
                "version": status.version,
                "config_hash": status.config_hash,
                "healthy": status.healthy,
                "reason": reason,
            },
        )

    def _lease_lost(self, stage: str) -> None:
        logger.warning(
            "config tree %s: etcd no longer has the lease of %s (found at %s): "
            "announcing again with a new lease",
            self.tree,
            self.key,
            stage,
        )
        self.lease = self.state.lease = None

    def _failed(self, stage: str, error: str, unexpected: BaseException | None = None) -> None:
        repeated = self.state.last_error == error
        self.state.last_error, self.state.last_error_at = error, time.time()
        self.state.failures += 1
        (logger.debug if repeated else logger.warning)(
            "config tree %s cannot announce itself in etcd (%s), retrying: %s",
            self.tree,
            stage,
            error,
            exc_info=unexpected if unexpected is not None and not repeated else None,
        )
        telemetry.execute(
            telemetry.FLEET_ERROR,
            {"count": 1},
            {
                "id": self.tree,
                "node": self.spec.node,
                "key": self.key,
                "stage": stage,
                "error": error,
            },
        )

    async def withdraw(self) -> None:
        """Revoke the lease (the key goes with it), bounded; a lease left behind lapses."""
        lease, self.lease = self.lease, None
        self.state.lease = None
        revoked = False
        client = self.client
        if lease is not None and client is not None:
            try:
                async with asyncio.timeout(REVOKE_TIMEOUT_S):
                    revoked = await client.revoke(lease, timeout=REVOKE_TIMEOUT_S)
            except Exception as exc:  # EtcdError, TimeoutError, anything: the lease lapses
                logger.warning(
                    "config tree %s: could not withdraw %s from etcd (it lapses within %ds): %s",
                    self.tree,
                    self.key,
                    self.state.lease_ttl or math.ceil(self.spec.ttl),
                    exc,
                )
            except asyncio.CancelledError:
                logger.warning(
                    "config tree %s: the withdrawal of %s was cut short", self.tree, self.key
                )
                raise
        telemetry.execute(
            telemetry.FLEET_WITHDRAWN,
            {"count": 1},
            {"id": self.tree, "node": self.spec.node, "key": self.key, "revoked": revoked},
        )
