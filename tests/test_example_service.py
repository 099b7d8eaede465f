"""examples/service works as its files say: layers, profile, secrets, .env, schema, watching.

The example directory is copied to a temporary one so that edits and persisted overrides
never touch the repository.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import otpylib_config
from otpylib_config import Config, ConfigSpec
from otpylib_config.client import current_table

from .conftest import Recorder, eventually

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "service"


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_service_app", EXAMPLE / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    directory = tmp_path / "service"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("overrides.json*"))
    monkeypatch.setenv("CONFIG_PROFILE", "dev")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("SERVICE_DATABASE__MAX_OVERFLOW", "3")
    return load_app(), directory


def build(service: tuple[ModuleType, Path]) -> ConfigSpec:
    app, directory = service
    spec = app.build_spec(directory)
    assert isinstance(spec, ConfigSpec)
    return spec


async def test_every_layer_contributes_in_priority_order(
    otp_runtime: Any, service: tuple[ModuleType, Path]
) -> None:
    async with otpylib_config.running(build(service)):
        assert await Config.get("server.port") == 9000  # template placeholder from $PORT
        assert await Config.get("server.debug") is True  # config.dev.toml
        assert await Config.get("database.pool_size") == 2  # config.dev.toml
        assert await Config.get("database.max_overflow") == 3  # the environment
        assert await Config.get("database.url") == "postgresql://app@db.internal:5432/app"
        assert await Config.get("redis.url") == "redis://localhost:6380/1"  # .env
        assert await Config.get("rate_limits.api.requests") == 500  # .env
        assert await Config.get("security.secret_key") == "change-me-in-production"


async def test_the_validated_model_and_redacted_output(
    otp_runtime: Any, service: tuple[ModuleType, Path]
) -> None:
    async with otpylib_config.running(build(service)):
        model = Config.model()
        dump = await Config.dump()
        secret = await Config.explain("database.password")

    assert type(model).__name__ == "Settings" and model.server.port == 9000
    assert dump["security"]["secret_key"] == "**redacted**"
    assert dump["database"]["password"] == "**redacted**"
    assert "dev-password" not in str(secret) and "secrets.toml" in str(secret)


async def test_a_bad_edit_is_rejected_and_a_good_one_is_published(
    otp_runtime: Any, service: tuple[ModuleType, Path]
) -> None:
    _, directory = service
    config = directory / "config.toml"
    async with otpylib_config.running(build(service)):
        recorder = Recorder()
        await Config.subscribe("queuemizer.tc_rules.*", recorder)

        config.write_text(config.read_text().replace('rate = "10mbit"', 'rate = "10"'))
        await eventually(lambda: current_table().last_validation_error is not None)
        error = current_table().last_validation_error or ""
        assert "queuemizer.tc_rules.eth0" in error and "must end in 'bit'" in error
        assert Config.get_nowait("queuemizer.tc_rules.eth0.rate") == "10mbit"

        config.write_text(config.read_text().replace('rate = "10"', 'rate = "20mbit"'))

        events = await recorder.settled(
            1, then=lambda: Config.put("queuemizer.tc_rules.eth0.rate", "30mbit")
        )
    assert events == [  # the rejected edit sent nothing
        (
            "queuemizer.tc_rules.eth0",
            {"rate": "10mbit", "burst": 32},
            {"rate": "20mbit", "burst": 32},
        ),
        (
            "queuemizer.tc_rules.eth0",
            {"rate": "20mbit", "burst": 32},
            {"rate": "30mbit", "burst": 32},
        ),
    ]


async def test_runtime_overrides_survive_a_restart(
    otp_runtime: Any, service: tuple[ModuleType, Path]
) -> None:
    async with otpylib_config.running(build(service)):
        await Config.put("database.pool_size", 12)

    async with otpylib_config.running(build(service)):
        assert await Config.get("database.pool_size") == 12
        explanation = await Config.explain("database.pool_size")
    assert explanation.source == "runtime"


def run_script(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(directory / "app.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_example_runs_as_a_script(service: tuple[ModuleType, Path]) -> None:
    _, directory = service
    result = run_script(directory)

    assert result.returncode == 0, result.stderr
    assert "profile=dev port=9000" in result.stdout
    assert "database.pool_size = 2" in result.stdout
    assert "dev-password" not in result.stdout and "change-me" not in result.stdout


def test_the_example_runs_without_a_profile(
    service: tuple[ModuleType, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory = service
    monkeypatch.delenv("CONFIG_PROFILE")
    result = run_script(directory)

    assert result.returncode == 0, result.stderr
    assert "profile=None port=9000" in result.stdout  # config.dev.toml left out


def test_a_profile_chosen_in_dot_env_picks_its_file(
    service: tuple[ModuleType, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory = service
    monkeypatch.delenv("CONFIG_PROFILE")
    with (directory / ".env").open("a") as env:
        env.write("CONFIG_PROFILE=dev\n")
    result = run_script(directory)

    assert result.returncode == 0, result.stderr
    assert "profile=dev" in result.stdout
