"""One environment for the tree: the process's variables over ``ConfigSpec.env_file``, seen
by every EnvironmentSource, every file's placeholders and ``profile_env``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import Config, EnvironmentSource, FileSource
from otpylib_config.environment import EnvFileError, Environment, PlaceholderNames
from otpylib_config.errors import SourceError

from .conftest import FakeSource, StartTree

# -- the environment on its own ------------------------------------------------------------


def test_the_process_wins_over_the_file_and_origins_say_which(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("A=file\nB=file\n")
    variables = Environment(env_file, environ={"B": "process", "C": "process"}).variables()

    assert dict(variables) == {"A": "file", "B": "process", "C": "process"}
    assert variables.from_file == {"A"}
    assert variables.file_names == {"A", "B"}
    assert variables.origin("A") == f"{env_file}: A"
    assert variables.origin("B") == "$B"


def test_without_a_file_it_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTPYLIBCFGTEST_X", "1")
    assert Environment().variables()["OTPYLIBCFGTEST_X"] == "1"
    assert Environment().process is os.environ


def test_it_is_read_again_each_time_it_is_asked(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\n")
    process: dict[str, str] = {}
    environment = Environment(env_file, environ=process)
    assert dict(environment.variables()) == {"A": "1"}

    env_file.write_text("A=2\n")
    process["B"] = "3"
    assert dict(environment.variables()) == {"A": "2", "B": "3"}


def test_a_named_file_that_is_missing_is_an_error_unless_optional(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="env file not found") as info:
        Environment(tmp_path / ".env", environ={}).variables()
    assert str(tmp_path / ".env") in str(info.value)
    assert dict(Environment(tmp_path / ".env", optional=True, environ={}).variables()) == {}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("A=1\nnot a statement\n", "line 2"),
        ('A=1\n\n# comment\nB="open\nC=1\n', "line 4"),
        ("A=1\nbad one\nB=2\nbad two\n", "lines 2, 4"),
    ],
)
def test_a_line_python_dotenv_cannot_parse_is_an_error_naming_file_and_line(
    tmp_path: Path, text: str, where: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    with pytest.raises(EnvFileError) as info:
        Environment(env_file, environ={}).variables()
    assert str(info.value).startswith(f"{env_file}: {where}: ")


def test_dotenv_syntax_is_python_dotenv_s(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "export A=1\nB='single # kept'\nC=\"two\\nlines\"\nD=x # comment\nE\nF=${A}-f\n"
    )
    variables = Environment(env_file, environ={}).variables()
    assert dict(variables) == {
        "A": "1",
        "B": "single # kept",
        "C": "two\nlines",
        "D": "x",
        "F": "1-f",
    }


def test_an_override_replaces_parts_and_shares_the_claims(tmp_path: Path) -> None:
    tree_file, own_file = tmp_path / "tree.env", tmp_path / "own.env"
    tree_file.write_text("A=tree\n")
    own_file.write_text("A=own\n")
    tree = Environment(tree_file, environ={"P": "1"})

    assert dict(tree.override(env_file=own_file).variables()) == {"A": "own", "P": "1"}
    assert dict(tree.override(environ={"Q": "2"}).variables()) == {"A": "tree", "Q": "2"}
    assert tree.override() is tree

    owner = object()
    tree.override(environ={}).claim(owner, lambda name: name == "X")
    assert tree.claimed("X", besides=None)
    assert not tree.claimed("X", besides=owner)
    assert not tree.claimed("Y", besides=None)


def test_placeholder_names_follow_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    names = PlaceholderNames(config)
    assert not names("A")  # no file yet

    config.write_text('a = "${A}"\nb = ${B:-1}\nc = "$${C}"\nd = "$D"\n')
    assert names.names() == {"A", "B", "C"}

    config.write_text('e = "${E_2}"\n')
    assert names.names() == {"E_2"}


# -- in a tree ----------------------------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("CONFIG_PROFILE", "DB_HOST", "PORT", "APP_NAME", "APP_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _placeholder_file(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text('url = "postgres://${DB_HOST}/app"\nport = ${PORT:-1}\n')
    return config


async def test_placeholders_and_environment_sources_see_the_env_file(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_HOST=db.local\nPORT=8001\nAPP_NAME=svc\n")
    await start_tree(
        sources=[FileSource(_placeholder_file(tmp_path)), EnvironmentSource("APP_")],
        env_file=env_file,
    )

    assert await Config.get("url") == "postgres://db.local/app"
    assert await Config.get("port") == 8001
    assert await Config.get("name") == "svc"
    explained = await Config.explain("name")
    assert explained.origin == f"{env_file}: APP_NAME"


async def test_the_process_wins_and_a_reload_sees_changes(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_HOST=db.local\nAPP_NAME=svc\n")
    clean_environ.setenv("DB_HOST", "db.process")
    await start_tree(
        sources=[FileSource(_placeholder_file(tmp_path), watch=False), EnvironmentSource("APP_")],
        env_file=env_file,
    )
    assert await Config.get("url") == "postgres://db.process/app"

    clean_environ.delenv("DB_HOST")
    env_file.write_text("DB_HOST=db.edited\nAPP_NAME=svc2\n")
    result = await Config.reload()

    assert result.errors == {}
    assert await Config.get("url") == "postgres://db.edited/app"
    assert await Config.get("name") == "svc2"


async def test_a_bad_env_file_line_fails_the_start_naming_file_and_line(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("APP_NAME=svc\nAPP_PORT='8001\n")
    with pytest.raises(SourceError) as info:
        await start_tree(sources=[EnvironmentSource("APP_")], env_file=env_file)
    assert f"{env_file}: line 2:" in str(info.value)


async def test_a_bad_env_file_fails_the_start_through_placeholders_alone(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_HOST=db\nbroken line\n")
    with pytest.raises(SourceError) as info:
        await start_tree(
            sources=[FileSource(_placeholder_file(tmp_path))],
            env_file=env_file,
            profile_env=None,
        )
    assert f"{env_file}: line 2:" in str(info.value)
    assert "file:" in str(info.value)


async def test_a_bad_env_file_on_reload_keeps_the_last_good_layers(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_HOST=db.local\nAPP_NAME=svc\n")
    await start_tree(
        sources=[FileSource(_placeholder_file(tmp_path), watch=False), EnvironmentSource("APP_")],
        env_file=env_file,
    )

    env_file.write_text("DB_HOST=db.other\nAPP_NAME=other\nthis is no statement\n")
    result = await Config.reload()

    assert set(result.errors) == {"env:APP_", f"file:{tmp_path / 'config.toml'}"}
    assert all(f"{env_file}: line 3:" in error for error in result.errors.values())
    assert await Config.get("name") == "svc"
    assert await Config.get("url") == "postgres://db.local/app"
    status = await Config.status()
    assert not status.healthy

    env_file.write_text("DB_HOST=db.other\nAPP_NAME=other\n")
    assert (await Config.reload()).errors == {}
    assert await Config.get("name") == "other"
    assert (await Config.status()).healthy


async def test_a_missing_named_env_file_fails_the_start_unless_optional(
    start_tree: StartTree, tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    clean_environ.setenv("APP_NAME", "svc")
    with pytest.raises(SourceError, match="env file not found"):
        await start_tree(sources=[EnvironmentSource("APP_")], env_file=tmp_path / ".env")

    await start_tree(
        sources=[EnvironmentSource("APP_")], env_file=tmp_path / ".env", env_file_optional=True
    )
    assert await Config.get("name") == "svc"


# -- what an EnvironmentSource keeps between load and accepted (docs/sources.md) -------------


async def test_a_dot_env_edit_while_a_reading_is_out_leaves_each_layer_its_origins(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """Two readings out at once (held up by a slow source), the ``.env`` edited between their
    loads: the first is committed after the second was loaded, and the second is rejected.
    ``explain`` names the variable behind the value in use, the first's."""
    env_file = tmp_path / ".env"
    env_file.write_text("APP_X=1\n")
    environ: dict[str, str] = {}
    slow = FakeSource("slow", required=False)

    def below_100(tree: Any) -> None:
        if tree["x"] >= 100:
            raise ValueError("x must be below 100")

    env = EnvironmentSource("APP_", env_file=env_file, environ=environ)
    await start_tree(sources=[env, slow], schema=below_100)
    assert (await Config.explain("x")).origin == f"{env_file}: APP_X"
    first, second = slow.block_next(), slow.block_next()

    environ["APP_X"] = "5"  # the process sets it now, over the file
    one = asyncio.ensure_future(Config.reload())
    await first.reached()  # the environment was loaded before the slow source was reached
    environ.clear()
    env_file.write_text("APP_X=500\n")  # edited while that reading is out
    two = asyncio.ensure_future(Config.reload())
    await second.reached()

    first.release()
    assert (await one).errors == {}
    assert Config.get_nowait("x") == 5
    assert (await Config.explain("x")).origin == "$APP_X"

    second.release()
    assert "x must be below 100" in (await two).errors["validation"]
    assert Config.get_nowait("x") == 5
    assert (await Config.explain("x")).origin == "$APP_X"
