"""explain(): where the effective value comes from and what it overrides; secrets redacted."""

from __future__ import annotations

from pathlib import Path

from otpylib_config import Config, DefaultsSource, EnvironmentSource, FileSource, telemetry

from .conftest import StartTree


async def test_explain_names_each_layer_with_its_origin(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[database]\npool_size = 10\n")
    environ = {"APP_DATABASE__POOL_SIZE": "20"}
    await start_tree(
        sources=[
            DefaultsSource({"database": {"pool_size": 5}}),
            FileSource(config),
            EnvironmentSource("APP_", environ=environ),
        ]
    )
    await Config.put("database.pool_size", 30)

    explained = await Config.explain("database.pool_size")

    assert explained.value == 30
    assert explained.source == "runtime"
    assert explained.origin is not None and explained.origin.startswith("runtime put of")
    assert [(c.source, c.origin, c.value) for c in explained.overridden] == [
        ("env:APP_", "$APP_DATABASE__POOL_SIZE", 20),
        (f"file:{config}", f"{config}: database.pool_size", 10),
        ("defaults", "defaults", 5),
    ]
    assert "from runtime put of database.pool_size" in str(explained)


async def test_explain_of_an_unset_path(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({})])
    explained = await Config.explain("nothing.here")
    assert explained.contributions == () and explained.source is None
    assert str(explained) == "nothing.here: not set"


async def test_secrets_are_redacted_everywhere_but_get(
    start_tree: StartTree, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[database]\nurl = "postgres://app:hunter2@db/app"\n')
    await start_tree(
        sources=[DefaultsSource({"auth": {"jwt_secret": "abc"}}), FileSource(secrets, secret=True)]
    )

    assert await Config.get("database.url") == "postgres://app:hunter2@db/app"
    dump = await Config.dump()
    assert dump == {"auth": {"jwt_secret": "**redacted**"}, "database": {"url": "**redacted**"}}
    explained = await Config.explain("database.url")
    assert explained.value == "**redacted**"
    assert explained.contributions[0].value == "**redacted**"
    with telemetry.capture_events(telemetry.CHANGED) as changes:
        secrets.write_text('[database]\nurl = "postgres://app:s3cret@db/app"\n')
        await Config.reload()
    assert changes[0].metadata["old_value"] == "**redacted**"
    assert changes[0].metadata["new_value"] == "**redacted**"
    assert "hunter2" not in repr(await Config.status())


async def test_a_secret_that_a_source_drops_stays_redacted_in_its_change(
    start_tree: StartTree, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[db]\ndsn = "postgres://u:hunter2@db/app"\n')
    await start_tree(sources=[FileSource(secrets, secret=True, watch=False)])

    with telemetry.capture_events(telemetry.CHANGED) as changes:
        secrets.write_text("")
        await Config.reload()

    assert [(c.metadata["path"], c.metadata["old_value"]) for c in changes] == [
        ("db.dsn", "**redacted**")
    ]


async def test_an_empty_table_in_a_secret_file_hides_nothing_else(
    start_tree: StartTree, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("[db]\n")
    await start_tree(
        sources=[DefaultsSource({"db": {"host": "db.internal"}}), FileSource(secrets, secret=True)]
    )

    assert (await Config.dump())["db"] == {"host": "db.internal"}


async def test_a_path_inside_a_put_section_is_explained_by_that_put(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"database": {"url": "pg://file", "pool": 5}})])
    await Config.put("database", {"url": "pg://runtime"})

    explained = await Config.explain("database.url")

    assert explained.value == "pg://runtime"
    assert explained.origin is not None
    assert explained.origin.startswith("runtime put of database at ")
    assert [c.source for c in explained.overridden] == ["defaults"]


async def test_a_section_with_puts_below_it_names_them_without_a_value(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"database": {"url": "pg://file", "pool": 5}})])
    await Config.put("database.pool", 7)

    explained = await Config.explain("database")

    assert explained.value == {"url": "pg://file", "pool": 7}
    runtime, defaults = explained.contributions
    assert (runtime.source, runtime.origin, runtime.value) == (
        "runtime",
        "runtime puts below this path",
        None,
    )
    assert defaults.source == "defaults"


async def test_a_put_that_holds_no_value_at_the_path_explains_nothing_there(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"feature": {"level": 1}, "other": 2})])
    await Config.put("feature", "off")  # a scalar: nothing at feature.level any more
    await Config.put("other", {"x": 1})  # a section without the key asked for

    for path in ("feature.level", "other.y"):
        explained = await Config.explain(path)
        assert "runtime" not in [c.source for c in explained.contributions]
