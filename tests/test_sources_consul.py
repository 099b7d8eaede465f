"""ConsulSource.load against the loopback Consul server: mapping, decoding, errors, cache.

Watching (blocking queries) is specified end to end in ``test_consul_watching.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pydantic
import pytest

from otpylib_config import Config, ConsulSource
from otpylib_config.errors import SourceError
from otpylib_config.schema_shape import shape_of
from otpylib_config.sources.base import SourceContext
from otpylib_config.values import thaw

from .conftest import StartTree
from .consul_server import ConsulServer, FaultKind, consul_server_fixture

consul = consul_server_fixture()
acl_consul = consul_server_fixture(acl_tokens={"reader": "read"})

PREFIX = "myapp/config/"


def source(server: ConsulServer, prefix: str = PREFIX, **options: object) -> ConsulSource:
    options.setdefault("timeout", 2.0)
    return ConsulSource(prefix, url=server.url, environ={}, **options)  # type: ignore[arg-type]


async def test_keys_under_the_prefix_become_paths(consul: ConsulServer) -> None:
    consul.put("myapp/config/database/url", "postgres://db/app")
    consul.put("myapp/config/database/pool_size", "20")
    consul.put("myapp/config/features/beta", "true")
    consul.put("myapp/config/limits", '{"api": [1, 2]}')
    consul.put("myapp/other/ignored", "x")

    layer = await source(consul).load()

    assert thaw(layer) == {
        "database": {"url": "postgres://db/app", "pool_size": 20},
        "features": {"beta": True},
        "limits": {"api": [1, 2]},
    }


async def test_an_empty_value_is_an_empty_string_and_folders_are_skipped(
    consul: ConsulServer,
) -> None:
    consul.put("myapp/config/", None)
    consul.put("myapp/config/db/", None)
    consul.put("myapp/config/db/password", None)

    assert thaw(await source(consul).load()) == {"db": {"password": ""}}


async def test_a_prefix_without_keys_is_an_empty_layer(consul: ConsulServer) -> None:
    assert thaw(await source(consul).load()) == {}


async def test_the_prefix_is_a_folder_not_a_raw_string_match(consul: ConsulServer) -> None:
    consul.put("myapp/config/a", "1")
    consul.put("myapp/configx/b", "2")

    assert thaw(await source(consul, "myapp/config").load()) == {"a": 1}


async def test_document_mode_loads_one_key_as_a_file(consul: ConsulServer) -> None:
    consul.put("myapp/config.toml", "[server]\nport = 8080\n")
    consul.put("myapp/config.json", '{"server": {"port": 9090}}')

    toml = ConsulSource(key="myapp/config.toml", url=consul.url, environ={})
    as_json = ConsulSource(key="myapp/config.json", url=consul.url, environ={})

    assert thaw(await toml.load()) == {"server": {"port": 8080}}
    assert thaw(await as_json.load()) == {"server": {"port": 9090}}


async def test_a_broken_document_names_the_key(consul: ConsulServer) -> None:
    consul.put("myapp/config.toml", "[server\nport = 8080\n")

    with pytest.raises(SourceError, match=r"myapp/config\.toml.*invalid TOML"):
        await ConsulSource(key="myapp/config.toml", url=consul.url, environ={}).load()


async def test_the_token_is_sent_as_a_header(acl_consul: ConsulServer) -> None:
    acl_consul.put("myapp/config/a", "1")

    from_argument = source(acl_consul, token="reader")
    from_env = ConsulSource(PREFIX, url=acl_consul.url, environ={"CONSUL_HTTP_TOKEN": "reader"})

    assert thaw(await from_argument.load()) == {"a": 1}
    assert thaw(await from_env.load()) == {"a": 1}
    assert {r.token_header for r in acl_consul.kv_requests("GET")} == {"reader"}
    assert all("token" not in r.query for r in acl_consul.kv_requests("GET"))


async def test_a_rejected_token_is_a_clear_error_and_never_printed(
    acl_consul: ConsulServer,
) -> None:
    bad = source(acl_consul, token="wrong-token")

    with pytest.raises(SourceError, match=r"refused the ACL token.*403 ACL not found"):
        await bad.load()
    assert "wrong-token" not in repr(bad)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (FaultKind.HTTP_500, "Consul answered 500.*No cluster leader"),
        (FaultKind.HTTP_429, "Consul answered 429"),
        (FaultKind.NO_INDEX, "no X-Consul-Index header"),
        (FaultKind.INVALID_JSON, "not valid JSON"),
        (FaultKind.INVALID_BASE64, r"key 'myapp/config/a': Value is not valid base64"),
        (FaultKind.INVALID_UTF8, r"key 'myapp/config/a': value is not valid UTF-8"),
        (FaultKind.DISCONNECT, "cannot read 'myapp/config/' from Consul"),
        (FaultKind.DROP_MID_BODY, "cannot read 'myapp/config/' from Consul"),
    ],
)
async def test_a_bad_answer_is_an_error_naming_what_was_wrong(
    consul: ConsulServer, fault: FaultKind, message: str
) -> None:
    consul.put("myapp/config/a", "1")
    consul.faults.always(fault)  # always: aiohttp retries a GET once on a dropped connection

    with pytest.raises(SourceError, match=message):
        await source(consul).load()


async def test_a_hanging_consul_is_bounded_by_the_timeout(consul: ConsulServer) -> None:
    consul.faults.always(FaultKind.HANG)

    with pytest.raises(SourceError, match=r"did not answer within 0\.2s"):
        await source(consul, timeout=0.2).load()
    consul.faults.clear()


async def test_an_unreachable_consul_is_an_error(consul: ConsulServer) -> None:
    async with consul.down():
        with pytest.raises(SourceError, match=f"cannot read .* at {consul.url}"):
            await source(consul).load()


async def test_a_key_that_is_no_config_path_is_refused(consul: ConsulServer) -> None:
    consul.put("myapp/config/db.host", "x")

    with pytest.raises(SourceError, match=r"'myapp/config/db\.host' cannot be a config path"):
        await source(consul).load()


async def test_a_key_that_is_both_a_value_and_a_folder_is_refused(consul: ConsulServer) -> None:
    consul.put("myapp/config/db", "x")
    consul.put("myapp/config/db/host", "y")

    with pytest.raises(SourceError, match="'myapp/config/db' and 'myapp/config/db/host' both"):
        await source(consul).load()


async def test_json_looking_garbage_is_refused_not_kept_as_a_string(consul: ConsulServer) -> None:
    consul.put("myapp/config/limits", "{not json")

    with pytest.raises(SourceError, match="'myapp/config/limits': looks like JSON"):
        await source(consul).load()


async def test_explain_origin_names_the_key_and_its_index(consul: ConsulServer) -> None:
    index = consul.put("myapp/config/db/url", "x")
    kv = source(consul)
    await load_and_accept(kv)

    assert kv.origin(("db", "url")) == f"consul:myapp/config/db/url (ModifyIndex {index})"


async def load_and_accept(kv: ConsulSource) -> None:
    """What the pipeline does with a layer that validated: load it, then accept it."""
    await kv.accepted(await kv.load())


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="either a prefix or a key"):
        ConsulSource("a/", key="b")
    with pytest.raises(ValueError, match="either a prefix or a key"):
        ConsulSource()
    with pytest.raises(ValueError, match="not starting with '/'"):
        ConsulSource("/a/")
    with pytest.raises(ValueError, match="names one key"):
        ConsulSource(key="a/")
    with pytest.raises(ValueError, match="cannot tell the format"):
        ConsulSource(key="a/settings")


async def test_the_cache_serves_the_last_values_while_consul_is_down(
    consul: ConsulServer, tmp_path: Path
) -> None:
    cache = tmp_path / "consul-cache.json"
    consul.put("myapp/config/db/url", "postgres://db/app")
    await load_and_accept(source(consul, cache_path=cache))
    assert json.loads(cache.read_text())["key"] == PREFIX

    restarted = source(consul, cache_path=cache)
    async with consul.down():
        with pytest.raises(SourceError) as failure:
            await restarted.load()

    assert failure.value.fallback is not None
    assert thaw(failure.value.fallback) == {"db": {"url": "postgres://db/app"}}
    assert restarted.origin(("db", "url")).endswith("[cached]")


async def test_a_corrupt_cache_is_reported_not_served(
    consul: ConsulServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "consul-cache.json"
    cache.write_text("{garbage")

    async with consul.down():
        with pytest.raises(SourceError) as failure:
            await source(consul, cache_path=cache).load()

    assert failure.value.fallback is None
    assert "cannot use the cache" in caplog.text


async def test_the_cache_is_written_only_when_the_data_changed(
    consul: ConsulServer, tmp_path: Path
) -> None:
    cache = tmp_path / "consul-cache.json"
    consul.put("myapp/config/a", "1")
    kv = source(consul, cache_path=cache)
    await load_and_accept(kv)
    first = cache.stat().st_mtime_ns
    await asyncio.sleep(0.01)

    await load_and_accept(kv)
    assert cache.stat().st_mtime_ns == first

    consul.put("myapp/config/a", "2")
    await load_and_accept(kv)
    assert json.loads(cache.read_text())["entries"][0]["Value"] == "Mg=="
    assert cache.stat().st_mode & 0o077 == 0  # it may hold secrets: owner only


async def test_a_layer_that_was_not_accepted_is_neither_cached_nor_explained(
    consul: ConsulServer, tmp_path: Path
) -> None:
    cache = tmp_path / "consul-cache.json"
    consul.put("myapp/config/a", "1")
    kv = source(consul, cache_path=cache)
    await load_and_accept(kv)
    consul.put("myapp/config/a", "2")

    await kv.load()  # say the merged configuration failed validation: no accepted()

    assert json.loads(cache.read_text())["entries"][0]["Value"] == "MQ=="
    assert kv.origin(("a",)).endswith("(ModifyIndex 2)")


async def test_the_token_never_follows_a_redirect() -> None:
    from aiohttp import web

    seen: list[str | None] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Consul-Token"))
        raise web.HTTPFound("http://127.0.0.1:9/elsewhere")

    app = web.Application()
    app.router.add_get("/v1/kv/{key:.*}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        kv = ConsulSource(PREFIX, url=f"http://127.0.0.1:{port}", token="s3cret", environ={})
        with pytest.raises(SourceError, match=r"redirected .* not followed") as failure:
            await kv.load()
    finally:
        await runner.cleanup()

    assert seen == ["s3cret"]
    assert "s3cret" not in str(failure.value)


async def test_json_that_is_not_config_data_names_the_key(consul: ConsulServer) -> None:
    consul.put("myapp/config/limits", '{"a.b": 1}')

    with pytest.raises(SourceError, match=r"'myapp/config/limits': .*cannot be a path segment"):
        await source(consul).load()


async def test_document_mode_explains_every_path_with_the_key(consul: ConsulServer) -> None:
    index = consul.put("myapp/config.toml", "[server]\nport = 8080\n")
    kv = ConsulSource(key="myapp/config.toml", url=consul.url, environ={})
    await load_and_accept(kv)

    assert kv.origin(("server", "port")) == f"consul:myapp/config.toml (ModifyIndex {index})"


# -- with a schema: text where the schema wants text ------------------------------------------


class _Database(pydantic.BaseModel):
    password: str = ""
    pool_size: int = 5


class _Settings(pydantic.BaseModel):
    api_key: str = ""
    debug: bool = False
    database: _Database = _Database()


async def test_values_stay_text_where_the_schema_wants_a_string(consul: ConsulServer) -> None:
    consul.put("myapp/config/api_key", "12345678901234567890")
    consul.put("myapp/config/debug", "true")
    consul.put("myapp/config/database/password", "True")
    consul.put("myapp/config/database/pool_size", "20")
    consul.put("myapp/config/other", "7")  # no field: coerced as without a schema
    kv = source(consul)
    kv.configure(SourceContext(shape=shape_of(_Settings)))

    assert thaw(await kv.load()) == {
        "api_key": "12345678901234567890",
        "debug": True,
        "database": {"password": "True", "pool_size": 20},
        "other": 7,
    }


async def test_a_tree_hands_consul_text_to_its_schema(
    consul: ConsulServer, start_tree: StartTree
) -> None:
    consul.put("myapp/config/api_key", '{"a": 1}')
    consul.put("myapp/config/debug", "no")
    await start_tree(sources=[source(consul)], schema=_Settings)

    model = Config.model()
    assert model.api_key == '{"a": 1}'
    assert model.debug is False


# -- what the source keeps between load and accepted (docs/sources.md) ------------------------


async def test_each_accepted_layer_brings_its_own_origins_and_entries(
    consul: ConsulServer, tmp_path: Path
) -> None:
    """Two readings in flight: the manager may commit the first after the second was read;
    what it accepts is explained and cached as it was read, not as the newest read was."""
    cache = tmp_path / "consul-cache.json"
    first_index = consul.put("myapp/config/a", "1")
    kv = source(consul, cache_path=cache)
    first = await kv.load()
    second_index = consul.put("myapp/config/a", "2")
    second = await kv.load()

    await kv.accepted(first)

    assert kv.origin(("a",)).endswith(f"(ModifyIndex {first_index})")
    assert json.loads(cache.read_text())["entries"][0]["Value"] == "MQ=="
    # a candidate that validation judges is explained as read, before it is accepted
    assert kv.origin(("a",), second).endswith(f"(ModifyIndex {second_index})")

    await kv.accepted(second)

    assert kv.origin(("a",)).endswith(f"(ModifyIndex {second_index})")
    assert json.loads(cache.read_text())["entries"][0]["Value"] == "Mg=="


async def test_an_older_layer_accepted_after_a_newer_one_is_what_it_explains_and_caches(
    consul: ConsulServer, tmp_path: Path
) -> None:
    """The source follows the tree, whatever order the manager committed its reads in."""
    cache = tmp_path / "consul-cache.json"
    old_index = consul.put("myapp/config/a", "1")
    kv = source(consul, cache_path=cache)
    older = await kv.load()
    consul.put("myapp/config/a", "2")
    newer = await kv.load()

    await kv.accepted(newer)
    await kv.accepted(older)

    assert kv.origin(("a",)).endswith(f"(ModifyIndex {old_index})")
    assert json.loads(cache.read_text())["entries"][0]["Value"] == "MQ=="
