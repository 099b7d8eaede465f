"""Telemetry events, in the spirit of Erlang's ``telemetry`` library
(docs/architecture.md, Telemetry and status).

Handlers are attached per event name and called synchronously by ``execute``. A handler that
raises is detached and logged: telemetry never breaks the code that emits it. ``execute``
reads a published handler table with no lock; ``attach``/``detach`` replace the table.

Events emitted by otpylib-config (measurements in brackets, then metadata keys). Every
event's metadata also has ``id``, the tree's ``ConfigSpec.id``, so that one handler can
tell several trees of a process apart (the metrics label them by it):

``config.changed``            [changes=1]  path, old_value, new_value (redacted), version
``config.put``                [duration_s] path, value (redacted), version
``config.delete``             [duration_s] path, removed, version
``config.reload.start``       [system_time]  reason
``config.reload.stop``        [duration_s, changes]  reason, version, errors
``config.reload.exception``   [duration_s]  reason, kind, error
``config.source.loaded``      [duration_s, keys]  source
``config.source.error``       [duration_s]  source, error, stage (load, watch, restore)
``config.source.warning``     [count=1]  source, warning (such as a variable that maps to no
                              field of the schema; once per warning while it lasts)
``config.subscriber_error``   [count=1]  pattern, path, error
``config.validation_failed``  [problems]  reason, problems
``config.manager.restarted``  [restarts]
``config.process.exited``     [count=1]  role, reason (a process of the tree ended)
``config.tree.stopped``       [count=1]  reason (nothing will restart the tree)
``config.admin.write``        [duration_s]  token, method, path, outcome, status, version
                              (a write through the admin API: the token's name, never
                              its secret; no values)
``config.fleet.announced``    [duration_s]  node, key, version, config_hash, healthy, reason
                              (start, new lease, change, refresh): written to etcd
``config.fleet.error``        [count=1]  node, key, stage (grant, keepalive, put, revoke),
                              error: etcd did not take it; the announcer retries
``config.fleet.withdrawn``    [count=1]  node, key, revoked: the announcer stopped
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

logger = logging.getLogger("otpylib_config.telemetry")

CHANGED = "config.changed"
PUT = "config.put"
DELETE = "config.delete"
RELOAD_START = "config.reload.start"
RELOAD_STOP = "config.reload.stop"
RELOAD_EXCEPTION = "config.reload.exception"
SOURCE_LOADED = "config.source.loaded"
SOURCE_ERROR = "config.source.error"
SOURCE_WARNING = "config.source.warning"
SUBSCRIBER_ERROR = "config.subscriber_error"
VALIDATION_FAILED = "config.validation_failed"
MANAGER_RESTARTED = "config.manager.restarted"
PROCESS_EXITED = "config.process.exited"
TREE_STOPPED = "config.tree.stopped"
ADMIN_WRITE = "config.admin.write"
FLEET_ANNOUNCED = "config.fleet.announced"
FLEET_ERROR = "config.fleet.error"
FLEET_WITHDRAWN = "config.fleet.withdrawn"

Measurements = Mapping[str, float]
Metadata = Mapping[str, Any]
Handler = Callable[[str, Measurements, Metadata, Any], None]


class _Attached(NamedTuple):
    handler_id: str
    event: str
    handler: Handler
    config: Any


_table: dict[str, tuple[_Attached, ...]] = {}


def attach(handler_id: str, event: str, handler: Handler, config: Any = None) -> None:
    """Call ``handler(event, measurements, metadata, config)`` on every ``event``."""
    attach_many(handler_id, [event], handler, config)


def attach_many(
    handler_id: str, events: Sequence[str], handler: Handler, config: Any = None
) -> None:
    """Attach one handler to several events under one id; the id must be unused."""
    global _table
    if any(a.handler_id == handler_id for entries in _table.values() for a in entries):
        raise ValueError(f"telemetry handler {handler_id!r} is already attached")
    table = dict(_table)
    for event in dict.fromkeys(events):
        table[event] = (*table.get(event, ()), _Attached(handler_id, event, handler, config))
    _table = table


def detach(handler_id: str) -> bool:
    """Remove a handler from every event; ``False`` if it was not attached."""
    global _table
    table = {
        event: tuple(a for a in entries if a.handler_id != handler_id)
        for event, entries in _table.items()
    }
    table = {event: entries for event, entries in table.items() if entries}
    found = sum(map(len, table.values())) != sum(map(len, _table.values()))
    _table = table
    return found


def has_handlers(event: str) -> bool:
    """Lets emitters skip building metadata nobody will read."""
    return event in _table


def execute(event: str, measurements: Measurements, metadata: Metadata) -> None:
    """Emit ``event`` to its handlers now, in this task."""
    for attached in _table.get(event, ()):
        try:
            attached.handler(event, measurements, metadata, attached.config)
        except Exception:
            logger.exception(
                "telemetry handler %r raised on %s; detaching it", attached.handler_id, event
            )
            detach(attached.handler_id)


@contextmanager
def span(prefix: str, metadata: Metadata) -> Iterator[dict[str, Any]]:
    """Emit ``prefix.start``, then ``prefix.stop`` or ``prefix.exception``, with a duration.

    The yielded dict is merged into the stop event's metadata, so the body can report results.
    """
    start = time.perf_counter()
    execute(f"{prefix}.start", {"system_time": time.time()}, metadata)
    extra: dict[str, Any] = {}
    try:
        yield extra
    except BaseException as exc:
        measurements = {"duration_s": time.perf_counter() - start}
        execute(
            f"{prefix}.exception",
            measurements,
            {**metadata, "kind": type(exc).__name__, "error": str(exc)},
        )
        raise
    measurements = {"duration_s": time.perf_counter() - start, **extra.pop("measurements", {})}
    execute(f"{prefix}.stop", measurements, {**metadata, **extra})


@dataclass(frozen=True)
class Event:
    """One captured event, for tests and debugging."""

    name: str
    measurements: Measurements
    metadata: Metadata


@contextmanager
def capture_events(*events: str) -> Iterator[list[Event]]:
    """Collect the given events into a list while the block runs (a test helper)."""
    captured: list[Event] = []
    handler_id = f"capture-{id(captured)}"

    def record(name: str, measurements: Measurements, metadata: Metadata, _: Any) -> None:
        captured.append(Event(name, dict(measurements), dict(metadata)))

    attach_many(handler_id, events, record)
    try:
        yield captured
    finally:
        detach(handler_id)
