"""Specification of EnvironmentSource: environment variables (and .env files) as a layer."""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from otpylib_config import Config, telemetry
from otpylib_config.environment import Environment
from otpylib_config.errors import InvalidPathError, SourceError
from otpylib_config.schema_shape import shape_of
from otpylib_config.sources.base import SourceContext
from otpylib_config.sources.env import EnvironmentSource, coerce
from otpylib_config.sources.file import FileSource
from otpylib_config.values import Section

from .conftest import StartTree


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
    environ = {"APP_X": "1", "PATH": "/bin", "HOME": "/root", "APPLE": "1", "APPX_Y": "2"}
    assert await load(environ) == {"x": 1}


async def test_the_prefix_matches_whatever_its_case() -> None:
    assert await load({"app_x": "1", "App_Db__Url": "u"}) == {"x": 1, "db": {"url": "u"}}
    assert await load({"APP_X": "1"}, prefix="app_") == {"x": 1}


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


def test_a_prefix_a_mapping_or_flat_is_required() -> None:
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
    assert EnvironmentSource(flat=True).name == "env:flat"


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


async def test_each_accepted_layer_is_explained_by_its_own_variables(tmp_path: Any) -> None:
    """Two loads before either is accepted (two readings out at once): each layer accepted
    is explained by the variables it was loaded from, not by the newest load's."""
    env_file = tmp_path / ".env"
    env_file.write_text("APP_X=1\n")
    environ: dict[str, str] = {}
    source = EnvironmentSource("APP_", env_file=env_file, environ=environ)
    from_file = await source.load()
    environ["APP_X"] = "2"
    from_process = await source.load()

    await source.accepted(from_file)

    assert source.origin(("x",)) == f"{env_file}: APP_X"
    assert source.origin(("x",), from_process) == "$APP_X"  # a candidate validation judges

    await source.accepted(from_process)

    assert source.origin(("x",)) == "$APP_X"


async def test_env_file_is_reread_on_every_load(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("APP_X=1\n")
    source = EnvironmentSource("APP_", env_file=env_file, environ={})
    assert await source.load() == {"x": 1}

    env_file.write_text("APP_X=2\n")
    assert await source.load() == {"x": 2}


async def test_a_missing_named_env_file_is_an_error(tmp_path: Any) -> None:
    source = EnvironmentSource("APP_", env_file=tmp_path / ".env", environ={"APP_X": "1"})
    with pytest.raises(SourceError, match="env file not found") as info:
        await source.load()
    assert str(tmp_path / ".env") in str(info.value)
    assert "env_file_optional=True" in str(info.value)


async def test_a_missing_optional_env_file_is_an_empty_addition(tmp_path: Any) -> None:
    source = EnvironmentSource(
        "APP_", env_file=tmp_path / ".env", env_file_optional=True, environ={"APP_X": "1"}
    )
    assert await source.load() == {"x": 1}


async def test_an_unparsable_env_file_line_is_an_error_naming_the_file_and_line(
    tmp_path: Any,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('APP_A=1\n# a comment\nAPP_B="unterminated\nAPP_C=3\n')
    source = EnvironmentSource("APP_", env_file=env_file, environ={})
    with pytest.raises(SourceError) as info:
        await source.load()
    assert f"{env_file}: line 3:" in str(info.value)
    assert info.value.source == "env:APP_"


async def test_a_source_env_file_replaces_the_trees(tmp_path: Any) -> None:
    tree_file, own_file = tmp_path / "tree.env", tmp_path / "own.env"
    tree_file.write_text("APP_A=tree\nAPP_B=tree\n")
    own_file.write_text("APP_B=own\n")
    context = SourceContext(environment=Environment(tree_file, environ={"APP_C": "process"}))
    inherits = EnvironmentSource("APP_", name="inherits")
    own = EnvironmentSource("APP_", env_file=own_file, name="own")
    seam = EnvironmentSource("APP_", environ={"APP_D": "seam"}, name="seam")
    for source in (inherits, own, seam):
        source.configure(context)

    assert await inherits.load() == {"a": "tree", "b": "tree", "c": "process"}
    assert await own.load() == {"b": "own", "c": "process"}
    assert await seam.load() == {"a": "tree", "b": "tree", "d": "seam"}


# -- with a schema: coercion by field type ----------------------------------------------------


class Redis(pydantic.BaseModel):
    url: str = ""
    db: int = 0


class Settings(pydantic.BaseModel):
    secret_key: str = ""
    port: int = 8000
    debug: bool = False
    ratio: float = 1.0
    hosts: list[str] = []
    maybe: str | None = None
    redis: Redis = Redis()
    log_level: str = "info"


def configured(source: EnvironmentSource, schema: Any = Settings, **context: Any) -> Any:
    source.configure(SourceContext(shape=shape_of(schema), **context))
    return source


async def schema_load(environ: dict[str, str], **options: Any) -> Section:
    options.setdefault("prefix", "APP_")
    return await configured(EnvironmentSource(environ=environ, **options)).load()


@pytest.mark.parametrize("text", ["12345678901234567890", "True", '{"a": 1}', "[1, 2", "08"])
async def test_a_string_field_gets_the_text_unchanged(text: str) -> None:
    layer = await schema_load({"APP_SECRET_KEY": text, "APP_MAYBE": text})
    assert layer == {"secret_key": text, "maybe": text}


async def test_other_fields_are_coerced_as_without_a_schema() -> None:
    layer = await schema_load(
        {"APP_PORT": "8001", "APP_DEBUG": "no", "APP_RATIO": "2.5", "APP_HOSTS": '["a", "b"]'}
    )
    assert layer == {"port": 8001, "debug": "no", "ratio": 2.5, "hosts": ("a", "b")}
    assert type(layer["port"]) is int


async def test_nested_fields_follow_the_schema_too() -> None:
    layer = await schema_load({"APP_REDIS__URL": "1234", "APP_REDIS__DB": "2"})
    assert layer == {"redis": {"url": "1234", "db": 2}}


async def test_segments_take_the_schemas_spelling() -> None:
    class Camel(pydantic.BaseModel):
        apiKey: str = ""

    source = configured(EnvironmentSource("APP_", environ={"APP_APIKEY": "123"}), Camel)
    assert await source.load() == {"apiKey": "123"}


async def test_a_callable_schema_gives_today_s_coercion() -> None:
    source = EnvironmentSource("APP_", environ={"APP_SECRET_KEY": "123"})
    source.configure(SourceContext(shape=shape_of(lambda tree: tree)))
    assert await source.load() == {"secret_key": 123}


# -- with a schema: flat names ------------------------------------------------------------------


async def test_flat_names_map_to_the_schema_leaves_without_a_mapping() -> None:
    environ = {"REDIS_URL": "redis://r", "REDIS_DB": "3", "LOG_LEVEL": "debug", "PATH": "/bin"}
    layer = await schema_load(environ, prefix="", flat=True)
    assert layer == {"redis": {"url": "redis://r", "db": 3}, "log_level": "debug"}


async def test_flat_names_match_whatever_their_case_and_nested_names_work_too() -> None:
    layer = await schema_load({"secret_key": "s", "Redis__Db": "1"}, prefix="", flat=True)
    assert layer == {"secret_key": "s", "redis": {"db": 1}}


async def test_flat_names_after_a_prefix() -> None:
    layer = await schema_load({"APP_REDIS_URL": "u", "APP_PORT": "1"}, flat=True)
    assert layer == {"redis": {"url": "u"}, "port": 1}


async def test_a_mapping_wins_over_a_flat_name() -> None:
    layer = await schema_load(
        {"REDIS_URL": "u"}, prefix="", flat=True, mapping={"REDIS_URL": "secret_key"}
    )
    assert layer == {"secret_key": "u"}


async def test_a_flat_name_that_matches_two_leaves_is_an_error_naming_both() -> None:
    class Both(pydantic.BaseModel):
        redis_url: str = ""
        redis: Redis = Redis()

    source = configured(EnvironmentSource(flat=True, environ={"REDIS_URL": "u"}), Both)
    with pytest.raises(SourceError) as info:
        await source.load()
    assert "$REDIS_URL" in str(info.value)
    assert "redis.url" in str(info.value) and "redis_url" in str(info.value)


async def test_flat_needs_a_schema() -> None:
    source = EnvironmentSource(flat=True, environ={"X": "1"})
    with pytest.raises(SourceError, match="schema"):
        await source.load()


async def test_many_flat_options_in_sections_need_no_mapping(tmp_path: Any) -> None:
    sections = {f"section{i}": {f"option{j}": (int, 0) for j in range(7)} for i in range(16)}
    models = {
        name: (pydantic.create_model(name.title(), **fields), ...)  # type: ignore[call-overload]
        for name, fields in sections.items()
    }
    schema = pydantic.create_model("Big", **models)  # type: ignore[call-overload]
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(f"SECTION{i}_OPTION{j}={i * j}\n" for i in range(16) for j in range(7))
    )
    source = configured(EnvironmentSource(flat=True, env_file=env_file, environ={}), schema)

    layer = await source.load()

    assert sum(len(section) for section in layer.values()) == 112
    assert layer["section15"]["option6"] == 90
    assert source.warnings == ()


# -- with a schema: unknown variables -----------------------------------------------------------


async def test_a_prefixed_variable_that_maps_to_no_field_is_a_warning() -> None:
    source = configured(EnvironmentSource("APP_", environ={"APP_PORTT": "1", "APP_PORT": "2"}))
    layer = await source.load()
    assert layer == {"portt": 1, "port": 2}  # still taken: the schema decides
    (warning,) = source.warnings
    assert "$APP_PORTT" in warning and "no field" in warning
    assert "did you mean port?" in warning


async def test_a_stray_env_file_variable_of_a_flat_source_is_a_warning(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=u\nREDIS_URLL=v\n")
    source = configured(EnvironmentSource(flat=True, env_file=env_file, environ={"UNRELATED": "x"}))
    assert await source.load() == {"redis": {"url": "u"}}
    (warning,) = source.warnings
    assert "$REDIS_URLL" in warning and str(env_file) in warning
    assert "did you mean $REDIS_URL?" in warning


async def test_a_mapped_variable_whose_path_is_no_field_is_a_warning() -> None:
    source = configured(EnvironmentSource(mapping={"JWT": "auth.jwt_secret"}, environ={"JWT": "s"}))
    assert await source.load() == {"auth": {"jwt_secret": "s"}}
    assert "$JWT is mapped to auth.jwt_secret" in source.warnings[0]


async def test_strict_makes_an_unknown_variable_an_error() -> None:
    source = configured(EnvironmentSource("APP_", strict=True, environ={"APP_PORTT": "1"}))
    with pytest.raises(SourceError, match=r"\$APP_PORTT"):
        await source.load()
    tree_strict = configured(EnvironmentSource("APP_", environ={"APP_PORTT": "1"}), strict_env=True)
    with pytest.raises(SourceError, match=r"\$APP_PORTT"):
        await tree_strict.load()
    lenient = EnvironmentSource("APP_", strict=False, environ={"APP_PORTT": "1"})
    assert await configured(lenient, strict_env=True).load() == {"portt": 1}


async def test_variables_the_tree_uses_elsewhere_are_not_reported(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JWT_SECRET=s\nCONFIG_PROFILE=dev\nAPP_PORT=1\nTYPO=1\n")
    config = tmp_path / "config.toml"
    config.write_text('secret_key = "${JWT_SECRET}"\n')
    environment = Environment(env_file, environ={})
    environment.claim("profile", lambda name: name == "CONFIG_PROFILE")
    context = SourceContext(environment=environment, shape=shape_of(Settings), strict_env=True)
    flat = EnvironmentSource(flat=True, name="flat", strict=False)
    prefixed = EnvironmentSource("APP_", name="prefixed")
    file = FileSource(config)
    for source in (flat, prefixed, file):
        source.configure(context)

    await flat.load()
    assert len(flat.warnings) == 1 and "$TYPO" in flat.warnings[0]
    assert await prefixed.load() == {"port": 1}
    assert await file.load() == {"secret_key": "s"}  # the placeholder sees .env


async def test_the_warnings_of_each_layer_are_kept_with_it_until_it_is_accepted() -> None:
    environ = {"APP_PORTT": "1"}
    source = configured(EnvironmentSource("APP_", environ=environ))
    with_typo = await source.load()
    environ.clear()
    environ["APP_PORT"] = "1"
    without = await source.load()

    (warning,) = source.warnings_of(with_typo)
    assert "$APP_PORTT" in warning
    assert source.warnings_of(without) == () == source.warnings  # the newest load's


async def test_without_a_schema_nothing_is_reported(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TYPO=1\n")
    source = EnvironmentSource("APP_", env_file=env_file, environ={"APP_PORTT": "1"})
    await source.load()
    assert source.warnings == ()


# -- in a tree ------------------------------------------------------------------------------------


class Service(pydantic.BaseModel):
    secret_key: str
    token: str = ""
    port: int = 8000
    debug: bool = True
    redis: Redis = Redis()


@pytest.mark.parametrize("secret", ["12345678901234567890", "True", '{"a": 1}'])
async def test_the_schema_decides_the_types_in_a_tree(start_tree: StartTree, secret: str) -> None:
    environ = {"APP_SECRET_KEY": secret, "APP_PORT": "8001", "APP_DEBUG": "no"}
    await start_tree(sources=[EnvironmentSource("APP_", environ=environ)], schema=Service)

    model = Config.model()
    assert model.secret_key == secret
    assert model.port == 8001
    assert model.debug is False


async def test_flat_names_from_the_env_file_in_a_tree(
    start_tree: StartTree, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SECRET_KEY", "REDIS_URL", "REDIS_DB", "PORT"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=0123\nREDIS_URL=redis://r\nREDIS_DB=2\nPORT=08001\n")
    await start_tree(sources=[EnvironmentSource(flat=True)], env_file=env_file, schema=Service)

    model = Config.model()
    assert (model.secret_key, model.redis.url, model.redis.db) == ("0123", "redis://r", 2)
    assert model.port == 8001  # "08001": pydantic's int parsing, not a guess


async def test_an_unknown_variable_is_a_warning_in_status_telemetry_and_log(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"APP_SECRET_KEY": "s", "APP_TOKEN_": "t"}
    with telemetry.capture_events(telemetry.SOURCE_WARNING) as events:
        await start_tree(sources=[EnvironmentSource("APP_", environ=environ)], schema=Service)
        await Config.reload()  # the same warning again: not repeated

    (source,) = (await Config.status()).sources
    (warning,) = source.warnings
    assert "$APP_TOKEN_" in warning and "did you mean token?" in warning
    assert source.healthy
    assert [e.metadata for e in events] == [
        {"id": "default", "source": "env:APP_", "warning": warning}
    ]
    assert [r.getMessage() for r in caplog.records if "APP_TOKEN_" in r.getMessage()] == [
        f"config source env:APP_: {warning}"
    ]

    del environ["APP_TOKEN_"]
    await Config.reload()
    assert (await Config.status()).sources[0].warnings == ()


async def test_strict_env_fails_the_start_on_an_unknown_variable(start_tree: StartTree) -> None:
    environ = {"APP_SECRET_KEY": "s", "APP_SECRET_KEYY": "t"}
    with pytest.raises(SourceError, match=r"\$APP_SECRET_KEYY"):
        await start_tree(
            sources=[EnvironmentSource("APP_", environ=environ)], schema=Service, strict_env=True
        )


async def test_a_stray_env_file_line_is_reported_but_placeholders_and_profile_are_not(
    start_tree: StartTree, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SECRET_KEY", "JWT_SECRET", "CONFIG_PROFILE", "JWT_SECRET_KEYY"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=k\nJWT_SECRET=j\nCONFIG_PROFILE=dev\nJWT_SECRET_KEYY=x\n")
    config = tmp_path / "config.toml"
    config.write_text('token = "${JWT_SECRET}"\n')
    await start_tree(
        sources=[FileSource(config), EnvironmentSource(flat=True)],
        env_file=env_file,
        schema=Service,
    )

    assert Config.model().token == "j"
    warnings = [w for s in (await Config.status()).sources for w in s.warnings]
    assert len(warnings) == 1 and "$JWT_SECRET_KEYY" in warnings[0]
