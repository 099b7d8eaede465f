"""``otpylib_config.load``: one synchronous load, as ``start`` would serve it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydantic
import pytest

import otpylib_config
from otpylib_config import ConfigSpec, DefaultsSource, FileSource, LoadError, RuntimeSource
from otpylib_config.redact import REDACTED


class Settings(pydantic.BaseModel):
    port: int
    password: str = "pw"


def spec(tmp_path: Path, text: str, **options: object) -> ConfigSpec:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return ConfigSpec(sources=[DefaultsSource({"name": "app"}), FileSource(config)], **options)


def test_load_reads_merges_and_validates_with_no_runtime_or_loop(tmp_path: Path) -> None:
    loaded = otpylib_config.load(spec(tmp_path, "port = '8080'\n", schema=Settings))

    assert loaded.get("port") == 8080 and loaded.get("name") == "app"
    assert loaded.get("missing", "d") == "d"
    assert loaded.model.port == 8080
    assert loaded.dump()["password"] == REDACTED
    assert loaded.explain("port").origin == f"{tmp_path / 'config.toml'}: port"


async def test_load_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    loaded = otpylib_config.load(spec(tmp_path, "port = 1\n"))
    assert loaded.get("port") == 1
    assert asyncio.get_running_loop().is_running()


def test_load_reports_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as error:
        otpylib_config.load(spec(tmp_path, "port = 'x'\nother = 1\n", schema=Settings))
    assert [path for path, _ in error.value.problems] == ["port"]


def test_load_never_touches_persisted_overrides(tmp_path: Path) -> None:
    saved = tmp_path / "overrides.json"
    saved.write_text("not json")
    base = spec(tmp_path, "port = 1\n")
    loaded = otpylib_config.load(ConfigSpec(sources=[*base.sources, RuntimeSource(path=saved)]))
    assert loaded.get("port") == 1
    assert saved.read_text() == "not json"  # not read, not moved aside


def test_the_same_spec_loads_twice(tmp_path: Path) -> None:
    same = spec(tmp_path, "port = 1\n")
    assert otpylib_config.load(same).get("port") == 1
    assert otpylib_config.load(same).get("port") == 1  # no state left on an old event loop
