"""EtcdSource.load against real etcd: mapping, decoding, limits, errors, auth, TLS, cache.

Watching, in a running tree and through faults, is ``test_etcd_watching.py``. Keys are
written with etcd's own HTTP API (``tests/etcd_cluster.py``), never with the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest

from otpylib_config import EtcdSource
from otpylib_config.errors import SourceError
from otpylib_config.schema_shape import shape_of
from otpylib_config.sources.base import SourceContext
from otpylib_config.sources.etcd_kv import (
    DEFAULT_ENDPOINT,
    Credentials,
    EtcdClient,
    EtcdError,
    Lines,
    check_endpoints,
    prefix_end,
)
from otpylib_config.values import MAX_STRING_LENGTH, Section, thaw

from .conftest import eventually
from .etcd_cluster import (
    EtcdCluster,
    FakeGateway,
    Member,
    answer,
    etcd,
    etcd_module,
    next_prefix,
    range_answer,
    raw_answer,
)

__all__ = ["etcd", "etcd_module"]  # fixtures

WAIT = 15.0
"""Bound on waits that involve etcd (a loaded 2-core machine)."""


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


async def test_the_empty_prefix_reads_and_watches_the_whole_keyspace(etcd: EtcdCluster) -> None:
    """etcd refuses an empty key: the empty prefix is ``(b"\\0", b"\\0")`` (every key from the
    smallest on), as ``clientv3.WithPrefix`` makes it. Its own etcd: every key is read."""
    await etcd.put("a", "1")
    await etcd.put("db/url", "postgres://x")
    kv = EtcdSource("", etcd.endpoints, timeout=5.0, resync_interval=None)

    assert thaw(await kv.load()) == {"a": 1, "db": {"url": "postgres://x"}}

    layers: list[Any] = []

    async def changed(layer: Section | None = None) -> None:
        layers.append(thaw(layer))

    watch = asyncio.create_task(kv.watch(changed))
    try:
        await eventually(lambda: bool(layers), WAIT)  # the watch read first: nothing accepted
        await etcd.put("b", "2")
        await eventually(
            lambda: layers[-1] == {"a": 1, "b": 2, "db": {"url": "postgres://x"}}, WAIT
        )
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


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


# -- answers a real etcd never gives (tests/etcd_cluster.py: FakeGateway) ----------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
"""JSON nested deeper than the decoder recurses: ``RecursionError``."""
HUGE_INT = b'{"header": {"revision": ' + b"1" * 5000 + b"}}"
"""An integer longer than Python converts (4300 digits): a ``ValueError`` from the decoder."""


@pytest.mark.parametrize(
    ("body", "problem"),
    [(DEEP, "is nested too deeply"), (HUGE_INT, "is not valid JSON: Exceeds the limit")],
    ids=["deep", "huge-integer"],
)
async def test_an_answer_too_deep_or_with_a_huge_integer_fails_naming_the_endpoint(
    tmp_path: Path, body: bytes, problem: str
) -> None:
    gateway = await FakeGateway({"/v3/kv/range": range_answer(7, {"/app/a": "1"})}).start()
    cache = tmp_path / "etcd-cache.json"
    try:
        await load_and_accept(EtcdSource("/app/", gateway.url, cache_path=cache))
        gateway.routes["/v3/kv/range"] = answer(body)
        restarted = EtcdSource("/app/", gateway.url, cache_path=cache)

        with pytest.raises(SourceError) as failure:
            await restarted.load()
    finally:
        gateway.close()

    message = str(failure.value)
    assert f"etcd's answer for range '/app/' from {gateway.url} {problem}" in message
    assert len(message) < 1000
    assert failure.value.fallback is not None  # the cache still serves
    assert thaw(failure.value.fallback) == {"a": 1}


TOKEN = "tok-3n7.do-not-leak"


def everything_said_by(error: BaseException) -> str:
    """Every string an error gives: its text, repr, and the whole traceback with its chain."""
    return " ".join([str(error), repr(error), *traceback.format_exception(error)])


async def test_an_error_has_no_context_and_never_the_token() -> None:
    """aiohttp's ``ClientResponseError`` (here: a malformed status line) holds the request's
    headers, Authorization included: the error wrapping it must not keep it as
    ``__context__`` (``raise ... from None`` alone does)."""
    malformed = raw_answer(b"HTTP/1.1 abc OK\r\n\r\n")
    gateway = FakeGateway(
        {
            "/v3/auth/authenticate": answer({"token": TOKEN}),
            "/v3/kv/range": malformed,
            "/v3/watch": malformed,
        }
    )
    await gateway.start()
    key = b"/app/"
    try:
        async with aiohttp.ClientSession() as session:
            client = EtcdClient(session, [gateway.url], Credentials("app", PASSWORD))
            with pytest.raises(EtcdError) as read:
                await client.range(key, prefix_end(key), timeout=5.0)
            with pytest.raises(EtcdError) as watch:
                async with client.watch(key, prefix_end(key), 1, connect=5.0):
                    pass
        kv = EtcdSource("/app/", gateway.url, "app", PASSWORD)
        with pytest.raises(SourceError) as load:
            await kv.load()
    finally:
        gateway.close()

    assert gateway.requests[-1].headers["Authorization"] == TOKEN  # it was sent
    for failure in (read.value, watch.value):
        assert "Bad status line" in str(failure)
        assert failure.__context__ is None and failure.__cause__ is None
    chain: BaseException | None = load.value
    while chain is not None:
        for failure in (read.value, watch.value, chain):
            said = everything_said_by(failure)
            assert TOKEN not in said and PASSWORD not in said
        chain = chain.__context__


class CountingBuffer(bytearray):
    """A buffer that counts the bytes its ``find`` searches."""

    searched = 0

    def find(self, sub: Any, start: Any = 0, *rest: Any) -> int:
        self.searched += len(self) - start
        return super().find(sub, start, *rest)


def test_the_watch_line_splitter_searches_each_byte_once() -> None:
    """A 1 MiB message in 1 KiB chunks: searching the whole buffer again per chunk would
    search 512 MiB; each byte once is 1 MiB."""
    lines = Lines("the watch")
    lines._buffer = buffer = CountingBuffer()
    for _ in range(1024):
        lines.feed(b"x" * 1024)
        assert lines.pop() is None
    lines.feed(b'x\n{"b": 1}\n\n  \n{"c"')

    assert lines.pop() == b"x" * (1 << 20) + b"x"
    assert lines.pop() == b'{"b": 1}'
    assert lines.pop() is None  # blank lines skipped, the next one incomplete
    lines.feed(b": 2}\n")
    assert lines.pop() == b'{"c": 2}'
    assert lines.pop() is None
    assert buffer.searched < 2 * (1 << 20)


def test_a_watch_message_larger_than_the_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("otpylib_config.sources.etcd_kv.MAX_MESSAGE", 4096)
    lines = Lines("the watch of '/app/'")
    lines.feed(b"x" * 4096)
    assert lines.pop() is None
    lines.feed(b"x")
    with pytest.raises(EtcdError, match="the watch of '/app/' a message larger than 4096"):
        lines.pop()


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


def make_certificate(directory: Path, name: str, *, encrypted: bool = False) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cipher = ["-passout", "pass:pw"] if encrypted else ["-nodes"]
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", *cipher, "-days", "1"),
            *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_a_tls_file_missing_or_wrong_is_refused_naming_the_option_and_the_path(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path, "a")
    _, other_key = make_certificate(tmp_path, "b")
    locked_cert, locked_key = make_certificate(tmp_path, "c", encrypted=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    cases: list[tuple[dict[str, str], str]] = [
        ({"ca_file": "/typo"}, "ca_file '/typo': No such file or directory"),
        ({"ca_file": str(tmp_path)}, f"ca_file '{tmp_path}': Is a directory"),
        ({"ca_file": str(garbage)}, f"ca_file '{garbage}': holds no PEM certificate"),
        ({"ca_file": str(key)}, f"ca_file '{key}': holds no PEM certificate"),
        ({"cert_file": "/typo.crt"}, "cert_file '/typo.crt': No such file or directory"),
        (
            {"cert_file": str(cert), "key_file": "/typo.key"},
            "key_file '/typo.key': No such file or directory",
        ),
        (
            {"cert_file": str(garbage), "key_file": str(key)},
            f"cert_file '{garbage}': holds no PEM certificate",
        ),
        (
            {"cert_file": str(cert), "key_file": str(garbage)},
            f"key_file '{garbage}': holds no PEM private key",
        ),
        (
            {"cert_file": str(cert), "key_file": str(other_key)},
            f"key_file '{other_key}': does not match the certificate of cert_file '{cert}'",
        ),
        ({"cert_file": str(cert)}, f"cert_file '{cert}': holds no private key (give key_file=)"),
        (
            {"cert_file": str(locked_cert), "key_file": str(locked_key)},
            f"key_file '{locked_key}': the private key is encrypted",  # and no prompt
        ),
    ]
    for files, problem in cases:
        with pytest.raises(ValueError) as failure:
            EtcdSource("/a/", "https://127.0.0.1:2379", **files)  # type: ignore[arg-type]
        assert str(failure.value).startswith(f"EtcdSource {problem}"), (files, failure.value)

    good = EtcdSource("/a/", "https://127.0.0.1:2379", cert_file=str(cert), key_file=str(key))
    assert isinstance(good._tls, ssl.SSLContext)


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
    with pytest.raises(ValueError, match="EtcdSource needs at least one etcd endpoint"):
        EtcdSource("/a/", [])
    with pytest.raises(ValueError, match=r"http\(s\)://host:port"):
        EtcdSource("/a/", "127.0.0.1:2379")
    with pytest.raises(ValueError, match="without credentials") as failure:
        EtcdSource("/a/", "http://root:hunter2@127.0.0.1:2379")
    assert "hunter2" not in str(failure.value)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://127.0.0.1:2379/v3", "'http://127.0.0.1:2379/v3' (it has a path)"),
        ("http://127.0.0.1:2379/a/", "'http://127.0.0.1:2379/a/' (it has a path)"),
        ("http://127.0.0.1:2379?token=x", "'http://127.0.0.1:2379' (it has a query)"),
        ("http://127.0.0.1:2379/?", "'http://127.0.0.1:2379/' (it has a query)"),
        ("http://127.0.0.1:2379#top", "'http://127.0.0.1:2379' (it has a fragment)"),
        ("http://127.0.0.1:99999", "'http://127.0.0.1:99999' (not a URL with a valid port)"),
        ("http://127.0.0.1:port", "'http://127.0.0.1:port' (not a URL with a valid port)"),
        ("ftp://127.0.0.1:2379", "'ftp://127.0.0.1:2379' (not http(s)://host)"),
        ("http://:2379", "'http://:2379' (not http(s)://host)"),
    ],
)
def test_an_endpoint_with_a_path_query_or_bad_port_is_refused_naming_it(
    endpoint: str, problem: str
) -> None:
    with pytest.raises(ValueError) as failure:
        EtcdSource("/a/", ["http://127.0.0.1:2379", endpoint])

    assert str(failure.value) == (
        f"EtcdSource: an etcd endpoint is an http(s)://host:port URL, got {problem}"
    )
    assert "token=x" not in str(failure.value)  # a query is not echoed


def test_endpoints_are_checked_once_for_every_etcd_client() -> None:
    """``check_endpoints`` is what the source and the fleet use; it, and the default, come
    without importing aiohttp (option objects use them)."""
    assert check_endpoints("https://a:2379/", "X") == ("https://a:2379/",)
    assert check_endpoints(["http://a:1", "http://[::1]:2"], "X") == (
        "http://a:1",
        "http://[::1]:2",
    )
    assert EtcdSource("/a/").endpoints == (DEFAULT_ENDPOINT,) == ("http://127.0.0.1:2379",)
    with pytest.raises(ValueError, match=r"^read_fleet needs at least one etcd endpoint$"):
        check_endpoints((), "read_fleet")
    code = (
        "import sys\n"
        "from otpylib_config.sources.etcd_kv import DEFAULT_ENDPOINT, check_endpoints\n"
        "check_endpoints(DEFAULT_ENDPOINT, 'x')\n"
        "print('aiohttp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_prefix_gets_a_trailing_slash_and_a_range_end() -> None:
    assert EtcdSource("/app/config").range == (b"/app/config/", b"/app/config0")
    assert EtcdSource("").range == (b"\0", b"\0")  # the whole keyspace, as etcd wants it
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
