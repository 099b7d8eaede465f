"""Specification of FileSource: a TOML, JSON or YAML file read as one frozen layer.

The format comes from the suffix or is given; a missing file is an error unless the source is
optional; an invalid file is a ``SourceError`` naming the file and the position; profiles fill
the path; ``${VAR}`` placeholders expand from the environment, never adding keys; a file being
written is not read half way. See README.md and docs/sources.md (FileSource).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import parsers
from otpylib_config.errors import SourceError
from otpylib_config.sources import file as file_module
from otpylib_config.sources.base import NotReady
from otpylib_config.sources.file import FileSource
from otpylib_config.values import Section

from .conftest import StartTree, eventually

TIMEOUT = 5.0

TOML = """
[server]
host = "0.0.0.0"
port = 8000
debug = false

[database]
url = "postgresql://localhost/app"
pool_size = 5
hosts = ["a", "b"]

[database.options]
timeout = 2.5
"""

EXPECTED = {
    "server": {"host": "0.0.0.0", "port": 8000, "debug": False},
    "database": {
        "url": "postgresql://localhost/app",
        "pool_size": 5,
        "hosts": ("a", "b"),
        "options": {"timeout": 2.5},
    },
}


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


async def test_toml_file_becomes_a_frozen_layer(tmp_path: Path) -> None:
    layer = await FileSource(write(tmp_path / "config.toml", TOML)).load()
    assert layer == EXPECTED
    assert type(layer) is Section
    assert type(layer["database"]["options"]) is Section
    assert type(layer["database"]["hosts"]) is tuple


async def test_json_file_becomes_a_frozen_layer(tmp_path: Path) -> None:
    text = """{"server": {"host": "0.0.0.0", "port": 8000, "debug": false},
    "database": {"url": "postgresql://localhost/app", "pool_size": 5, "hosts": ["a", "b"],
                 "options": {"timeout": 2.5}}}"""
    layer = await FileSource(write(tmp_path / "config.json", text)).load()
    assert layer == EXPECTED
    assert type(layer["server"]) is Section


async def test_yaml_file_becomes_a_frozen_layer(tmp_path: Path) -> None:
    text = """
server:
  host: 0.0.0.0
  port: 8000
  debug: false
database:
  url: postgresql://localhost/app
  pool_size: 5
  hosts: [a, b]
  options:
    timeout: 2.5
"""
    for suffix in (".yaml", ".yml"):
        layer = await FileSource(write(tmp_path / f"config{suffix}", text)).load()
        assert layer == EXPECTED
        assert type(layer["database"]) is Section


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.toml", "toml"),
        ("a.json", "json"),
        ("a.yaml", "yaml"),
        ("a.yml", "yaml"),
        ("A.TOML", "toml"),
        ("a.d/x.Json", "json"),
    ],
)
def test_format_is_chosen_by_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    assert FileSource(tmp_path / name).format == fmt


async def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.conf", '{"a": {"b": 1}}')
    source = FileSource(path, format="json")
    assert source.format == "json"
    assert await source.load() == {"a": {"b": 1}}
    toml_in_txt = write(tmp_path / "x.txt", "a = 1")
    assert await FileSource(toml_in_txt, format="toml").load() == {"a": 1}


@pytest.mark.parametrize("name", ["config.ini", "config", "config.toml.bak", "config.cfg"])
def test_unknown_suffix_without_format_is_a_value_error_naming_the_file(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError, match="format") as info:
        FileSource(tmp_path / name)
    assert name in str(info.value)


def test_source_accepts_str_paths_and_has_a_default_name(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    source = FileSource(str(path))
    assert source.path == path
    assert source.name == f"file:{path}"
    assert FileSource(path, name="main").name == "main"


def test_files_are_required_unless_optional(tmp_path: Path) -> None:
    assert FileSource(tmp_path / "a.toml").required is True
    assert FileSource(tmp_path / "a.toml", optional=True).required is False


async def test_missing_required_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    source = FileSource(path)
    with pytest.raises(SourceError, match="not found") as info:
        await source.load()
    assert str(path) in info.value.reason
    assert info.value.source == source.name


async def test_missing_optional_file_is_an_empty_layer(tmp_path: Path) -> None:
    assert await FileSource(tmp_path / "secrets.toml", optional=True).load() == {}


async def test_a_directory_is_a_source_error_even_when_optional(tmp_path: Path) -> None:
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    with pytest.raises(SourceError, match="cannot read") as info:
        await FileSource(directory, optional=True).load()
    assert str(directory) in str(info.value)


async def test_the_file_is_read_again_on_every_load(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "a = 1")
    source = FileSource(path)
    assert await source.load() == {"a": 1}
    write(path, "a = 2\nb = 3")
    assert await source.load() == {"a": 2, "b": 3}


async def test_an_empty_toml_file_is_an_empty_layer(tmp_path: Path) -> None:
    assert await FileSource(write(tmp_path / "c.toml", "")).load() == {}


async def test_an_empty_yaml_file_is_an_empty_layer(tmp_path: Path) -> None:
    assert await FileSource(write(tmp_path / "c.yaml", "# nothing yet\n")).load() == {}


@pytest.mark.parametrize(
    ("name", "text", "fmt", "line"),
    [
        ("bad.toml", "a = 1\nb = \n", "TOML", "line 2"),
        ("bad.json", '{\n  "a": 1,\n  "b": \n}', "JSON", "line 4"),
        ("bad.yaml", "a: [1\nb: 2\n", "YAML", "line 2"),
    ],
)
async def test_an_invalid_file_is_a_source_error_naming_the_file_and_position(
    tmp_path: Path, name: str, text: str, fmt: str, line: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(SourceError) as info:
        await FileSource(path).load()
    message = str(info.value)
    assert str(path) in message
    assert fmt in message
    assert line in message


async def test_a_toml_datetime_is_kept(tmp_path: Path) -> None:
    text = "released = 2024-05-01T12:30:00Z\nday = 2024-05-01\nat = 07:32:00\n"
    layer = await FileSource(write(tmp_path / "c.toml", text)).load()
    assert layer["released"] == datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    assert layer["day"] == datetime.date(2024, 5, 1)
    assert layer["at"] == datetime.time(7, 32)


async def test_toml_infinity_is_kept(tmp_path: Path) -> None:
    layer = await FileSource(write(tmp_path / "c.toml", "limit = inf")).load()
    assert layer["limit"] == float("inf")


async def test_toml_nan_is_rejected_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[limits]\nratio = nan")
    with pytest.raises(SourceError, match=r"limits\.ratio") as info:
        await FileSource(path).load()
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"just a string"', "42"])
async def test_a_json_document_that_is_not_an_object_is_rejected(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "c.json", text)
    with pytest.raises(SourceError, match="table/object") as info:
        await FileSource(path).load()
    assert str(path) in str(info.value)


async def test_a_yaml_document_that_is_a_list_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="table/object"):
        await FileSource(write(tmp_path / "c.yaml", "- a\n- b\n")).load()


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
async def test_invalid_utf8_is_reported_with_the_byte_offset(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"c{suffix}", b'a = "caf\xe9"\n')
    with pytest.raises(SourceError, match="UTF-8") as info:
        await FileSource(path).load()
    assert "byte 8" in str(info.value)
    assert str(path) in str(info.value)


async def test_keys_that_cannot_be_path_segments_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '{"rules": {"tc_*": 1}}')
    with pytest.raises(SourceError, match="rules") as info:
        await FileSource(path).load()
    assert "'tc_*'" in str(info.value)


async def test_yaml_non_string_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a str"):
        await FileSource(write(tmp_path / "c.yaml", "ports:\n  80: http\n")).load()


async def test_yaml_python_tags_are_not_executed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "a: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(SourceError, match="YAML"):
        await FileSource(path).load()


# -- profiles -----------------------------------------------------------------------------


async def test_profile_fills_the_path(tmp_path: Path) -> None:
    from otpylib_config.sources.base import SourceContext

    (tmp_path / "config.dev.toml").write_text("debug = true\n")
    source = FileSource(tmp_path / "config.{profile}.toml")
    source.configure(SourceContext(profile="dev"))

    assert await source.load() == {"debug": True}
    assert source.path == tmp_path / "config.dev.toml"


def test_a_required_profile_file_without_a_profile_names_what_to_set(tmp_path: Path) -> None:
    from otpylib_config.sources.base import SourceContext

    source = FileSource(tmp_path / "config.{profile}.toml")
    with pytest.raises(SourceError, match=r"needs a profile") as info:
        source.configure(SourceContext(profile=None, profile_env="APP_PROFILE"))
    assert "APP_PROFILE" in str(info.value)
    assert "ConfigSpec(profile=...)" in str(info.value)


async def test_an_optional_profile_file_without_a_profile_is_an_empty_layer(
    tmp_path: Path,
) -> None:
    from otpylib_config.sources.base import SourceContext

    (tmp_path / "config.dev.toml").write_text("debug = true\n")
    source = FileSource(tmp_path / "config.{profile}.toml", optional=True)
    source.configure(SourceContext(profile=None))

    assert await source.load() == {}
    assert not source.pushes  # nothing to watch until a profile is set


def test_the_profile_comes_from_the_spec_or_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otpylib_config import ConfigSpec

    monkeypatch.setenv("APP_PROFILE", "staging")
    assert ConfigSpec(profile_env="APP_PROFILE").resolved_profile() == "staging"
    assert ConfigSpec(profile="dev", profile_env="APP_PROFILE").resolved_profile() == "dev"
    monkeypatch.delenv("APP_PROFILE")
    assert ConfigSpec(profile_env="APP_PROFILE").resolved_profile() is None
    assert ConfigSpec(profile_env="APP_PROFILE").resolved_profile({"APP_PROFILE": "qa"}) == "qa"


def test_the_profile_can_come_from_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpylib_config import ConfigSpec

    monkeypatch.delenv("APP_PROFILE", raising=False)
    (tmp_path / ".env").write_text("APP_PROFILE=dev\n")
    spec = ConfigSpec(profile_env="APP_PROFILE", env_file=tmp_path / ".env")
    assert spec.resolved_profile() == "dev"
    monkeypatch.setenv("APP_PROFILE", "prod")  # the process wins
    assert spec.resolved_profile() == "prod"


def _profile_tree(tmp_path: Path) -> list[FileSource]:
    (tmp_path / "config.toml").write_text("debug = false\nname = 'base'\n")
    (tmp_path / "config.dev.toml").write_text("debug = true\n")
    return [
        FileSource(tmp_path / "config.toml"),
        FileSource(tmp_path / "config.{profile}.toml", optional=True),
    ]


async def test_a_tree_takes_its_profile_from_the_env_file(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpylib_config import Config

    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    (tmp_path / ".env").write_text("CONFIG_PROFILE=dev\n")
    await start_tree(sources=_profile_tree(tmp_path), env_file=tmp_path / ".env")

    assert await Config.get("debug") is True  # config.dev.toml
    assert await Config.get("name") == "base"
    assert (await Config.status()).profile == "dev"


async def test_a_tree_without_a_profile_starts_with_its_optional_profile_file_empty(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpylib_config import Config

    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    await start_tree(sources=_profile_tree(tmp_path))

    assert await Config.get("debug") is False
    status = await Config.status()
    assert status.profile is None
    assert status.healthy


async def test_a_tree_with_a_required_profile_file_and_no_profile_fails_naming_the_variable(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    with pytest.raises(SourceError, match="CONFIG_PROFILE"):
        await start_tree(sources=[FileSource(tmp_path / "config.{profile}.toml")])


async def test_a_bad_env_file_fails_the_start_when_it_would_pick_the_profile(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFIG_PROFILE", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\nthis is not a statement\n")
    with pytest.raises(SourceError) as info:
        await start_tree(sources=_profile_tree(tmp_path), env_file=env_file)
    assert str(env_file) in str(info.value)
    assert "line 2" in str(info.value)


def test_secret_and_watch_flags(tmp_path: Path) -> None:
    source = FileSource(tmp_path / "secrets.toml", secret=True, watch=False)
    assert source.secret and not source.pushes
    assert FileSource(tmp_path / "a.toml").pushes


# -- ${VAR} placeholders (see also test_interpolate.py) ------------------------------------

PLACEHOLDERS = {
    "toml": """
[server]
host = "${HOST:-0.0.0.0}"
port = ${PORT:8000}   # template form: a number, a bool or one string, nothing more
debug = ${DEBUG:-false}

[database]
url = "postgresql://${DB_USER}@${DB_HOST:-localhost}/app"
hosts = ["${DB_HOST:-localhost}", ${REPLICA:-replica}]
literal = '${DB_USER} in a literal string is expanded too'
escaped = "$${DB_USER}"
""",
    "json": """{
  "server": {"host": "${HOST:-0.0.0.0}", "port": ${PORT:8000}, "debug": ${DEBUG:-false}},
  "database": {"url": "postgresql://${DB_USER}@${DB_HOST:-localhost}/app",
               "hosts": ["${DB_HOST:-localhost}", ${REPLICA:-replica}],
               "literal": "${DB_USER} in a literal string is expanded too",
               "escaped": "$${DB_USER}"}
}""",
    "yaml": """
server:
  host: "${HOST:-0.0.0.0}"
  port: ${PORT:8000}   # template form
  debug: ${DEBUG:-false}
database:
  url: postgresql://${DB_USER}@${DB_HOST:-localhost}/app
  hosts:
    - ${DB_HOST:-localhost}
    - ${REPLICA:-replica}
  literal: '${DB_USER} in a literal string is expanded too'
  escaped: "$${DB_USER}"
""",
}


def placeholder_file(tmp_path: Path, fmt: str, text: str | None = None) -> Path:
    return write(tmp_path / f"config.{fmt}", PLACEHOLDERS[fmt] if text is None else text)


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
async def test_placeholders_expand_from_the_given_environment(tmp_path: Path, fmt: str) -> None:
    environ = {"DB_USER": "app", "PORT": "9000", "DEBUG": "true", "REPLICA": "r2"}
    layer = await FileSource(placeholder_file(tmp_path, fmt), environ=environ).load()
    assert layer == {
        "server": {"host": "0.0.0.0", "port": 9000, "debug": True},
        "database": {
            "url": "postgresql://app@localhost/app",
            "hosts": ("localhost", "r2"),
            "literal": "app in a literal string is expanded too",
            "escaped": "${DB_USER}",
        },
    }


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
async def test_template_defaults_are_typed_and_values_are_never_re_expanded(
    tmp_path: Path, fmt: str
) -> None:
    environ = {"DB_USER": "${PORT}", "DB_HOST": "$${X}", "REPLICA": "${DB_USER}", "PORT": "80"}
    layer = await FileSource(placeholder_file(tmp_path, fmt), environ=environ).load()
    assert layer["server"] == {"host": "0.0.0.0", "port": 80, "debug": False}
    assert layer["database"]["url"] == "postgresql://${PORT}@$${X}/app"
    assert layer["database"]["hosts"] == ("$${X}", "${DB_USER}")


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
async def test_an_empty_variable_counts_as_unset_only_for_colon_dash(
    tmp_path: Path, fmt: str
) -> None:
    environ = {"DB_USER": "app", "PORT": "", "DEBUG": "", "HOST": ""}
    layer = await FileSource(placeholder_file(tmp_path, fmt), environ=environ).load()
    assert layer["server"] == {"host": "0.0.0.0", "port": "", "debug": False}


INJECTIONS = [
    "1\n[evil]\nx = 1",
    '1"\nevil = true\n"',
    "x]\n[evil]",
    '", "evil": "1',
    "a = 1",
    "1, evil: 2",
    "1 # comment",
    "]]\n[[evil]]",
    "'''\nevil = 1\n'''",
    '"""\nevil = 1\n"""',
    "1}\nevil: {x: 1",
    "\\",
    "x\r\nevil: 1",
    "\x00\x7f\x1b[31m",
]


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
@pytest.mark.parametrize("value", INJECTIONS)
async def test_no_environment_value_can_add_keys_or_tables(
    tmp_path: Path, fmt: str, value: str
) -> None:
    environ = {name: value for name in ("DB_USER", "PORT", "DEBUG", "REPLICA", "DB_HOST", "HOST")}
    layer = await FileSource(placeholder_file(tmp_path, fmt), environ=environ).load()
    assert list(layer) == ["server", "database"]
    assert list(layer["server"]) == ["host", "port", "debug"]
    assert list(layer["database"]) == ["url", "hosts", "literal", "escaped"]
    assert layer["server"]["port"] == value
    assert layer["database"]["hosts"] == (value, value)


async def test_a_missing_variable_names_the_file_the_key_and_the_variable(tmp_path: Path) -> None:
    path = placeholder_file(tmp_path, "toml")
    source = FileSource(path, environ={})
    with pytest.raises(SourceError) as info:
        await source.load()
    message = str(info.value)
    assert info.value.source == source.name
    assert str(path) in info.value.reason
    assert "key database.url" in message
    assert "DB_USER is not set" in message


@pytest.mark.parametrize(
    ("fmt", "text", "line", "key"),
    [
        ("toml", "[server]\nhost = 'h'\nport = ${APP_PORT}\n", 3, "server.port"),
        ("json", '{"server": {\n  "port": ${APP_PORT}}}', 2, "port"),
        ("yaml", "server:\n  port: ${APP_PORT}\n", 2, "port"),
        ("toml", "ports = [\n  1,\n  ${APP_PORT},\n]\n", 3, None),
    ],
)
async def test_a_missing_template_variable_names_the_file_the_line_the_key_and_the_variable(
    tmp_path: Path, fmt: str, text: str, line: int, key: str | None
) -> None:
    path = placeholder_file(tmp_path, fmt, text)
    with pytest.raises(SourceError) as info:
        await FileSource(path, environ={}).load()
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}" in message
    assert "APP_PORT is not set" in message
    if key is not None:
        assert f"key {key}:" in message


@pytest.mark.parametrize(
    "text",
    ['a = "${"\n', "a = '${1X}'\n", 'a = "${X"\n', "a = ${X\n", "${X} = 1\n", "[${X}]\n"],
)
async def test_a_malformed_placeholder_is_a_source_error_naming_the_file(
    tmp_path: Path, text: str
) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(SourceError) as info:
        await FileSource(path, environ={"X": "x"}).load()
    assert str(path) in str(info.value)
    assert "placeholder" in str(info.value)


async def test_placeholders_in_comments_and_strings_do_not_confuse_the_template_lexer(
    tmp_path: Path,
) -> None:
    text = """# port = ${NOPE}  (comments are not expanded)
a = "# ${V} \\" ${V:-x} = ${V}"   # ${NOPE}
b = '${V} " ${V}'
c = \"\"\"
[evil] ${V}
\"\"\"
d = [${V}, "${V}]", # ${NOPE} ]
     ${V}]
e = { f = ${V}, "${V}" = ${V} }
"""
    layer = await FileSource(write(tmp_path / "c.toml", text), environ={"V": "7"}).load()
    assert layer == {
        "a": '# 7 " 7 = 7',
        "b": '7 " 7',
        "c": "[evil] 7\n",
        "d": (7, "7]", 7),
        "e": {"f": 7, "${V}": 7},
    }


async def test_a_reload_sees_a_changed_environment(tmp_path: Path) -> None:
    environ = {"PORT": "8000", "DB_USER": "app"}
    source = FileSource(placeholder_file(tmp_path, "toml"), environ=environ)
    assert (await source.load())["server"]["port"] == 8000
    environ["PORT"] = "9000"
    environ["DB_USER"] = "ops"
    layer = await source.load()
    assert layer["server"]["port"] == 9000
    assert layer["database"]["url"] == "postgresql://ops@localhost/app"
    del environ["DB_USER"]
    with pytest.raises(SourceError, match="DB_USER"):
        await source.load()


async def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTPYLIB_CONFIG_TEST_PORT", "1234")
    path = write(tmp_path / "c.toml", "port = ${OTPYLIB_CONFIG_TEST_PORT}\n")
    assert await FileSource(path).load() == {"port": 1234}


async def test_a_file_without_a_dollar_skips_interpolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import otpylib_config.sources.file as file_module

    def fail(*_: object) -> object:
        raise AssertionError("interpolation ran")

    monkeypatch.setattr(file_module, "expand_file", fail)
    keys = "\n".join(f'key_{i} = "value {i}"' for i in range(10_000))
    layer = await FileSource(write(tmp_path / "big.toml", keys)).load()
    assert len(layer) == 10_000


async def test_the_example_service_config_loads() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "service" / "config.toml"
    layer = await FileSource(path, environ={}).load()
    assert layer["server"]["port"] == 8000
    assert layer["database"]["url"] == "postgresql://app@localhost:5432/app"
    layer = await FileSource(path, environ={"PORT": "9000", "DB_HOST": "db"}).load()
    assert layer["server"]["port"] == 9000
    assert layer["database"]["url"] == "postgresql://app@db:5432/app"


async def test_a_yaml_error_never_quotes_the_document(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("password: hunter2-secret\n- b\n")

    with pytest.raises(SourceError, match=r"invalid YAML: .* at line 2, column 1") as failure:
        await FileSource(path, secret=True).load()

    assert "hunter2" not in str(failure.value)


# -- complete content only (the watched cases are in test_file_consistency.py) -------------


@pytest.fixture
def unprovable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No read can be proven: without a watch only timestamps can, and none is old enough."""
    monkeypatch.setattr(file_module, "SETTLE", 3600.0)
    monkeypatch.setattr(file_module, "MAX_WRITE_WAIT", 0.05)


@pytest.mark.usefixtures("unprovable")
async def test_a_file_never_read_whole_is_a_source_error_until_a_layer_was_accepted(
    tmp_path: Path,
) -> None:
    """``NotReady`` keeps the last layer; before there is one, a required file must fail."""
    source = FileSource(write(tmp_path / "c.toml", "a = 1"))

    with pytest.raises(SourceError, match="could not be read whole") as info:
        await source.load()
    assert str(source.path) in info.value.reason

    await source.accepted(Section({"a": 0}))
    with pytest.raises(NotReady, match="kept changing"):
        await source.load()


async def test_a_file_changed_just_now_is_read_once_its_timestamps_settle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    read_sync = FileSource._read_sync

    def counting(self: FileSource, *args: Any) -> Any:
        read = read_sync(self, *args)
        assert isinstance(read, file_module._Read)  # the file is new: no outcome to keep
        reads.append(read.length)
        return read

    monkeypatch.setattr(FileSource, "_read_sync", counting)
    monkeypatch.setattr(file_module, "SETTLE", 0.2)
    path = write(tmp_path / "c.toml", "a = 1")

    assert await FileSource(path).load() == {"a": 1}
    assert len(reads) == 2  # too fresh to trust, then settled


async def test_loads_that_arrive_while_one_reads_share_the_next_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reading load saw the file before they asked, and it was saved since: they need a
    read of their own, one."""
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    reads: list[int] = []
    release = threading.Event()
    read_sync = FileSource._read_sync

    def held(self: FileSource, *args: Any) -> Any:
        read = read_sync(self, *args)
        reads.append(1)
        release.wait(TIMEOUT)
        return read

    monkeypatch.setattr(FileSource, "_read_sync", held)
    path = write(tmp_path / "c.toml", "a = 1")
    source = FileSource(path)
    first = asyncio.ensure_future(source.load())
    await eventually(lambda: len(reads) == 1)
    later = [asyncio.ensure_future(source.load()) for _ in range(4)]
    await asyncio.sleep(0.01)
    write(path, "a = 22")
    release.set()

    first_layer, *later_layers = await asyncio.gather(first, *later)
    assert first_layer == {"a": 1}
    assert later_layers == [{"a": 22}] * 4
    assert len({id(layer) for layer in later_layers}) == 1  # one read gave them all
    assert len(reads) == 2


async def test_a_cancelled_load_leaves_the_read_to_those_sharing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    source = FileSource(write(tmp_path / "c.toml", "a = 1"))
    first, second = asyncio.ensure_future(source.load()), asyncio.ensure_future(source.load())
    await asyncio.sleep(0)
    first.cancel()
    assert await second == {"a": 1}
    assert first.cancelled()
    assert await source.load() == {"a": 1}  # nothing left behind


# -- an unchanged file is not read again (module doc of sources/file.py; docs/sources.md) --


class Parses:
    """Counts the parses of each format, and the threads they ran in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[threading.Thread] = []
        for fmt, parser in list(parsers._PARSERS.items()):
            monkeypatch.setitem(parsers._PARSERS, fmt, self._counting(parser))

    def _counting(self, parser: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        def parse(data: bytes) -> Any:
            self.threads.append(threading.current_thread())
            return parser(data)

        return parse

    @property
    def count(self) -> int:
        return len(self.threads)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Parses:
    return Parses(monkeypatch)


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files FileSource opens (its module's ``open``)."""
    opened: list[str] = []

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(file_module, "open", counting, raising=False)
    return opened


async def test_an_unchanged_file_gives_the_same_layer_without_reading_or_parsing(
    tmp_path: Path, parses: Parses, opens: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "SETTLE", 0.0)  # every read's stamp is trusted
    source = FileSource(write(tmp_path / "c.toml", "a = 1"))
    first = await source.load()
    assert (parses.count, len(opens)) == (1, 1)

    assert await source.load() is first
    assert await source.load() is first
    assert (parses.count, len(opens)) == (1, 1)

    write(source.path, "a = 2\n")
    assert await source.load() == {"a": 2}
    assert parses.count == 2


async def test_a_touched_or_rewritten_file_with_the_same_bytes_gives_the_same_layer_unparsed(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    source = FileSource(write(tmp_path / "c.toml", "a = 1"))
    first = await source.load()

    os.utime(source.path)
    assert await source.load() is first
    write(source.path, "a = 1")
    assert await source.load() is first
    assert parses.count == 1


async def test_a_rewrite_its_stamp_cannot_show_is_caught_by_the_hash(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read soon after the file's last change (within a timestamp tick) cannot trust the
    stamp: a rewrite of the same size in the same tick looks unchanged. Timestamps that do
    not move stand in for that tick here."""
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    monkeypatch.setattr(file_module, "_trusted", lambda started_ns, st: False)
    real_stamp = file_module._stamp_of
    monkeypatch.setattr(
        file_module, "_stamp_of", lambda real, st: (*real_stamp(real, st)[:4], 0, 0)
    )
    path = write(tmp_path / "c.toml", "a = 1")
    source = FileSource(path)
    first = await source.load()
    assert await source.load() is first  # read again, the same bytes: not parsed
    assert parses.count == 1

    with open(path, "r+") as handle:  # in place: the same inode and size
        handle.write("a = 2")

    assert await source.load() == {"a": 2}
    assert parses.count == 2


async def test_a_file_read_too_soon_after_its_change_is_hashed_until_its_stamp_can_tell(
    tmp_path: Path, opens: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = [False]
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    monkeypatch.setattr(file_module, "_trusted", lambda started_ns, st: trust[0])
    source = FileSource(write(tmp_path / "c.toml", "a = 1"))
    first = await source.load()
    assert await source.load() is first
    assert len(opens) == 2  # the second load read the bytes to compare them

    trust[0] = True  # this read came late enough: its stamp is trusted from now on
    assert await source.load() is first
    assert await source.load() is first
    assert len(opens) == 3


async def test_an_interpolated_file_is_read_again_when_a_variable_it_uses_changed(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    environ = {"PORT": "8000", "OTHER": "x"}
    path = write(tmp_path / "c.toml", 'port = ${PORT}\nhost = "${HOST:-localhost}"\n')
    source = FileSource(path, environ=environ)
    first = await source.load()

    environ["OTHER"] = "y"  # not one it uses
    assert await source.load() is first
    assert parses.count == 1

    environ["HOST"] = "db"  # unset before: its default was used
    assert await source.load() == {"port": 8000, "host": "db"}
    environ["PORT"] = "9000"
    assert await source.load() == {"port": 9000, "host": "db"}
    assert parses.count == 3


async def test_a_variable_from_the_env_file_counts_too(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpylib_config.environment import Environment
    from otpylib_config.sources.base import SourceContext

    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    env_file = write(tmp_path / ".env", "PORT=8000\n")
    source = FileSource(write(tmp_path / "c.toml", "port = ${PORT}\n"), environ={})
    source.configure(SourceContext(environment=Environment(env_file)))
    first = await source.load()
    assert await source.load() is first

    write(env_file, "PORT=9000\n")
    assert await source.load() == {"port": 9000}
    assert parses.count == 2


async def test_an_unchanged_invalid_file_fails_again_the_same_way_unparsed(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    source = FileSource(write(tmp_path / "c.toml", "a = 1\nb = \n"))
    with pytest.raises(SourceError) as first:
        await source.load()
    with pytest.raises(SourceError) as again:
        await source.load()
    assert str(again.value) == str(first.value) and "line 2" in str(again.value)
    assert again.value is not first.value  # raised anew, with a traceback of its own
    assert parses.count == 1


async def test_an_unchanged_missing_file_gives_the_same_outcome(
    tmp_path: Path, opens: list[str]
) -> None:
    optional = FileSource(tmp_path / "local.toml", optional=True)
    empty = await optional.load()
    assert await optional.load() is empty
    required = FileSource(tmp_path / "main.toml")
    for _ in range(2):
        with pytest.raises(SourceError, match="not found"):
            await required.load()
    assert opens == [str(tmp_path / "local.toml"), str(tmp_path / "main.toml")]

    write(optional.path, "a = 1")
    assert await optional.load() == {"a": 1}


async def test_an_optional_profile_file_without_a_profile_is_one_empty_layer(
    tmp_path: Path,
) -> None:
    from otpylib_config.sources.base import SourceContext

    source = FileSource(tmp_path / "config.{profile}.toml", optional=True)
    source.configure(SourceContext(profile=None))
    assert await source.load() is await source.load()


async def test_a_profile_file_is_skipped_while_unchanged(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otpylib_config.sources.base import SourceContext

    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    write(tmp_path / "config.dev.toml", "debug = true\n")
    source = FileSource(tmp_path / "config.{profile}.toml")
    source.configure(SourceContext(profile="dev"))
    assert await source.load() is await source.load()
    assert parses.count == 1


async def test_a_timer_or_request_reload_of_an_unchanged_file_keeps_the_layer_in_use(
    start_tree: StartTree, tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reload can then skip the source by identity: nothing to merge or diff."""
    from otpylib_config import Config
    from otpylib_config.client import current_table

    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    source = FileSource(write(tmp_path / "c.toml", "a = 1\n"), watch=False)
    await start_tree(sources=[source])
    state = current_table().sources[source.name]
    layer = state.layer

    assert (await Config.reload()).errors == {}
    assert state.layer is layer
    assert parses.count == 1

    write(source.path, "a = 2\n")
    await Config.reload()
    assert Config.get_nowait("a") == 2


async def test_a_reload_after_a_new_tree_reads_the_file_again(
    tmp_path: Path, parses: Parses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one tree's reads learnt is not another's (``configure`` forgets it)."""
    from otpylib_config.sources.base import SourceContext

    monkeypatch.setattr(file_module, "SETTLE", 0.0)
    source = FileSource(write(tmp_path / "c.toml", "a = 1\n"))
    await source.load()
    source.configure(SourceContext())
    await source.load()
    assert parses.count == 2


# -- off the event loop ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a = 1\n", "a = ${A}\n"], ids=["plain", "interpolated"])
async def test_the_file_is_parsed_off_the_event_loops_thread(
    tmp_path: Path, parses: Parses, text: str
) -> None:
    await FileSource(write(tmp_path / "c.toml", text), environ={"A": "1"}).load()
    assert parses.threads and threading.current_thread() not in parses.threads


class LoopOnly(dict[str, str]):
    """Variables that may be read on the event loop's thread only: the loop may be changing
    them (``os.environ``), and a worker iterating them could fail."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.loop_thread = threading.current_thread()

    def _check(self) -> None:
        assert threading.current_thread() is self.loop_thread, "read off the loop"

    def __iter__(self) -> Iterator[str]:
        self._check()
        return super().__iter__()

    def __getitem__(self, name: str) -> str:
        self._check()
        return super().__getitem__(name)

    def keys(self) -> Any:
        self._check()
        return super().keys()


async def test_the_process_variables_are_copied_on_the_loop_for_the_worker(
    tmp_path: Path,
) -> None:
    environ = LoopOnly({"PORT": "8000"})
    source = FileSource(write(tmp_path / "c.toml", "port = ${PORT}\n"), environ=environ)
    assert await source.load() == {"port": 8000}
    environ["PORT"] = "9000"
    assert await source.load() == {"port": 9000}


# -- cold start ---------------------------------------------------------------------------


def test_importing_the_package_imports_no_watchdog_and_no_yaml() -> None:
    """A tree without a watched file never needs watchdog; PyYAML only for a YAML file."""
    code = "import sys, otpylib_config; print('watchdog' in sys.modules, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_watchdog_is_imported_once_a_file_is_watched(
    start_tree: StartTree, tmp_path: Path
) -> None:
    source = FileSource(write(tmp_path / "c.toml", "a = 1\n"))
    await start_tree(sources=[source])
    await eventually(lambda: source._file is not None and source._file.live)
    assert "watchdog" in sys.modules
