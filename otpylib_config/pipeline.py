"""The pipeline: source → layer → merge → diff → validate, computed, never committed.

Every function here reads the table and returns new values (a :class:`Reading`, a
:class:`Sorting`, a :class:`Proposal`, a :class:`Candidate`); none writes the table's
configuration (``read`` and ``pushed`` only draw the next reading number). The
manager commits what they return (:mod:`otpylib_config.commit`), so the table has one
writer and a failure at any step leaves the last good configuration serving
(docs/architecture.md, The write path).

:func:`read` does the sources' I/O: the manager runs it in a task of its own, so a slow file
system or a hanging Consul never holds up puts. The rest is pure and runs in the manager.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from otpylib_config import schema_view, telemetry, threads
from otpylib_config.errors import SourceError, ValidationError
from otpylib_config.overrides import Overrides
from otpylib_config.paths import Path
from otpylib_config.provenance import with_origins
from otpylib_config.redact import frames_and
from otpylib_config.sources.base import NotReady, Source
from otpylib_config.table import ConfigTable
from otpylib_config.tree import MISSING, diff, get_in, leaf_items, merge, remove_in, set_in
from otpylib_config.values import Section

logger = logging.getLogger("otpylib_config")

Result = tuple[Section | None, SourceError | None, float]
"""One source's load: ``(layer, None, seconds)`` or ``(fallback or None, error, seconds)``;
``(None, None, seconds)`` when the source was not ready (skipped)."""


class Prepared(NamedTuple):
    """The merge and diff of a reading, computed off the event loop (:func:`prepare`) from
    the ``layers``, ``overrides`` and ``published`` raw tree of that moment; the manager
    uses it only if all three are still the ones in use, else it merges again."""

    layers: tuple[Section, ...]
    overrides: Overrides
    published: Section
    base: Section
    raw: Section
    changed: list[Path]


class Reading(NamedTuple):
    """What :func:`read` got from the sources named in ``names``, in that order."""

    reason: str
    names: tuple[str, ...]
    results: tuple[Result, ...]
    seq: int
    """Readings are numbered as they start; one older than what a source shows is dropped."""
    started: float
    prepared: Prepared | None = None


class Failure(NamedTuple):
    """A source that failed in a reading; the manager records it."""

    source: str
    error: SourceError
    duration: float


class Sorting(NamedTuple):
    """A reading split into what to use: ``loaded`` (fresh layers, and a first fallback for
    a source that never loaded), ``fresh`` (the names whose layer is fresh), ``failures``,
    and ``applied`` (every source whose newest applied reading becomes this one)."""

    loaded: dict[str, Section]
    fresh: frozenset[str]
    failures: tuple[Failure, ...]
    applied: tuple[str, ...]
    durations: dict[str, float]
    seq: int


class Proposal(NamedTuple):
    """The merged configuration a sorting would give: ``base`` (every source but the
    runtime layer), ``raw`` (with the overrides), the leaves that differ from the published
    raw tree, and the leaves the secret sources give (``None``: no secret source loaded)."""

    base: Section
    raw: Section
    changed: list[Path]
    secret_leaves: frozenset[str] | None


class Candidate(NamedTuple):
    """A configuration that passed validation: the merged ``raw`` tree, the ``tree`` to
    publish (the schema's view of it, or ``raw`` itself), the schema's ``model``, and the
    paths the schema types as secret."""

    raw: Section
    tree: Section
    model: Any
    secret_paths: frozenset[str] = frozenset()


async def read(
    table: ConfigTable, reason: str, only: Iterable[str] | None = None, *, announce: bool = True
) -> Reading:
    """Load the sources concurrently. Pure I/O: safe to run outside the manager.

    ``announce``: emit ``config.reload.start`` (the manager emits the stop).
    """
    names = tuple(table.sources if only is None else (n for n in only if n in table.sources))
    seq = next(table.reading_seq)
    started = time.perf_counter()
    if announce:
        metadata = {"id": table.spec.id, "reason": reason}
        telemetry.execute(telemetry.RELOAD_START, {"system_time": time.time()}, metadata)
    sources = [table.sources[name].source for name in names]
    results = await asyncio.gather(*(_load_one(source) for source in sources))
    return Reading(reason, names, tuple(results), seq, started)


def pushed(table: ConfigTable, name: str, layer: Section) -> Reading:
    """A reading of one source made from the layer its watch handed over."""
    started = time.perf_counter()
    seq = next(table.reading_seq)
    return Reading(f"changed:{name}", (name,), ((layer, None, 0.0),), seq, started)


def sort(table: ConfigTable, reading: Reading) -> Sorting:
    """Split a reading into fresh layers and failures. A source's result older than one
    already applied is dropped (readings may finish out of order); a source that was not
    ready is left out altogether: its layer, health and newest reading stay as they were."""
    loaded: dict[str, Section] = {}
    fresh: set[str] = set()
    failures: list[Failure] = []
    applied: list[str] = []
    durations: dict[str, float] = {}
    for name, (layer, error, duration) in zip(reading.names, reading.results, strict=True):
        state = table.sources[name]
        if (layer is None and error is None) or reading.seq < state.reading_seq:
            continue
        applied.append(name)
        durations[name] = duration
        if error is None and layer is not None:
            loaded[name] = layer
            fresh.add(name)
            continue
        if layer is not None and state.last_success is None:
            loaded[name] = layer  # its saved fallback, until it loads for real
        failures.append(Failure(name, error or SourceError(name, "no layer"), duration))
    return Sorting(
        loaded, frozenset(fresh), tuple(failures), tuple(applied), durations, reading.seq
    )


def unchanged(table: ConfigTable, sorting: Sorting) -> bool:
    """Whether every layer the reading gives is the very layer already in use: a source
    that found nothing new (a file with the same fingerprint) returns the same object, and
    the merged tree, the diff and the validation would then be what they were."""
    sources = table.sources
    return all(layer is sources[name].layer for name, layer in sorting.loaded.items())


def propose(
    table: ConfigTable,
    loaded: dict[str, Section],
    published: Section | None,
    prepared: Prepared | None = None,
) -> Proposal:
    """Merge ``loaded`` over the other sources' last good layers, lay the overrides over it
    and diff the result against the ``published`` raw tree (``None`` at the first load,
    where there is nothing to compare with); or take what ``prepared`` computed, if it was
    computed from exactly these layers, overrides and published tree."""
    merged = tuple(layers(table, loaded))
    overrides = table.overrides
    if prepared is not None and _same_basis(prepared, merged, overrides, published):
        base, raw, changed = prepared.base, prepared.raw, prepared.changed
    else:
        base, raw, changed = _merge_and_diff(merged, overrides, published)
    return Proposal(base, raw, changed, secret_leaves(table, loaded))


async def prepare(table: ConfigTable, reading: Reading) -> Reading:
    """``reading`` with its merge and diff computed in a worker thread, so that a reload of
    a large source does not hold up the event loop; the layers, overrides and published
    tree are taken here, on the loop, and the thread touches nothing else (all frozen).
    A reading that changes no layer needs none."""
    snapshot = table.snapshot
    sorting = sort(table, reading)
    if snapshot is None or unchanged(table, sorting):
        return reading
    merged = tuple(layers(table, sorting.loaded))
    overrides, published = table.overrides, snapshot.raw
    base, raw, changed = await threads.run_sync(_merge_and_diff, merged, overrides, published)
    ready = Prepared(merged, overrides, published, base, raw, changed)
    return reading._replace(prepared=ready)


def _merge_and_diff(
    merged: tuple[Section, ...], overrides: Overrides, published: Section | None
) -> tuple[Section, Section, list[Path]]:
    base = merge(merged)
    raw = overrides.apply(base)
    return base, raw, [] if published is None else diff(published, raw)


def _same_basis(
    prepared: Prepared,
    merged: tuple[Section, ...],
    overrides: Overrides,
    published: Section | None,
) -> bool:
    return (
        prepared.overrides is overrides
        and prepared.published is published
        and len(prepared.layers) == len(merged)
        and all(a is b for a, b in zip(prepared.layers, merged, strict=True))
    )


def layers(table: ConfigTable, loaded: dict[str, Section]) -> list[Section]:
    """Every source's layer, lowest priority first: the fresh one where there is one."""
    return [loaded.get(name, state.layer) for name, state in table.sources.items()]


def with_overrides(
    table: ConfigTable, raw: Section, overrides: Overrides, roots: Iterable[Path]
) -> tuple[Section, list[Path]]:
    """The merged tree with new runtime ``overrides``, recomputed only under ``roots``, and
    the leaves that change: O(roots x depth), however wide the tree."""
    changed: list[Path] = []
    for root in outermost(roots):
        value = overrides.apply(get_in(table.base, root), root)
        before = get_in(raw, root)
        raw = remove_in(raw, root) if value is MISSING else set_in(raw, root, value)
        changed += diff(before, value, root)
    return raw, changed


def outermost(roots: Iterable[Path]) -> list[Path]:
    """The roots that no other root contains, in order: a batch that puts ``a`` and
    ``a.b`` recomputes ``a`` once. O(roots * depth), as a batch may be large."""
    if isinstance(roots, list) and len(roots) == 1:  # a put: the common case
        return roots
    unique = dict.fromkeys(roots)
    return [r for r in unique if not any(r[:d] in unique for d in range(1, len(r)))]


def candidate(
    table: ConfigTable,
    raw: Section,
    loaded: dict[str, Section] | None = None,
    overrides: Overrides | None = None,
) -> Candidate:
    """Validate ``raw``; raises ``ValidationError`` with every problem and its origin (the
    origins are taken from ``loaded`` and ``overrides`` where given, the table elsewhere)."""
    validator = table.validator
    if not validator.active:
        return Candidate(raw, raw, None)
    try:
        model = validator.check(raw, table.redactor)
    except ValidationError as exc:
        raise with_origins(exc, table, loaded, overrides) from None
    if validator.schema is None:
        return Candidate(raw, raw, model)
    view = schema_view.view(raw, model)
    return Candidate(raw, view.tree, model, view.secret_paths)


def published_changes(
    published: Section, raw_changed: list[Path], candidate: Candidate
) -> list[Path]:
    """The leaves that change for readers: those of the merged tree, unless a schema's view
    is published, which must be compared as a whole (defaults and computed fields move)."""
    if candidate.tree is candidate.raw:
        return raw_changed
    return diff(published, candidate.tree)


def secret_leaves(table: ConfigTable, loaded: dict[str, Section]) -> frozenset[str] | None:
    """Every leaf a secret source gives, or ``None`` if no secret source is in ``loaded``
    (the redactor's knowledge then stays as it is)."""
    if not any(table.sources[name].source.secret for name in loaded):
        return None
    return frozenset(
        ".".join(path)
        for name, state in table.sources.items()
        if state.source.secret
        for path, leaf in leaf_items(loaded.get(name, state.layer), ())
        if path and not isinstance(leaf, Section)
    )


async def _load_one(source: Source) -> Result:
    started = time.perf_counter()
    try:
        layer = await source.load()
    except NotReady as exc:  # (None, None): skipped, see sort()
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
