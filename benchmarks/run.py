"""Side-by-side benchmarks: otpylib-config against plain Python, bare otpylib and 0.2.9.

    ./scripts/bench                                   # everything, against 0.2.9 too
    python benchmarks/run.py --quick --no-baseline    # small and fast (the smoke test)

One run measures every benchmark, prints a markdown table of medians, ratios and the
targets (docs/performance.md says why each is the target) on stdout (progress goes to
stderr), and writes it to ``results.md`` and the raw figures to ``results.json`` in
``--out-dir`` (``benchmarks/``).

0.2.9 has the same import name as this project, so its figures come from
``baseline_029.py`` run as a subprocess by ``benchmarks/.venv-029/bin/python`` (which
``scripts/bench`` builds); ``--no-baseline`` skips it and those rows say so.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from _timing import Paired, measure_paired, nested_config, scaled
from otpylib import atom, gen_server, process
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, OTPModule
from otpylib.runtime import get_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend

import otpylib_config
from otpylib_config import (
    Config,
    ConfigSpec,
    ConfigTree,
    ConsulSource,
    DefaultsSource,
    FileSource,
    Source,
    _otp_compat,
)
from otpylib_config.client import current_table
from otpylib_config.supervisor import in_process

HERE = Path(__file__).resolve().parent
BASELINE_PYTHON = HERE / ".venv-029" / "bin" / "python"
BASELINE_SCRIPT = HERE / "baseline_029.py"
BASELINE_LIMIT_S = 600.0
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
    subscriptions: int = 10_000  # row 5
    saves: int = 50  # row 6
    writes: int = 50  # row 8
    reload_sections: int = 100  # row 7: sections of 100 keys in the TOML file
    reloads: int = 15  # row 7
    kills: int = 100  # row 9


FULL = Sizes()
QUICK = Sizes(
    big_sections=20, subscriptions=200, saves=5, reload_sections=10, reloads=3, writes=5, kills=5
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

    def __init__(self, warm_up: int) -> None:
        self.warm_up = warm_up
        self.tree: ConfigTree | None = None

    async def switch(
        self, source: Source, prepare: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        await self.close()
        self.tree = await otpylib_config.start(spec(source))
        if prepare is not None:
            await prepare()
        gc.collect()
        await puts(self.warm_up)

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
    """Row 6: a TOML file saved with a new value → the subscriber's callback runs.

    Measured from just before the write to the callback, one save at a time, through the
    public API only (``FileSource(watch=True)``, no reload timer, no ``reload()`` call).
    """
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "config.toml"
        file.write_text("[bench]\nvalue = 0\n")

        async def save(value: int) -> None:
            file.write_text(f"[bench]\nvalue = {value}\n")

        async with otpylib_config.running(spec(FileSource(file, watch=True))):
            samples = await write_to_callback("bench.value", ctx.sizes.saves, save)
    ctx.raw["file_callback"] = {"attempts": ctx.sizes.saves, "samples_s": samples}
    name = "file saved → subscriber callback"
    return [
        latency_row(
            "6", name, samples, attempts=ctx.sizes.saves, p50_target_ms=100, p99_target_ms=250
        )
    ]


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


async def settle(arrived: asyncio.Event, limit_s: float = 2.0, quiet_s: float = 0.05) -> None:
    """Wait until ``arrived`` is set (at most ``limit_s``), then ``quiet_s`` for stragglers."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(arrived.wait(), limit_s)
    await asyncio.sleep(quiet_s)


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


def markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    v = meta["versions"]
    against = "0.2.9 (in its own virtualenv)" if meta["baseline"] else "0.2.9 skipped"
    return (
        f"`{meta['command']}` on {meta['date']}: {meta['machine']}, {meta['python']}, "
        f"otpylib {v['otpylib']}, otpylib-config {v['otpylib-config']}; {against}. "
        f"Each time is the median over {meta['batches']} timed batches of the mean per "
        f"operation (scale {meta['scale']:g}). Ratio = ours / compared with; where both were "
        "measured here, their batches alternate and the ratio is the median of the per-pair "
        "ratios, which the drift of a shared machine moves far less than the two medians. "
        "Latencies: nearest-rank percentiles of every sample.\n\n"
        f"{table(rows)}\n"
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
    text = markdown(meta, rows)
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
