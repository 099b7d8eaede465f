"""Validation before publish: schemas and glob validators; nothing invalid is ever served."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pydantic
import pytest

import otpylib_config
from otpylib_config import (
    Config,
    ConfigError,
    ConfigSpec,
    DefaultsSource,
    FileSource,
    ValidationError,
    telemetry,
)
from otpylib_config.validation import Validator, match_nodes
from otpylib_config.values import freeze

from .conftest import Recorder, StartTree


class Database(pydantic.BaseModel):
    url: str
    pool_size: int = pydantic.Field(gt=0, le=100)


class Settings(pydantic.BaseModel):
    database: Database
    debug: bool = False


@dataclasses.dataclass
class TcRule:
    rate: str
    burst: int

    def __post_init__(self) -> None:
        if self.burst <= 0:
            raise ValueError("burst must be positive")


GOOD = {"database": {"url": "postgres://db/app", "pool_size": 5}}
RULES = {"eth0": {"rate": "10mbit", "burst": 32}, "eth1": {"rate": "5mbit", "burst": 16}}


def test_pydantic_problems_are_listed_by_path() -> None:
    validator = Validator(Settings)
    bad = freeze({"database": {"url": 1, "pool_size": 0}})

    with pytest.raises(ValidationError) as info:
        validator.check(bad)

    paths = sorted(path for path, _ in info.value.problems)
    assert paths == ["database.pool_size", "database.url"]
    assert "database.pool_size" in str(info.value)


def test_glob_validators_check_each_matching_node_with_its_own_path() -> None:
    validator = Validator(validators={"queuemizer.tc_rules.*": TcRule})
    tree = freeze({"queuemizer": {"tc_rules": {**RULES, "eth2": {"rate": "1mbit", "burst": 0}}}})

    with pytest.raises(ValidationError) as info:
        validator.check(tree)

    assert info.value.problems == (
        ("queuemizer.tc_rules.eth2", "ValueError: burst must be positive"),
    )


def test_callable_schema_and_nested_validation_errors() -> None:
    def no_debug_in_prod(tree: Any) -> None:
        if tree.get("env") == "prod" and tree.get("debug"):
            raise ValidationError([("debug", "must be false in prod")])

    validator = Validator(no_debug_in_prod, {"limits.*": lambda v: v > 0 or 1 / 0})
    with pytest.raises(ValidationError) as info:
        validator.check(freeze({"env": "prod", "debug": True, "limits": {"a": 1, "b": -1}}))

    assert set(info.value.problems) == {
        ("debug", "must be false in prod"),
        ("limits.b", "ZeroDivisionError: division by zero"),
    }


def test_match_nodes_follows_glob_rules() -> None:
    tree = freeze({"a": {"x": {"n": 1}, "y": {"n": 2}}, "b": {"n": 3}})

    assert [p for p, _ in match_nodes(tree, ("a", "*"))] == [("a", "x"), ("a", "y")]
    assert sorted(p for p, _ in match_nodes(tree, ("**", "n"))) == [
        ("a", "x", "n"),
        ("a", "y", "n"),
        ("b", "n"),
    ]
    assert [p for p, _ in match_nodes(tree, ("a", "[x]"))] == [("a", "x")]


async def test_an_invalid_put_fails_and_changes_nothing(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)], schema=Settings)
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    before = await Config.status()

    with (
        telemetry.capture_events(telemetry.VALIDATION_FAILED) as failures,
        pytest.raises(ValidationError, match=r"database\.pool_size"),
    ):
        await Config.put("database.pool_size", 1000)

    assert await Config.get("database.pool_size") == 5
    assert (await Config.status()).version == before.version
    assert failures[0].metadata["reason"] == "put"
    assert failures[0].metadata["problems"][0][0] == "database.pool_size"
    await Config.put("database.pool_size", 50)  # the manager still works and accepts good puts
    assert await recorder.settled(1) == [("database.pool_size", 5, 50)]


async def test_an_invalid_file_edit_keeps_the_last_good_config(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[queuemizer.tc_rules.eth0]\nrate = '10mbit'\nburst = 32\n")
    await start_tree(sources=[FileSource(config)], validators={"queuemizer.tc_rules.*": TcRule})

    config.write_text("[queuemizer.tc_rules.eth0]\nrate = '20mbit'\nburst = -1\n")
    result = await Config.reload()

    assert result.changed == ()
    assert "queuemizer.tc_rules.eth0" in result.errors["validation"]
    assert await Config.get("queuemizer.tc_rules.eth0.rate") == "10mbit"
    status = await Config.status()
    assert status.last_validation_error is not None
    assert status.counters["validation_failures"] == 1

    config.write_text("[queuemizer.tc_rules.eth0]\nrate = '20mbit'\nburst = 64\n")
    assert (await Config.reload()).changed != ()
    assert await Config.get("queuemizer.tc_rules.eth0.burst") == 64


async def test_model_returns_the_validated_pydantic_instance(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)], schema=Settings)

    model = Config.model()
    assert isinstance(model, Settings) and model.database.pool_size == 5
    await Config.put("database.pool_size", 7)
    assert Config.model().database.pool_size == 7


async def test_model_without_a_pydantic_schema_is_an_error(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    with pytest.raises(ConfigError, match="no pydantic schema"):
        Config.model()


async def test_an_invalid_configuration_never_starts(otp_runtime: Any) -> None:
    spec = ConfigSpec(sources=[DefaultsSource({"database": {"url": "x", "pool_size": -1}})])
    with pytest.raises(ValidationError, match=r"database\.pool_size"):
        await otpylib_config.start(ConfigSpec(sources=spec.sources, schema=Settings))
