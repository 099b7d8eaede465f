"""otpylib-config 0.2.9 (the release on PyPI) measured the same way as ``run.py`` measures us.

0.2.9 has the same import name as this project, so this script runs in its own virtualenv
(``scripts/bench`` makes ``benchmarks/.venv-029`` with ``pip install otpylib-config==0.2.9``,
which pulls otpylib 0.5.18) and ``run.py`` starts it as a subprocess::

    benchmarks/.venv-029/bin/python benchmarks/baseline_029.py [--batches 7] [--scale 1.0]
                                                               [--big-sections 1000]

It prints one JSON object on stdout, ``{"name": {"median_ns": ..., "n": ...}, ...}``:

* ``get`` / ``put``: ``await Config.get(path)`` / ``await Config.put(path, value)`` on a
  100-key config, awaited inside an otpylib process (0.2.9's fastest case: both are
  ``gen_server.call``s, which spawn a bridge process per call when made from outside one).
* ``get_outside_process``: the same ``get`` from a plain asyncio task.
* ``put_big``: ``put`` on a config of ``--big-sections`` sections of 100 keys (100,000 keys by
  default), with ``"keys"``; ``median_ns`` is ``null`` with a ``note`` if 0.2.9 cannot load
  that config within ``LOAD_LIMIT_S``.
* ``load_small`` / ``load_big``: how long ``start`` took on each config (``n`` = 1).

0.2.9 has no in-code defaults source, so the config is written to a JSON file and loaded with
its ``FileSource``. Its manager prints ``[TRACE:...]`` lines on stdout, so stdout is sent to
stderr while the benchmark runs and only the JSON goes to stdout.

Before timing anything the script checks that it really runs 0.2.9 (not this project, whose
import name is the same), that 0.2.9 loaded every key and that ``get`` returns the value in the
file, so a misconfigured run fails loudly instead of timing lookups of a default. Each runtime
is shut down by cancelling and awaiting its processes first: otpylib 0.5.18's own
``backend.shutdown()`` can spin forever (the workaround of
``otpylib_config._otp_compat.shutdown_runtime``, which 0.2.9's virtualenv cannot import).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from _timing import DEFAULT_BATCHES, Measurement, measure_async, nested_config, scaled
from otpylib import atom, gen_server, process
from otpylib.runtime import reset_runtime, set_runtime
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend
from otpylib.supervisor import SHUTDOWN

import otpylib_config
from otpylib_config import CONFIG_MANAGER, CONFIG_SUP, Config, ConfigSpec, FileSource

EXPECTED_VERSION = "0.2.9"
STATUS = atom.ensure("status")  # 0.2.9's otpylib_config.atoms.STATUS: answers a stats dict
PATH = "section_0000.key_042"
PATH_VALUE = 42  # what nested_config puts at PATH
VALUES = (-1, -2)  # put alternates between these so every put changes the config
KEYS_PER_SECTION = 100
LOAD_LIMIT_S = 60.0
BENCH_LIMIT_S = 300.0
RELOAD_INTERVAL_S = 3600.0  # keep 0.2.9's 30 s reload timer out of the measurements
GET_BATCH = 2_000
PUT_BATCH = 2_000

T = TypeVar("T")
Results = dict[str, dict[str, Any]]


async def bench_get(batches: int, n: int) -> Measurement:
    async def run(count: int) -> None:
        for _ in range(count):
            await Config.get(PATH)

    return await measure_async(run, n, batches)


async def bench_put(batches: int, n: int) -> Measurement:
    values = itertools.cycle(VALUES)  # a cycle, not i & 1: batches of odd size stay alternating

    async def run(count: int) -> None:
        for _ in range(count):
            await Config.put(PATH, next(values))

    measurement = await measure_async(run, n, batches)
    if await Config.get(PATH) not in VALUES:
        raise RuntimeError("0.2.9 lost a put")
    return measurement


async def in_process(body: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run ``body`` as an otpylib process and return its result."""
    outcome: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    async def runner() -> None:
        try:
            outcome.set_result(await body())
        except Exception as exc:
            outcome.set_exception(exc)

    await process.spawn(runner)
    return await asyncio.wait_for(outcome, timeout)


async def start_tree(spec: ConfigSpec) -> int:
    """Start 0.2.9's tree (from inside a process, as it requires); returns the ns it took."""
    started = time.perf_counter_ns()
    await otpylib_config.start(spec)
    return time.perf_counter_ns() - started


async def check_loaded(keys: int) -> None:
    """Fail unless 0.2.9 holds ``keys`` keys and answers ``get(PATH)`` from the file."""
    status = await gen_server.call(CONFIG_MANAGER, STATUS, timeout=5.0)
    if status["config_keys"] != keys:
        raise RuntimeError(f"0.2.9 loaded {status['config_keys']} keys, expected {keys}")
    value = await Config.get(PATH)
    if value != PATH_VALUE:
        raise RuntimeError(f"0.2.9 get({PATH!r}) returned {value!r}, expected {PATH_VALUE}")


async def stop_tree() -> None:
    """Stop 0.2.9's supervisor: its own ``stop()`` casts the str "stop", which it ignores."""
    pid = process.whereis(CONFIG_SUP)
    if pid is None:
        return
    ref = await process.monitor(pid)
    await process.send(pid, SHUTDOWN)
    with contextlib.suppress(TimeoutError):
        while True:
            message = await process.receive(timeout=5.0)
            if isinstance(message, tuple) and len(message) > 1 and message[1] == ref:
                return


@contextlib.asynccontextmanager
async def fresh_runtime() -> AsyncIterator[None]:
    backend = AsyncIOBackend()
    await backend.initialize()
    set_runtime(backend)
    try:
        yield
    finally:
        tasks = [p.task for p in backend._processes.values() if p.task and not p.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.shutdown()
        await asyncio.sleep(0)
        reset_runtime()


async def with_config(
    sections: int, body: Callable[[], Awaitable[Results]], *, inside_process: bool = True
) -> tuple[Results, int]:
    """Start 0.2.9 on ``sections`` sections of 100 keys in a fresh runtime, run ``body``.

    Returns ``body``'s results and the ns that start took. Raises ``TimeoutError`` if the
    tree takes longer than ``LOAD_LIMIT_S`` to start.
    """
    async with fresh_runtime():
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "config.json"
            file.write_text(json.dumps(nested_config(sections, KEYS_PER_SECTION)))
            spec = ConfigSpec(
                id="bench",
                sources=[FileSource(str(file), format="json")],
                reload_interval=RELOAD_INTERVAL_S,
            )
            load_ns = await in_process(lambda: start_tree(spec), LOAD_LIMIT_S)
            try:
                await in_process(lambda: check_loaded(sections * KEYS_PER_SECTION), 10.0)
                results = await (in_process(body, BENCH_LIMIT_S) if inside_process else body())
            finally:
                await in_process(stop_tree, 10.0)
    return results, load_ns


async def main(batches: int, scale: float, big_sections: int) -> Results:
    async def small() -> Results:
        get = await bench_get(batches, scaled(GET_BATCH, scale))
        put = await bench_put(batches, scaled(PUT_BATCH, scale))
        return {"get": get.as_json(), "put": put.as_json()}

    async def outside() -> Results:
        get = await bench_get(batches, scaled(GET_BATCH // 2, scale))
        return {"get_outside_process": get.as_json()}

    async def big() -> Results:
        return {"put_big": (await bench_put(batches, scaled(PUT_BATCH, scale))).as_json()}

    keys = big_sections * KEYS_PER_SECTION
    results, load_ns = await with_config(1, small)
    results["load_small"] = {"median_ns": load_ns, "n": 1, "keys": KEYS_PER_SECTION}
    results.update((await with_config(1, outside, inside_process=False))[0])
    try:
        big_results, load_ns = await with_config(big_sections, big)
    except TimeoutError:
        note = f"0.2.9 did not load {keys:,} keys within {LOAD_LIMIT_S:.0f}s"
        results["put_big"] = {"median_ns": None, "n": 0, "keys": keys, "note": note}
    else:
        results.update(big_results)
        results["put_big"]["keys"] = keys
        results["load_big"] = {"median_ns": load_ns, "n": 1, "keys": keys}
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply batch sizes")
    parser.add_argument(
        "--big-sections", type=int, default=1000, help="sections of 100 keys for put_big"
    )
    return parser.parse_args()


def check_version() -> None:
    installed = importlib.metadata.version("otpylib-config")
    if installed != EXPECTED_VERSION or "site-packages" not in (otpylib_config.__file__ or ""):
        raise SystemExit(
            f"baseline_029.py must run in benchmarks/.venv-029 (otpylib-config "
            f"{EXPECTED_VERSION} installed from PyPI); this interpreter has otpylib-config "
            f"{installed} from {otpylib_config.__file__}"
        )


if __name__ == "__main__":
    args = parse_args()
    check_version()
    with contextlib.redirect_stdout(sys.stderr):
        output = asyncio.run(main(args.batches, args.scale, args.big_sections))
    print(json.dumps(output))
