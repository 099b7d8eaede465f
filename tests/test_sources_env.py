"""Specification of EnvironmentSource: environment variables as a layer (DESIGN §5)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from otpylib_config.errors import InvalidPathError, SourceError
from otpylib_config.sources.env import EnvironmentSource, coerce
from otpylib_config.values import Section


async def load(environ: dict[str, str], prefix: str = "APP_", **options: Any) -> Section:
    return await EnvironmentSource(prefix, environ=environ, **options).load()


# -- names to paths -------------------------------------------------------------------------


async def test_prefix_is_stripped_and_double_underscore_nests() -> None:
    layer = await load({"APP_DATABASE__POOL_SIZE": "20", "APP_DEBUG": "true"})
    assert layer == {"database": {"pool_size": 20}, "debug": True}
    assert type(layer) is Section
    assert type(layer["database"]) is Section


async def test_segments_are_lower_cased() -> None:
    assert await load({"APP_Server__HOST": "h"}) == {"server": {"host": "h"}}


async def test_a_single_underscore_stays_inside_a_segment() -> None:
    assert await load({"APP_DATABASE_POOL_SIZE": "5"}) == {"database_pool_size": 5}


async def test_deep_nesting() -> None:
    assert await load({"APP_A__B__C__D": "x"}) == {"a": {"b": {"c": {"d": "x"}}}}


async def test_variables_without_the_prefix_are_ignored() -> None:
    environ = {"APP_X": "1", "PATH": "/bin", "HOME": "/root", "APPLE": "1", "app_y": "2"}
    assert await load(environ) == {"x": 1}


async def test_the_bare_prefix_is_ignored() -> None:
    assert await load({"APP_": "1", "APP_X": "2"}) == {"x": 2}


async def test_no_matching_variables_gives_an_empty_layer() -> None:
    assert await load({"HOME": "/root"}) == {}


async def test_siblings_under_one_section_are_combined() -> None:
    layer = await load({"APP_DB__URL": "pg://", "APP_DB__POOL": "5", "APP_REDIS__URL": "r://"})
    assert layer == {"db": {"url": "pg://", "pool": 5}, "redis": {"url": "r://"}}


async def test_custom_nested_delimiter_single_underscore_when_asked_for() -> None:
    layer = await load({"APP_DB_POOL": "5", "APP_DB_HOST": "h"}, nested_delimiter="_")
    assert layer == {"db": {"pool": 5, "host": "h"}}


async def test_a_custom_delimiter_replaces_the_default_one() -> None:
    layer = await load({"APP_DB.POOL_SIZE": "5", "APP_A__B": "1"}, nested_delimiter=".")
    assert layer == {"db": {"pool_size": 5}, "a__b": 1}


async def test_the_environment_is_read_on_every_load() -> None:
    environ = {"APP_X": "1"}
    source = EnvironmentSource("APP_", environ=environ)
    assert await source.load() == {"x": 1}
    environ["APP_X"] = "2"
    environ["APP_Y"] = "3"
    assert await source.load() == {"x": 2, "y": 3}
    environ.clear()
    assert await source.load() == {}


async def test_os_environ_is_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTPYLIBCFGTEST_DB__PORT", "5432")
    assert await EnvironmentSource("OTPYLIBCFGTEST_").load() == {"db": {"port": 5432}}


# -- explicit mapping -----------------------------------------------------------------------


async def test_mapping_names_flat_variables_explicitly() -> None:
    source = EnvironmentSource(
        mapping={"JWT_SECRET": "auth.jwt_secret", "DATABASE_URL": "database.url"},
        environ={"JWT_SECRET": "s3", "DATABASE_URL": "pg://", "OTHER": "x"},
    )
    assert await source.load() == {"auth": {"jwt_secret": "s3"}, "database": {"url": "pg://"}}


async def test_mapping_paths_keep_their_case() -> None:
    source = EnvironmentSource(mapping={"X": "Auth.Key"}, environ={"X": "1"})
    assert await source.load() == {"Auth": {"Key": 1}}


async def test_mapped_variables_that_are_unset_are_absent() -> None:
    source = EnvironmentSource(mapping={"JWT_SECRET": "auth.jwt_secret"}, environ={})
    assert await source.load() == {}


async def test_mapping_and_prefix_combine_and_mapping_wins_for_its_variable() -> None:
    source = EnvironmentSource(
        "APP_",
        mapping={"APP_SPECIAL": "x.y", "JWT": "auth.jwt"},
        environ={"APP_SPECIAL": "1", "APP_DB__URL": "u", "JWT": "t"},
    )
    assert await source.load() == {"x": {"y": 1}, "db": {"url": "u"}, "auth": {"jwt": "t"}}


def test_mapping_to_an_invalid_path_fails_at_construction() -> None:
    with pytest.raises(InvalidPathError):
        EnvironmentSource(mapping={"X": "a..b"})


# -- coercion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("fAlSe", False),
        ("0", 0),
        ("20", 20),
        ("-5", -5),
        ("+7", 7),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-3", 0.0025),
        ("[1, 2, 3]", [1, 2, 3]),
        ('["a", "b"]', ["a", "b"]),
        ('{"a": 1, "b": [true]}', {"a": 1, "b": [True]}),
        ("hello", "hello"),
        ("pg://user@host/db", "pg://user@host/db"),
        ("1.2.3", "1.2.3"),
        ("yes", "yes"),
        ("null", "null"),
        ("", ""),
        ("1_000", "1_000"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("0x10", "0x10"),
    ],
)
def test_coerce(text: str, value: Any) -> None:
    result = coerce(text)
    assert result == value
    assert type(result) is type(value)


async def test_coerced_values_are_frozen_in_the_layer() -> None:
    layer = await load({"APP_HOSTS": '["a", "b"]', "APP_OPTS": '{"x": {"y": 1}}'})
    assert layer == {"hosts": ("a", "b"), "opts": {"x": {"y": 1}}}
    assert type(layer["opts"]["x"]) is Section


async def test_plain_strings_keep_their_whitespace() -> None:
    assert await load({"APP_MOTD": "  hi  "}) == {"motd": "  hi  "}


async def test_an_empty_value_is_an_empty_string_not_absent() -> None:
    assert await load({"APP_X": ""}) == {"x": ""}


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[1, 2", "{not json}", '{"a": }', "[NaN]", '{"a.b": 1}'])
async def test_invalid_json_looking_value_is_a_source_error_naming_the_variable(text) -> None:
    with pytest.raises(SourceError) as info:
        await load({"APP_OK": "1", "APP_BROKEN": text})
    assert "$APP_BROKEN" in str(info.value)
    assert info.value.source == "env:APP_"


async def test_a_value_and_a_section_at_the_same_path_clash_naming_both_variables() -> None:
    with pytest.raises(SourceError) as info:
        await load({"APP_DB": "1", "APP_DB__URL": "x"})
    message = str(info.value)
    assert re.search(r"\$APP_DB\b", message)
    assert "$APP_DB__URL" in message
    assert "db" in message


async def test_two_variables_for_the_same_path_clash() -> None:
    with pytest.raises(SourceError) as info:
        await load({"APP_DB__URL": "x", "APP_db__url": "y"})
    assert "$APP_DB__URL" in str(info.value)
    assert "$APP_db__url" in str(info.value)


async def test_a_mapped_variable_clashing_with_a_prefixed_one_is_reported() -> None:
    source = EnvironmentSource(
        "APP_", mapping={"DATABASE_URL": "db.url"}, environ={"DATABASE_URL": "a", "APP_DB": "b"}
    )
    with pytest.raises(SourceError) as info:
        await source.load()
    assert "$DATABASE_URL" in str(info.value)
    assert "$APP_DB" in str(info.value)


@pytest.mark.parametrize("var", ["APP_A____B", "APP___X", "APP_A__", "APP_A__B__"])
async def test_a_variable_that_maps_to_an_empty_segment_is_a_source_error_naming_it(var) -> None:
    with pytest.raises(SourceError) as info:
        await load({var: "1"})
    assert f"${var}" in str(info.value)
    assert "empty segment" in str(info.value)


async def test_a_variable_whose_name_has_glob_characters_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"\$APP_X\*"):
        await load({"APP_X*": "1"})


def test_a_prefix_or_a_mapping_is_required() -> None:
    with pytest.raises(ValueError, match="prefix or a mapping"):
        EnvironmentSource()
    with pytest.raises(ValueError):
        EnvironmentSource("", mapping={})


def test_the_nested_delimiter_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="nested_delimiter"):
        EnvironmentSource("APP_", nested_delimiter="")


def test_name_defaults_to_the_prefix_or_the_mapped_variables() -> None:
    assert EnvironmentSource("APP_").name == "env:APP_"
    assert EnvironmentSource(mapping={"A": "a", "B": "b"}).name == "env:A,B"
    assert EnvironmentSource("APP_", name="env").name == "env"


def test_environment_source_is_required_by_default() -> None:
    assert EnvironmentSource("APP_").required is True


# -- .env files ---------------------------------------------------------------------------


async def test_env_file_values_are_read_and_the_process_wins(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('APP_DB__URL="postgres://from-dotenv"\nAPP_DB__POOL=3\nAPP_NAME=svc\n')
    source = EnvironmentSource("APP_", env_file=env_file, environ={"APP_DB__POOL": "9"})

    layer = await source.load()
    await source.accepted(layer)  # as the pipeline does once the layer is in use

    assert layer == {"db": {"url": "postgres://from-dotenv", "pool": 9}, "name": "svc"}
    assert source.origin(("db", "pool")) == "$APP_DB__POOL"
    assert source.origin(("db", "url")) == f"{env_file}: APP_DB__URL"


async def test_env_file_is_reread_on_every_load(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("APP_X=1\n")
    source = EnvironmentSource("APP_", env_file=env_file, environ={})
    assert await source.load() == {"x": 1}

    env_file.write_text("APP_X=2\n")
    assert await source.load() == {"x": 2}


async def test_a_missing_env_file_is_an_empty_addition(tmp_path: Any) -> None:
    source = EnvironmentSource("APP_", env_file=tmp_path / ".env", environ={"APP_X": "1"})
    assert await source.load() == {"x": 1}
