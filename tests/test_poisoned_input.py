"""End to end: bad input is refused at the door, and secrets never leave as text.

A running tree is fed every kind of poisoned input (values that could not be shown, values
nested past every reader's recursion, malformed patterns, broken files) and must refuse each
one where it enters, naming where, while serving the last good configuration. Then every
error path that a secret can reach is driven, and the secret must appear in no log line,
telemetry event, exception, status or dump.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pydantic
import pytest

import otpylib_config
from otpylib_config import (
    Config,
    ConfigSpec,
    DefaultsSource,
    FileSource,
    InvalidPathError,
    InvalidValueError,
    SourceError,
    ValidationError,
    telemetry,
)
from otpylib_config.redact import REDACTED
from otpylib_config.values import MAX_INT_DIGITS, MAX_ITEMS, MAX_STRING_LENGTH

from .conftest import Recorder, StartTree, eventually, nested

SECRET = "hunter2-SECRET-xyz"
ALL_EVENTS = tuple(
    value
    for name, value in vars(telemetry).items()
    if name.isupper() and isinstance(value, str) and value.startswith("config.")
)
GOOD = {"db": {"url": "pg://db/app", "pool": 5}, "feature": {"on": True}}


BAD_PUTS = {
    "huge int": 10**5000,
    "100-deep dict": nested(100, "leaf"),
    "2M-char string": "s" * (2 * MAX_STRING_LENGTH),
    "bytes": b"raw-bytes-value",
    "set": {"set-member-value"},
    "2M-item list": [0] * (2 * MAX_ITEMS),
}


async def _assert_serving(expected_pool: int, *, sources_healthy: bool = True) -> None:
    """Every read and every report still works, and shows the last good configuration."""
    status = await Config.status()
    assert status.manager_running
    assert status.healthy is sources_healthy
    dump = await Config.dump()
    assert dump["db"] == {"url": "pg://db/app", "pool": expected_pool}
    assert "pg://db/app" in str(await Config.explain("db.url"))
    assert await Config.get("db.pool") == expected_pool
    assert repr(status)


@pytest.mark.parametrize("name", BAD_PUTS)
async def test_each_bad_put_is_refused_naming_the_path_without_the_value(
    start_tree: StartTree, name: str
) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    version = (await Config.status()).version

    with pytest.raises(InvalidValueError) as info:
        await Config.put("feature.payload", BAD_PUTS[name])

    message = str(info.value)
    assert message.startswith("feature.payload")
    assert len(message) < 500
    for text in ("raw-bytes-value", "set-member-value", "sss", "leaf", "0, 0"):
        assert text not in message
    assert (await Config.status()).version == version
    await _assert_serving(5)


async def test_after_every_bad_put_the_tree_serves_and_reports_normally(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    await Config.put("db.pool", 7)
    for value in BAD_PUTS.values():
        with pytest.raises(InvalidValueError):
            await Config.put("feature.payload", value)
    with pytest.raises(InvalidPathError):
        await Config.put(".".join(["a"] * 65), 1)

    await _assert_serving(7)
    assert await Config.get("feature.payload") is None
    await Config.put("db.pool", 8)  # and it still takes good writes
    assert await Config.get("db.pool") == 8


async def test_depth_is_counted_from_the_root_for_puts(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    await Config.put("x.y", nested(62, "leaf"))  # leaf at depth 2 + 62 = 64: the limit
    with pytest.raises(InvalidValueError, match="deeper than 64"):
        await Config.put("x.y.z", nested(62, "leaf"))
    assert str(await Config.explain("x.y"))
    assert (await Config.dump())["x"]["y"]["a"]


async def test_the_largest_values_allowed_are_served_and_shown(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    await Config.put("big.int", 10**MAX_INT_DIGITS - 1)
    status = await Config.status()
    assert repr(status) and status.config_hash
    assert len(str((await Config.dump())["big"]["int"])) == MAX_INT_DIGITS
    assert str(await Config.explain("big.int"))


@pytest.mark.parametrize("pattern", ["[", "a.[", "a.[bc", "a.b]", "db.[!"])
async def test_malformed_patterns_are_refused_by_subscribe(
    start_tree: StartTree, pattern: str
) -> None:
    await start_tree(sources=[DefaultsSource(GOOD)])
    with pytest.raises(InvalidPathError) as info:
        await Config.subscribe(pattern, Recorder())
    assert repr(pattern) in str(info.value)
    assert (await Config.status()).subscriptions == 0


BAD_FILES = {
    "too-deep table": "[" + ".".join(["t"] * 80) + "]\nx = 1\n",
    "too-deep array": "db = { pool = 5 }\nx = " + "[" * 100 + "]" * 100 + "\n",
    "parser-breaking depth": "x = " + "[" * 100_000 + "\n",
    "huge decimal int": "[db]\npool = " + "9" * 5000 + "\n",
    "huge hex int": "[db]\npool = 0x" + "f" * 5000 + "\n",
}


@pytest.mark.parametrize("name", BAD_FILES)
async def test_a_poisoned_file_is_a_source_error_and_is_not_published(
    start_tree: StartTree, tmp_path: Path, name: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[db]\nurl = "pg://db/app"\npool = 5\n')
    await start_tree(sources=[DefaultsSource(GOOD), FileSource(config, watch=False)])
    version = (await Config.status()).version

    config.write_text(BAD_FILES[name])
    result = await Config.reload()

    [error] = result.errors.values()
    assert str(config) in error
    assert result.changed == ()
    assert (await Config.status()).version == version
    await _assert_serving(5, sources_healthy=False)
    [file_status] = [s for s in (await Config.status()).sources if s.name.startswith("file:")]
    assert file_status.last_error is not None and str(config) in file_status.last_error


@pytest.mark.parametrize("name", BAD_FILES)
async def test_a_tree_never_starts_on_a_poisoned_file(
    otp_runtime: Any, tmp_path: Path, name: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(BAD_FILES[name])
    with pytest.raises(SourceError) as info:
        await otpylib_config.start(ConfigSpec(sources=[FileSource(config)]))
    assert str(config) in str(info.value)


# -- the secret grep --------------------------------------------------------------------------


class Db(pydantic.BaseModel):
    url: str
    password: str

    @pydantic.field_validator("password")
    @classmethod
    def not_too_long(cls, value: str) -> str:
        if len(value) > len(SECRET):
            raise ValueError(f"password {value!r} is longer than {len(SECRET)} characters")
        return value


class Settings(pydantic.BaseModel):
    db: Db
    api: dict[str, Any] = {}
    mode: str = "normal"

    @pydantic.model_validator(mode="after")
    def strict_mode_needs_no_credential(self) -> Settings:
        if self.mode == "strict" and self.api.get("credential"):
            raise ValueError(f"credential {self.api['credential']} is not allowed when strict")
        return self


async def test_a_secret_never_leaves_through_logs_telemetry_errors_status_or_dump(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_toml = tmp_path / "secrets.toml"
    secrets_toml.write_text(f'[api]\ncredential = "{SECRET}"\n')
    secrets_yaml = tmp_path / "secrets.yaml"
    secrets_yaml.write_text("extra:\n  note: fine\n")
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    texts: list[str] = []

    with telemetry.capture_events(*ALL_EVENTS) as events:
        await start_tree(
            sources=[
                DefaultsSource({"db": {"url": "pg://db/app", "password": SECRET}}),
                FileSource(secrets_toml, secret=True, watch=False),
                FileSource(secrets_yaml, secret=True, watch=False),
            ],
            schema=Settings,
        )
        recorder = Recorder()
        await Config.subscribe("**", recorder)
        texts += await _drive_every_error_path(secrets_toml, secrets_yaml)
        texts += [repr(await Config.status()), repr(await Config.dump())]
        texts += [str(await Config.explain(p)) for p in ("db.password", "api.credential", "api")]
        await Config.put("db.pool", 1)  # one good change, so change events are seen too
        await recorder.settled(1)

    assert {event.name for event in events} >= {
        telemetry.SOURCE_ERROR,
        telemetry.VALIDATION_FAILED,
        telemetry.RELOAD_STOP,
        telemetry.CHANGED,
    }
    assert await Config.get("db.password") == SECRET  # get still returns secrets
    assert await Config.get("api.credential") == SECRET
    texts += [repr(event) for event in events]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text, repr(recorder.events)]
    leaks = [text for text in texts if SECRET in text]
    assert leaks == []


async def _drive_every_error_path(secrets_toml: Path, secrets_yaml: Path) -> list[str]:
    """Each way a secret has been seen to escape; returns every error text produced."""
    errors: list[str] = []
    for value in (SECRET.encode(), {SECRET}, [SECRET, {SECRET}]):
        with pytest.raises(InvalidValueError) as refused:
            await Config.put("db.password", value)
        errors.append(str(refused.value))
    for path, value in (("db.password", SECRET + "-and-more"), ("mode", "strict")):
        with pytest.raises(ValidationError) as invalid:
            await Config.put(path, value)
        assert REDACTED in str(invalid.value)  # the validator did quote it: scrubbed
        errors.append(str(invalid.value))
    blob = base64.b64encode(SECRET.encode()).decode()
    for text in (
        f"extra:\n  blob: !!binary {blob}\n",
        f"extra:\n  members: !!set {{{SECRET}: null}}\n",
        f"extra:\n  n: !!int {SECRET}\n",
        f"extra:\n  obj: !!python/name:{SECRET}\n",
    ):
        secrets_yaml.write_text(text)
        errors += (await Config.reload()).errors.values()
    secrets_yaml.write_text("extra:\n  note: fine\n")
    for text in (f'[api]\ncredential = "${{{SECRET}"\n', f"[api]\ncredential = {SECRET}\n"):
        secrets_toml.write_text(text)
        errors += (await Config.reload()).errors.values()
    assert len(errors) == 11 and all(errors)
    return errors


async def test_a_secret_new_to_a_secret_file_or_quoted_by_a_callback_is_masked(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault = tmp_path / "vault.toml"
    vault.write_text("[vault]\nentry = 'fine'\n")
    caplog.set_level(logging.DEBUG, logger="otpylib_config")

    def schema(tree: Any) -> None:
        if tree["vault"]["entry"] != "fine":
            raise ValueError(f"vault entry {tree['vault']['entry']} is not fine")

    def quoting(path: str, old: Any, new: Any) -> None:
        raise ValueError(f"cannot use {new}")

    with telemetry.capture_events(*ALL_EVENTS) as events:
        await start_tree(
            sources=[
                DefaultsSource({"db": {"password": "old-password"}}),
                FileSource(vault, secret=True, watch=False),
            ],
            schema=schema,
        )
        await Config.subscribe("db.password", quoting)
        vault.write_text(f"[vault]\nentry = '{SECRET}'\n")  # a value new to the secret file
        result = await Config.reload()
        await Config.put("db.password", SECRET)  # the callback quotes the secret it gets
        await eventually(lambda: any(e.name == telemetry.SUBSCRIBER_ERROR for e in events))

    assert REDACTED in result.errors["validation"]
    texts = [*result.errors.values(), caplog.text, *(repr(e) for e in events)]
    texts.append(repr(await Config.status()))
    assert [text for text in texts if SECRET in text] == []
