"""Validation before publish: schemas and glob validators; nothing invalid is ever served."""

from __future__ import annotations

import dataclasses
import logging
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
from otpylib_config.redact import REDACTED, Redactor
from otpylib_config.validation import Validator
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


def refused(validators: dict[str, str], tree: dict[str, Any]) -> list[tuple[str, str]]:
    """``(path, validator)`` of every problem reported when each validator (named by the
    value of ``validators``) refuses every node it is given: which nodes each checks, and
    in which order."""

    def refusing(name: str) -> Any:
        def check(value: Any) -> None:
            raise ValueError(name)

        return check

    validator = Validator(validators={p: refusing(name) for p, name in validators.items()})
    with pytest.raises(ValidationError) as info:
        validator.check(freeze(tree))
    return [(path, message.removeprefix("ValueError: ")) for path, message in info.value.problems]


def test_glob_validators_follow_the_glob_rules_of_subscriptions() -> None:
    tree = {"a": {"x": {"n": 1}, "y": {"n": 2}}, "b": {"n": 3}}
    assert refused({"a.*": "star"}, tree) == [("a.x", "star"), ("a.y", "star")]
    assert refused({"**.n": "n"}, tree) == [("a.x.n", "n"), ("a.y.n", "n"), ("b.n", "n")]
    assert refused({"a.[x]": "set"}, tree) == [("a.x", "set")]


def test_a_trailing_globstar_checks_the_node_and_everything_in_it_leaves_included() -> None:
    """``**`` is zero or more segments, for validators as for subscriptions."""
    tree = {"a": {"x": {"n": 1}}, "b": 2}
    assert refused({"a.**": "all"}, tree) == [("a", "all"), ("a.x", "all"), ("a.x.n", "all")]
    assert refused({"b.**": "leaf"}, tree) == [("b", "leaf")]


def test_a_node_that_a_glob_matches_in_several_ways_is_checked_once() -> None:
    tree = {"a": {"a": {"b": 1}}}
    assert refused({"a.**.**": "v"}, tree) == [("a", "v"), ("a.a", "v"), ("a.a.b", "v")]


def test_validators_run_in_their_order_each_over_its_nodes_in_tree_order() -> None:
    tree = {"b": {"x": 1}, "a": {"x": 2, "y": 3}}
    assert refused({"*.y": "second", "**.x": "first"}, tree) == [
        ("a.y", "second"),
        ("b.x", "first"),
        ("a.x", "first"),
    ]


def test_a_validator_of_globstars_alone_checks_the_whole_tree_too() -> None:
    assert refused({"**": "v"}, {"a": 1}) == [("", "v"), ("a", "v")]


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
    source = FileSource(config, watch=False)  # the reloads below are the only ones
    await start_tree(sources=[source], validators={"queuemizer.tc_rules.*": TcRule})

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


# -- secrets never leave through a problem's message ----------------------------------------

SECRET = "hunter2-SECRET-xyz"


class StrictDatabase(pydantic.BaseModel):
    url: str
    password: str

    @pydantic.field_validator("password")
    @classmethod
    def strong(cls, value: str) -> str:
        if "-" in value:
            raise ValueError(f"password {value!r} must not contain '-'")
        return value


class StrictSettings(pydantic.BaseModel):
    db: StrictDatabase


def test_a_pydantic_message_quoting_a_secret_is_scrubbed_and_keeps_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        Validator(StrictSettings).check(freeze({"db": {"url": "pg://db", "password": SECRET}}))

    assert SECRET not in str(info.value)
    [(path, message)] = info.value.problems
    assert path == "db.password"
    assert f"password '{REDACTED}' must not contain" in message


def test_a_callable_validator_quoting_a_secret_is_scrubbed() -> None:
    def refuse(node: Any) -> None:
        raise ValueError(f"cannot log in as {node['user']} with {node['api_token']}")

    validator = Validator(validators={"service": refuse})
    with pytest.raises(ValidationError) as info:
        validator.check(freeze({"service": {"user": "alice", "api_token": SECRET}}))

    assert info.value.problems == (
        ("service", f"ValueError: cannot log in as alice with {REDACTED}"),
    )


def test_the_redactor_passed_decides_what_is_secret() -> None:
    tree = freeze({"api": {"credential": SECRET}})
    validator = Validator(validators={"api": _quoting("credential")})

    with pytest.raises(ValidationError) as plain:
        validator.check(tree)
    assert SECRET in str(plain.value)  # api.credential matches no default pattern

    redactor = Redactor()
    redactor.replace_leaves(frozenset({"api.credential"}))  # as for a secret source's leaf
    with pytest.raises(ValidationError) as scrubbed:
        validator.check(tree, redactor)
    assert SECRET not in str(scrubbed.value)
    assert scrubbed.value.problems[0][0] == "api"


def _quoting(key: str) -> Any:
    def check(node: Any) -> None:
        raise ValueError(f"{key} {node[key]} is revoked")

    return check


def test_pydantic_input_is_never_part_of_a_message() -> None:
    class Port(pydantic.BaseModel):
        port: int

    with pytest.raises(ValidationError) as info:
        Validator(Port).check(freeze({"port": "not-a-port-at-all"}))

    assert info.value.problems[0][0] == "port"
    assert "not-a-port-at-all" not in str(info.value)


async def test_a_rejected_put_never_shows_the_secret_in_logs_telemetry_or_status(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"db": {"url": "pg://db", "password": "correct"}}
    await start_tree(sources=[DefaultsSource(good)], schema=StrictSettings)
    caplog.set_level(logging.DEBUG, logger="otpylib_config")

    with (
        telemetry.capture_events(telemetry.VALIDATION_FAILED) as failures,
        pytest.raises(ValidationError) as info,
    ):
        await Config.put("db.password", SECRET)

    assert failures and failures[0].metadata["problems"][0][0] == "db.password"
    status = await Config.status()
    for text in (str(info.value), repr(failures), caplog.text, repr(status)):
        assert SECRET not in text
    assert status.last_validation_error is not None
    assert REDACTED in status.last_validation_error
    assert await Config.get("db.password") == "correct"
