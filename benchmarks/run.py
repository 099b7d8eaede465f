"""Side-by-side benchmarks: otpylib-config against plain Python, bare otpylib and 0.2.9.

    ./scripts/bench                                   # everything, against 0.2.9 too
    python benchmarks/run.py --quick --no-baseline    # small and fast (the smoke test)

One run measures every benchmark, prints a markdown table of medians, ratios and the
targets (docs/performance.md says why each is the target) on stdout (progress goes to
stderr), and writes it to ``results.md`` and the raw figures to ``results.json`` in
``--out-dir`` (``benchmarks/``).

0.2.9 has the same import name as this project, so its figures come from
``baseline_029.py`` run as a subprocess by ``benchmarks/.venv-029/bin/python`` (which
``scripts/bench`` builds). The cold-start rows (10) run ``cold_start.py`` in fresh
interpreters: ours and the ``tomllib`` floor with this interpreter, pydantic-settings,
dynaconf and 0.2.9 with those of ``benchmarks/.venv-pydantic-settings``,
``benchmarks/.venv-dynaconf`` and ``benchmarks/.venv-029`` (``scripts/bench`` builds them
too). ``--no-baseline`` skips 0.2.9 and the peers, and their rows say so.

**Adding a benchmark**: write one ``async def`` taking a
:class:`Context` and returning a list of :class:`Row`, and decorate it with
``@benchmark("name")``; it runs in registration order and its rows appear in the table and
in ``results.json``. Latency benchmarks can hand their samples to :func:`latency_row` (see
:func:`file_save_to_callback`); throughput ones time two loops in alternating batches with
``measure_paired`` (:class:`TreeSwitcher` alternates configurations) and use
:func:`ratio_row`. Put raw figures in ``ctx.raw[name]``; sizes that ``--quick`` shrinks go
in :class:`Sizes`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import importlib.metadata
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import admin_server
import aiohttp
from _timing import Measurement, Paired, measure_paired, nested_config, scaled
from otpylib import atom, gen_server, process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule
from otpylib.runtime import get_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend

import otpylib_config
from otpylib_config import (
    Config,
    ConfigClient,
    ConfigSpec,
    ConfigTree,
    ConsulSource,
    DefaultsSource,
    FileSource,
    Source,
    _otp_compat,
)
from otpylib_config.admin import AdminSpec, AdminToken
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

HERE = Path(__file__).resolve().parent
BASELINE_PYTHON = HERE / ".venv-029" / "bin" / "python"
BASELINE_SCRIPT = HERE / "baseline_029.py"
BASELINE_LIMIT_S = 600.0
RELOAD_LIMIT_S = 120.0  # rows 11 and 12: a reload slower than this fails the run
STALL_TAIL_S = 0.05  # row 12 watches the loop this long after a reload returns
COMMAND_VARIABLE = "OTPYLIB_CONFIG_BENCH_COMMAND"  # scripts/bench names itself in results.md

SECTION, KEY = "section_0000", "key_042"
PATH = f"{SECTION}.{KEY}"  # the path every get and put uses; nested_config puts 42 there
VALUES = (-1, -2)  # puts alternate between these, so every put changes the config
_NEXT_VALUE: Iterator[int] = itertools.cycle(VALUES)
KEYS_PER_SECTION = 100

GET_BATCH = 50_000  # operations per timed batch, times --scale
PUT_BATCH = 3_000
BATCHES = 15  # timed batches per figure (3 with --quick)

CALLBACK_LIMIT_S = 5.0  # a save whose callback takes longer counts as lost
SAVE_PAUSE_S = 0.1  # quiet time between two saves, so that their events never merge
ECHO = "benchmarks.echo"


@dataclass(frozen=True)
class Sizes:
    """Sizes of the configurations and of the sample counts; ``--quick`` shrinks them."""

    big_sections: int = 1000  # row 4: sections of 100 keys
    subscriptions: int = 10_000  # rows 5 and 17 (17: matching ones)
    saves: int = 50  # row 6, per kind of save
    writes: int = 50  # row 8
    reload_sections: int = 100  # rows 7 and 11: sections of 100 keys in the TOML file
    reloads: int = 15  # rows 7 and 11 (11: per side)
    kills: int = 100  # row 9
    cold_runs: int = 15  # row 10: timed runs per variant
    stall_sections: int = 1000  # row 12: sections of 100 keys in the TOML file
    stall_reloads: int = 5  # row 12
    wide_keys: int = 100_000  # row 16: keys in the one flat section
    fanout_puts: int = 2  # row 17: individually timed puts per batch (10x with none)
    fleet_nodes: int = 16  # rows 21a and 21b: node processes
    fleet_writes: int = 50  # rows 21a and 21b
    cached_starts: int = 5  # row 21c: node starts while etcd is down


FULL = Sizes()
QUICK = Sizes(
    big_sections=20,
    subscriptions=200,
    saves=5,
    reload_sections=10,
    reloads=3,
    writes=5,
    kills=5,
    cold_runs=2,
    stall_sections=20,
    stall_reloads=2,
    wide_keys=2_000,
    fleet_nodes=4,
    fleet_writes=5,
    cached_starts=1,
)


@dataclass(frozen=True)
class Row:
    """One line of the table. ``verdict``: ``pass``, ``miss``, ``n/a`` or ``—`` (no target)."""

    id: str
    name: str
    ours: str
    compared_with: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "—"


@dataclass
class Context:
    """What every benchmark gets: sizes, repetitions, 0.2.9's figures, and a raw-data dict."""

    sizes: Sizes
    scale: float
    batches: int
    baseline: dict[str, Any] | None
    baseline_missing: str  # why ``baseline`` is None, for the table
    raw: dict[str, Any] = field(default_factory=dict)

    def n(self, batch: int) -> int:
        """Operations per timed batch: ``batch`` times ``--scale``."""
        return scaled(batch, self.scale)

    def baseline_ns(self, key: str) -> tuple[float | None, str]:
        """0.2.9's median for ``key``, or ``None`` and why it is missing."""
        if self.baseline is None:
            return None, self.baseline_missing
        entry = self.baseline.get(key) or {}
        value = entry.get("median_ns")
        return value, entry.get("note", "") if value is None else ""


Benchmark = Callable[[Context], Awaitable[list[Row]]]
BENCHMARKS: dict[str, Benchmark] = {}
"""The registry: name -> benchmark, in the order the table shows them."""


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register ``fn`` under ``name`` (``--only name`` runs just that one)."""

    def register(fn: Benchmark) -> Benchmark:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------------------- formatting


def fmt_ns(ns: float) -> str:
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return f"{ns / size:.3g} {unit}"
    return f"{ns:.0f} ns"


def fmt_ratio(ratio: float) -> str:
    if ratio < 0.1:
        return f"{ratio:.2g}x ({1 / ratio:,.0f}x faster)"
    return f"{ratio:.2f}x"


def verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def ratio_row(
    row_id: str,
    name: str,
    ours_ns: float,
    baseline_label: str,
    baseline_ns: float | None,
    *,
    target: str = "—",
    meets: Callable[[float], bool] | None = None,
    missing: str = "",
    ratio: float | None = None,
) -> Row:
    """A row comparing ``ours_ns`` with ``baseline_ns``: the ratio is ours / baseline, or
    ``ratio`` if given (the median per-pair ratio of a :class:`Paired` measurement).

    ``meets(ratio)`` decides pass/miss against ``target``; without it the row has no target.
    ``baseline_ns`` ``None`` (not measured) gives ``n/a`` and the reason ``missing``.
    """
    if baseline_ns is None:
        return Row(
            row_id,
            name,
            fmt_ns(ours_ns),
            f"{baseline_label}: n/a ({missing})",
            "n/a",
            target,
            "n/a" if meets else "—",
        )
    if ratio is None:
        ratio = ours_ns / baseline_ns
    return Row(
        row_id,
        name,
        fmt_ns(ours_ns),
        f"{baseline_label} {fmt_ns(baseline_ns)}",
        fmt_ratio(ratio),
        target,
        verdict(meets(ratio)) if meets else "—",
    )


def paired_row(
    row_id: str,
    name: str,
    pair: Paired,
    compared_with: str,
    *,
    target: str = "—",
    meets: Callable[[float], bool] | None = None,
) -> Row:
    """A :func:`ratio_row` for two things timed in alternating batches (``pair.a`` is ours)."""
    return ratio_row(
        row_id,
        name,
        pair.a.median_ns,
        compared_with,
        pair.b.median_ns,
        ratio=pair.ratio,
        target=target,
        meets=meets,
    )


def pair_json(pair: Paired, a: str, b: str) -> dict[str, Any]:
    return {a: pair.a.as_json(), b: pair.b.as_json(), "paired_ratio": round(pair.ratio, 4)}


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was measured (with 50 samples p99 is the max)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def latency_row(
    row_id: str,
    name: str,
    samples_s: list[float],
    *,
    attempts: int,
    p50_target_ms: float | None,
    p99_target_ms: float | None,
    tries: str = "saves",
) -> Row:
    """A p50/p99 latency row from ``samples_s`` (seconds) of ``attempts`` ``tries``.

    Tries without a sample were lost (no callback within ``CALLBACK_LIMIT_S``) and fail the
    row.
    """
    targets = []
    if p50_target_ms is not None:
        targets.append(f"p50 ≤ {p50_target_ms:g} ms")
    if p99_target_ms is not None:
        targets.append(f"p99 ≤ {p99_target_ms:g} ms")
    target = ", ".join(targets) or "—"
    p50, p99 = percentile(samples_s, 50) * 1e3, percentile(samples_s, 99) * 1e3
    lost = attempts - len(samples_s)
    ours = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(samples_s)} {tries}"
    ours += f", {lost} lost)" if lost else ")"
    ok = lost == 0
    ok &= p50_target_ms is None or p50 <= p50_target_ms
    ok &= p99_target_ms is None or p99 <= p99_target_ms
    return Row(row_id, name, ours, "—", "—", target, verdict(ok))


def table(rows: Iterable[Row]) -> str:
    lines = [
        "| # | benchmark | ours (median) | compared with | ratio | target (docs/performance.md) "
        "| result |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.id} | {r.name} | {r.ours} | {r.compared_with} | {r.ratio} | {r.target} "
        f"| {r.verdict} |"
        for r in rows
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def spec(*sources: Source, **options: Any) -> ConfigSpec:
    return ConfigSpec(id="bench", sources=list(sources), reload_interval=None, **options)


def small_config() -> DefaultsSource:
    return DefaultsSource(nested_config(1, KEYS_PER_SECTION))


def to_toml(config: dict[str, dict[str, int]]) -> str:
    lines: list[str] = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


PLAIN = nested_config(1, KEYS_PER_SECTION)  # what rows 1 and 2 compare against


async def dict_gets(count: int) -> None:
    """``count`` nested ``dict.get``s of the path every get reads: the fair baseline."""
    for _ in itertools.repeat(None, count):
        PLAIN.get(SECTION).get(KEY)  # type: ignore[union-attr]


async def puts(count: int) -> None:
    """``count`` x ``await Config.put(PATH, v)`` from a plain asyncio task, each a change
    (``v`` cycles through ``VALUES``; a freshly started tree has 42 at ``PATH``)."""
    put, values = Config.put, _NEXT_VALUE
    for _ in itertools.repeat(None, count):
        await put(PATH, next(values))


def check_published() -> None:
    if Config.get_nowait(PATH) not in VALUES:
        raise RuntimeError(f"put did not publish: get({PATH!r}) = {Config.get_nowait(PATH)!r}")


class TreeSwitcher:
    """Runs one tree at a time, so that two configurations can be measured in alternating
    batches: ``await switch(source, prepare)`` stops the current tree, starts one on
    ``source``, awaits ``prepare()`` (e.g. subscribing), collects garbage so that the debt
    of this untimed set-up is not paid by a timed batch, and warms the tree up with puts."""

    def __init__(
        self, warm_up: int, warm: Callable[[int], Awaitable[object]] | None = None
    ) -> None:
        self.warm_up = warm_up
        self.warm = puts if warm is None else warm  # the loop that warms a new tree up
        self.tree: ConfigTree | None = None

    async def switch(
        self,
        source: Source,
        prepare: Callable[[], Awaitable[object]] | None = None,
        **options: Any,
    ) -> None:
        """``options`` go to the tree's :class:`ConfigSpec` (``schema=...``)."""
        await self.close()
        self.tree = await otpylib_config.start(spec(source, **options))
        if prepare is not None:
            await prepare()
        gc.collect()
        await self.warm(self.warm_up)

    async def close(self) -> None:
        if self.tree is not None:
            tree, self.tree = self.tree, None
            await tree.stop()


class Echo(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):  # type: ignore[metaclass,call-arg]  # untyped
    """The most trivial gen_server: answers every call with its request."""

    async def init(self, init_arg: Any) -> None:
        return None

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return (Reply(request), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


async def bare_calls(count: int) -> None:
    """``count`` x ``gen_server.call(ECHO, ..., timeout=5.0)``, inside a process (the fastest
    way to call: from outside a process otpylib spawns a bridge process per call)."""

    async def body() -> None:
        call = gen_server.call
        for _ in itertools.repeat(None, count):
            await call(ECHO, PATH, timeout=5.0)

    await in_process(body, timeout=300.0)


@asynccontextmanager
async def own_runtime() -> AsyncIterator[AsyncIOBackend]:
    """An otpylib runtime that trees started inside share (``start`` then does not own it)."""
    if get_runtime() is not None:
        raise RuntimeError("an otpylib runtime is still set; a benchmark did not stop its tree")
    backend = await _otp_compat.open_runtime()
    try:
        yield backend
    finally:
        await _otp_compat.shutdown_runtime(backend)


# -------------------------------------------------------------------------- benchmarks

DICT = "`d.get(a).get(b)`"


@benchmark("get_nowait")
async def get_nowait_vs_dict(ctx: Context) -> list[Row]:
    """Row 1: ``Config.get_nowait(path)`` against a nested ``dict.get`` of the same path."""
    async with otpylib_config.running(spec(small_config())):
        get_nowait = Config.get_nowait
        if get_nowait(PATH) != 42:
            raise RuntimeError(f"get_nowait({PATH!r}) = {get_nowait(PATH)!r}, expected 42")

        async def ours(count: int) -> None:  # the loop itself is synchronous, as in dict_gets
            for _ in itertools.repeat(None, count):
                get_nowait(PATH)

        pair = await measure_paired(ours, dict_gets, ctx.n(GET_BATCH), ctx.batches)
    ctx.raw["get_nowait"] = pair_json(pair, "ours", "dict_get")
    name = "`Config.get_nowait(path)`"
    return [paired_row("1", name, pair, DICT, target="≤ 3x", meets=lambda r: r <= 3)]


@benchmark("get")
async def get_vs_dict_and_029(ctx: Context) -> list[Row]:
    """Row 2: ``await Config.get(path)`` against the dict and 0.2.9's ``Config.get``."""
    async with otpylib_config.running(spec(small_config())):
        get = Config.get

        async def ours(count: int) -> None:
            for _ in itertools.repeat(None, count):
                await get(PATH)

        pair = await measure_paired(ours, dict_gets, ctx.n(GET_BATCH), ctx.batches)
    old_ns, missing = ctx.baseline_ns("get")
    ctx.raw["get"] = pair_json(pair, "ours", "dict_get")
    name = "`await Config.get(path)`"
    return [
        paired_row("2a", name, pair, DICT),
        ratio_row(
            "2b",
            name,
            pair.a.median_ns,
            "0.2.9 `await Config.get` (in a process)",
            old_ns,
            target="≥ 100x faster",
            meets=lambda r: r <= 0.01,
            missing=missing,
        ),
    ]


@benchmark("put")
async def put_vs_call_and_029(ctx: Context) -> list[Row]:
    """Row 3: ``await Config.put`` on 100 keys against a bare ``gen_server.call`` (in the
    same runtime, batches alternating) and against 0.2.9's put."""
    async with own_runtime():
        await in_process(lambda: gen_server.start(Echo, name=ECHO))
        async with otpylib_config.running(spec(small_config())):
            pair = await measure_paired(puts, bare_calls, ctx.n(PUT_BATCH), ctx.batches)
            check_published()
    old_ns, missing = ctx.baseline_ns("put")
    ctx.raw["put"] = pair_json(pair, "ours", "bare_gen_server_call")
    name = "`await Config.put(path, v)`, 100 keys"
    return [
        paired_row(
            "3a",
            name,
            pair,
            "bare `gen_server.call(timeout=5.0)` to an echo gen_server",
            target="≤ 1x",
            meets=lambda r: r <= 1,
        ),
        ratio_row(
            "3b",
            name,
            pair.a.median_ns,
            "0.2.9 `await Config.put` (in a process)",
            old_ns,
            missing=missing,
        ),
    ]


@benchmark("put_big")
async def put_on_big_config(ctx: Context) -> list[Row]:
    """Row 4: put on ``big_sections`` x 100 keys against put on 100 keys (one tree at a time,
    batches alternating), and against 0.2.9's put on the same big config."""
    keys = ctx.sizes.big_sections * KEYS_PER_SECTION
    big = DefaultsSource(nested_config(ctx.sizes.big_sections, KEYS_PER_SECTION))
    small = small_config()
    trees = TreeSwitcher(warm_up=ctx.n(PUT_BATCH) // 10)
    try:
        started = time.perf_counter_ns()
        await trees.switch(big)
        start_ns = time.perf_counter_ns() - started
        pair = await measure_paired(
            puts,
            puts,
            ctx.n(PUT_BATCH),
            ctx.batches,
            before_a=lambda: trees.switch(big),
            before_b=lambda: trees.switch(small),
        )
        check_published()
    finally:
        await trees.close()
    old_ns, missing = ctx.baseline_ns("put_big")
    if ctx.baseline is not None and ctx.baseline.get("put_big", {}).get("keys") != keys:
        old_ns, missing = None, "0.2.9 measured another size"
    ctx.raw["put_big"] = {"keys": keys, "start_ns": start_ns, **pair_json(pair, "ours", "ours_100")}
    name = f"`await Config.put(path, v)`, {keys:,} keys"
    return [
        paired_row(
            "4a", name, pair, "the same put on 100 keys", target="≤ 3x", meets=lambda r: r <= 3
        ),
        ratio_row(
            "4b",
            name,
            pair.a.median_ns,
            f"0.2.9 `await Config.put`, {keys:,} keys",
            old_ns,
            missing=missing,
        ),
    ]


@benchmark("put_subscriptions")
async def put_with_subscriptions(ctx: Context) -> list[Row]:
    """Row 5: put with ``subscriptions`` non-matching patterns against put with none (a fresh
    tree for every batch; subscribing is not timed)."""
    count = ctx.sizes.subscriptions

    def never(path: str, old: Any, new: Any) -> None:
        raise AssertionError(f"a non-matching subscription got {path}")

    async def subscribe_all() -> None:
        for i in range(count):
            await Config.subscribe(f"other_{i}.*", never)

    source = small_config()
    trees = TreeSwitcher(warm_up=ctx.n(PUT_BATCH) // 10)
    try:
        pair = await measure_paired(
            puts,
            puts,
            ctx.n(PUT_BATCH),
            ctx.batches,
            before_a=lambda: trees.switch(source, subscribe_all),
            before_b=lambda: trees.switch(source),
        )
        check_published()
    finally:
        await trees.close()
    ctx.raw["put_subscriptions"] = {
        "subscriptions": count,
        **pair_json(pair, "ours", "none"),
    }
    return [
        paired_row(
            "5",
            f"`await Config.put` with {count:,} non-matching subscriptions",
            pair,
            "the same put with none",
            target="≤ 1.5x",
            meets=lambda r: r <= 1.5,
        )
    ]


@benchmark("file_callback")
async def file_save_to_callback(ctx: Context) -> list[Row]:
    """Rows 6 and 6b: a TOML file saved with a new value → the subscriber's callback runs.

    Measured from just before the write to the callback, one save at a time, through the
    public API only (``FileSource(watch=True)``, no reload timer, no ``reload()`` call).
    Row 6 saves in place (``write_text``: open with truncation, write, close); row 6b saves
    as editors and deployment tools do, writing a new file beside it and renaming it over
    the watched one (``os.replace``). Each kind runs against a tree of its own.
    """
    rows: list[Row] = []
    for row_id, kind in (("6", "in place"), ("6b", "renamed over")):
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "config.toml"
            file.write_text("[bench]\nvalue = 0\n")
            save = save_in_place(file) if row_id == "6" else save_renamed_over(file)
            async with otpylib_config.running(spec(FileSource(file, watch=True))):
                samples = await write_to_callback("bench.value", ctx.sizes.saves, save)
        key = "file_callback" if row_id == "6" else "file_callback_rename"
        ctx.raw[key] = {"attempts": ctx.sizes.saves, "samples_s": samples}
        rows.append(
            latency_row(
                row_id,
                f"file saved ({kind}) → subscriber callback",
                samples,
                attempts=ctx.sizes.saves,
                p50_target_ms=15,
                p99_target_ms=50,
            )
        )
    return rows


def save_in_place(file: Path) -> Callable[[int], Awaitable[None]]:
    async def save(value: int) -> None:
        file.write_text(f"[bench]\nvalue = {value}\n")

    return save


def save_renamed_over(file: Path) -> Callable[[int], Awaitable[None]]:
    scratch = file.with_name(f".{file.name}.new")

    async def save(value: int) -> None:
        scratch.write_text(f"[bench]\nvalue = {value}\n")
        os.replace(scratch, file)

    return save


async def write_to_callback(
    path: str, count: int, write: Callable[[int], Awaitable[object]]
) -> list[float]:
    """Seconds from ``write(value)`` to the callback that sees ``path`` become ``value``, for
    values 1 to ``count``, one at a time; a write with no callback within
    ``CALLBACK_LIMIT_S`` gives no sample (the row counts it as lost)."""
    loop = asyncio.get_running_loop()
    arrived: dict[int, asyncio.Future[float]] = {}

    def on_change(path: str, old: Any, new: Any) -> None:
        fut = arrived.get(new)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    await Config.subscribe(path, on_change)
    await asyncio.sleep(SAVE_PAUSE_S)
    samples: list[float] = []
    for value in range(1, count + 1):
        arrived[value] = loop.create_future()
        started = time.perf_counter()
        await write(value)
        with contextlib.suppress(TimeoutError):
            samples.append(await asyncio.wait_for(arrived[value], CALLBACK_LIMIT_S) - started)
        await asyncio.sleep(SAVE_PAUSE_S)
    return samples


@benchmark("reload")
async def reload_one_change(ctx: Context) -> list[Row]:
    """Row 7: ``await Config.reload()`` of a big TOML file in which one key changed.

    Times the reload (median) and counts the events a ``**`` subscriber gets for it.
    """
    sections = ctx.sizes.reload_sections
    keys = sections * KEYS_PER_SECTION
    config = nested_config(sections, KEYS_PER_SECTION)
    events: list[str] = []
    event_arrived = asyncio.Event()
    durations: list[float] = []
    per_reload: list[int] = []

    def on_change(path: str, old: Any, new: Any) -> None:
        events.append(path)
        event_arrived.set()

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "config.toml"
        file.write_text(to_toml(config))
        async with otpylib_config.running(spec(FileSource(file, watch=False))):
            await Config.subscribe("**", on_change)
            for i in range(ctx.sizes.reloads):
                config[SECTION][KEY] = -1 - i
                file.write_text(to_toml(config))
                before = len(events)
                event_arrived.clear()
                started = time.perf_counter()
                await Config.reload()
                durations.append(time.perf_counter() - started)
                await settle(event_arrived)
                per_reload.append(len(events) - before)
    median_ns = statistics.median(durations) * 1e9
    ctx.raw["reload"] = {
        "keys": keys,
        "reload_s": durations,
        "events_per_reload": per_reload,
    }
    exact = all(n == 1 for n in per_reload)
    return [
        Row("7a", f"`await Config.reload()`, {keys:,}-key TOML, 1 key changed", fmt_ns(median_ns)),
        Row(
            "7b",
            "events delivered for that reload",
            f"{', '.join(map(str, sorted(set(per_reload))))} per reload "
            f"({len(per_reload)} reloads)",
            target="exactly 1",
            verdict=verdict(exact),
        ),
    ]


@benchmark("consul_callback")
async def consul_write_to_callback(ctx: Context) -> list[Row]:
    """Row 8: an HTTP PUT to Consul → the subscriber's callback runs.

    Against the loopback Consul server of the test suite (no Consul binary exists here), one
    write at a time; the watcher's blocking query answers and hands the data to a reload.
    """
    sys.path.insert(0, str(HERE.parent))
    from tests.consul_server import ConsulServer

    async with ConsulServer(jitter=False) as consul, aiohttp.ClientSession() as http:
        consul.put("bench/config/value", "0")

        async def put(value: int) -> None:
            async with http.put(f"{consul.url}/v1/kv/bench/config/value", data=str(value)):
                pass

        source = ConsulSource("bench/config/", url=consul.url, wait=30.0)
        async with otpylib_config.running(spec(source)):
            samples = await write_to_callback("value", ctx.sizes.writes, put)
    ctx.raw["consul_callback"] = {"attempts": ctx.sizes.writes, "samples_s": samples}
    return [
        latency_row(
            "8",
            "Consul write → subscriber callback",
            samples,
            attempts=ctx.sizes.writes,
            p50_target_ms=50,
            p99_target_ms=None,
            tries="writes",
        )
    ]


@benchmark("restart_gap")
async def restart_gap(ctx: Context) -> list[Row]:
    """Row 9: ``process.exit(manager, kill)`` → the first acknowledged put after it.

    The reason cycles through ``kill``, ``shutdown`` and a custom one; each sample starts
    just before the exit signal and ends when a put sent right after it has been published
    by the restarted manager (the put waits out the restart, as any writer would).
    """
    reasons = [atom.ensure("kill"), atom.ensure("shutdown"), "bench-crash"]
    samples: list[float] = []
    async with otpylib_config.running(spec(small_config(), max_restarts=10 * ctx.sizes.kills)):
        table = current_table()
        for i in range(ctx.sizes.kills):
            pid = process.whereis(table.manager_name)
            started = time.perf_counter()
            await in_process(lambda pid=pid, i=i: process.exit(pid, reasons[i % len(reasons)]))
            await Config.put("bench.gap", i)
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    ctx.raw["restart_gap"] = {"attempts": ctx.sizes.kills, "samples_s": samples}
    name = "manager killed (`process.exit`) → next put acknowledged"
    return [
        latency_row(
            "9",
            name,
            samples,
            attempts=ctx.sizes.kills,
            p50_target_ms=None,
            p99_target_ms=100,
            tries="kills",
        )
    ]


# ----------------------------------------------------------------- cold start (row 10)

COLD_SCRIPT = HERE / "cold_start.py"
COLD_LIMIT_S = 60.0  # a child slower than this is killed and the variant fails
IMPORT_TIME_RUNS = 3  # python -X importtime runs, median per module
HEAVY_IMPORTS = ("aiohttp", "yaml", "pydantic", "dotenv")  # the optional dependencies
MIB = 1024 * 1024


@dataclass(frozen=True)
class ColdVariant:
    """A variant of ``cold_start.py`` and the interpreter (virtualenv) it runs with;
    ``peer`` variants are measured only with the baseline (not with ``--no-baseline``)."""

    name: str
    label: str
    python: Path
    distribution: str | None = None  # whose version the label shows
    peer: bool = False


INSTALLED = HERE / ".venv-ours" / "bin" / "python"
OURS_PYTHON = INSTALLED if INSTALLED.exists() else Path(sys.executable)
"""Ours as users install it (a wheel, which ``scripts/bench`` builds into ``.venv-ours``);
this interpreter's editable install only when that is missing."""
COLD_VARIANTS = (
    ColdVariant("ours-start", "ours, `start` + `get_nowait` + `stop`", OURS_PYTHON),
    ColdVariant("ours-load", "ours, `load(spec).get`", OURS_PYTHON),
    ColdVariant(
        "pydantic-settings",
        "pydantic-settings",
        HERE / ".venv-pydantic-settings" / "bin" / "python",
        "pydantic_settings",
        peer=True,
    ),
    ColdVariant(
        "dynaconf", "dynaconf", HERE / ".venv-dynaconf" / "bin" / "python", "dynaconf", peer=True
    ),
    ColdVariant("otpylib-config-0.2.9", "0.2.9", BASELINE_PYTHON, peer=True),
    ColdVariant("tomllib-environ", "`tomllib` + `os.environ` by hand", OURS_PYTHON),
)


@dataclass(frozen=True)
class ColdRun:
    """One child: seconds from spawn to the value on its stdout and to its exit, its peak
    RSS as it reported it (``VmHWM``: see ``cold_start.peak_rss_kib``), and the CPU
    seconds ``os.wait4`` reported for it alone."""

    first_value_s: float
    exit_s: float
    max_rss_bytes: int
    cpu_s: float


class ColdStartFailed(Exception):
    pass


def venv_version(python: Path, distribution: str) -> str | None:
    """The version of ``distribution`` installed in ``python``'s virtualenv (from its
    ``.dist-info`` directory's name, without starting the interpreter)."""
    for info in python.parent.parent.glob(f"lib/python*/site-packages/{distribution}-*.dist-info"):
        return info.name[len(distribution) + 1 : -len(".dist-info")]
    return None


def child_environment(variant: str) -> dict[str, str]:
    """A small, fixed environment: PATH, HOME, locale and the one override."""
    import cold_start

    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env[cold_start.override_variable(variant)] = str(cold_start.OVERRIDE_VALUE)
    return env


def cold_run(variant: ColdVariant, config: Path) -> ColdRun:
    """Run ``cold_start.py variant config`` once (``-I``: no user site, no PYTHON*
    variables, no script directory on ``sys.path``) and time it."""
    import cold_start

    command = [str(variant.python), "-I", str(COLD_SCRIPT), variant.name, str(config)]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=child_environment(variant.name),
            cwd=config.parent,
        )
        killer = threading.Timer(COLD_LIMIT_S, child.kill)
        killer.start()
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            first = time.perf_counter() - started
            rest = child.stdout.read().decode(errors="replace").split()
            _, status, usage = os.wait4(child.pid, 0)
            exit_s = time.perf_counter() - started
        finally:
            killer.cancel()
            if child.stdout is not None:
                child.stdout.close()
        child.returncode = os.waitstatus_to_exitcode(status)
        value = line.decode(errors="replace").strip()
        if child.returncode != 0 or value != str(cold_start.OVERRIDE_VALUE):
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            raise ColdStartFailed(
                f"{variant.name} exited with {child.returncode} and printed {value!r} "
                f"(expected {cold_start.OVERRIDE_VALUE}): {tail}"
            )
    try:
        rss_kib = int(rest[rest.index("peak_rss_kib") + 1])
    except (ValueError, IndexError) as exc:
        raise ColdStartFailed(f"{variant.name} did not report its peak RSS: {rest}") from exc
    return ColdRun(first, exit_s, rss_kib * 1024, usage.ru_utime + usage.ru_stime)


def cold_runs(variants: list[ColdVariant], config: Path, runs: int) -> dict[str, Any]:
    """Each variant once untimed (bytecode caches, page cache), then ``runs`` rounds of one
    run per variant, the order rotating every round. A variant that fails is dropped and
    its error kept under ``"failed"``."""
    samples: dict[str, list[ColdRun]] = {}
    failed: dict[str, str] = {}
    for variant in variants:
        try:
            cold_run(variant, config)
        except ColdStartFailed as exc:
            failed[variant.name] = str(exc)
        else:
            samples[variant.name] = []
    live = [v for v in variants if v.name in samples]
    for i in range(runs if live else 0):
        for variant in live[i % len(live) :] + live[: i % len(live)]:
            if variant.name in failed:
                continue
            try:
                samples[variant.name].append(cold_run(variant, config))
            except ColdStartFailed as exc:
                failed[variant.name] = str(exc)
                samples.pop(variant.name)
    return {"samples": samples, "failed": failed}


def import_subtree(importtime: str, top: str) -> list[tuple[int, int, str]]:
    """``(self us, cumulative us, module)`` of the top-level import ``top`` and of every
    module it imported, from ``-X importtime`` output (a module's imports are the lines
    just before it that are nested deeper; what ``site`` imports at start-up is left out)."""
    entries: list[tuple[int, int, int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|", 2)
        level = (len(name) - len(name.lstrip()) - 1) // 2
        entries.append((level, int(own), int(cumulative), name.strip()))
    end = next((i for i, e in enumerate(entries) if e[0] == 0 and e[3] == top), None)
    if end is None:
        return []
    start = end
    while start > 0 and entries[start - 1][0] > 0:
        start -= 1
    return [(own, cumulative, name) for _, own, cumulative, name in entries[start : end + 1]]


def import_times(runs: int) -> dict[str, Any]:
    """``python -X importtime -c "import otpylib_config"`` ``runs`` times: per module that
    this import loaded, the median self and cumulative ms; the top 10 by cumulative and by
    self time, self time summed per top-level package, and which of ``HEAVY_IMPORTS`` the
    import loaded."""
    per_module: dict[str, list[tuple[int, int]]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [str(OURS_PYTHON), "-I", "-X", "importtime", "-c", "import otpylib_config"],
            capture_output=True,
            text=True,
            timeout=COLD_LIMIT_S,
            env=child_environment("ours-start"),
        )
        if done.returncode != 0:
            raise RuntimeError(f"import otpylib_config failed: {done.stderr[-2000:]}")
        this_run: dict[str, tuple[int, int]] = {}
        for own, cumulative, name in import_subtree(done.stderr, "otpylib_config"):
            before = this_run.get(name, (0, 0))  # a name twice: a nested re-import
            this_run[name] = (before[0] + own, max(before[1], cumulative))
        for name, times in this_run.items():
            per_module.setdefault(name, []).append(times)
    modules = [
        {
            "module": name,
            "self_ms": round(statistics.median(o for o, _ in times) / 1e3, 1),
            "cumulative_ms": round(statistics.median(c for _, c in times) / 1e3, 1),
        }
        for name, times in per_module.items()
    ]
    check = (
        "import sys, otpylib_config; "
        f"print(','.join(m for m in {HEAVY_IMPORTS!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [str(OURS_PYTHON), "-I", "-c", check],
        capture_output=True,
        text=True,
        timeout=COLD_LIMIT_S,
        env=child_environment("ours-start"),
    ).stdout.strip()
    total = next((m["cumulative_ms"] for m in modules if m["module"] == "otpylib_config"), None)
    packages: dict[str, float] = {}
    for m in modules:
        top = m["module"].split(".")[0]
        packages[top] = packages.get(top, 0.0) + m["self_ms"]
    by_package = sorted(packages.items(), key=lambda item: -item[1])[:10]
    return {
        "runs": runs,
        "total_ms": total,
        "top_cumulative": sorted(modules, key=lambda m: -m["cumulative_ms"])[:10],
        "top_self": sorted(modules, key=lambda m: -m["self_ms"])[:10],
        "top_packages_self_ms": [{"package": p, "self_ms": round(ms, 1)} for p, ms in by_package],
        "heavy_imports_loaded": [m for m in loaded.split(",") if m],
    }


def fmt_cold(runs: list[ColdRun]) -> str:
    first = statistics.median(r.first_value_s for r in runs)
    rss = statistics.median(r.max_rss_bytes for r in runs)
    return f"{first * 1e3:.0f} ms, {rss / MIB:.1f} MiB"


def paired_median(a: list[float], b: list[float]) -> float:
    """The median of the per-round ratios ``a[i] / b[i]`` (the rounds alternate)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


@benchmark("cold_start")
async def cold_start(ctx: Context) -> list[Row]:
    """Rows 10a-10g: import → first value in fresh interpreters (``cold_start.py``), ours
    against pydantic-settings, dynaconf, 0.2.9 (each in its virtualenv) and ``tomllib`` +
    ``os.environ`` by hand; one 100-key TOML file and one environment override for all.

    Time: spawn → the value on the child's stdout (its exit is in ``results.json``), median
    over ``cold_runs`` rounds in rotating order; ratios are medians of per-round ratios.
    Memory: the child's peak RSS (``VmHWM``, which the child reports: ``ru_maxrss`` from
    ``os.wait4`` would be at least this process's RSS, see ``cold_start.peak_rss_kib``),
    median; ``os.wait4``'s CPU time goes to ``results.json``. The import profile of
    ``import otpylib_config`` goes to ``results.json`` and below the table.
    """
    import cold_start

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(cold_start.to_toml(cold_start.layout()))
        missing: dict[str, str] = {}
        variants = []
        for variant in COLD_VARIANTS:
            if variant.peer and ctx.baseline is None:
                missing[variant.name] = ctx.baseline_missing
            elif not variant.python.exists():
                missing[variant.name] = f"{variant.python.parent.parent.name} missing"
            else:
                variants.append(variant)
        measured = await asyncio.to_thread(cold_runs, variants, config, ctx.sizes.cold_runs)
        imports = await asyncio.to_thread(
            import_times, 1 if ctx.sizes is QUICK else IMPORT_TIME_RUNS
        )
    samples: dict[str, list[ColdRun]] = measured["samples"]
    missing.update((name, "failed, see results.json") for name in measured["failed"])
    for name in ("ours-start", "ours-load", "tomllib-environ"):
        if name not in samples:
            raise RuntimeError(f"cold start {name} failed: {measured['failed'].get(name)}")
    labels = {}
    for variant in COLD_VARIANTS:
        version = variant.distribution and venv_version(variant.python, variant.distribution)
        labels[variant.name] = f"{variant.label} {version}" if version else variant.label
    ctx.raw["cold_start"] = {
        "keys": sum(map(len, cold_start.layout().values())),
        "runs": ctx.sizes.cold_runs,
        "variants": {
            name: {"label": labels[name], "runs": [asdict(r) for r in runs]}
            for name, runs in samples.items()
        },
        "not_measured": missing,
        "failed": measured["failed"],
        "import_time": imports,
    }

    ours = samples["ours-start"]
    name = "cold start: import → first value (100-key TOML + env)"

    def against(row_id: str, mine: str, peer: str, *, target: str = "—", limit: float = 0) -> Row:
        runs = samples.get(peer)
        mine_runs = samples[mine]
        if runs is None:
            return Row(
                row_id,
                f"{name}, {labels[mine]}",
                fmt_cold(mine_runs),
                f"{labels[peer]}: n/a ({missing[peer]})",
                "n/a",
                target,
                "n/a" if limit else "—",
            )
        ratio = paired_median([r.first_value_s for r in mine_runs], [r.first_value_s for r in runs])
        return Row(
            row_id,
            f"{name}, {labels[mine]}",
            fmt_cold(mine_runs),
            f"{labels[peer]} {fmt_cold(runs)}",
            fmt_ratio(ratio),
            target,
            verdict(ratio <= limit) if limit else "—",
        )

    peer_rss = samples.get("pydantic-settings")
    rss_name = "peak RSS of that cold start (ours, `start`)"
    ours_rss = statistics.median(r.max_rss_bytes for r in ours)
    if peer_rss is None:
        rss_row = Row(
            "10b",
            rss_name,
            f"{ours_rss / MIB:.1f} MiB",
            f"{labels['pydantic-settings']}: n/a ({missing['pydantic-settings']})",
            "n/a",
            "≤ 1x",
            "n/a",
        )
    else:
        theirs = statistics.median(r.max_rss_bytes for r in peer_rss)
        rss_row = Row(
            "10b",
            rss_name,
            f"{ours_rss / MIB:.1f} MiB",
            f"{labels['pydantic-settings']} {theirs / MIB:.1f} MiB",
            fmt_ratio(ours_rss / theirs),
            "≤ 1x",
            verdict(ours_rss <= theirs),
        )
    heavy = imports["heavy_imports_loaded"]
    return [
        against("10a", "ours-start", "pydantic-settings", target="≤ 0.75x", limit=0.75),
        rss_row,
        against("10c", "ours-start", "dynaconf"),
        against("10d", "ours-start", "otpylib-config-0.2.9"),
        against("10e", "ours-start", "tomllib-environ"),
        against("10f", "ours-load", "pydantic-settings"),
        Row(
            "10g",
            "`import otpylib_config` loads aiohttp, PyYAML, pydantic, dotenv?",
            ", ".join(heavy) if heavy else "none of them",
            f"import time {imports['total_ms']} ms (`-X importtime`)",
            target="none",
            verdict=verdict(not heavy),
        ),
    ]


# ----------------------------------------------------------- reloads (rows 11 and 12)

FILE_AGE_S = 0.1  # a file written this long before a reload is older than any settle window


@benchmark("noop_reload")
async def noop_reload(ctx: Context) -> list[Row]:
    """Row 11: ``await Config.reload()`` of an unchanged ``reload_sections`` x 100-key TOML
    file against a reload of the same file with one key changed (written ``FILE_AGE_S``
    before the reload, untimed, as a timer reload would find it), one reload per batch,
    ``reloads`` batches alternating."""
    sections = ctx.sizes.reload_sections
    keys = sections * KEYS_PER_SECTION
    config = nested_config(sections, KEYS_PER_SECTION)
    values = itertools.count(1)
    changed: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "config.toml"
        file.write_text(to_toml(config))

        async def change_file() -> None:
            config[SECTION][KEY] = -next(values)
            file.write_text(to_toml(config))
            await asyncio.sleep(FILE_AGE_S)

        async def noop(count: int) -> None:
            for _ in range(count):
                result = await Config.reload()
                if result.changed:
                    raise RuntimeError(f"a reload of an unchanged file changed {result.changed}")

        async def real(count: int) -> None:
            for _ in range(count):
                changed.append((await Config.reload()).changed)

        source = FileSource(file, watch=False)
        async with otpylib_config.running(spec(source, write_timeout=RELOAD_LIMIT_S)):
            await asyncio.sleep(FILE_AGE_S)
            pair = await measure_paired(noop, real, 1, ctx.sizes.reloads, before_b=change_file)
    if any(c != (PATH,) for c in changed):
        raise RuntimeError(f"a reload with one key changed reported {changed}")
    ctx.raw["noop_reload"] = {"keys": keys, **pair_json(pair, "noop", "one_key_changed")}
    return [
        paired_row(
            "11",
            f"`await Config.reload()`, unchanged {keys:,}-key TOML",
            pair,
            "the same reload with 1 key changed",
            target="≤ 0.05x",
            meets=lambda r: r <= 0.05,
        )
    ]


class StallMeter:
    """The longest the event loop went without running a ready task: a task that yields
    with ``asyncio.sleep(0)`` in a loop and keeps the longest gap between two turns."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._running = True
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        clock = time.perf_counter
        last = clock()
        while self._running:
            await asyncio.sleep(0)
            now = clock()
            if now - last > self.longest:
                self.longest = now - last
            last = now

    async def stop(self) -> float:
        self._running = False
        await self._task
        return self.longest


@benchmark("reload_stall")
async def reload_stall(ctx: Context) -> list[Row]:
    """Row 12: the longest event-loop stall while ``await Config.reload()`` of a
    ``stall_sections`` x 100-key TOML file with one key changed runs (from just before the
    call to ``STALL_TAIL_S`` after it returns), over ``stall_reloads`` reloads."""
    sections = ctx.sizes.stall_sections
    keys = sections * KEYS_PER_SECTION
    config = nested_config(sections, KEYS_PER_SECTION)
    stalls: list[float] = []
    durations: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "config.toml"
        file.write_text(to_toml(config))
        source = FileSource(file, watch=False)
        async with otpylib_config.running(spec(source, write_timeout=RELOAD_LIMIT_S)):
            for i in range(ctx.sizes.stall_reloads):
                config[SECTION][KEY] = -1 - i
                file.write_text(to_toml(config))
                await asyncio.sleep(FILE_AGE_S)
                gc.collect()
                meter = StallMeter()
                await asyncio.sleep(0)
                started = time.perf_counter()
                result = await Config.reload()  # fails after write_timeout
                durations.append(time.perf_counter() - started)
                await asyncio.sleep(STALL_TAIL_S)
                stalls.append(await meter.stop())
                if result.changed != (PATH,):
                    raise RuntimeError(f"the reload reported {result.changed}, expected {PATH}")
    ctx.raw["reload_stall"] = {"keys": keys, "stall_s": stalls, "reload_s": durations}
    p50, worst = statistics.median(stalls) * 1e3, max(stalls) * 1e3
    return [
        Row(
            "12",
            f"longest event-loop stall during `await Config.reload()`, {keys:,}-key TOML, "
            "1 key changed",
            f"p50 {p50:.1f} ms, max {worst:.1f} ms ({len(stalls)} reloads of "
            f"{statistics.median(durations) * 1e3:.0f} ms)",
            target="≤ 5 ms",
            verdict=verdict(worst <= 5),
        )
    ]


# -------------------------------------------------------- the write floor (13 and 14)

BARE = "benchmarks.bare"
WRITERS = 8


async def bare_process() -> None:
    """The floor's server: a bare otpylib process that answers each ``(future, ...)``
    message by resolving the future (``None`` ends it)."""
    receive = process.receive
    while True:
        message = await receive()
        if message is None:
            return
        reply = message[0]
        if not reply.done():
            reply.set_result(None)


async def round_trips(count: int, path: str = PATH) -> None:
    """``count`` x (a future, ``process.send`` of it with a put's payload to the bare
    process by its registered name, ``await`` the future): a put's transport, nothing
    else. From a plain asyncio task, as ``puts`` runs."""
    send, new_future = process.send, asyncio.get_running_loop().create_future
    values = itertools.cycle(VALUES)
    for _ in itertools.repeat(None, count):
        reply = new_future()
        await send(BARE, (reply, path, next(values)))
        await reply


def puts_at(path: str) -> Callable[[int], Awaitable[None]]:
    """Like :func:`puts`, on ``path``, with values of its own that alternate."""
    values = itertools.cycle(VALUES)

    async def run(count: int) -> None:
        put = Config.put
        for _ in itertools.repeat(None, count):
            await put(path, next(values))

    return run


def concurrently(
    run: Callable[[int, str], Awaitable[None]], writers: int
) -> Callable[[int], Awaitable[None]]:
    """``count`` operations as ``writers`` tasks of ``count // writers`` each, writer ``w``
    on path ``section_0000.key_00w`` (so that every put changes the config)."""

    async def all_of(count: int) -> None:
        each = count // writers
        await asyncio.gather(*(run(each, f"{SECTION}.key_{w:03d}") for w in range(writers)))

    return all_of


async def sequential_puts(count: int, path: str = PATH) -> None:
    await puts_at(path)(count)


@asynccontextmanager
async def with_bare_process() -> AsyncIterator[None]:
    """A runtime of our own with the bare process in it, and a 100-key tree beside it."""
    async with own_runtime():
        pid = await process.spawn(bare_process, name=BARE)
        try:
            async with otpylib_config.running(spec(small_config())):
                await round_trips(100)
                yield
        finally:
            await process.send(pid, None)


@benchmark("put_floor")
async def put_against_floor(ctx: Context) -> list[Row]:
    """Rows 13a/13b: the floor (``process.send`` + future round trip to a bare otpylib
    process) and ``await Config.put`` on 100 keys against it, batches alternating."""
    async with with_bare_process():
        pair = await measure_paired(puts, round_trips, ctx.n(PUT_BATCH), ctx.batches)
        check_published()
    ctx.raw["put_floor"] = pair_json(pair, "put", "floor")
    floor = "`process.send` + future round trip to a bare process"
    return [
        Row("13a", f"the write floor: {floor}, sequential", fmt_ns(pair.b.median_ns)),
        paired_row(
            "13b",
            "`await Config.put(path, v)`, sequential, 100 keys",
            pair,
            "that floor",
            target="≤ 1.5x",
            meets=lambda r: r <= 1.5,
        ),
    ]


@benchmark("put_concurrent")
async def concurrent_puts(ctx: Context) -> list[Row]:
    """Row 14: ``WRITERS`` tasks putting at once (each on a path of its own), per put,
    against ``WRITERS`` tasks doing the floor's round trip at once, batches alternating."""
    n = max(WRITERS, ctx.n(PUT_BATCH) // WRITERS * WRITERS)
    async with with_bare_process():
        pair = await measure_paired(
            concurrently(sequential_puts, WRITERS),
            concurrently(round_trips, WRITERS),
            n,
            ctx.batches,
        )
        for w in range(WRITERS):
            if Config.get_nowait(f"{SECTION}.key_{w:03d}") not in VALUES:
                raise RuntimeError(f"writer {w}'s puts were not published")
    ctx.raw["put_concurrent"] = {"writers": WRITERS, **pair_json(pair, "put", "floor")}
    return [
        paired_row(
            "14",
            f"`await Config.put`, {WRITERS} concurrent writers, per put",
            pair,
            f"the floor with {WRITERS} concurrent senders, per round trip",
            target="≤ 1.5x",
            meets=lambda r: r <= 1.5,
        )
    ]


# ------------------------------------------------------------ put costs (15 and 16)


def section_model(name: str, section: dict[str, int]) -> Any:
    """A pydantic model with one required ``int`` field per key of ``section``, under
    ``name`` in a root model."""
    from pydantic import create_model

    fields: dict[str, Any] = {key: (int, ...) for key in section}
    inner = create_model(f"{name.title()}Model", **fields)
    return create_model("BenchSchema", **{name: (inner, ...)})


@benchmark("put_schema")
async def put_with_schema(ctx: Context) -> list[Row]:
    """Row 15: put on the 100-key config with a pydantic ``schema`` covering all of it,
    against the same put without a schema (one tree at a time, batches alternating;
    ``PUT_BATCH / 5`` puts per batch)."""
    source = small_config()
    schema = section_model(SECTION, PLAIN[SECTION])
    trees = TreeSwitcher(warm_up=ctx.n(PUT_BATCH) // 50)
    try:
        pair = await measure_paired(
            puts,
            puts,
            ctx.n(PUT_BATCH // 5),
            ctx.batches,
            before_a=lambda: trees.switch(source, schema=schema),
            before_b=lambda: trees.switch(source),
        )
        check_published()
    finally:
        await trees.close()
    ctx.raw["put_schema"] = pair_json(pair, "schema", "no_schema")
    return [
        paired_row(
            "15",
            "`await Config.put` with a pydantic `schema` of the 100 keys",
            pair,
            "the same put without a schema",
            target="≤ 1.5x",
            meets=lambda r: r <= 1.5,
        )
    ]


WIDE = "wide"


def flat_config(keys: int) -> DefaultsSource:
    return DefaultsSource({WIDE: {f"key_{k:06d}": k for k in range(keys)}})


@benchmark("put_wide")
async def put_into_wide_section(ctx: Context) -> list[Row]:
    """Row 16: put into one flat section of ``wide_keys`` keys against a put into one flat
    section of 100 keys (the same path, one tree at a time, batches alternating;
    ``PUT_BATCH / 10`` puts per batch)."""
    keys = ctx.sizes.wide_keys
    path = f"{WIDE}.key_{42:06d}"
    wide, narrow = flat_config(keys), flat_config(KEYS_PER_SECTION)
    run = puts_at(path)
    trees = TreeSwitcher(warm_up=ctx.n(PUT_BATCH) // 100, warm=run)
    try:
        pair = await measure_paired(
            run,
            run,
            ctx.n(PUT_BATCH // 10),
            ctx.batches,
            before_a=lambda: trees.switch(wide),
            before_b=lambda: trees.switch(narrow),
        )
        if Config.get_nowait(path) not in VALUES:
            raise RuntimeError(f"put did not publish {path}")
    finally:
        await trees.close()
    ctx.raw["put_wide"] = {"keys": keys, **pair_json(pair, "wide", "keys_100")}
    return [
        paired_row(
            "16",
            f"`await Config.put` into one flat {keys:,}-key section",
            pair,
            "the same put into a flat 100-key section",
            target="≤ 3x",
            meets=lambda r: r <= 3,
        )
    ]


# ------------------------------------------------------------------ fan-out (row 17)

FANOUT_PATTERNS = (PATH, f"{SECTION}.*", f"*.{KEY}", "**")  # each matches PATH
DELIVERY_LIMIT_S = 30.0  # a put whose callbacks take longer than this counts them as lost
BURST = 5  # puts in the untimed order check, back to back


class FanOut:
    """``count`` subscriptions, each to one of ``FANOUT_PATTERNS`` with a trivial sync
    callback that records the new values it sees, in order."""

    def __init__(self, count: int) -> None:
        self.seen: list[list[int]] = [[] for _ in range(count)]
        self.calls = 0
        self.expected = 0
        self.arrived = asyncio.Event()

    def callback(self, seen: list[int]) -> Callable[[str, Any, Any], None]:
        def on_change(path: str, old: Any, new: Any) -> None:
            seen.append(new)
            self.calls += 1
            if self.calls >= self.expected:
                self.arrived.set()

        return on_change

    async def subscribe(self, client: ConfigClient) -> None:
        for i, seen in enumerate(self.seen):
            await client.subscribe(FANOUT_PATTERNS[i % len(FANOUT_PATTERNS)], self.callback(seen))

    async def one_more_each(self) -> bool:
        """Wait (at most ``DELIVERY_LIMIT_S``) until every subscription has had one more
        event (events of one put are never coalesced)."""
        self.expected += len(self.seen)
        if self.calls < self.expected:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), DELIVERY_LIMIT_S)
        return self.calls >= self.expected

    async def all_saw(self, value: int) -> bool:
        """Wait (bounded) until every subscription's latest event is ``value`` (events of
        puts in a burst may be coalesced, so only the last one is sure to come)."""
        deadline = time.perf_counter() + DELIVERY_LIMIT_S
        while not all(seen and seen[-1] == value for seen in self.seen):
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def in_order(self, timed: list[int], burst: list[int]) -> int:
        """How many subscriptions saw exactly ``timed`` (each put waited for), then a
        rising subset of ``burst`` that ends with its last value."""
        ok = 0
        for seen in self.seen:
            head, tail = seen[: len(timed)], seen[len(timed) :]
            ok += (
                head == timed and tail == sorted(set(tail) & set(burst)) and tail[-1:] == burst[-1:]
            )
        return ok


@benchmark("fanout")
async def put_with_fanout(ctx: Context) -> list[Row]:
    """Rows 17a/17b: ``await Config.put`` with ``subscriptions`` matching subscriptions
    against a put with none: two trees side by side in one runtime, each put timed alone
    until ``put`` returns (its callbacks are then awaited, untimed, before the next one),
    ``fanout_puts`` per batch (ten times as many with none), batches alternating. Then,
    untimed, ``BURST`` puts back to back: every subscription must have seen every timed
    put's value, then the burst's in order (coalescing allowed), ending with its last."""
    count = ctx.sizes.subscriptions
    fan = FanOut(count)
    values = itertools.count(1)
    timed_values: list[int] = []
    lost = 0

    async def timed_puts(client: ConfigClient, subscribed: bool) -> float:
        nonlocal lost
        total = 0
        count = ctx.sizes.fanout_puts * (1 if subscribed else 10)
        for _ in range(count):
            value = next(values)
            started = time.perf_counter_ns()
            await client.put(PATH, value)
            total += time.perf_counter_ns() - started
            if subscribed:
                timed_values.append(value)
                lost += not await fan.one_more_each()
            await asyncio.sleep(0)
        return total / count

    def tree(spec_id: str) -> ConfigSpec:
        return ConfigSpec(id=spec_id, sources=[small_config()], reload_interval=None)

    async with (
        own_runtime(),
        otpylib_config.running(tree("fanout")),
        otpylib_config.running(tree("nofanout")),
    ):
        subscribed, alone = Config.of("fanout"), Config.of("nofanout")
        await fan.subscribe(subscribed)
        gc.collect()
        per_a: list[float] = []
        per_b: list[float] = []
        await timed_puts(subscribed, True)
        await timed_puts(alone, False)
        for _ in range(ctx.batches):
            per_a.append(await timed_puts(subscribed, True))
            per_b.append(await timed_puts(alone, False))
        burst = [next(values) for _ in range(BURST)]
        for value in burst:
            await subscribed.put(PATH, value)
        complete = await fan.all_saw(burst[-1])
    in_order = fan.in_order(timed_values, burst)
    n = len(per_a) * ctx.sizes.fanout_puts
    pair = Paired(
        Measurement(statistics.median(per_a), n, tuple(per_a)),
        Measurement(statistics.median(per_b), n * 10, tuple(per_b)),
        paired_median(per_a, per_b),
    )
    ctx.raw["fanout"] = {
        "subscriptions": count,
        "patterns": FANOUT_PATTERNS,
        **pair_json(pair, "ours", "none"),
        "puts_with_lost_callbacks": lost,
        "subscriptions_in_order": in_order,
        "burst_delivered": complete,
    }
    ok = lost == 0 and complete and in_order == count
    return [
        paired_row(
            "17a",
            f"`await Config.put` with {count:,} matching subscriptions, until it returns",
            pair,
            "the same put with none",
            target="≤ 2x",
            meets=lambda r: r <= 2,
        ),
        Row(
            "17b",
            "callbacks of that fan-out: in put order per subscription, none lost",
            f"{in_order:,}/{count:,} subscriptions in order"
            + (f", {lost} puts with lost callbacks" if lost else ""),
            target="all",
            verdict=verdict(ok),
        ),
    ]


# ------------------------------------------------------------------- reads (row 18)

CHANGED = [f"key_{k:03d}" for k in range(KEYS_PER_SECTION)]  # row 18b changes all of them
CHANGED_PATHS = [f"{SECTION}.{key}" for key in CHANGED]
SUBSCRIPT = "`d[a][b]`"


async def subscript_reads(count: int) -> None:
    """``count`` x ``d[a][b]`` of the path every get reads (all locals)."""
    d, a, b = PLAIN, SECTION, KEY
    for _ in itertools.repeat(None, count):
        d[a][b]


@benchmark("reads")
async def reads_against_subscript(ctx: Context) -> list[Row]:
    """Rows 18a/18b: ``Config.get_nowait(path)`` against ``d[a][b]``; and the first read of
    each path after a change: ``put_many`` of all 100 keys of a section (untimed), then one
    timed pass of ``get_nowait`` over those 100 paths (each the first read since its value
    changed) against one pass of ``d[a][b]`` over the same 100 keys."""
    rounds = max(2, ctx.n(GET_BATCH) // 500)
    values = itertools.count(1)
    async with otpylib_config.running(spec(small_config())):

        async def ours(count: int) -> None:
            get, path = Config.get_nowait, PATH
            for _ in itertools.repeat(None, count):
                get(path)

        pair = await measure_paired(ours, subscript_reads, ctx.n(GET_BATCH), ctx.batches)

        async def first_reads() -> float:
            get, clock, elapsed = Config.get_nowait, time.perf_counter_ns, 0
            for _ in range(rounds):
                value = next(values)
                await Config.put_many({path: value for path in CHANGED_PATHS})
                started = clock()
                for path in CHANGED_PATHS:
                    get(path)
                elapsed += clock() - started
            if get(CHANGED_PATHS[-1]) != value:
                raise RuntimeError("put_many did not publish")
            return elapsed / (rounds * len(CHANGED_PATHS))

        def subscripts() -> float:
            d, a, clock, elapsed = PLAIN, SECTION, time.perf_counter_ns, 0
            for _ in range(rounds):
                started = clock()
                for b in CHANGED:
                    d[a][b]
                elapsed += clock() - started
            return elapsed / (rounds * len(CHANGED))

        await first_reads()
        subscripts()
        per_a: list[float] = []
        per_b: list[float] = []
        for _ in range(ctx.batches):
            per_a.append(await first_reads())
            per_b.append(subscripts())
    n = rounds * len(CHANGED) * ctx.batches
    first = Paired(
        Measurement(statistics.median(per_a), n, tuple(per_a)),
        Measurement(statistics.median(per_b), n, tuple(per_b)),
        paired_median(per_a, per_b),
    )
    ctx.raw["reads"] = {
        "get_nowait": pair_json(pair, "ours", "subscript"),
        "first_read_after_change": pair_json(first, "ours", "subscript"),
    }
    return [
        paired_row(
            "18a",
            "`Config.get_nowait(path)`",
            pair,
            SUBSCRIPT,
            target="≤ 1.5x",
            meets=lambda r: r <= 1.5,
        ),
        paired_row(
            "18b",
            "first `Config.get_nowait(path)` after a change of `path`",
            first,
            SUBSCRIPT,
            target="≤ 3x",
            meets=lambda r: r <= 3,
        ),
    ]


# ---------------------------------------------------------------- admin API (rows 19, 20)

ADMIN_SERVER = Path(admin_server.__file__)
ADMIN_SECRET = "bench-write-token-" + "w" * 16
ADMIN_TOKEN = AdminToken("bench", ADMIN_SECRET, scope="write")
REQUESTS_CONNECTIONS = 8  # row 20: keep-alive connections the load generator keeps busy


@benchmark("admin_callback")
async def admin_put_to_callback(ctx: Context) -> list[Row]:
    """Row 19: an HTTP ``PUT /config/{path}`` to the admin API → the subscriber's callback,
    one write at a time, against the same put made with ``Config.put`` in the process (what
    HTTP, auth, JSON and the audit add)."""
    headers = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    admin = AdminSpec(port=0, tokens=[ADMIN_TOKEN], writable=["bench.**"])
    async with (
        otpylib_config.running(spec(small_config(), admin=admin)),
        aiohttp.ClientSession() as http,
    ):
        url = f"{(await Config.status()).admin_url}/config/bench.value"

        async def put(value: int) -> None:
            async with http.put(url, json=value, headers=headers) as response:
                response.raise_for_status()

        samples = await write_to_callback("bench.value", ctx.sizes.writes, put)

        async def direct(value: int) -> None:
            await Config.put("bench.direct", value)

        floor = await write_to_callback("bench.direct", ctx.sizes.writes, direct)
    ctx.raw["admin_callback"] = {"samples_s": samples, "direct_samples_s": floor}
    row = latency_row(
        "19",
        "admin `PUT /config/{path}` → subscriber callback",
        samples,
        attempts=ctx.sizes.writes,
        p50_target_ms=5,
        p99_target_ms=20,
        tries="writes",
    )
    p50 = percentile(floor, 50) * 1e3
    ratio = percentile(samples, 50) / percentile(floor, 50)
    return [replace(row, compared_with=f"`Config.put` p50 {p50:.2f} ms", ratio=fmt_ratio(ratio))]


@benchmark("admin_reads")
async def admin_get_throughput(ctx: Context) -> list[Row]:
    """Row 20: ``GET /config/{path}`` requests per second, the server pinned to one core
    and the load generator (a raw keep-alive HTTP/1.1 client, far cheaper per request than
    the server) to the other, against aiohttp answering the same route with a constant."""
    duration = max(0.3, 2.0 * ctx.scale)
    rates: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(max(2, ctx.batches // 5)):
        for mode in ("ours", "bare"):
            rates[mode].append(await requests_per_second(mode, duration))
    ours, bare = statistics.median(rates["ours"]), statistics.median(rates["bare"])
    ctx.raw["admin_reads"] = {"requests_per_s": rates, "duration_s": duration}
    ratio = ours / bare
    return [
        Row(
            "20",
            "admin `GET /config/{path}`, server on one core",
            f"{ours:,.0f} req/s",
            f"bare aiohttp {bare:,.0f} req/s",
            f"{ratio:.2f}x",
            "≥ 0.5x bare aiohttp",
            verdict(ratio >= 0.5),
        )
    ]


async def requests_per_second(mode: str, duration: float) -> float:
    """Start ``admin_server.py mode`` on CPU 0 and drive it from CPU 1 for ``duration``."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    server_cpu, client_cpu = cpus[0], cpus[-1]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ADMIN_SERVER),
        mode,
        str(server_cpu),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    previous = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        url = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        if previous is not None:
            os.sched_setaffinity(0, {client_cpu})
        return await drive(url, duration)
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 30)


async def drive(base_url: str, duration: float) -> float:
    """Requests answered per second over ``REQUESTS_CONNECTIONS`` keep-alive connections."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    request = (
        f"GET {parts.path}/config/{PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {admin_server.TOKEN}\r\n\r\n"
    ).encode()
    counts = [0] * REQUESTS_CONNECTIONS
    deadline = [math.inf]

    async def connection(i: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < deadline[0]:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"admin server answered {head[:40]!r}")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                counts[i] += 1
        finally:
            writer.close()

    deadline[0] = time.perf_counter() + 0.3  # warm up
    await asyncio.gather(*(connection(i) for i in range(REQUESTS_CONNECTIONS)))
    counts[:] = [0] * REQUESTS_CONNECTIONS
    started = time.perf_counter()
    deadline[0] = started + duration
    await asyncio.gather(*(connection(i) for i in range(REQUESTS_CONNECTIONS)))
    return sum(counts) / (time.perf_counter() - started)


async def settle(arrived: asyncio.Event, limit_s: float = 2.0, quiet_s: float = 0.05) -> None:
    """Wait until ``arrived`` is set (at most ``limit_s``), then ``quiet_s`` for stragglers."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(arrived.wait(), limit_s)
    await asyncio.sleep(quiet_s)


# --------------------------------------------------------------- a fleet (rows 21a-21c)

FLEET_NODE = HERE / "fleet_node.py"
ETCD_PREFIX, CONSUL_PREFIX = "/bench/fleet/", "bench/fleet/"
FLEET_KEY = "value"  # under the prefix: the path every node subscribes to (fleet_node.PATH)
FLEET_TARGET_MS = 200.0  # rows 21a and 21b: p99 of the write → the last node's callback
FLEET_START_LIMIT_S = 60.0  # nodes not all ready by then fail the run (16 on 2 cores: ~5 s)
FLEET_LIMIT_S = 5.0  # a write not seen by every node by then counts as lost
FLEET_PAUSE_S = 0.1  # between writes: ConsulSource leaves min_interval (0.1 s) between two
# blocking queries, so with a shorter pause row 21b would time that throttle, not the fan-out
FLEET_STOP_LIMIT_S = 10.0  # a node that has not exited this long after its stdin closed is killed
CACHED_VALUE = 4242  # row 21c: what etcd holds when the cache is written
ETCD_MISSING = "n/a (etcd-server not installed)"


def etcd_harness() -> Any:
    """``tests/etcd_cluster.py``, the test suite's real etcd processes (as row 8 imports the
    loopback Consul server)."""
    sys.path.insert(0, str(HERE.parent))
    import tests.etcd_cluster

    return tests.etcd_cluster


@dataclass
class FleetNode:
    """One ``fleet_node.py`` process; ``spawned`` is ``time.monotonic()`` just before it."""

    process: asyncio.subprocess.Process
    log: Path
    spawned: float
    ready: asyncio.Future[dict[str, Any]]
    reader: asyncio.Task[None] | None = None


class Fleet:
    """Node processes and, per value, the ``time.monotonic()`` of each node's first callback
    for it (keyed by node, so a node called twice counts once and cannot stand in for a node
    never called).

    The nodes take their times with ``time.monotonic()`` too: on Linux that is
    CLOCK_MONOTONIC, one clock for the whole system, so a node's time and the time this
    process took just before a write (or a spawn) are on the same clock and subtract.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.nodes: list[FleetNode] = []
        self.arrivals: dict[Any, dict[int, float]] = {}
        """value → {node index: its first callback's time}."""
        self.waiting: dict[Any, asyncio.Future[list[float]]] = {}

    async def spawn(self, argv: list[str], log: Path) -> FleetNode:
        loop = asyncio.get_running_loop()
        with log.open("wb") as stderr:
            spawned = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(FLEET_NODE),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        node = FleetNode(process, log, spawned, loop.create_future())
        self.nodes.append(node)
        node.reader = asyncio.create_task(self._read(node, len(self.nodes) - 1))
        return node

    async def _read(self, node: FleetNode, index: int) -> None:
        assert node.process.stdout is not None
        async for line in node.process.stdout:
            if not line.startswith(b"{"):
                continue
            message = json.loads(line)
            if message["event"] == "ready":
                if not node.ready.done():
                    node.ready.set_result(message)
            else:
                self.record(index, message["value"], message["t"])
        if not node.ready.done():
            await node.process.wait()
            tail = node.log.read_text(errors="replace")[-2000:]
            node.ready.set_exception(
                RuntimeError(f"a fleet node exited ({node.process.returncode}): {tail}")
            )

    async def wait_ready(self) -> list[dict[str, Any]]:
        """Every node's ready message (its first value), within ``FLEET_START_LIMIT_S``."""
        async with asyncio.timeout(FLEET_START_LIMIT_S):
            return list(await asyncio.gather(*(node.ready for node in self.nodes)))

    def expect(self, value: Any) -> asyncio.Future[list[float]]:
        """A future of every node's (first) callback time for ``value``, once each distinct
        node has one."""
        self.waiting[value] = asyncio.get_running_loop().create_future()
        self._check(value)
        return self.waiting[value]

    def record(self, index: int, value: Any, t: float) -> None:
        """Node ``index``'s callback for ``value`` at ``t``: only its first one counts."""
        self.arrivals.setdefault(value, {}).setdefault(index, t)
        self._check(value)

    def _check(self, value: Any) -> None:
        waiting, times = self.waiting.get(value), self.arrivals.get(value, {})
        if waiting is not None and not waiting.done() and len(times) >= self.count:
            waiting.set_result(sorted(times.values()))

    async def close(self, *, kill: bool) -> None:
        """Close every node's stdin (it stops its tree and exits), or ``kill`` them; a node
        still running after ``FLEET_STOP_LIMIT_S`` is killed either way."""
        for node in self.nodes:
            if node.process.returncode is None:
                if kill:
                    with contextlib.suppress(ProcessLookupError):
                        node.process.kill()
                elif node.process.stdin is not None:
                    node.process.stdin.close()
        for node in self.nodes:
            try:
                await asyncio.wait_for(node.process.wait(), FLEET_STOP_LIMIT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()
                await node.process.wait()
            if node.reader is not None:
                node.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await node.reader
            if node.ready.done() and not node.ready.cancelled():
                node.ready.exception()  # retrieved: a node that died is reported once


@asynccontextmanager
async def fleet(count: int, argv: list[str], directory: Path) -> AsyncIterator[Fleet]:
    """``count`` nodes ``fleet_node.py *argv``, all ready (each has its first value and its
    subscription); stopped on the way out, killed if anything failed."""
    nodes, ok = Fleet(count), False
    try:
        for i in range(count):
            await nodes.spawn(argv, directory / f"node-{i}.log")
        await nodes.wait_ready()
        yield nodes
        ok = True
    finally:
        await nodes.close(kill=not ok)


async def fleet_latencies(
    nodes: Fleet, write: Callable[[int], Awaitable[object]], writes: int
) -> tuple[list[float], list[float]]:
    """Seconds from just before ``write(value)`` to the last node's callback for it, and to
    the first node's, for values 1 to ``writes``, one at a time; a write that some node has
    not seen within ``FLEET_LIMIT_S`` gives no sample (lost). One untimed write first proves
    every node's watch is live."""
    warm = nodes.expect(-1)
    await write(-1)
    try:
        await asyncio.wait_for(warm, FLEET_LIMIT_S)
    except TimeoutError:
        raise RuntimeError(
            f"the warm-up write reached {len(nodes.arrivals.get(-1, {}))} of "
            f"{nodes.count} nodes in {FLEET_LIMIT_S:g}s"
        ) from None
    await asyncio.sleep(FLEET_PAUSE_S)
    last: list[float] = []
    first: list[float] = []
    for value in range(1, writes + 1):
        seen = nodes.expect(value)
        started = time.monotonic()
        await write(value)
        with contextlib.suppress(TimeoutError):
            times = await asyncio.wait_for(seen, FLEET_LIMIT_S)
            last.append(times[-1] - started)
            first.append(times[0] - started)
        await asyncio.sleep(FLEET_PAUSE_S)
    return last, first


async def etcd_put(http: aiohttp.ClientSession, url: str, key: str, value: str) -> None:
    """``POST /v3/kv/put`` to etcd's JSON gateway (key and value base64)."""
    body = {
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(value.encode()).decode(),
    }
    async with http.post(f"{url}/v3/kv/put", json=body) as response:
        response.raise_for_status()
        await response.read()


@asynccontextmanager
async def etcd_member(directory: Path) -> AsyncIterator[Any]:
    """One real etcd member (``tests/etcd_cluster.py``) on free loopback ports, stopped on
    the way out; its start and stop block, so they run in a thread."""
    cluster = await asyncio.to_thread(etcd_harness().EtcdCluster.start, directory)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


def fleet_row(row_id: str, name: str, samples: list[float], writes: int) -> Row:
    return latency_row(
        row_id,
        name,
        samples,
        attempts=writes,
        p50_target_ms=None,
        p99_target_ms=FLEET_TARGET_MS,
        tries="writes",
    )


@benchmark("fleet_etcd")
async def fleet_etcd(ctx: Context) -> list[Row]:
    """Row 21a: a write to etcd → the subscriber callback in the last of ``fleet_nodes``
    node processes.

    One etcd member (the test suite's harness, real etcd). Each node (``fleet_node.py``) is a
    tree whose only source is ``EtcdSource`` on one prefix, subscribed to one key; it prints
    the value and ``time.monotonic()`` in its callback. Once all are ready and an untimed
    write has reached all, ``fleet_writes`` writes are made one at a time with an HTTP
    ``POST /v3/kv/put``, each timed from just before the request to the callback of the
    last node to see it (``FLEET_PAUSE_S`` apart).
    """
    count, writes = ctx.sizes.fleet_nodes, ctx.sizes.fleet_writes
    name = f"etcd write → subscriber callback on all {count} nodes (a process each)"
    if etcd_harness().ETCD is None:
        target = f"p99 ≤ {FLEET_TARGET_MS:g} ms"
        return [Row("21a", name, ETCD_MISSING, target=target, verdict="n/a")]
    with tempfile.TemporaryDirectory() as tmp:
        async with etcd_member(Path(tmp) / "etcd") as etcd, aiohttp.ClientSession() as http:

            async def put(value: int) -> None:
                await etcd_put(http, etcd.url, ETCD_PREFIX + FLEET_KEY, str(value))

            await put(0)
            async with fleet(count, ["etcd", etcd.url, ETCD_PREFIX], Path(tmp)) as nodes:
                last, first = await fleet_latencies(nodes, put, writes)
    ctx.raw["fleet_etcd"] = {
        "nodes": count,
        "attempts": writes,
        "samples_s": last,
        "first_node_s": first,
    }
    return [fleet_row("21a", name, last, writes)]


@benchmark("fleet_consul")
async def fleet_consul(ctx: Context) -> list[Row]:
    """Row 21b: row 21a's fleet against the loopback Consul server (``ConsulSource``, each
    node holding a blocking query), run in this process as in row 8, for comparison; the
    writes are HTTP PUTs to ``/v1/kv/...``. Compared with row 21a's p50 when it ran."""
    sys.path.insert(0, str(HERE.parent))
    from tests.consul_server import ConsulServer

    count, writes = ctx.sizes.fleet_nodes, ctx.sizes.fleet_writes
    key = CONSUL_PREFIX + FLEET_KEY
    async with ConsulServer(jitter=False) as consul, aiohttp.ClientSession() as http:
        consul.put(key, "0")

        async def put(value: int) -> None:
            async with http.put(f"{consul.url}/v1/kv/{key}", data=str(value)) as response:
                response.raise_for_status()
                await response.read()

        with tempfile.TemporaryDirectory() as tmp:
            async with fleet(count, ["consul", consul.url, CONSUL_PREFIX], Path(tmp)) as nodes:
                last, first = await fleet_latencies(nodes, put, writes)
    ctx.raw["fleet_consul"] = {
        "nodes": count,
        "attempts": writes,
        "samples_s": last,
        "first_node_s": first,
    }
    name = f"Consul (loopback server) write → subscriber callback on all {count} nodes"
    row = fleet_row("21b", name, last, writes)
    etcd = ctx.raw.get("fleet_etcd", {}).get("samples_s")
    if not etcd or not last:
        why = ETCD_MISSING if etcd_harness().ETCD is None else "n/a (row 21a not run)"
        return [replace(row, compared_with=f"etcd fleet (21a): {why}", ratio="n/a")]
    etcd_p50 = percentile(etcd, 50)
    return [
        replace(
            row,
            compared_with=f"etcd fleet (21a) p50 {etcd_p50 * 1e3:.1f} ms",
            ratio=fmt_ratio(percentile(last, 50) / etcd_p50),
        )
    ]


@benchmark("fleet_cache")
async def fleet_cached_start(ctx: Context) -> list[Row]:
    """Row 21c: a node started while etcd is down serves the value it cached.

    One node with ``EtcdSource(cache_path=...)`` runs against etcd until the cache file is
    written (the source writes it when the tree accepts a layer), and stops; etcd is
    stopped; then the node is started ``cached_starts`` times, each timed from just before
    the spawn to the moment its first value is there (the node's ``time.monotonic()``),
    and each must serve the cached value with the source reported failing.

    Target: the cached value, and a start within ``EtcdSource``'s ``timeout`` (2 s) + 1 s.
    A stopped etcd refuses the connection and the load fails at once; an etcd host that is
    gone makes the load wait out ``timeout`` (split across the endpoints) before it falls
    back to the cache. Either way the service must be up on its cached values within that
    bound plus an interpreter's cold start (row 10: ~0.2 s; the second's margin also covers
    a loaded machine), not wait for etcd.
    """
    name = "node started while etcd is down → first value (from its cache)"
    limit_s = 2.0 + 1.0  # EtcdSource's default timeout + 1 s (the node uses the default)
    target = f"the cached value, start ≤ {limit_s:g} s"
    if etcd_harness().ETCD is None:
        return [Row("21c", name, ETCD_MISSING, target=target, verdict="n/a")]
    starts: list[float] = []
    served: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.json"
        async with etcd_member(Path(tmp) / "etcd") as etcd:
            argv = ["etcd", etcd.url, ETCD_PREFIX, "--cache", str(cache)]
            async with aiohttp.ClientSession() as http:
                await etcd_put(http, etcd.url, ETCD_PREFIX + FLEET_KEY, str(CACHED_VALUE))
            async with fleet(1, argv, Path(tmp)):
                deadline = time.monotonic() + FLEET_LIMIT_S
                while not cache.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no cache written at {cache} in {FLEET_LIMIT_S:g}s")
                    await asyncio.sleep(0.01)
        for _ in range(ctx.sizes.cached_starts):  # etcd is down: its port refuses
            async with fleet(1, argv, Path(tmp)) as nodes:
                (ready,) = await nodes.wait_ready()
                starts.append(ready["t"] - nodes.nodes[0].spawned)
                served.append(ready)
    wrong = [r for r in served if r["value"] != CACHED_VALUE or r["healthy"]]
    ctx.raw["fleet_cache"] = {
        "start_s": starts,
        "served": [r["value"] for r in served],
        "healthy": [r["healthy"] for r in served],
    }
    median, worst = statistics.median(starts) * 1e3, max(starts) * 1e3
    plural = "s" if len(starts) != 1 else ""
    ours = f"{median:.0f} ms (max {worst:.0f} ms, {len(starts)} start{plural}), "
    ours += "cached value served" if not wrong else f"served {wrong[0]}, not {CACHED_VALUE}"
    ok = not wrong and max(starts) <= limit_s
    return [Row("21c", name, ours, target=target, verdict=verdict(ok))]


# ------------------------------------------------------------------------------ driver


def run_baseline(args: argparse.Namespace, sizes: Sizes, scale: float) -> dict[str, Any]:
    """0.2.9's figures, from ``baseline_029.py`` in its own virtualenv."""
    if not BASELINE_PYTHON.exists():
        raise SystemExit(
            f"{BASELINE_PYTHON} does not exist: run ./scripts/bench (which builds it) "
            "or pass --no-baseline"
        )
    command = [
        str(BASELINE_PYTHON),
        str(BASELINE_SCRIPT),
        "--batches",
        str(args.batches),
        "--scale",
        str(scale),
        "--big-sections",
        str(sizes.big_sections),
    ]
    progress("0.2.9 baseline (subprocess in benchmarks/.venv-029) ...")
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BASELINE_LIMIT_S,
        cwd=HERE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"baseline_029.py failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def run_all(ctx: Context, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        progress(f"{name} ...")
        started = time.perf_counter()
        rows += await BENCHMARKS[name](ctx)
        progress(f"{name} done in {time.perf_counter() - started:.1f}s")
    return rows


def versions() -> dict[str, str]:
    found = {}
    for package in ("otpylib-config", "otpylib", "watchdog"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def describe(args: argparse.Namespace, scale: float, sizes: Sizes) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": os.environ.get(COMMAND_VARIABLE)
        or " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "versions": versions(),
        "batches": args.batches,
        "scale": scale,
        "sizes": asdict(sizes),
    }


def import_profile(imports: dict[str, Any] | None) -> str:
    """The top modules of ``import otpylib_config`` by cumulative import time (row 10)."""
    if not imports:
        return ""
    lines = [
        f"\nTop 10 modules by cumulative import time of `import otpylib_config` "
        f"(`python -X importtime`, median of {imports['runs']} runs; self time in brackets):\n"
    ]
    lines += [
        f"{i}. `{m['module']}` {m['cumulative_ms']:g} ms ({m['self_ms']:g} ms)"
        for i, m in enumerate(imports["top_cumulative"], 1)
    ]
    lines.append(
        "\nThe same import's self time summed by top-level package: "
        + ", ".join(
            f"`{p['package']}` {p['self_ms']:g} ms" for p in imports["top_packages_self_ms"]
        )
        + ".\n"
    )
    return "\n".join(lines)


def markdown(meta: dict[str, Any], rows: list[Row], imports: dict[str, Any] | None = None) -> str:
    v = meta["versions"]
    against = "0.2.9 (in its own virtualenv)" if meta["baseline"] else "0.2.9 skipped"
    return (
        f"`{meta['command']}` on {meta['date']}: {meta['machine']}, {meta['python']}, "
        f"otpylib {v['otpylib']}, otpylib-config {v['otpylib-config']}; {against}. "
        f"Each time is the median over {meta['batches']} timed batches of the mean per "
        f"operation (scale {meta['scale']:g}). Ratio = ours / compared with; where both were "
        "measured here, their batches alternate and the ratio is the median of the per-pair "
        "ratios, which the drift of a shared machine moves far less than the two medians. "
        "Latencies: nearest-rank percentiles of every sample. Cold starts (row 10): medians "
        f"over {meta['sizes']['cold_runs']} fresh interpreters per variant, run in rotating "
        "order; their ratios are medians of per-round ratios.\n\n"
        f"{table(rows)}\n"
        f"{import_profile(imports)}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small configs and few repetitions (the smoke test)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the operations per batch (default 1, 0.02 with --quick)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help=f"timed batches per figure (default {BATCHES}, 3 with --quick)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip otpylib-config 0.2.9 (no second virtualenv needed)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=HERE,
        help="where results.md and results.json go (default benchmarks/)",
    )
    args = parser.parse_args(argv)
    if args.batches is None:
        args.batches = 3 if args.quick else BATCHES
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    scale = args.scale if args.scale is not None else (0.02 if args.quick else 1.0)
    started = time.perf_counter()
    if args.no_baseline:
        baseline, missing = None, "--no-baseline"
    else:
        baseline, missing = run_baseline(args, sizes, scale), ""
    ctx = Context(sizes, scale, args.batches, baseline, missing)
    rows = asyncio.run(run_all(ctx, args.only or list(BENCHMARKS)))
    meta = describe(args, scale, sizes)
    meta["baseline"] = baseline is not None
    meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    text = markdown(meta, rows, ctx.raw.get("cold_start", {}).get("import_time"))
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.md").write_text(text)
    raw = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "ours": ctx.raw,
        "baseline_029": baseline,
    }
    (args.out_dir / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    progress(f"done in {meta['wall_time_s']}s; wrote {args.out_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
