"""Specification of ArgsSource: command-line arguments as a layer."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest

from otpylib_config import ArgsSource, Config, DefaultsSource, EnvironmentSource, LoadError
from otpylib_config.errors import SourceError
from otpylib_config.schema_shape import shape_of
from otpylib_config.sources.base import SourceContext
from otpylib_config.values import Section

from .conftest import StartTree


async def load(argv: list[str], schema: Any = None, **options: Any) -> Section:
    source = ArgsSource(argv, **options)
    source.configure(SourceContext(shape=shape_of(schema)))
    return await source.load()


# -- flags to paths -------------------------------------------------------------------------


async def test_a_dotted_flag_sets_its_path_with_an_equals_sign_or_the_next_token() -> None:
    layer = await load(["--server.port=8082", "--server.host", "0.0.0.0"])
    assert layer == {"server": {"port": 8082, "host": "0.0.0.0"}}
    assert type(layer) is Section and type(layer["server"]) is Section


async def test_a_dash_inside_a_segment_is_an_underscore() -> None:
    layer = await load(["--websocket.max-connections=5000"])
    assert layer == {"websocket": {"max_connections": 5000}}


async def test_a_mapping_names_flat_flags_with_or_without_their_dashes() -> None:
    mapping = {"port": "server.port", "--max-connections": "websocket.max_connections"}
    layer = await load(["--port", "8082", "--max-connections=5000"], mapping=mapping)
    assert layer == {"server": {"port": 8082}, "websocket": {"max_connections": 5000}}


async def test_a_flag_without_a_value_is_true() -> None:
    layer = await load(["--debug.sql", "--server.port=1", "--feature.on"])
    assert layer == {"debug": {"sql": True}, "server": {"port": 1}, "feature": {"on": True}}


async def test_a_flag_given_twice_takes_the_last_value() -> None:
    assert await load(["--a.b=1", "--a.b=2"]) == {"a": {"b": 2}}


async def test_values_are_coerced_as_the_environments_are() -> None:
    layer = await load(["--a.n=-5", "--a.f=0.5", "--a.b=false", "--a.l=[1,2]", "--a.s=text"])
    assert layer == {"a": {"n": -5, "f": 0.5, "b": False, "l": (1, 2), "s": "text"}}


async def test_with_a_schema_a_string_field_keeps_the_text() -> None:
    class Server(pydantic.BaseModel):
        token: str = ""
        port: int = 0

    class Settings(pydantic.BaseModel):
        server: Server = Server()

    layer = await load(["--server.token=0123", "--server.port=80"], schema=Settings)
    assert layer == {"server": {"token": "0123", "port": 80}}


async def test_the_same_arguments_give_the_same_layer_object_every_load() -> None:
    source = ArgsSource(["--a.b=1"])
    source.configure(SourceContext())
    assert await source.load() is await source.load()


def test_argv_defaults_to_the_processs_own_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["prog", "--a.b=1"])
    assert ArgsSource()._given == [("a.b", "1", True)]


# -- unknown input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port=1"], "--port: unknown flag"),
        (["serve"], "serve: positional argument"),
        (["-p", "1"], "-p: short option"),
        (["--a.b=1", "--", "--c.d=2"], "--c.d=2: positional argument"),
        (["--a..b=1"], "--a..b"),
        (["--=x"], "--=x: a flag needs a name"),
        (["--="], "--=: a flag needs a name"),
    ],
)
async def test_unknown_input_is_an_error_naming_the_token(argv: list[str], named: str) -> None:
    with pytest.raises(SourceError) as error:
        await load(argv)
    assert named in str(error.value) and error.value.source == "args"


async def test_ignore_unknown_skips_what_is_not_configuration() -> None:
    argv = ["--profile=dev", "serve", "-v", "--server.port=8082"]
    assert await load(argv, ignore_unknown=True) == {"server": {"port": 8082}}


async def test_a_flag_for_no_field_of_the_schema_is_an_error() -> None:
    class Settings(pydantic.BaseModel):
        port: int = 0

    with pytest.raises(SourceError, match="--prot: prot is no field of the schema"):
        await load(["--prot=1"], schema=Settings, mapping={"prot": "prot"})


async def test_a_path_clash_between_flags_is_an_error_naming_both() -> None:
    with pytest.raises(SourceError, match=r"--a\.b"):
        await load(["--a=1", "--a.b=2"], mapping={"a": "a"})


def test_argv_that_is_not_text_is_refused() -> None:
    with pytest.raises(TypeError, match="sequence of str"):
        ArgsSource([b"--a.b=1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        ArgsSource("--a.b=1")


async def test_ignore_unknown_still_reports_a_mapped_flag_for_no_field_of_the_schema() -> None:
    class Settings(pydantic.BaseModel):
        port: int = 0

    with pytest.raises(SourceError, match="--port: prot is no field of the schema"):
        await load(["--port=5"], schema=Settings, mapping={"port": "prot"}, ignore_unknown=True)


# -- argparse -------------------------------------------------------------------------------


async def test_from_namespace_takes_mapped_and_dotted_options_and_leaves_the_rest() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--server.host")
    parser.add_argument("--log.level")  # not given: None, sets nothing
    namespace = parser.parse_args(["--profile=dev", "--port=8082", "--server.host=h"])
    mapping = {"port": "server.port", "max-connections": "websocket.max_connections"}

    source = ArgsSource.from_namespace(namespace, mapping)
    source.configure(SourceContext())

    assert await source.load() == {"server": {"port": 8082, "host": "h"}}
    assert source.origin(("server", "port")) == "command line --port"


async def test_from_namespace_with_its_parser_skips_options_left_at_their_default() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--debug", action="store_true")  # False when not given
    parser.add_argument("--workers", type=int, default=4)
    namespace = parser.parse_args(["--workers=8"])
    mapping = {"debug": "app.debug", "workers": "app.workers"}

    source = ArgsSource.from_namespace(namespace, mapping, parser=parser)
    source.configure(SourceContext())

    assert await source.load() == {"app": {"workers": 8}}  # debug stays the lower layer's


# -- in a tree ------------------------------------------------------------------------------


async def test_its_place_in_sources_decides_precedence_and_explain_names_the_flag(
    start_tree: StartTree,
) -> None:
    environ = {"APP_SERVER__PORT": "8001", "APP_SERVER__HOST": "env-host"}
    await start_tree(
        sources=[
            DefaultsSource({"server": {"port": 80, "host": "localhost", "workers": 1}}),
            EnvironmentSource("APP_", environ=environ),
            ArgsSource(["--port=8082"], mapping={"port": "server.port"}),
        ]
    )

    assert Config.get_nowait("server") == {"port": 8082, "host": "env-host", "workers": 1}
    explanation = await Config.explain("server.port")
    assert explanation.contributions[0].origin == "command line --port"
    assert [c.value for c in explanation.contributions] == [8082, 8001, 80]


async def test_a_bad_command_line_fails_the_start_with_the_flag_named(
    start_tree: StartTree,
) -> None:
    with pytest.raises(LoadError, match="--prot: unknown flag"):
        await start_tree(sources=[DefaultsSource({}), ArgsSource(["--prot=1"])])


def test_a_real_command_line_reaches_the_configuration(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import otpylib_config as oc

            async def main():
                spec = oc.ConfigSpec(sources=[
                    oc.DefaultsSource({"server": {"port": 80}}),
                    oc.ArgsSource(mapping={"port": "server.port"}, ignore_unknown=True),
                ])
                async with oc.running(spec):
                    print(oc.Config.get_nowait("server.port"))

            asyncio.run(main())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), "--profile=dev", "--port", "8082"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "8082"
