"""The manager's commit step: the one place that writes the table's configuration.

The pipeline (:mod:`otpylib_config.pipeline`) computes; the functions here, called only by
the manager process (and by the first load, which ``start`` and ``load`` run before any
process of the tree exists), record what it computed
and publish: source layers and health, ``base``, ``overrides``, the redactor's knowledge,
counters, and finally ``snapshot``, with one assignment. A change is then handed to the
notifier's queue (``table.delivery``). The order within each function is the failure
policy (docs/architecture.md, The write path): nothing is committed before validation
passed and the runtime layer is on disk, so a failure leaves the last good configuration
serving and the request that caused it gets the error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from otpylib import process

from otpylib_config import counters, pipeline, telemetry
from otpylib_config.errors import LoadError, ValidationError
from otpylib_config.overrides import Overrides
from otpylib_config.paths import Path
from otpylib_config.pipeline import Candidate, Reading, Sorting
from otpylib_config.protocol import WAKE, ReloadResult
from otpylib_config.redact import frames_and
from otpylib_config.snapshot import Snapshot
from otpylib_config.subscriptions import Change
from otpylib_config.table import ConfigTable
from otpylib_config.tree import value_at
from otpylib_config.values import Section

logger = logging.getLogger("otpylib_config")


async def initial(table: ConfigTable, *, accept: bool = True) -> None:
    """The first load. A tree never starts on bad configuration: raises :class:`LoadError`
    with every problem at once (each required source that failed, and what validation says
    of the rest when the failed sources could still give part of their layer).

    ``accept``: tell the sources their layer is in use (``load()`` passes ``False``: a
    source's cache is the running service's to write).
    """
    table.configure_sources()
    await _restore(table)
    reading = await pipeline.read(table, "start", announce=False)
    sorting = pipeline.sort(table, reading)
    errors = _record(table, sorting)
    failed = [f.error for f in sorting.failures if _fails_start(table, f, sorting)]
    loaded = dict(sorting.loaded)
    for error in failed:  # what a failed source could still read, for validation to see
        if error.partial is not None:
            loaded[error.source] = error.partial
    proposal = pipeline.propose(table, loaded, None)
    _learn_secrets(table, proposal.secret_leaves)
    invalid: ValidationError | None = None
    if all(error.partial is not None for error in failed):
        try:
            candidate = _validated(table, proposal.raw, "start", loaded)
        except ValidationError as exc:
            invalid = exc
    if failed or invalid is not None:
        raise LoadError(failed, invalid)
    _commit_layers(table, sorting, errors, proposal.base)
    table.publish(Snapshot(candidate.tree, version=1, model=candidate.model, raw=candidate.raw))
    if accept:
        await _accepted(table, sorting)


async def _restore(table: ConfigTable) -> None:
    """Take the persisted runtime overrides back, if any (before the first reading)."""
    restored, error = await table.persistence.restore()
    if restored is None:
        return
    table.overrides = restored
    if error is None:
        table.runtime_state.succeeded(Section())
    else:
        table.record_failure(table.runtime_state, error, stage="restore")


def _fails_start(table: ConfigTable, failure: pipeline.Failure, sorting: Sorting) -> bool:
    """A required source that failed and has no layer at all stops the start."""
    return table.sources[failure.source].source.required and failure.source not in sorting.loaded


async def reading(table: ConfigTable, reading: Reading) -> ReloadResult:
    """Merge what was read over the other sources' last good layers, validate, publish."""
    try:
        result = await _apply_reading(table, reading)
    except Exception as exc:
        error = {"kind": type(exc).__name__, "error": str(exc)}
        _reload_event(table, telemetry.RELOAD_EXCEPTION, reading, error)
        raise
    table.counters[counters.RELOADS] += 1
    if result.errors:
        table.counters[counters.RELOAD_ERRORS] += 1
    metadata = {"version": result.version, "errors": result.errors}
    _reload_event(table, telemetry.RELOAD_STOP, reading, metadata, changes=len(result.changed))
    return result


async def _apply_reading(table: ConfigTable, reading: Reading) -> ReloadResult:
    snapshot = table.snapshot
    assert snapshot is not None
    sorting = pipeline.sort(table, reading)
    errors = _record(table, sorting)
    if pipeline.unchanged(table, sorting):  # a no-op reload: nothing to merge or diff
        _commit_layers(table, sorting, errors, table.base)
        await _accepted(table, sorting)
        return ReloadResult(_version(table), (), errors)
    proposal = pipeline.propose(table, sorting.loaded, snapshot.raw, reading.prepared)
    _learn_secrets(table, proposal.secret_leaves)
    changed = proposal.changed
    candidate: Candidate | None = None
    if changed:
        try:
            candidate = _validated(table, proposal.raw, reading.reason, sorting.loaded)
        except ValidationError as exc:
            errors["validation"] = str(exc)
            return ReloadResult(_version(table), (), errors)
    _commit_layers(table, sorting, errors, proposal.base)
    if candidate is not None:
        changed = pipeline.published_changes(snapshot.tree, changed, candidate)
        await publish(table, candidate, changed)
    await _accepted(table, sorting)
    return ReloadResult(_version(table), tuple(".".join(p) for p in changed), errors)


async def overrides(table: ConfigTable, new: Overrides, roots: list[Path]) -> list[Path]:
    """Validate, persist and publish new runtime overrides as one version (one batch of
    events); the merged value changes only under ``roots``. Returns the published changes.
    Raises ``ValidationError`` or ``SourceError`` with nothing changed."""
    snapshot = table.snapshot
    assert snapshot is not None
    raw, changed = pipeline.with_overrides(table, snapshot.raw, new, roots)
    candidate = _validated(table, raw, "put", None, new) if changed else None
    await table.persistence.save(new)
    table.overrides = new
    if candidate is None:
        return []
    changed = pipeline.published_changes(snapshot.tree, changed, candidate)
    await publish(table, candidate, changed)
    return changed


async def publish(table: ConfigTable, candidate: Candidate, changed: list[Path]) -> None:
    """Swap in the next snapshot, then hand the change to the notifier's queue, which turns
    it into events: the manager's cost does not grow with the subscriptions it concerns."""
    snapshot = table.snapshot
    assert snapshot is not None
    if not changed:  # the merged tree moved, the published view did not: same version
        table.publish(snapshot.with_raw(candidate.raw, candidate.model))
        return
    old_tree = snapshot.tree
    successor = snapshot.successor(candidate.tree, changed, candidate.model, candidate.raw)
    table.publish(successor)
    table.counters[counters.CHANGES] += len(changed)
    if telemetry.has_handlers(telemetry.CHANGED):  # before any await: with the publish
        _emit_changes(table, old_tree, candidate.tree, changed)
    if len(table.subscriptions):
        change = Change(successor.version, changed, old_tree, candidate.tree)
        if table.delivery.hand_over(table.subscriptions, change):
            await process.send(table.notifier_name, WAKE)


def failure(table: ConfigTable, name: str, error: str, stage: str) -> None:
    """A source's watch failed: record it (the source keeps its last good layer)."""
    state = table.sources.get(name)
    if state is not None:
        table.record_failure(state, error, stage=stage)


def _record(table: ConfigTable, sorting: Sorting) -> dict[str, str]:
    """Record which reading each source is at, its load, and its failures; returns the
    errors by source, as reported (secrets masked)."""
    errors: dict[str, str] = {}
    for name in sorting.applied:
        table.sources[name].reading_seq = sorting.seq
    for name in sorting.fresh:
        telemetry.execute(
            telemetry.SOURCE_LOADED,
            {"duration_s": sorting.durations[name], "keys": len(sorting.loaded[name])},
            {"id": table.spec.id, "source": name},
        )
    for f in sorting.failures:
        state = table.sources[f.source]
        errors[f.source] = table.record_failure(
            state, str(f.error), stage="load", duration=f.duration
        )
    return errors


def _validated(
    table: ConfigTable,
    raw: Section,
    reason: str,
    loaded: dict[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> Candidate:
    """Validate ``raw`` and record the outcome (counters, ``status()``, log, telemetry)."""
    try:
        candidate = pipeline.candidate(table, raw, loaded, overrides)
    except ValidationError as exc:
        table.counters[counters.VALIDATION_FAILURES] += 1
        table.last_validation_error = str(exc)
        logger.warning("configuration rejected (%s), keeping the last good one: %s", reason, exc)
        telemetry.execute(
            telemetry.VALIDATION_FAILED,
            {"problems": len(exc.problems)},
            {"id": table.spec.id, "reason": reason, "problems": list(exc.problems)},
        )
        raise
    table.last_validation_error = None
    redactor = table.redactor
    if candidate.secret_paths - redactor.schema_leaves:  # only grows: see Redactor
        redactor.schema_leaves = redactor.schema_leaves | candidate.secret_paths
    return candidate


def _learn_secrets(table: ConfigTable, leaves: frozenset[str] | None) -> None:
    """Tell the redactor every leaf the secret sources give, before validation runs: a
    validator's message may quote a value, and it must already be masked there. A layer
    that validation then rejects leaves its leaves masked until the next reload, which errs
    on the side of hiding."""
    if leaves is not None:
        table.redactor.replace_leaves(leaves)


def _commit_layers(
    table: ConfigTable, sorting: Sorting, errors: dict[str, str], base: Section
) -> None:
    for name, layer in sorting.loaded.items():
        if name in errors:  # a fallback layer: served, but the source is still failing
            table.sources[name].layer = layer
        else:
            table.sources[name].succeeded(layer)
    table.base = base


async def _accepted(table: ConfigTable, sorting: Sorting) -> None:
    """Tell each source whose fresh layer was committed (fallbacks are not fresh)."""
    for name in sorting.fresh:
        try:
            await table.sources[name].source.accepted(sorting.loaded[name])
        except Exception as exc:  # a source bug must not take the manager down
            text = frames_and(exc, type(exc).__name__)
            logger.error("config source %s failed in accepted():\n%s", name, text)


def _reload_event(
    table: ConfigTable, event: str, reading: Reading, metadata: dict[str, Any], **extra: int
) -> None:
    measurements = {"duration_s": time.perf_counter() - reading.started, **extra}
    telemetry.execute(
        event, measurements, {"id": table.spec.id, "reason": reading.reason, **metadata}
    )


def _version(table: ConfigTable) -> int:
    return table.snapshot.version if table.snapshot is not None else 0


def _emit_changes(table: ConfigTable, old: Section, new: Section, changed: list[Path]) -> None:
    version, tree = _version(table), table.spec.id
    for leaf in changed:
        path = ".".join(leaf)
        old_value, new_value = value_at(old, leaf), value_at(new, leaf)
        telemetry.execute(
            telemetry.CHANGED,
            {"changes": 1},
            {
                "id": tree,
                "path": path,
                "old_value": table.redactor.value(path, old_value),
                "new_value": table.redactor.value(path, new_value),
                "version": version,
            },
        )
