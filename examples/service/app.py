"""A realistic service layout to copy: ``CONFIG_PROFILE=dev python examples/service/app.py 60``.

Layers, lowest first: config.toml, config.{profile}.toml (optional), secrets.toml (secret),
SERVICE_* environment variables with .env, and runtime puts persisted to overrides.json.
Files are watched: edit config.toml during the 60 seconds it runs (the argument; without one
it exits at once) and the change is published at once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from settings import VALIDATORS, Settings  # noqa: E402

import otpylib_config  # noqa: E402
from otpylib_config import (  # noqa: E402
    Config,
    ConfigSpec,
    EnvironmentSource,
    FileSource,
    RuntimeSource,
)


def build_spec(directory: Path = HERE, state_dir: Path | None = None) -> ConfigSpec:
    return ConfigSpec(
        id="service",
        sources=[
            FileSource(directory / "config.toml"),
            FileSource(directory / "config.{profile}.toml", optional=True),
            FileSource(directory / "secrets.toml", secret=True),
            EnvironmentSource(prefix="SERVICE_"),
            RuntimeSource(path=(state_dir or directory) / "overrides.json"),
        ],
        env_file=directory / ".env",  # seen by the environment source, placeholders, profile
        profile_env="CONFIG_PROFILE",
        schema=Settings,
        validators=VALIDATORS,
    )


async def main(seconds: float) -> None:
    async with otpylib_config.running(build_spec()):
        settings: Settings = Config.model()
        print(f"profile={(await Config.status()).profile} port={settings.server.port}")
        print(await Config.explain("database.pool_size"))
        print(await Config.explain("security.secret_key"))

        def on_change(path: str, old: Any, new: Any) -> None:
            print(f"changed {path}: {old!r} -> {new!r}")

        await Config.subscribe("**", on_change)
        await asyncio.sleep(seconds)  # edit config.toml meanwhile to see the watcher at work


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0))
