"""The pipeline's start-up: a tree never starts on bad configuration, and says everything
that is wrong at once, each problem with where its value came from."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import otpylib_config
from otpylib_config import (
    ConfigSpec,
    DefaultsSource,
    EnvironmentSource,
    FileSource,
    LoadError,
    SourceError,
    ValidationError,
)


class Settings(pydantic.BaseModel):
    port: int
    workers: int
    name: str


async def test_every_validation_problem_is_reported_with_its_origin(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("port = 'eighty'\n")
    env = {"APP_WORKERS": "many"}
    spec = ConfigSpec(
        sources=[FileSource(config), EnvironmentSource("APP_", environ=env)], schema=Settings
    )

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    problems = dict(error.value.problems)
    assert set(problems) == {"port", "workers", "name"}
    assert f"(from {config}: port)" in problems["port"]
    assert "(from $APP_WORKERS)" in problems["workers"]
    assert "from" not in problems["name"]  # missing: no source has it
    assert isinstance(error.value, ValidationError) and isinstance(error.value, SourceError)


async def test_every_failed_source_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    spec = ConfigSpec(
        sources=[FileSource(tmp_path / "missing.toml"), FileSource(broken), DefaultsSource({})]
    )

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    text = str(error.value)
    assert "file not found" in text and str(broken) in text
    assert len(error.value.failed) == 2


async def test_a_missing_placeholder_and_a_validation_problem_come_in_one_error(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("name = '${APP_NAME}'\nport = ${APP_PORT:?set the port}\nworkers = 'x'\n")
    spec = ConfigSpec(sources=[FileSource(config, environ={})], schema=Settings)

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    problems = dict(error.value.problems)
    assert "APP_NAME" in problems["name"] and "set the port" in problems["port"]
    assert f"(from {config}: workers)" in problems["workers"]  # validation ran on the rest
