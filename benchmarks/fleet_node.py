"""One node of the fleet rows (21a-21c): a tree whose only source follows one etcd (or
Consul) prefix, run as its own process by ``run.py``::

    python fleet_node.py etcd URL PREFIX [--cache FILE]
    python fleet_node.py consul URL PREFIX

It starts the tree (``otpylib_config.start``), waits for the first value of ``value`` (the
key ``PREFIX + "value"``), subscribes to it, and prints one JSON line per event on stdout:

* ``{"event": "ready", "value": V, "t": T, "healthy": H}`` once: the first value, when it was
  there (``T``), and whether the source is healthy (``False`` when the value came from the
  cache because etcd is down);
* ``{"event": "change", "value": V, "t": T}`` on each callback, ``T`` taken first thing in it.

``T`` is ``time.monotonic()``: CLOCK_MONOTONIC is one system-wide clock on Linux, so the
parent compares it with its own ``time.monotonic()`` of the moment it wrote (or spawned).
The node stops its tree and exits when its stdin closes (the parent closing it, or dying).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import otpylib_config
from otpylib_config import Config, ConfigSpec, ConsulSource, EtcdSource, Source

PATH = "value"
FIRST_VALUE_LIMIT_S = 30.0  # no value by then: the node gives up (exit 1)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def on_change(path: str, old: Any, new: Any) -> None:
    now = time.monotonic()  # first, so that printing is not part of the latency
    emit("change", value=new, t=now)


def source_of(args: argparse.Namespace) -> Source:
    if args.kind == "etcd":
        return EtcdSource(args.prefix, endpoints=[args.url], cache_path=args.cache)
    return ConsulSource(args.prefix, url=args.url, wait=30.0)


async def main(args: argparse.Namespace) -> int:
    spec = ConfigSpec(id="fleet_node", sources=[source_of(args)], reload_interval=None)
    tree = await otpylib_config.start(spec)
    try:
        deadline = time.monotonic() + FIRST_VALUE_LIMIT_S
        while (value := Config.get_nowait(PATH)) is None:
            if time.monotonic() > deadline:
                print(f"no value at {PATH!r} in {FIRST_VALUE_LIMIT_S:g}s", file=sys.stderr)
                return 1
            await asyncio.sleep(0.005)
        first = time.monotonic()
        await Config.subscribe(PATH, on_change)
        (source,) = (await Config.status()).sources
        emit("ready", value=value, t=first, healthy=source.healthy)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        return 0
    finally:
        await tree.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["etcd", "consul"])
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--cache", default=None, help="EtcdSource(cache_path=...)")
    sys.exit(asyncio.run(main(parser.parse_args())))
