"""The reload pipeline: load → merge → diff → validate → commit → publish → notify
(docs/architecture.md, The reload path).

A reload has two halves. :func:`read` does the sources' I/O and changes no state: the manager
runs it in a task of its own, so a slow file system or a hanging Consul never holds up puts.
:func:`apply` runs in the manager, one at a time, with what was read. Each step works on new
values; the configuration in the table (layers, base, snapshot) changes only in
:func:`_commit`/:func:`publish`, after validation passed and the runtime layer (if
persisted) is on disk, so a failure at any step leaves the last good configuration serving.
Source health and counters are recorded as they happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from otpylib import process

from otpylib_config import schema_view, telemetry
from otpylib_config.errors import LoadError, SourceError, ValidationError
from otpylib_config.overrides import Overrides
from otpylib_config.paths import Path
from otpylib_config.protocol import WAKE, ReloadResult
from otpylib_config.provenance import with_origins
from otpylib_config.redact import frames_and
from otpylib_config.snapshot import Snapshot
from otpylib_config.sources.base import NotReady, Source
from otpylib_config.subscriptions import Change
from otpylib_config.table import ConfigTable
from otpylib_config.tree import (
    MISSING,
    diff,
    get_in,
    leaf_items,
    merge,
    remove_in,
    set_in,
    value_at,
)
from otpylib_config.values import Section

logger = logging.getLogger("otpylib_config")


async def load_initial(table: ConfigTable, *, accept: bool = True) -> None:
    """The first load. A tree never starts on bad configuration: raises :class:`LoadError`
    with every problem at once (each required source that failed, and what validation
    says of the rest when the failed sources could still give part of their layer)."""
    table.configure_sources()
    await table.persistence.restore(table)
    reading = await read(table, "start", announce=False)
    loaded, errors = _sort(table, reading)
    failed = [
        error
        for name, (_, error, _) in zip(reading.names, reading.results, strict=True)
        if error is not None and table.sources[name].source.required and name not in loaded
    ]
    for error in failed:  # what a failed source could still read, for validation to see
        if error.partial is not None:
            loaded[error.source] = error.partial
    base = merge(_layers(table, loaded))
    raw = table.overrides.apply(base)
    _note_secret_leaves(table, loaded)
    invalid: ValidationError | None = None
    if all(error.partial is not None for error in failed):
        try:
            candidate = _candidate(table, raw, "start", loaded)
        except ValidationError as exc:
            invalid = exc
    if failed or invalid is not None:
        raise LoadError(failed, invalid)
    _commit(table, loaded, errors, base)
    table.snapshot = Snapshot(candidate.tree, version=1, model=candidate.model, raw=raw)
    if accept:  # ``load()`` passes False: a source's cache is the running service's to write
        await _accepted(table, loaded, errors)


@dataclass(frozen=True)
class Candidate:
    """A configuration that passed validation: the merged ``raw`` tree, the ``tree`` to
    publish (the schema's view of it, or ``raw`` itself) and the schema's ``model``."""

    raw: Section
    tree: Section
    model: Any


def _candidate(
    table: ConfigTable,
    raw: Section,
    reason: str,
    loaded: dict[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> Candidate:
    """Validate ``raw``; raises ``ValidationError`` with every problem and its origin."""
    if not table.validator.active:
        return Candidate(raw, raw, None)
    model = _validate(table, raw, reason, loaded, overrides)
    if table.validator.schema is None:
        return Candidate(raw, raw, model)
    view = schema_view.view(raw, model)
    if view.secret_paths - table.redactor.schema_leaves:
        table.redactor.schema_leaves = table.redactor.schema_leaves | view.secret_paths
    return Candidate(raw, view.tree, model)


Result = tuple[Section | None, SourceError | None, float]
"""One source's load: ``(layer, None, seconds)`` or ``(fallback or None, error, seconds)``."""


@dataclass(frozen=True)
class Reading:
    """What :func:`read` got from the sources named in ``names``, in that order."""

    reason: str
    names: tuple[str, ...]
    results: tuple[Result, ...]
    seq: int
    """Readings are numbered as they start; one older than what a source shows is dropped."""
    started: float


async def read(
    table: ConfigTable, reason: str, only: Iterable[str] | None = None, *, announce: bool = True
) -> Reading:
    """Load the sources concurrently. Pure I/O: safe to run outside the manager.

    ``announce``: emit ``config.reload.start`` (:func:`apply` emits the stop).
    """
    names = tuple(table.sources if only is None else (n for n in only if n in table.sources))
    seq = next(table.reading_seq)
    started = time.perf_counter()
    if announce:
        telemetry.execute(telemetry.RELOAD_START, {"system_time": time.time()}, {"reason": reason})
    sources = [table.sources[name].source for name in names]
    results = await asyncio.gather(*(_load_one(source) for source in sources))
    return Reading(reason, names, tuple(results), seq, started)


async def apply(table: ConfigTable, reading: Reading) -> ReloadResult:
    """Merge what was read over the other sources' last good layers, validate and publish."""
    try:
        loaded, errors = _sort(table, reading)
        snapshot = table.snapshot
        assert snapshot is not None
        base = merge(_layers(table, loaded))
        raw = table.overrides.apply(base)
        changed = diff(snapshot.raw, raw)
        _note_secret_leaves(table, loaded)
        try:
            candidate = _candidate(table, raw, reading.reason, loaded) if changed else None
        except ValidationError as exc:
            errors["validation"] = str(exc)
            changed = []
        else:
            _commit(table, loaded, errors, base)
            if candidate is not None:
                changed = _published_changes(snapshot, candidate, changed)
                await publish(table, candidate, changed)
            await _accepted(table, loaded, errors)
    except Exception as exc:
        error = {"kind": type(exc).__name__, "error": str(exc)}
        _reload_event(telemetry.RELOAD_EXCEPTION, reading, error)
        raise
    table.counters["reloads"] += 1
    table.counters["reload_errors"] += bool(errors)
    version = table.snapshot.version if table.snapshot is not None else 0
    metadata = {"version": version, "errors": errors}
    _reload_event(telemetry.RELOAD_STOP, reading, metadata, changes=len(changed))
    return ReloadResult(version, tuple(".".join(p) for p in changed), errors)


def _published_changes(
    snapshot: Snapshot, candidate: Candidate, raw_changed: list[Path]
) -> list[Path]:
    """The leaves that change for readers: those of the merged tree, unless a schema's view
    is published, which must be compared as a whole (defaults and computed fields move)."""
    if candidate.tree is candidate.raw:
        return raw_changed
    return diff(snapshot.tree, candidate.tree)


def _reload_event(event: str, reading: Reading, metadata: dict[str, Any], **extra: int) -> None:
    measurements = {"duration_s": time.perf_counter() - reading.started, **extra}
    telemetry.execute(event, measurements, {"reason": reading.reason, **metadata})


async def apply_overrides(
    table: ConfigTable, overrides: Overrides, roots: Iterable[Path]
) -> list[Path]:
    """Validate, persist and publish new runtime overrides in one step (one version, one
    batch of events); the merged value changes only under ``roots``. Returns the published
    changes. Raises ``ValidationError`` or ``SourceError`` with nothing changed."""
    snapshot = table.snapshot
    assert snapshot is not None
    raw, changed = snapshot.raw, []
    for root in _outermost(roots):
        value = overrides.apply(get_in(table.base, root), root)
        raw = remove_in(raw, root) if value is MISSING else set_in(raw, root, value)
        changed += diff(get_in(snapshot.raw, root), value, root)
    candidate = _candidate(table, raw, "put", None, overrides) if changed else None
    await table.persistence.save(overrides)
    table.overrides = overrides
    if candidate is None:
        return []
    changed = _published_changes(snapshot, candidate, changed)
    await publish(table, candidate, changed)
    return changed


INLINE_EXPAND_S = 0.001
"""How long the manager itself turns a change into events before it leaves the rest to the
notifier: a put of a few leaves that concerns no subscription then costs no message."""


async def _hand_over(table: ConfigTable, change: Change) -> None:
    """Queue ``change``'s events: as much as fits in ``INLINE_EXPAND_S`` here (unless earlier
    changes are still being expanded, which must go first), the rest by the notifier."""
    if not table.changes:
        touched = table.subscriptions.expand(change, time.monotonic() + INLINE_EXPAND_S)
        table.ready.update(sub for sub in touched if sub.pending and sub.task is None)
    if change.cursor < len(change.changed):
        table.changes.append(change)
    if (table.ready or table.changes) and not table.wake_sent:
        table.wake_sent = True
        await process.send(table.notifier_name, (WAKE,))


def _outermost(roots: Iterable[Path]) -> list[Path]:
    """The roots that no other root contains, in order: a batch that puts ``a`` and
    ``a.b`` recomputes ``a`` once. O(roots * depth), as a batch may be large."""
    unique = dict.fromkeys(roots)
    return [r for r in unique if not any(r[:d] in unique for d in range(1, len(r)))]


async def publish(table: ConfigTable, candidate: Candidate, changed: list[Path]) -> None:
    """Swap in the next snapshot, then hand the change to the notifier, which turns it into
    events: the manager's cost does not grow with the subscriptions it concerns."""
    snapshot = table.snapshot
    assert snapshot is not None
    old_tree, tree = snapshot.tree, candidate.tree
    if not changed:  # the merged tree moved, the published view did not: same version
        table.snapshot = snapshot.with_raw(candidate.raw, candidate.model)
        return
    table.snapshot = snapshot.successor(tree, changed, candidate.model, candidate.raw)
    table.counters["changes"] += len(changed)
    if len(table.subscriptions):
        await _hand_over(table, Change(table.snapshot.version, changed, old_tree, tree))
    if telemetry.has_handlers(telemetry.CHANGED):
        _emit_changes(table, old_tree, tree, changed)


def _validate(
    table: ConfigTable,
    tree: Section,
    reason: str,
    loaded: dict[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> Any:
    try:
        model = table.validator.check(tree, table.redactor)
    except ValidationError as exc:
        exc = with_origins(exc, table, loaded, overrides)
        table.counters["validation_failures"] += 1
        table.last_validation_error = str(exc)
        logger.warning("configuration rejected (%s), keeping the last good one: %s", reason, exc)
        telemetry.execute(
            telemetry.VALIDATION_FAILED,
            {"problems": len(exc.problems)},
            {"reason": reason, "problems": list(exc.problems)},
        )
        raise exc from None
    table.last_validation_error = None
    return model


def _layers(table: ConfigTable, loaded: dict[str, Section]) -> list[Section]:
    return [loaded.get(name, state.layer) for name, state in table.sources.items()]


async def _accepted(table: ConfigTable, loaded: dict[str, Section], errors: dict[str, str]) -> None:
    """Tell each source whose fresh layer was committed (fallbacks are not fresh)."""
    for name, layer in loaded.items():
        if name in errors:
            continue
        try:
            await table.sources[name].source.accepted(layer)
        except Exception as exc:  # a source bug must not take the manager down
            text = frames_and(exc, type(exc).__name__)
            logger.error("config source %s failed in accepted():\n%s", name, text)


def _commit(
    table: ConfigTable, loaded: dict[str, Section], errors: dict[str, str], base: Section
) -> None:
    for name, layer in loaded.items():
        if name in errors:  # a fallback layer: served, but the source is still failing
            table.sources[name].layer = layer
        else:
            table.sources[name].succeeded(layer)
    table.base = base


def _note_secret_leaves(table: ConfigTable, loaded: dict[str, Section]) -> None:
    """Tell the redactor every leaf a secret source gives, before validation runs: a
    validator's message may quote a value, and it must already be masked there. A layer
    that validation then rejects leaves its leaves masked until the next reload, which
    errs on the side of hiding."""
    if not any(table.sources[name].source.secret for name in loaded):
        return
    table.redactor.replace_leaves(
        frozenset(
            ".".join(path)
            for name, state in table.sources.items()
            if state.source.secret
            for path, leaf in leaf_items(loaded.get(name, state.layer), ())
            if path and not isinstance(leaf, Section)
        )
    )


def _sort(table: ConfigTable, reading: Reading) -> tuple[dict[str, Section], dict[str, str]]:
    """Split a reading into fresh layers and errors, recording failures now; a source's
    result older than one already applied is dropped (readings may finish out of order).
    A source that was not ready is left out altogether: its layer, health and newest
    applied reading stay as they were."""
    loaded: dict[str, Section] = {}
    errors: dict[str, str] = {}
    for name, (layer, error, duration) in zip(reading.names, reading.results, strict=True):
        state = table.sources[name]
        if layer is None and error is None:
            continue  # NotReady: nothing read, nothing failed; a later reading may apply
        if reading.seq < state.reading_seq:
            continue
        state.reading_seq = reading.seq
        if error is None and layer is not None:
            loaded[name] = layer
            telemetry.execute(
                telemetry.SOURCE_LOADED,
                {"duration_s": duration, "keys": len(layer)},
                {"source": name},
            )
            continue
        if layer is not None and state.last_success is None:
            loaded[name] = layer  # its saved fallback, until it loads for real
        errors[name] = table.record_failure(state, str(error), stage="load", duration=duration)
    return loaded, errors


async def _load_one(source: Source) -> Result:
    started = time.perf_counter()
    try:
        layer = await source.load()
    except NotReady as exc:  # (None, None): skipped, see _sort
        logger.debug("config source %s not ready: %s", source.name, exc)
        return None, None, time.perf_counter() - started
    except SourceError as exc:
        return exc.fallback, exc, time.perf_counter() - started
    except Exception as exc:  # a source bug must not take the manager down
        logger.error("config source %s raised %s", source.name, type(exc).__name__)
        logger.debug("config source %s:\n%s", source.name, frames_and(exc, type(exc).__name__))
        error = SourceError(source.name, f"{type(exc).__name__}: {exc}")
        return None, error, time.perf_counter() - started
    return layer, None, time.perf_counter() - started


def _emit_changes(table: ConfigTable, old: Section, new: Section, changed: list[Path]) -> None:
    assert table.snapshot is not None
    for leaf in changed:
        path = ".".join(leaf)
        old_value, new_value = value_at(old, leaf), value_at(new, leaf)
        telemetry.execute(
            telemetry.CHANGED,
            {"changes": 1},
            {
                "path": path,
                "old_value": table.redactor.value(path, old_value),
                "new_value": table.redactor.value(path, new_value),
                "version": table.snapshot.version,
            },
        )
