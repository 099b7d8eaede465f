"""The RTC service's configuration, end to end (README, "The operator's surface").

    JWT_SECRET=... ADMIN_TOKEN=... python examples/rtc_service/app.py \\
        --profile=dev --port=8082 --max-connections=5000

Layers, lowest first: defaults in config.toml, config.{profile}.toml, the environment
(flat names such as ``PORT`` and ``LOG_LEVEL`` mapped into sections, and ``RTC_*`` for
anything else, ``RTC_RATE_LIMITING__PER_IP``), the command line (``--port``,
``--max-connections``, or any path as ``--websocket.ping_interval_s=10``), and runtime puts
through the admin API. ``--profile`` and ``--config`` are the service's own options, read
first. The admin API listens on 127.0.0.1 (``--admin-port``, 8081 by default, 0 for any
free port) under ``/admin``; ``$ADMIN_TOKEN`` may write ``rate_limiting.**`` and
``logging.level``, ``$MONITOR_TOKEN`` (optional) may read. It runs until SIGTERM or
Ctrl-C, or for ``--run-for`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from settings import Settings  # noqa: E402

import otpylib_config  # noqa: E402
from otpylib_config import (  # noqa: E402
    ArgsSource,
    Config,
    ConfigSpec,
    EnvironmentSource,
    FileSource,
    LoadError,
)
from otpylib_config.admin import AdminSpec, AdminToken  # noqa: E402

logger = logging.getLogger("rtc")

ENV_NAMES = {  # the service's documented variables, flat, each into its section
    "PORT": "server.port",
    "MAX_CONNECTIONS": "websocket.max_connections",
    "LOG_LEVEL": "logging.level",
}
FLAGS = {"port": "server.port", "max-connections": "websocket.max_connections"}


def own_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The service's own flags; everything else is configuration for ArgsSource."""
    parser = argparse.ArgumentParser(prog="rtc_service", add_help=True)
    parser.add_argument("--profile", default=None, help="config.{profile}.toml to layer on")
    parser.add_argument("--config", default=str(HERE / "config.toml"), help="the base file")
    parser.add_argument("--admin-port", type=int, default=8081, help="0: any free port")
    parser.add_argument("--run-for", type=float, default=None, help="seconds, then exit")
    return parser.parse_known_args(argv)


def admin_tokens() -> list[AdminToken]:
    tokens = [AdminToken.from_env("ops", "ADMIN_TOKEN", scope="write")]
    if os.environ.get("MONITOR_TOKEN"):
        tokens.append(AdminToken.from_env("monitor", "MONITOR_TOKEN"))
    return tokens


def build_spec(argv: list[str]) -> tuple[ConfigSpec, argparse.Namespace]:
    options, rest = own_options(argv)
    base = Path(options.config)
    spec = ConfigSpec(
        id="rtc",
        profile=options.profile,
        sources=[
            FileSource(base),
            FileSource(base.with_name(base.stem + ".{profile}" + base.suffix), optional=True),
            EnvironmentSource(prefix="RTC_", mapping=ENV_NAMES),
            ArgsSource(rest, mapping=FLAGS),
        ],
        schema=Settings,
        reload_interval=None,
        admin=AdminSpec(
            port=options.admin_port,
            prefix="/admin",
            tokens=admin_tokens(),
            writable=("rate_limiting.**", "logging.level"),
            public=("health", "metrics"),
        ),
    )
    return spec, options


def apply_log_level(path: str, old: Any, new: Any) -> None:
    logging.getLogger().setLevel(new)
    logger.warning("log level %s -> %s", old, new)


def report_limits(path: str, old: Any, new: Any) -> None:
    print(f"rate limit {path}: {old} -> {new}", flush=True)


async def serve(spec: ConfigSpec, run_for: float | None) -> None:
    async with otpylib_config.running(spec):
        settings: Settings = Config.model()
        logging.getLogger().setLevel(settings.logging.level)
        status = await Config.status()
        print(f"rtc listening on {settings.server.host}:{settings.server.port}", flush=True)
        print(f"max connections {settings.websocket.max_connections}", flush=True)
        print(f"admin API on {status.admin_url}", flush=True)
        await Config.subscribe("rate_limiting.**", report_limits)
        await Config.subscribe("logging.level", apply_log_level)
        await until_stopped(run_for)


async def until_stopped(run_for: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):  # --run-for elapsed
        await asyncio.wait_for(stop.wait(), run_for)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec, options = build_spec(argv)
        asyncio.run(serve(spec, options.run_for))
    except LoadError as exc:
        print("rtc: the configuration cannot be loaded:", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path or '-'}: {message}", file=sys.stderr)
        return 1
    except otpylib_config.ConfigError as exc:
        print(f"rtc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
