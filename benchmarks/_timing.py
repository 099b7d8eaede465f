"""Timing helpers shared by ``run.py`` and ``baseline_029.py`` (standard library only).

A benchmark is a function that performs an operation ``n`` times in a tight loop. It is run
once to warm up, then in ``batches`` timed batches of ``n`` operations; the result is the
median over the batches of the mean time per operation, so one slow batch (a GC pause, the
other core busy) does not move it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_BATCHES = 7


@dataclass(frozen=True)
class Measurement:
    """Median nanoseconds per operation over the batches; ``n`` operations timed."""

    median_ns: float
    n: int
    per_batch_ns: tuple[float, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "median_ns": round(self.median_ns, 1),
            "n": self.n,
            "per_batch_ns": [round(ns, 1) for ns in self.per_batch_ns],
        }


def _summarise(per_op_ns: list[float], n: int) -> Measurement:
    median = statistics.median(per_op_ns)
    return Measurement(median, n * len(per_op_ns), tuple(per_op_ns))


async def measure_async(
    run: Callable[[int], Awaitable[object]], n: int, batches: int = DEFAULT_BATCHES
) -> Measurement:
    """Time ``await run(n)`` (which performs ``n`` operations) ``batches`` times after a
    warm-up."""
    await run(n)
    per_op: list[float] = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        await run(n)
        per_op.append((time.perf_counter_ns() - started) / n)
    return _summarise(per_op, n)


@dataclass(frozen=True)
class Paired:
    """Two measurements taken in alternating batches, and the median of the per-pair ratios
    ``a / b``. On a machine whose speed drifts (a VM, a busy second core), the ratio of
    neighbouring batches is far steadier than the ratio of two separately taken medians."""

    a: Measurement
    b: Measurement
    ratio: float


async def measure_paired(
    run_a: Callable[[int], Awaitable[object]],
    run_b: Callable[[int], Awaitable[object]],
    n: int,
    batches: int = DEFAULT_BATCHES,
    *,
    before_a: Callable[[], Awaitable[object]] | None = None,
    before_b: Callable[[], Awaitable[object]] | None = None,
) -> Paired:
    """Time ``run_a(n)`` and ``run_b(n)`` in alternating batches (after one warm-up each).

    ``before_a`` / ``before_b``, if given, are awaited (untimed) before every batch of their
    side, e.g. to switch the configuration the side runs against.
    """

    async def timed(run: Callable[[int], Awaitable[object]], before: Any) -> float:
        if before is not None:
            await before()
        started = time.perf_counter_ns()
        await run(n)
        return (time.perf_counter_ns() - started) / n

    await timed(run_a, before_a)
    await timed(run_b, before_b)
    per_op_a: list[float] = []
    per_op_b: list[float] = []
    for _ in range(batches):
        per_op_a.append(await timed(run_a, before_a))
        per_op_b.append(await timed(run_b, before_b))
    ratio = statistics.median(a / b for a, b in zip(per_op_a, per_op_b, strict=True))
    return Paired(_summarise(per_op_a, n), _summarise(per_op_b, n), ratio)


def scaled(n: int, scale: float) -> int:
    """A batch size ``n`` multiplied by ``scale`` (``--scale``), at least 10."""
    return max(10, int(n * scale))


def nested_config(sections: int, keys: int) -> dict[str, dict[str, int]]:
    """``{"section_0000": {"key_000": 0, ...}, ...}``: ``sections x keys`` integer leaves."""
    return {f"section_{s:04d}": {f"key_{k:03d}": k for k in range(keys)} for s in range(sections)}
