"""Specification of precedence: which layer's value a running tree serves.

README.md (Sources, Environment, Paths, patterns and events) and docs/architecture.md (Merge)
state the rules; each test here is one of them, on real files in ``tmp_path``, real process
variables, a real ``.env`` and the loopback Consul server:

* sources are listed lowest priority first and a later one wins, whatever its kind:
  defaults < ``config.toml`` < ``config.{profile}.toml`` < ``.env`` (through an
  ``EnvironmentSource``) < process variables < Consul, when listed in that order;
* the process's variables win over the ``.env`` file, for every reader of the environment;
* the runtime layer (``put``) wins over every source, wherever ``RuntimeSource`` is listed,
  and ``delete`` lets the next layer down show again;
* sections merge across layers while anything else (a scalar, a list, ``None``) replaces;
  a put replaces the whole node at its path and pins nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from otpylib_config import (
    Config,
    ConsulSource,
    DefaultsSource,
    EnvironmentSource,
    FileSource,
    RuntimeSource,
)

from .conftest import FakeSource, Recorder, StartTree
from .consul_server import ConsulServer, consul_server_fixture

consul = consul_server_fixture()

PREFIX = "PRECEDENCE_"  # no variable of the machine running the tests has it


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No variable under the prefix and no profile from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith(PREFIX) or name in ("CONFIG_PROFILE", "DB_HOST"):
            monkeypatch.delenv(name)
    return monkeypatch


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def file(path: Path, text: str, **options: object) -> FileSource:
    """A file source that is not watched: reloads are asked for, not awaited from a watch."""
    return FileSource(write(path, text), watch=False, **options)  # type: ignore[arg-type]


def env(**options: object) -> EnvironmentSource:
    return EnvironmentSource(prefix=PREFIX, **options)  # type: ignore[arg-type]


# -- the order of the sources ----------------------------------------------------------------


async def test_a_file_overrides_the_defaults(start_tree: StartTree, tmp_path: Path) -> None:
    await start_tree(
        sources=[DefaultsSource({"port": 1}), file(tmp_path / "config.toml", "port = 2\n")]
    )
    assert await Config.get("port") == 2


async def test_a_profile_file_overrides_the_base_file(
    start_tree: StartTree, tmp_path: Path
) -> None:
    write(tmp_path / "config.dev.toml", "port = 3\n")
    await start_tree(
        sources=[
            file(tmp_path / "config.toml", "port = 2\nname = 'base'\n"),
            FileSource(tmp_path / "config.{profile}.toml", watch=False),
        ],
        profile="dev",
    )
    assert await Config.get("port") == 3
    assert await Config.get("name") == "base"


async def test_files_layer_in_the_order_they_are_listed(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[
            file(tmp_path / "config.toml", "a = 1\nb = 1\nc = 1\n"),
            file(tmp_path / "config.dev.toml", "b = 2\nc = 2\n"),
            file(tmp_path / "secrets.toml", "c = 3\n"),
        ]
    )
    assert [await Config.get(key) for key in ("a", "b", "c")] == [1, 2, 3]


async def test_a_variable_from_the_env_file_overrides_the_files(
    start_tree: StartTree, tmp_path: Path
) -> None:
    write(tmp_path / ".env", f"{PREFIX}PORT=4\n")
    await start_tree(
        sources=[file(tmp_path / "config.toml", "port = 2\n"), env()],
        env_file=tmp_path / ".env",
    )
    assert await Config.get("port") == 4


async def test_a_process_variable_overrides_the_files(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    await start_tree(sources=[file(tmp_path / "config.toml", "port = 2\n"), env()])
    assert await Config.get("port") == 5


async def test_a_process_variable_overrides_the_same_variable_in_the_env_file(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", f"{PREFIX}PORT=4\n{PREFIX}HOST=from-env-file\n")
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    await start_tree(sources=[env()], env_file=tmp_path / ".env")
    assert await Config.get("port") == 5
    assert await Config.get("host") == "from-env-file"  # the file still gives the rest


async def test_consul_listed_after_the_environment_overrides_it(
    start_tree: StartTree, consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    consul.put("app/port", "6")
    await start_tree(sources=[env(), ConsulSource("app/", url=consul.url, environ={})])
    assert await Config.get("port") == 6


async def test_precedence_is_the_order_of_the_list_not_the_kind_of_source(
    start_tree: StartTree, tmp_path: Path, consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    consul.put("app/port", "6")
    await start_tree(
        sources=[
            ConsulSource("app/", url=consul.url, environ={}),
            env(),
            file(tmp_path / "config.toml", "port = 2\n"),
            DefaultsSource({"port": 1}),  # listed last: the defaults win
        ]
    )
    assert await Config.get("port") == 1


async def test_the_whole_documented_stack_in_order(
    start_tree: StartTree, tmp_path: Path, consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each layer sets its own key and every key of the layers above it, so each key shows
    the highest layer that sets it: one step of the stack per key."""
    keys = ["defaults", "file", "profile", "env_file", "process", "consul"]

    def keys_from(layer: str) -> dict[str, str]:
        return {key: layer for key in keys[keys.index(layer) :]}

    def toml(layer: str) -> str:
        return "".join(f'{key} = "{value}"\n' for key, value in keys_from(layer).items())

    write(tmp_path / "config.dev.toml", toml("profile"))
    write(
        tmp_path / ".env",
        "".join(f"{PREFIX}{key.upper()}={v}\n" for key, v in keys_from("env_file").items()),
    )
    for key, value in keys_from("process").items():
        monkeypatch.setenv(f"{PREFIX}{key.upper()}", value)
    for key, value in keys_from("consul").items():
        consul.put(f"app/{key}", value)
    await start_tree(
        sources=[
            DefaultsSource(keys_from("defaults")),
            file(tmp_path / "config.toml", toml("file")),
            FileSource(tmp_path / "config.{profile}.toml", watch=False),
            env(),
            ConsulSource("app/", url=consul.url, environ={}),
        ],
        profile="dev",
        env_file=tmp_path / ".env",
    )

    assert {key: await Config.get(key) for key in keys} == {key: key for key in keys}
    await Config.put("consul", "runtime")
    assert await Config.get("consul") == "runtime"


# -- the environment: the process over the .env file -----------------------------------------


async def test_placeholders_see_the_process_over_the_env_file(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "DB_HOST=from-env-file\n")
    monkeypatch.setenv("DB_HOST", "from-process")
    await start_tree(
        sources=[file(tmp_path / "config.toml", 'url = "pg://${DB_HOST}/app"\n')],
        env_file=tmp_path / ".env",
    )
    assert await Config.get("url") == "pg://from-process/app"


async def test_the_profile_variable_of_the_process_overrides_the_env_file(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "CONFIG_PROFILE=dev\n")
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    write(tmp_path / "config.dev.toml", "profile = 'dev'\n")
    write(tmp_path / "config.prod.toml", "profile = 'prod'\n")
    await start_tree(
        sources=[FileSource(tmp_path / "config.{profile}.toml", watch=False)],
        env_file=tmp_path / ".env",
    )
    assert await Config.get("profile") == "prod"


async def test_the_spec_profile_overrides_the_profile_variable(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIG_PROFILE", "prod")
    write(tmp_path / "config.dev.toml", "profile = 'dev'\n")
    write(tmp_path / "config.prod.toml", "profile = 'prod'\n")
    await start_tree(
        sources=[FileSource(tmp_path / "config.{profile}.toml", watch=False)], profile="dev"
    )
    assert await Config.get("profile") == "dev"


async def test_a_sources_own_env_file_replaces_the_trees_for_that_source(
    start_tree: StartTree, tmp_path: Path
) -> None:
    write(tmp_path / ".env", f"{PREFIX}PORT=4\n")
    own = write(tmp_path / "own.env", f"{PREFIX}PORT=7\n")
    await start_tree(
        sources=[env(env_file=own, name="own"), env(name="tree's")],
        env_file=tmp_path / ".env",
    )
    assert await Config.get("port") == 4  # the later source, reading the tree's file, wins
    assert (await Config.explain("port")).overridden[0].value == 7


# -- the runtime layer -----------------------------------------------------------------------


async def test_a_put_overrides_every_source(
    start_tree: StartTree, tmp_path: Path, consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    consul.put("app/port", "6")
    await start_tree(
        sources=[
            DefaultsSource({"port": 1}),
            file(tmp_path / "config.toml", "port = 2\n"),
            env(),
            ConsulSource("app/", url=consul.url, environ={}),
        ]
    )
    await Config.put("port", 9)
    assert await Config.get("port") == 9
    assert [c.source for c in (await Config.explain("port")).contributions][:2] == [
        "runtime",
        "consul:app/",
    ]


async def test_the_runtime_layer_is_highest_wherever_it_is_listed(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[RuntimeSource(), DefaultsSource({"port": 1})])
    await Config.put("port", 9)
    assert await Config.get("port") == 9


async def test_a_put_outlives_a_reload_of_the_sources_below_it(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    await start_tree(sources=[file(config, "port = 2\n")])
    await Config.put("port", 9)
    write(config, "port = 3\n")

    result = await Config.reload()

    assert result.changed == ()  # the file changed under the override: nothing to see
    assert await Config.get("port") == 9


async def test_a_delete_lets_the_next_layer_down_show(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    await start_tree(sources=[file(tmp_path / "config.toml", "port = 2\n"), env()])
    await Config.put("port", 9)

    assert await Config.delete("port") is True

    assert await Config.get("port") == 5  # the environment, not the file below it


async def test_a_put_replaces_the_whole_section_and_a_delete_brings_it_back(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[file(tmp_path / "config.toml", "[db]\nurl = 'pg://file'\npool = 5\n")]
    )
    await Config.put("db", {"url": "pg://runtime"})
    assert await Config.get("db") == {"url": "pg://runtime"}  # db.pool is gone

    await Config.delete("db")
    assert await Config.get("db") == {"url": "pg://file", "pool": 5}


async def test_a_put_below_a_section_keeps_the_lower_layers_siblings(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[file(tmp_path / "config.toml", "[db]\nurl = 'pg://file'\npool = 5\n")]
    )
    await Config.put("db.pool", 9)
    assert await Config.get("db") == {"url": "pg://file", "pool": 9}


async def test_put_many_pins_only_its_own_paths(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"db": {"url": "pg://d", "pool": 5, "ttl": 1}})])
    await Config.put_many({"db.pool": 9, "db.ttl": 2})
    assert await Config.get("db") == {"url": "pg://d", "pool": 9, "ttl": 2}


async def test_a_put_of_none_wins_over_a_lower_value(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"port": 1})])
    await Config.put("port", None)
    assert await Config.get("port", "absent") is None


# -- merging: sections merge, anything else replaces ---------------------------------------


async def test_a_section_merges_with_the_section_below_it(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}DB__POOL", "20")
    await start_tree(
        sources=[
            DefaultsSource({"db": {"url": "pg://d", "pool": 5, "ttl": 1}}),
            file(tmp_path / "config.toml", "[db]\nurl = 'pg://file'\n"),
            env(),
        ]
    )
    assert await Config.get("db") == {"url": "pg://file", "pool": 20, "ttl": 1}


async def test_a_scalar_replaces_the_section_below_it(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[
            DefaultsSource({"db": {"url": "pg://d", "pool": 5}}),
            file(tmp_path / "config.toml", "db = 'disabled'\n"),
        ]
    )
    assert await Config.get("db") == "disabled"
    assert await Config.get("db.url") is None


async def test_a_section_replaces_the_scalar_below_it(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[
            DefaultsSource({"db": "disabled"}),
            file(tmp_path / "config.toml", "[db]\nurl = 'pg://file'\n"),
        ]
    )
    assert await Config.get("db") == {"url": "pg://file"}


async def test_a_list_replaces_the_list_below_it(start_tree: StartTree, tmp_path: Path) -> None:
    await start_tree(
        sources=[
            DefaultsSource({"hosts": ["a", "b"]}),
            file(tmp_path / "config.toml", "hosts = ['c']\n"),
        ]
    )
    assert await Config.get("hosts") == ("c",)


async def test_null_in_a_higher_layer_is_a_value_that_wins(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[
            DefaultsSource({"timeout": 30}),
            file(tmp_path / "config.json", '{"timeout": null}'),
        ]
    )
    assert await Config.get("timeout", "absent") is None


async def test_an_empty_section_in_a_higher_layer_keeps_the_section_below_it(
    start_tree: StartTree, tmp_path: Path
) -> None:
    await start_tree(
        sources=[
            DefaultsSource({"db": {"url": "pg://d"}}),
            file(tmp_path / "config.toml", "[db]\n"),
        ]
    )
    assert await Config.get("db") == {"url": "pg://d"}


# -- changes under a higher layer ----------------------------------------------------------


async def test_a_change_in_a_shadowed_layer_changes_nothing_and_notifies_nobody(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"{PREFIX}PORT", "5")
    config = tmp_path / "config.toml"
    await start_tree(sources=[file(config, "port = 2\n"), env()])
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    write(config, "port = 3\n")

    assert (await Config.reload()).changed == ()

    assert await Config.get("port") == 5
    marker = await recorder.settled(0, then=lambda: Config.put("marker", 1))
    assert marker == [("marker", None, 1)]  # the reload before it sent nothing


async def test_a_failing_source_keeps_its_last_layer_in_its_place(start_tree: StartTree) -> None:
    higher = FakeSource("higher", {"port": 2})
    await start_tree(sources=[DefaultsSource({"port": 1}), higher])
    higher.set({"port": 3})
    higher.fail_next("cannot read")

    result = await Config.reload()

    assert result.errors == {"higher": "higher: cannot read"}
    assert await Config.get("port") == 2  # its last good layer, still above the defaults


async def test_when_the_higher_layer_stops_setting_a_key_the_lower_value_shows(
    start_tree: StartTree,
) -> None:
    higher = FakeSource("higher", {"port": 2, "host": "h"})
    await start_tree(sources=[DefaultsSource({"port": 1}), higher])
    higher.set({"host": "h"})

    result = await Config.reload()

    assert result.changed == ("port",)
    assert await Config.get("port") == 1


async def test_a_source_that_is_not_ready_keeps_its_last_layer_in_its_place(
    start_tree: StartTree,
) -> None:
    higher = FakeSource("higher", {"port": 2})
    await start_tree(sources=[DefaultsSource({"port": 1}), higher])
    higher.set({"port": 3})
    higher.not_ready_next()

    result = await Config.reload()

    assert (result.changed, result.errors) == ((), {})  # skipped, not failing
    assert await Config.get("port") == 2


async def test_a_pushed_change_under_a_higher_layer_notifies_nobody(
    start_tree: StartTree,
) -> None:
    lower = FakeSource("lower", {"port": 1}, pushes=True)
    await start_tree(sources=[lower, DefaultsSource({"port": 2}, name="higher")])
    recorder = Recorder()
    await Config.subscribe("**", recorder)

    lower.push({"port": 5})  # hidden by the higher layer

    events = await recorder.settled(0, then=lambda: lower.push({"port": 5, "marker": 1}))
    assert events == [("marker", None, 1)]  # the later push's event came, and only it
    assert await Config.get("port") == 2
