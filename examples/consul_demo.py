"""Following a Consul KV prefix: run with ``.venv/bin/python examples/consul_demo.py``.

No Consul agent is needed: the demo starts the loopback Consul server of the test suite
(``tests/consul_server.py``, which speaks Consul's KV HTTP API) on a free port. Point
``ConsulSource(url=...)`` at a real agent and the rest is the same. The demo shows a write in
Consul reaching a subscriber without any reload timer, Consul going down (the last good values
keep serving, ``status()`` says the source is failing) and coming back, and explain().
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.consul_server

import otpylib_config
from otpylib_config import Config, ConfigSpec, ConsulSource, DefaultsSource
from tests.consul_server import ConsulServer


def show(title: str) -> None:
    print(f"\n== {title}")


async def source_health() -> str:
    (_, consul) = (await Config.status()).sources
    return "healthy" if consul.healthy else f"failing: {consul.last_error}"


async def main() -> None:
    async with ConsulServer(acl_tokens={"demo-token": "read"}) as consul:
        consul.put("myapp/config/database/pool_size", "20")
        consul.put("myapp/config/features/new_ui", "false")
        spec = ConfigSpec(
            id="consul_demo",
            sources=[
                DefaultsSource({"database": {"pool_size": 5, "url": "sqlite://"}}),
                ConsulSource("myapp/config/", url=consul.url, token="demo-token", wait=5.0),
            ],
            reload_interval=None,  # every change below arrives by blocking query
        )
        async with otpylib_config.running(spec):
            show("values from Consul override the defaults")
            print("   database.pool_size =", await Config.get("database.pool_size"))
            print("  ", await Config.explain("database.pool_size"))

            show("a write in Consul reaches the subscriber at once")
            changed = asyncio.Event()

            def on_change(path: str, old: Any, new: Any) -> None:
                print(f"   event {path}: {old!r} -> {new!r}")
                changed.set()

            await Config.subscribe("features.*", on_change)
            consul.put("myapp/config/features/new_ui", "true")
            await asyncio.wait_for(changed.wait(), timeout=10)

            show("Consul goes down: the last good values keep serving")
            await consul.go_down()
            await Config.reload()
            print("   features.new_ui    =", Config.get_nowait("features.new_ui"))
            print("   consul source      :", await source_health())

            show("Consul comes back: the watcher catches up")
            changed.clear()
            await consul.come_up()
            consul.put("myapp/config/features/new_ui", "false")
            await asyncio.wait_for(changed.wait(), timeout=10)
            await asyncio.sleep(0.1)
            print("   consul source      :", await source_health())
    print("\nstopped cleanly")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="   log %(levelname)s %(message)s")
    asyncio.run(main())
