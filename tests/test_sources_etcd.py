"""EtcdSource.load against real etcd: mapping, decoding, limits, errors, auth, TLS, cache.

Watching, in a running tree and through faults, is ``test_etcd_watching.py``. Keys are
written with etcd's own HTTP API (``tests/etcd_cluster.py``), never with the source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pydantic
import pytest

from otpylib_config import EtcdSource
from otpylib_config.errors import SourceError
from otpylib_config.schema_shape import shape_of
from otpylib_config.sources.base import SourceContext
from otpylib_config.sources.etcd_kv import Credentials, EtcdClient, prefix_end
from otpylib_config.values import MAX_STRING_LENGTH, thaw

from .etcd_cluster import EtcdCluster, Member, etcd, etcd_module, next_prefix

__all__ = ["etcd", "etcd_module"]  # fixtures


def source(cluster: EtcdCluster, prefix: str, **options: object) -> EtcdSource:
    return EtcdSource(prefix, cluster.endpoints, **options)  # type: ignore[arg-type]


async def load_and_accept(kv: EtcdSource) -> None:
    """What the pipeline does with a layer that validated: load it, then accept it."""
    await kv.accepted(await kv.load())


# -- mapping ---------------------------------------------------------------------------------


async def test_keys_under_the_prefix_become_paths(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "database/url", "postgres://db/app")
    await etcd_module.put(prefix + "database/pool_size", "20")
    await etcd_module.put(prefix + "features/beta", "true")
    await etcd_module.put(prefix + "limits", '{"api": [1, 2]}')
    await etcd_module.put(prefix + "empty", "")
    await etcd_module.put(prefix.rstrip("/") + "x/ignored", "x")  # a sibling, not under it

    layer = await source(etcd_module, prefix.rstrip("/")).load()

    assert thaw(layer) == {
        "database": {"url": "postgres://db/app", "pool_size": 20},
        "features": {"beta": True},
        "limits": {"api": [1, 2]},
        "empty": "",
    }


async def test_a_prefix_without_keys_is_an_empty_layer(etcd_module: EtcdCluster) -> None:
    assert thaw(await source(etcd_module, next_prefix()).load()) == {}


async def test_values_stay_text_where_the_schema_wants_text(etcd_module: EtcdCluster) -> None:
    class Server(pydantic.BaseModel):
        port: int
        code: str

    class Settings(pydantic.BaseModel):
        server: Server

    prefix = next_prefix()
    await etcd_module.put(prefix + "server/port", "8080")
    await etcd_module.put(prefix + "server/code", "007")
    kv = source(etcd_module, prefix)
    kv.configure(SourceContext(shape=shape_of(Settings)))

    assert thaw(await kv.load()) == {"server": {"port": 8080, "code": "007"}}


async def test_document_mode_loads_one_key_as_a_file(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "app.toml", "[server]\nport = 8080\n")
    await etcd_module.put(prefix + "app.json", '{"server": {"port": 9090}}')
    await etcd_module.put(prefix + "app.tomlx", "not under the key")

    toml = EtcdSource(endpoints=etcd_module.endpoints, key=prefix + "app.toml")
    as_json = EtcdSource(endpoints=etcd_module.endpoints, key=prefix + "app.json")
    missing = EtcdSource(endpoints=etcd_module.endpoints, key=prefix + "none.yaml")

    assert thaw(await toml.load()) == {"server": {"port": 8080}}
    assert thaw(await as_json.load()) == {"server": {"port": 9090}}
    assert thaw(await missing.load()) == {}
    await toml.accepted(await toml.load())
    assert toml.origin(("server", "port")).startswith(f"etcd:{prefix}app.toml (mod_revision ")


async def test_a_broken_document_names_the_key(etcd_module: EtcdCluster) -> None:
    key = next_prefix() + "app.toml"
    await etcd_module.put(key, "[server\nport = 8080\n")

    with pytest.raises(SourceError, match=rf"{key}.*invalid TOML"):
        await EtcdSource(endpoints=etcd_module.endpoints, key=key).load()


async def test_explain_origin_names_the_key_and_its_revision(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    revision = await etcd_module.put(prefix + "db/url", "x")
    kv = source(etcd_module, prefix)
    await load_and_accept(kv)

    assert kv.origin(("db", "url")) == f"etcd:{prefix}db/url (mod_revision {revision})"


# -- what cannot be loaded -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("db.host", "cannot be a config path"),
        ("a//b", "cannot be a config path"),
        ("db/", "cannot be a config path"),
        ("feature*", "cannot be a config path"),
        ("what?", "cannot be a config path"),
        ("", "cannot be a config path"),  # the prefix's own key
    ],
)
async def test_a_key_that_is_no_config_path_fails_the_load_naming_it(
    etcd_module: EtcdCluster, relative: str, problem: str
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "good", "1")
    await etcd_module.put(prefix + relative, "x")

    key = re.escape(f"'{prefix}{relative}'")
    with pytest.raises(SourceError, match=rf"etcd key {key} {problem}"):
        await source(etcd_module, prefix).load()


async def test_a_key_that_is_no_utf8_fails_the_load_naming_it(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix.encode() + b"caf\xe9", "x")

    with pytest.raises(SourceError, match=r"etcd key b'.*caf\\xe9' is not valid UTF-8"):
        await source(etcd_module, prefix).load()


async def test_a_value_that_is_no_utf8_fails_the_load_naming_the_key(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "blob", b"ok\xff\xfe")

    with pytest.raises(SourceError, match=rf"'{prefix}blob': value is not valid UTF-8 \(byte 2\)"):
        await source(etcd_module, prefix).load()


async def test_a_key_that_is_both_a_value_and_a_folder_is_refused(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "db", "x")
    await etcd_module.put(prefix + "db/host", "y")

    with pytest.raises(SourceError, match=rf"'{prefix}db' and '{prefix}db/host' both set db"):
        await source(etcd_module, prefix).load()


async def test_json_looking_garbage_is_refused(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "limits", "{not json")

    with pytest.raises(SourceError, match=rf"'{prefix}limits': looks like JSON"):
        await source(etcd_module, prefix).load()


async def test_a_huge_value_is_refused_naming_the_key_and_a_large_one_loads(
    etcd_module: EtcdCluster,
) -> None:
    """etcd stores values up to --max-request-bytes (1.5 MiB); a config string may be 1 MiB."""
    prefix = next_prefix()
    await etcd_module.put(prefix + "large", "x" * (MAX_STRING_LENGTH - 10))
    assert len(thaw(await source(etcd_module, prefix).load())["large"]) == MAX_STRING_LENGTH - 10

    await etcd_module.put(prefix + "huge", "x" * (MAX_STRING_LENGTH + 200_000))

    with pytest.raises(SourceError, match=rf"'{prefix}huge': .*longer than {MAX_STRING_LENGTH}"):
        await source(etcd_module, prefix).load()


# -- unreachable members and failover --------------------------------------------------------


async def test_an_unreachable_etcd_is_an_error_naming_each_endpoint(tmp_path: Path) -> None:
    down = [Member(f"m{i}", tmp_path) for i in range(2)]
    kv = EtcdSource("/app/", [m.client_url for m in down], timeout=1.0)

    with pytest.raises(SourceError) as failure:
        await kv.load()

    message = str(failure.value)
    assert message.startswith("etcd:/app/: no etcd endpoint answered range '/app/'")
    assert all(m.client_url in message for m in down)


async def test_the_next_endpoint_is_tried_when_one_is_down(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")
    down = Member("down", Path("/nonexistent"))

    kv = EtcdSource(prefix, [down.client_url, etcd_module.url])

    assert thaw(await kv.load()) == {"a": 1}


async def test_a_member_that_hangs_leaves_time_for_the_next(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers

    hanging = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    try:
        kv = EtcdSource(prefix, [f"http://127.0.0.1:{port}", etcd_module.url], timeout=1.0)
        assert thaw(await kv.load()) == {"a": 1}

        alone = EtcdSource(prefix, f"http://127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(SourceError, match=r"did not answer within 0\.3s"):
            await alone.load()
    finally:
        hanging.close()


# -- credentials -----------------------------------------------------------------------------

PASSWORD = "s3cret-pw-do-not-print"


@pytest.fixture
async def auth_etcd(etcd: EtcdCluster) -> EtcdCluster:
    await etcd.enable_auth("root-pw-do-not-print", {"app": (PASSWORD, "/app/")})
    await etcd.put("/app/config/a", "1")
    await etcd.put("/other/b", "2")
    return etcd


async def test_username_and_password_give_a_token_that_reads(auth_etcd: EtcdCluster) -> None:
    kv = EtcdSource("/app/config/", auth_etcd.endpoints, "app", PASSWORD)

    assert thaw(await kv.load()) == {"a": 1}


async def test_a_wrong_password_is_a_clear_error_that_never_shows_it(
    auth_etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    kv = EtcdSource("/app/config/", auth_etcd.endpoints, "app", "wrong-" + PASSWORD)

    with pytest.raises(SourceError) as failure:
        await kv.load()

    message = str(failure.value)
    assert message.startswith("etcd:/app/config/: etcd refused the credentials of user 'app'")
    assert "authentication failed, invalid user ID or password" in message
    for text in (message, repr(failure.value.__context__), repr(kv), caplog.text):
        assert PASSWORD not in text
    assert repr(kv) == (
        f"EtcdSource('/app/config/', endpoints={auth_etcd.endpoints!r}, "
        "username='app', password=***)"
    )


async def test_no_credentials_or_too_few_rights_are_errors(auth_etcd: EtcdCluster) -> None:
    anonymous = EtcdSource("/app/config/", auth_etcd.endpoints)
    elsewhere = EtcdSource("/other/", auth_etcd.endpoints, "app", PASSWORD)

    with pytest.raises(SourceError, match="user name is empty"):
        await anonymous.load()
    with pytest.raises(SourceError, match=r"refused range '/other/': permission denied"):
        await elsewhere.load()


async def test_credentials_for_an_etcd_without_auth_are_not_needed(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await etcd_module.put(prefix + "a", "1")

    assert thaw(await source(etcd_module, prefix, username="u", password="p").load()) == {"a": 1}


async def test_a_client_reads_on_after_its_member_restarted(
    auth_etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The kept-alive connection is gone (tried again on a new one), and the token is not:
    etcd 3.4 replays the authentications in its log at a restart, so a simple token
    outlives it (it expires after ``--auth-token-ttl``: the next test)."""
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    member = auth_etcd.members[0]
    async with aiohttp.ClientSession() as session:
        client = EtcdClient(session, auth_etcd.endpoints, Credentials("app", PASSWORD))
        key = b"/app/config/"
        assert len((await client.range(key, prefix_end(key), timeout=5.0)).kvs) == 1
        member.stop()
        auth_etcd.restart(member)

        assert len((await client.range(key, prefix_end(key), timeout=5.0)).kvs) == 1

    assert caplog.text.count("authenticating to etcd") == 1


async def test_an_expired_token_is_renewed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otpylib_config")
    cluster = EtcdCluster.start(tmp_path, **{"auth-token-ttl": "1"})
    try:
        await cluster.enable_auth("root-pw", {"app": (PASSWORD, "/app/")})
        await cluster.put("/app/a", "1")
        async with aiohttp.ClientSession() as session:
            client = EtcdClient(session, cluster.endpoints, Credentials("app", PASSWORD))
            first = await client.range(b"/app/", b"/app0", timeout=5.0)
            token = client._token
            await asyncio.sleep(2.5)  # the token's TTL (1 s) and etcd's sweep of expired ones

            again = await client.range(b"/app/", b"/app0", timeout=5.0)

        assert first.kvs == again.kvs and client._token != token
        assert caplog.text.count("authenticating to etcd") == 2
    finally:
        cluster.stop()


# -- TLS options -----------------------------------------------------------------------------


def test_tls_files_build_the_context_the_client_uses(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        ["openssl", *request, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )

    files = {"ca_file": str(cert), "cert_file": str(cert), "key_file": str(key)}
    kv = EtcdSource("/a/", "https://127.0.0.1:2379", **files)

    assert isinstance(kv._tls, ssl.SSLContext)
    assert [c["subject"] for c in kv._tls.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]
    assert kv._tls.verify_mode == ssl.CERT_REQUIRED
    assert EtcdSource("/a/")._tls is None  # aiohttp's defaults
    with pytest.raises(ValueError, match="key_file= needs cert_file="):
        EtcdSource("/a/", key_file=str(key))


async def test_the_tls_context_is_what_requests_use(tmp_path: Path) -> None:
    kv = EtcdSource("/a/", "https://127.0.0.1:2379", ca_file=None)
    kv._tls = ssl.create_default_context()
    async with kv._client() as client:
        assert client.tls is kv._tls and client._ssl() is kv._tls


# -- construction ----------------------------------------------------------------------------


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="either a prefix or a key"):
        EtcdSource("/a/", key="/b")
    with pytest.raises(ValueError, match="either a prefix or a key"):
        EtcdSource()
    with pytest.raises(ValueError, match="names one key"):
        EtcdSource(key="/a/")
    with pytest.raises(ValueError, match="cannot tell the format"):
        EtcdSource(key="/a/settings")
    with pytest.raises(ValueError, match="username= and password= together"):
        EtcdSource("/a/", username="u")
    with pytest.raises(ValueError, match="at least one endpoint"):
        EtcdSource("/a/", [])
    with pytest.raises(ValueError, match=r"http\(s\)://host:port"):
        EtcdSource("/a/", "127.0.0.1:2379")
    with pytest.raises(ValueError, match="without credentials") as failure:
        EtcdSource("/a/", "http://root:hunter2@127.0.0.1:2379")
    assert "hunter2" not in str(failure.value)


def test_the_prefix_gets_a_trailing_slash_and_a_range_end() -> None:
    assert EtcdSource("/app/config").range == (b"/app/config/", b"/app/config0")
    assert EtcdSource("").range == (b"", b"\0")  # the whole keyspace
    assert EtcdSource(key="/app/config.toml").range == (b"/app/config.toml", None)
    assert EtcdSource("/app/").name == "etcd:/app/"


# -- the last-known-good cache ---------------------------------------------------------------


async def test_the_cache_serves_the_last_values_while_etcd_is_down(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    cache = tmp_path / "etcd-cache.json"
    revision = await etcd.put("/app/config/db/url", "postgres://db/app")
    await load_and_accept(source(etcd, "/app/config/", cache_path=cache))
    saved = json.loads(cache.read_text())
    assert saved["key"] == "/app/config/" and saved["revision"] >= revision
    assert cache.stat().st_mode & 0o077 == 0  # it may hold secrets: owner only

    etcd.stop()
    restarted = source(etcd, "/app/config/", cache_path=cache, timeout=0.5)
    with pytest.raises(SourceError) as failure:
        await restarted.load()

    assert failure.value.fallback is not None
    assert thaw(failure.value.fallback) == {"db": {"url": "postgres://db/app"}}
    assert restarted.origin(("db", "url")) == (
        f"etcd:/app/config/db/url (mod_revision {revision}) [cached]"
    )


async def test_a_corrupt_or_foreign_cache_is_reported_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = Member("down", tmp_path).client_url
    cache = tmp_path / "etcd-cache.json"
    for content in ("{garbage", json.dumps({"key": "/other/", "kvs": []})):
        cache.write_text(content)
        with pytest.raises(SourceError) as failure:
            await EtcdSource("/app/", down, cache_path=cache, timeout=0.3).load()
        assert failure.value.fallback is None
    assert caplog.text.count("cannot use the cache") == 2


async def test_the_cache_is_written_only_for_accepted_layers_that_changed(
    etcd_module: EtcdCluster, tmp_path: Path
) -> None:
    prefix = next_prefix()
    cache = tmp_path / "etcd-cache.json"
    await etcd_module.put(prefix + "a", "1")
    kv = source(etcd_module, prefix, cache_path=cache)
    await kv.load()  # not accepted: not cached
    assert not cache.exists()

    await load_and_accept(kv)
    first = cache.stat().st_mtime_ns
    await asyncio.sleep(0.01)
    await load_and_accept(kv)
    assert cache.stat().st_mtime_ns == first

    await etcd_module.put(prefix + "a", "2")
    await load_and_accept(kv)
    assert json.loads(cache.read_text())["kvs"][0]["value"] == "Mg=="
