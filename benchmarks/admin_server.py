"""A server for the admin API's throughput row (20), run as its own process pinned to one
core: ``python admin_server.py ours|bare CPU``. It prints its base URL, then serves until
stdin closes.

``ours``: a tree with the admin API (a read token, the small config of the other rows).
``bare``: aiohttp alone, one route answering the same JSON body with no work at all: the
floor of serving an HTTP request with aiohttp on one core.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

TOKEN = "bench-read-token-" + "x" * 16
VALUE_PATH = "section_0000.key_042"


async def ours() -> None:
    import otpylib_config
    from otpylib_config import Config, ConfigSpec, DefaultsSource
    from otpylib_config.admin import AdminSpec, AdminToken

    config = {f"section_{s:04d}": {f"key_{k:03d}": k for k in range(100)} for s in range(10)}
    spec = ConfigSpec(
        sources=[DefaultsSource(config)],
        reload_interval=None,
        admin=AdminSpec(port=0, tokens=[AdminToken("bench", TOKEN)]),
    )
    async with otpylib_config.running(spec):
        print((await Config.status()).admin_url, flush=True)
        await until_stdin_closes()


async def bare() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="42", content_type="application/json")

    app = web.Application()
    app.router.add_get("/config/{path}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}", flush=True)
    await until_stdin_closes()
    await runner.cleanup()


async def until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    mode, cpu = sys.argv[1], int(sys.argv[2])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(ours() if mode == "ours" else bare())
