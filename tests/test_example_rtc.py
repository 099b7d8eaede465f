"""examples/rtc_service runs as README's curl session shows: profile and command-line
layers, flat environment names, placeholders, every validation error at once, and the
admin API with a write token limited to ``rate_limiting.**`` and ``logging.level``.

The service runs as a subprocess with a real command line; the session is a real aiohttp
client against its admin API."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

APP = Path(__file__).resolve().parent.parent / "examples" / "rtc_service" / "app.py"
ADMIN_TOKEN = "ops-" + "t" * 28
ENV = {"JWT_SECRET": "jwt-" + "j" * 28, "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "INFO"}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Service:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url

    async def line(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            return (await self.proc.stdout.readline()).decode().rstrip("\n")


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTC_", "PORT", "MAX_"))}
    return {**env, **ENV, **extra}


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    argv = ["--profile=dev", "--port=8082", "--max-connections=5000", "--admin-port=0"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        *argv,
        env=environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    first = Service(proc, "")
    lines = [await first.line() for _ in range(3)]
    assert lines[:2] == ["rtc listening on 0.0.0.0:8082", "max connections 5000"]
    url = lines[2].removeprefix("admin API on ")
    yield Service(proc, url)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def call(method: str, url: str, body: Any = None, headers: Any = AUTH) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as r,
    ):
        is_json = r.content_type == "application/json"
        return r.status, await (r.json() if is_json else r.text())


async def test_the_curl_session_of_the_readme(service: Service) -> None:
    admin = service.url
    assert admin.endswith("/admin")

    assert await call("GET", f"{admin}/health", headers={}) == (
        200,
        {"healthy": True, "reasons": []},
    )
    status, limits = await call("GET", f"{admin}/config/rate_limiting")
    assert (status, limits) == (200, {"per_ip": 1000, "per_user": 200, "window_s": 60})  # dev

    assert await call("PUT", f"{admin}/config/rate_limiting.per_ip", 25) == (
        200,
        {"path": "rate_limiting.per_ip", "version": 2},
    )
    assert await service.line() == "rate limit rate_limiting.per_ip: 1000 -> 25"

    status, body = await call("PUT", f"{admin}/config/server.port", 9000)
    assert status == 403 and "server.port" in body["error"]
    status, body = await call("PUT", f"{admin}/config/logging.level", "LOUD")
    assert status == 422 and body["problems"][0]["path"] == "logging.level"
    status, body = await call("GET", f"{admin}/config", headers={})
    assert status == 401

    _, explained = await call("GET", f"{admin}/explain/websocket.max_connections")
    assert explained["origin"] == "command line --max-connections"
    assert explained["value"] == 5000
    _, auth = await call("GET", f"{admin}/config/auth")
    assert auth["jwt_secret"] == "**redacted**" and ENV["JWT_SECRET"] not in str(auth)

    status, text = await call("GET", f"{admin}/metrics", headers={})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (puts,) = [s for s in families["otpylib_config_puts"].samples if s.name.endswith("_total")]
    assert status == 200 and puts.labels == {"id": "rtc"} and puts.value == 1

    service.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await service.proc.wait() == 0


async def test_a_bad_start_lists_every_problem_with_where_it_came_from() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        "--port=0",
        "--admin-port=0",
        env={**environment(MAX_CONNECTIONS="-1", LOG_LEVEL="LOUD"), "JWT_SECRET": ""},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    problems = err.decode()
    assert proc.returncode == 1
    for line in (
        "server.port: Input should be greater than or equal to 1 (from command line --port)",
        "websocket.max_connections: Input should be greater than or equal to 1"
        " (from $MAX_CONNECTIONS)",
        "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' (from $LOG_LEVEL)",
    ):
        assert line in problems
    assert "auth.jwt_secret" in problems
