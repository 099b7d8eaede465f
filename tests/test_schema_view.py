"""With a pydantic schema, what ``get`` returns is what ``Config.model()`` says."""

from __future__ import annotations

import datetime
import enum
from pathlib import Path
from typing import Any

import pydantic
import pytest

from otpylib_config import Config, DefaultsSource, EnvironmentSource, FileSource
from otpylib_config.redact import REDACTED
from otpylib_config.schema_view import schema_origin, view
from otpylib_config.values import freeze

from .conftest import Recorder, StartTree


class Level(enum.Enum):
    INFO = "info"
    DEBUG = "debug"


class Server(pydantic.BaseModel):
    host: str = "0.0.0.0"
    port: int = 8000
    debug: bool = False


class Database(pydantic.BaseModel):
    url: pydantic.AnyUrl
    dsn: pydantic.SecretStr = pydantic.SecretStr("postgres://app@db/app")
    pool_size: int = 5


class Settings(pydantic.BaseModel):
    server: Server = Server()
    database: Database
    level: Level = Level.INFO
    started: datetime.date = datetime.date(2026, 1, 2)
    tags: frozenset[str] = frozenset()

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def redis_url(self) -> str:
        return f"redis://{self.server.host}:6379/0"


def test_a_model_is_published_as_plain_data_with_its_secrets_marked() -> None:
    raw = freeze({"database": {"url": "http://db:5432/x"}, "extra": {"kept": 1}})
    model = Settings.model_validate({"database": {"url": "http://db:5432/x"}})

    shown = view(raw, model)

    assert shown.tree["server"] == {"host": "0.0.0.0", "port": 8000, "debug": False}
    assert shown.tree["database"]["url"] == "http://db:5432/x"
    assert shown.tree["database"]["dsn"] == "postgres://app@db/app"  # the secret value
    assert shown.secret_paths == {"database.dsn"}
    assert shown.tree["level"] == "info" and shown.tree["started"] == "2026-01-02"
    assert shown.tree["tags"] == () and shown.tree["redis_url"] == "redis://0.0.0.0:6379/0"
    assert shown.tree["extra"] == {"kept": 1}  # keys the model ignores keep their value


def test_a_callable_schema_that_returns_a_mapping_publishes_it() -> None:
    raw = freeze({"a": "1"})
    assert view(raw, {"a": 1, "b": [1, 2]}).tree == {"a": 1, "b": (1, 2)}
    assert view(raw, None).tree is raw


def test_schema_origin_tells_defaults_from_computed_fields() -> None:
    model = Settings.model_validate({"database": {"url": "http://db/x"}})
    assert schema_origin(model, ("server", "port")) == "schema default"
    assert schema_origin(model, ("redis_url",)) == "schema computed field"
    assert schema_origin(model, ("nope",)) is None


async def test_get_agrees_with_the_model_on_every_path(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[database]\nurl = 'http://db:5432/app'\n[server]\nport = '08001'\n")
    env = {"APP_SERVER__DEBUG": "no"}
    await start_tree(
        sources=[FileSource(config), EnvironmentSource("APP_", environ=env)], schema=Settings
    )

    model = Config.model()
    assert Config.get_nowait("server.debug") is False is model.server.debug
    assert Config.get_nowait("server.port") == 8001 == model.server.port
    assert Config.get_nowait("database.pool_size") == 5  # a model default
    assert Config.get_nowait("redis_url") == model.redis_url  # a computed field
    assert Config.get_nowait("database.dsn") == "postgres://app@db/app"
    assert (await Config.dump())["database"]["dsn"] == REDACTED  # marked secret by its type
    explained = await Config.explain("database.pool_size")
    assert (explained.source, explained.origin) == ("schema", "schema default")
    assert (await Config.explain("redis_url")).origin == "schema computed field"


async def test_puts_and_reloads_publish_the_model_view_and_its_changes(
    start_tree: StartTree,
) -> None:
    await start_tree(
        sources=[DefaultsSource({"database": {"url": "http://db/x"}})], schema=Settings
    )
    recorder = Recorder()
    await Config.subscribe("**", recorder)

    await Config.put("server.host", "cache")  # the computed field moves with it

    events = await recorder.settled(2, then=lambda: Config.put("server.debug", True))
    assert {path: (old, new) for path, old, new in events[:2]} == {
        "server.host": ("0.0.0.0", "cache"),
        "redis_url": ("redis://0.0.0.0:6379/0", "redis://cache:6379/0"),
    }
    assert events[2:] == [("server.debug", False, True)]  # and no other event before it
    before = (await Config.status()).version
    await Config.put("server.port", "8000")  # the same value for the model: nothing new
    assert (await Config.status()).version == before
    assert Config.get_nowait("server.port") == 8000


async def test_an_invalid_put_names_where_the_bad_value_came_from(
    start_tree: StartTree,
) -> None:
    await start_tree(
        sources=[DefaultsSource({"database": {"url": "http://db/x"}})], schema=Settings
    )
    with pytest.raises(Exception, match=r"server.port: .*\(from runtime put of server.port"):
        await Config.put("server.port", "not a port")


async def test_explain_names_the_source_file_and_key_in_a_reload_error(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[database]\nurl = 'http://db/x'\n")
    await start_tree(sources=[FileSource(config, watch=False)], schema=Settings)
    config.write_text("[database]\nurl = 'http://db/x'\npool_size = 'many'\n")

    result: Any = await Config.reload()

    assert f"from {config}: database.pool_size" in result.errors["validation"]


async def test_a_schema_secret_stays_masked_across_idle_reloads(
    start_tree: StartTree, tmp_path: Path
) -> None:
    vault = tmp_path / "vault.toml"
    vault.write_text("[database]\nurl = 'http://db/x'\n")
    await start_tree(sources=[FileSource(vault, secret=True, watch=False)], schema=Settings)
    for _ in range(3):  # reloads that change nothing
        await Config.reload()
    assert (await Config.dump())["database"]["dsn"] == REDACTED


class Aliased(pydantic.BaseModel):
    pool_size: int = pydantic.Field(alias="poolSize")


async def test_an_aliased_field_is_published_once_under_the_sources_spelling(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"poolSize": "20"})], schema=Aliased)
    assert Config.get_nowait("poolSize") == 20
    assert Config.get_nowait("pool_size") is None
