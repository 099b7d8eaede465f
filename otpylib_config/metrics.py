"""Prometheus metrics of config trees (docs/metrics.md); needs ``otpylib-config[prometheus]``.

``register(registry)`` puts the metrics on an application's own registry (prometheus_client's
default one without an argument); ``exposition(tree)`` is what the admin API's
``GET /metrics`` serves. Both show the same metrics, each labelled with the tree's ``id``:

* read from ``status()`` at every scrape (a custom collector): the counters, the version,
  the source health, the configuration hash and the restarts. They live in the tree's
  table, so they survive restarts of the manager and need no handler to stay right;
* fed by telemetry: ``otpylib_config_reload_duration_seconds``, a histogram that only
  exists from the moment it was registered (durations are not kept in the table).

The table belongs to its event loop: a scrape from another thread (prometheus_client's
``start_http_server``) hands the read to that loop and waits at most
:data:`READ_TIMEOUT_S`. prometheus_client is imported on first use, never by
``import otpylib_config`` nor by importing this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from otpylib import process

from otpylib_config import counters, telemetry
from otpylib_config import registry as trees
from otpylib_config.errors import ConfigError, NotRunningError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from otpylib_config.table import ConfigTable, Status

logger = logging.getLogger("otpylib_config")

EXTRA: Final = "otpylib-config[prometheus]"
READ_TIMEOUT_S = 2.0
"""How long a scrape from another thread waits for a tree's loop to read its status; a
tree whose loop is blocked longer is left out of that scrape (and logged)."""
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""What ``generate_latest`` writes, in every prometheus_client version we support."""
RELOAD_DURATION: Final = "otpylib_config_reload_duration_seconds"
_RELOAD_EVENTS: Final = (telemetry.RELOAD_STOP, telemetry.RELOAD_EXCEPTION)
_PLAIN_COUNTERS: Final = (  # (metric name without _total, status counter, help)
    ("otpylib_config_changes", counters.CHANGES, "Leaves changed in published versions."),
    ("otpylib_config_puts", counters.PUTS, "Paths put at run time, once published."),
    (
        "otpylib_config_subscriber_errors",
        counters.SUBSCRIBER_ERRORS,
        "Subscriber callbacks that raised or timed out.",
    ),
)


class MetricsUnavailableError(ConfigError, ImportError):
    """prometheus_client is not installed; the message names the extra that installs it."""


class MetricsAlreadyRegisteredError(ConfigError, ValueError):
    """The tree's metrics are already on that registry: a second copy would make every
    scrape fail with duplicate series, so we refuse it at once instead."""


def _require_prometheus() -> None:
    """Import prometheus_client now, or say which extra brings it: ``import
    otpylib_config`` must work without it, so every entry point imports it on first use."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MetricsUnavailableError(
            f"Prometheus metrics need prometheus_client: pip install '{EXTRA}'"
        ) from exc


# -- reading status, on the table's loop -------------------------------------------------


def _status(table: ConfigTable) -> Status:
    """What ``ConfigClient.status`` answers; must run on the table's loop (or with it
    stopped), since the table and the process registry are that loop's."""
    return table.status(process.whereis(table.manager_name) is not None)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _fill(future: concurrent.futures.Future[Status], table: ConfigTable) -> None:
    try:
        future.set_result(_status(table))
    except Exception as exc:
        future.set_exception(exc)


def _read_soon(table: ConfigTable) -> concurrent.futures.Future[Status]:
    """The table's status: read now if we are on its loop or nothing runs it, else handed
    to its loop, since another thread must not read state that loop is writing."""
    future: concurrent.futures.Future[Status] = concurrent.futures.Future()
    loop = table.loop
    if loop is None or not loop.is_running() or _on_loop(loop):
        _fill(future, table)
        return future
    try:
        loop.call_soon_threadsafe(_fill, future, table)
    except RuntimeError:  # closed since we looked: nothing writes the table any more
        _fill(future, table)
    return future


def _statuses(tables: Iterable[ConfigTable]) -> list[Status]:
    """Every table's status, the hand-offs in parallel under one deadline; a tree that did
    not answer or whose read failed is logged and left out, so one tree cannot fail the
    whole scrape."""
    pending = [(table, _read_soon(table)) for table in tables]
    deadline = time.monotonic() + READ_TIMEOUT_S
    statuses = []
    for table, future in pending:
        try:
            statuses.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except concurrent.futures.TimeoutError:
            logger.warning(
                "metrics: config tree %r did not answer within %.1f s (its event loop is "
                "busy); leaving it out of this scrape",
                table.spec.id,
                READ_TIMEOUT_S,
            )
        except Exception:
            logger.exception("metrics: cannot read the status of config tree %r", table.spec.id)
    return statuses


# -- the metric families -------------------------------------------------------------------


def _families() -> dict[str, Metric]:
    """The status-based families, empty: what ``describe`` shows and ``collect`` fills."""
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    counter, gauge = CounterMetricFamily, GaugeMetricFamily
    families: list[Metric] = [
        counter(
            "otpylib_config_reloads",
            "Readings applied, by result (error: a source failed or validation rejected it).",
            labels=["id", "result"],
        ),
        *(counter(name, doc, labels=["id"]) for name, _, doc in _PLAIN_COUNTERS),
        counter(
            "otpylib_config_source_errors",
            "Source failures since the tree started, by source and stage.",
            labels=["id", "source", "stage"],
        ),
        gauge("otpylib_config_version", "The published version.", labels=["id"]),
        gauge(
            "otpylib_config_source_healthy",
            "1 if the source's last load succeeded, else 0.",
            labels=["id", "source"],
        ),
        InfoMetricFamily("otpylib_config", "The published configuration's hash.", labels=["id"]),
        counter(
            "otpylib_config_restarts",
            "Restarts of each process of the tree, by role.",
            labels=["id", "process"],
        ),
    ]
    return {family.name: family for family in families}


def _add(families: Mapping[str, Any], status: Status) -> None:
    """Add one tree's samples; a counter that never counted is shown as 0, so that
    ``rate()`` sees its first increase."""
    tree, count = status.id, status.counters
    errors = count.get(counters.RELOAD_ERRORS, 0)
    reloads = families["otpylib_config_reloads"]
    reloads.add_metric([tree, "ok"], count.get(counters.RELOADS, 0) - errors)
    reloads.add_metric([tree, "error"], errors)
    for name, key, _ in _PLAIN_COUNTERS:
        families[name].add_metric([tree], count.get(key, 0))
    families["otpylib_config_version"].add_metric([tree], status.version)
    families["otpylib_config"].add_metric([tree], {"config_hash": status.config_hash})
    for source in status.sources:
        families["otpylib_config_source_healthy"].add_metric(
            [tree, source.name], int(source.healthy)
        )
        for stage, n in {"load": 0, **source.errors}.items():  # every source loads
            families["otpylib_config_source_errors"].add_metric([tree, source.name, stage], n)
    for proc in status.processes:
        families["otpylib_config_restarts"].add_metric([tree, proc.role], proc.restarts)


# -- one exporter per registry -------------------------------------------------------------


class _Exporter:
    """The one collector of a registry: every ``register`` on that registry adds its tree
    (or all trees) here, since two collectors of the same names cannot share a registry.
    It also owns the reload histogram and the telemetry handler that feeds it."""

    def __init__(self, target: CollectorRegistry) -> None:
        from prometheus_client import Histogram

        self.target = target
        self.selections: tuple[str | None, ...] = ()
        self.handler_id = f"otpylib_config.metrics.{id(self)}"
        self.histogram = Histogram(
            RELOAD_DURATION,
            "How long reloads took (from telemetry, since registration).",
            ["id"],
            registry=None,
        )

    def covers(self, tree: str) -> bool:
        return None in self.selections or tree in self.selections

    def overlaps(self, tree: str | None) -> bool:
        return bool(self.selections) and (tree is None or self.covers(tree))

    def tables(self) -> list[ConfigTable]:
        if None in self.selections:
            return trees.tables()
        return [t for s in self.selections if s and (t := trees.table_for(s)) is not None]

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering checks duplicates without reading any table."""
        yield from _families().values()
        yield from self.histogram.describe()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for status in _statuses(self.tables()):
            _add(families, status)
        yield from families.values()
        yield from self.histogram.collect()

    def observe(self, event: str, measurements: Any, metadata: Any, _config: Any) -> None:
        """The telemetry handler: it must never raise, or telemetry would detach it."""
        try:
            tree = metadata.get("id")
            if isinstance(tree, str) and self.covers(tree):
                self.histogram.labels(tree).observe(float(measurements["duration_s"]))
        except Exception:
            logger.exception("metrics: cannot record %s %r", event, dict(measurements or {}))


_lock = threading.RLock()
_exporters: dict[CollectorRegistry, _Exporter] = {}
_private: dict[str, CollectorRegistry] = {}


class MetricsRegistration:
    """What :func:`register` returns; :meth:`unregister` takes those metrics off again."""

    def __init__(self, exporter: _Exporter, tree: str | None) -> None:
        self._exporter = exporter
        self.registry = exporter.target
        self.tree = tree
        self._active = True

    def unregister(self) -> None:
        """Remove this registration; with the registry's last one, the collector leaves
        the registry and the telemetry handler is detached. A second call does nothing."""
        with _lock:
            if not self._active:
                return
            self._active = False
            exporter = self._exporter
            kept = list(exporter.selections)
            kept.remove(self.tree)
            exporter.selections = tuple(kept)
            if not kept:
                del _exporters[exporter.target]
                telemetry.detach(exporter.handler_id)
                exporter.target.unregister(cast("Collector", exporter))

    def __repr__(self) -> str:
        return f"MetricsRegistration(tree={self.tree!r}, active={self._active})"


def register(
    registry: CollectorRegistry | None = None, *, tree: str | None = None
) -> MetricsRegistration:
    """Export tree ``tree``'s metrics (every tree of the process with ``None``, including
    trees started later) on ``registry`` (prometheus_client's default ``REGISTRY`` with
    ``None``). Raises :class:`MetricsAlreadyRegisteredError` if that registry already
    shows this tree, and :class:`MetricsUnavailableError` without prometheus_client."""
    _require_prometheus()
    from prometheus_client import REGISTRY

    target = REGISTRY if registry is None else registry
    with _lock:
        exporter = _exporters.get(target)
        if exporter is not None and exporter.overlaps(tree):
            raise MetricsAlreadyRegisteredError(
                f"otpylib_config metrics of {_which(tree)} are already registered on "
                f"{target!r}: unregister the first registration, or register once"
            )
        if exporter is None:
            exporter = _Exporter(target)
            target.register(cast("Collector", exporter))
            telemetry.attach_many(exporter.handler_id, _RELOAD_EVENTS, exporter.observe)
            _exporters[target] = exporter
        exporter.selections = (*exporter.selections, tree)
    return MetricsRegistration(exporter, tree)


def _which(tree: str | None) -> str:
    return "every tree" if tree is None else f"tree {tree!r}"


def exposition(tree: str) -> tuple[bytes, str]:
    """Tree ``tree``'s metrics in the Prometheus text format, and its content type: what
    the admin API's ``GET /metrics`` serves. Each tree gets a private registry on the first
    call, kept for the process's life, so its reload histogram counts from that call."""
    _require_prometheus()
    from prometheus_client import CollectorRegistry, generate_latest

    if trees.table_for(tree) is None:
        raise NotRunningError(f"no otpylib-config tree {tree!r} is running")
    with _lock:
        private = _private.get(tree)
        if private is None:
            private = CollectorRegistry(auto_describe=True)
            register(private, tree=tree)
            _private[tree] = private
    return generate_latest(private), CONTENT_TYPE
