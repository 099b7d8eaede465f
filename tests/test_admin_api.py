"""The admin HTTP API, specified endpoint by endpoint (docs/admin.md).

Every test runs a real tree with ``ConfigSpec(admin=AdminSpec(port=0, ...))`` and talks to it
over 127.0.0.1 with a real aiohttp client (or a raw TCP connection, for what a client
library would not send). Every wait is bounded; no test asserts on how fast anything is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from otpylib_config import (
    Config,
    ConfigSpec,
    ConfigTree,
    DefaultsSource,
    FileSource,
    telemetry,
)
from otpylib_config.admin import AdminSpec, AdminToken, AdminTokenError

from .conftest import Recorder, StartTree

READ_SECRET = "read-secret-Zq8vN3kP0wX7"
WRITE_SECRET = "write-secret-Hb4mT9yR2cL5"
UNKNOWN_SECRET = "unknown-secret-Jd6sF1gE8aU3"
SECRETS = (READ_SECRET, WRITE_SECRET, UNKNOWN_SECRET)
READ = AdminToken("reader", READ_SECRET)
WRITE = AdminToken("writer", WRITE_SECRET, scope="write")

DB_PASSWORD = "db-password-Qx9Lm2Vb7"
DEFAULTS = {
    "db": {"host": "db.local", "port": 5432, "password": DB_PASSWORD},
    "rate_limiting": {"per_ip": 10, "burst": 20, "window": 60},
    "feature": {"enabled": False},
}
WRITABLE = ("rate_limiting.**", "feature.**")
WAIT = 10.0
"""Seconds any single wait may take before the test fails: only bounds a hang."""

ALL_TELEMETRY_EVENTS = tuple(
    value
    for name, value in vars(telemetry).items()
    if name.isupper() and isinstance(value, str) and value.startswith("config.")
)


def positive(value: Any) -> None:
    """A validator: every rate limit is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive int, got {value!r}")


# -- the client side ------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    headers: Any
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text)

    @property
    def error(self) -> str:
        body = self.body
        assert set(body) >= {"error"}, body
        return str(body["error"])


_NOTHING: Any = object()


class Api:
    """The admin API of one tree, seen from a client: ``await api.call("GET", "/config")``."""

    def __init__(self, session: aiohttp.ClientSession, url: str, tree: ConfigTree) -> None:
        self.session, self.url, self.tree = session, url, tree
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        self.host, self.port = host, int(port)

    async def call(
        self,
        method: str,
        route: str,
        *,
        token: str | None = WRITE_SECRET,
        authorization: str | None = None,
        json_body: Any = _NOTHING,
        data: Any = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Answer:
        sent = dict(headers or {})
        if authorization is not None:
            sent["Authorization"] = authorization
        elif token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if json_body is not _NOTHING:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with asyncio.timeout(WAIT):
            async with self.session.request(
                method, self.url + route, data=data, headers=sent, **options
            ) as response:
                return Answer(response.status, response.headers, await response.text())

    async def get(self, route: str, **options: Any) -> Answer:
        return await self.call("GET", route, **options)

    async def put(self, path: str, value: Any, **options: Any) -> Answer:
        return await self.call("PUT", f"/config/{path}", json_body=value, **options)

    async def patch(self, values: Any, **options: Any) -> Answer:
        return await self.call("PATCH", "/config", json_body=values, **options)

    async def delete(self, path: str, **options: Any) -> Answer:
        return await self.call("DELETE", f"/config/{path}", **options)

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A plain TCP connection to the server."""
        async with asyncio.timeout(WAIT):
            return await asyncio.open_connection(self.host, self.port)

    async def still_serving(self) -> None:
        """The tree and its admin API both still answer."""
        assert await Config.get("db.host") == "db.local"
        answer = await self.get("/config/db.host")
        assert (answer.status, answer.body) == (200, "db.local")
        assert (await self.get("/health")).status == 200


Serve = Callable[..., Awaitable[Api]]


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest_asyncio.fixture
async def serve(start_tree: StartTree, session: aiohttp.ClientSession) -> Serve:
    """``await serve(sources=..., spec={ConfigSpec options}, **AdminSpec options)``."""

    async def start(
        *, sources: list[Any] | None = None, spec: dict[str, Any] | None = None, **admin: Any
    ) -> Api:
        options: dict[str, Any] = {"port": 0, "tokens": (READ, WRITE), "writable": WRITABLE}
        options.update(admin)
        tree = await start_tree(
            sources=[DefaultsSource(DEFAULTS)] if sources is None else sources,
            admin=AdminSpec(**options),
            **(spec or {}),
        )
        url = (await Config.status()).admin_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        return Api(session, url, tree)

    return start


@pytest_asyncio.fixture
async def api(serve: Serve) -> Api:
    """The default tree: ``DEFAULTS``, a read and a write token, ``WRITABLE``."""
    return await serve()


async def version() -> int:
    return (await Config.status()).version


# -- a small Server-Sent Events reader ------------------------------------------------------


@dataclasses.dataclass
class SseEvent:
    event: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None


class SseReader:
    """Events of an ``/events`` response, one at a time, each read bounded in time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def line(self, timeout: float = WAIT) -> str | None:
        async with asyncio.timeout(timeout):
            raw = await self.response.content.readline()
        if not raw:
            return None  # the stream ended
        return raw.decode("utf-8").rstrip("\n").rstrip("\r")

    async def next(self, timeout: float = WAIT, *, comments: bool = False) -> SseEvent | None:
        """The next event (a comment too with ``comments``), ``None`` once the stream ends."""
        event = SseEvent()
        fields = False
        while True:
            line = await self.line(timeout)
            if line is None:
                return None
            if line == "":
                if fields:
                    return event
                continue
            if line.startswith(":"):
                if comments:
                    return SseEvent(comment=line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields = True
            if name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data = json.loads(value)
            else:
                raise AssertionError(f"not an SSE field line: {line!r}")

    async def expect(self, kind: str, timeout: float = WAIT) -> SseEvent:
        event = await self.next(timeout)
        assert event is not None, f"the stream ended before a {kind} event"
        assert event.event == kind, event
        return event

    async def ended(self, timeout: float = WAIT) -> None:
        """Read until the stream ends (whatever is still in flight), bounded."""
        async with asyncio.timeout(timeout):
            while await self.next(timeout) is not None:
                pass


class Events:
    """``async with Events(api, pattern=..., last_id=...) as events: await events.next()``."""

    def __init__(
        self,
        api: Api,
        *,
        pattern: str | None = None,
        last_id: str | None = None,
        token: str | None = READ_SECRET,
    ) -> None:
        self.api, self.pattern, self.last_id, self.token = api, pattern, last_id, token
        self.response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> SseReader:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        params = {} if self.pattern is None else {"pattern": self.pattern}
        async with asyncio.timeout(WAIT):
            self.response = await self.api.session.get(
                self.api.url + "/events", headers=headers, params=params
            )
        assert self.response.status == 200, await self.response.text()
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        return SseReader(self.response)

    async def __aexit__(self, *exc: object) -> None:
        assert self.response is not None
        self.response.close()


# -- GET /config ----------------------------------------------------------------------------


async def test_get_config_is_the_whole_configuration_redacted_exactly_as_dump(api: Api) -> None:
    answer = await api.get("/config")

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.body == await Config.dump()
    assert answer.body["db"]["password"] != DB_PASSWORD
    assert DB_PASSWORD not in answer.text
    assert answer.body["rate_limiting"] == DEFAULTS["rate_limiting"]


async def test_get_config_carries_the_version_it_was_read_at(api: Api) -> None:
    first = await api.get("/config")
    assert first.headers["X-Config-Version"] == str(await version())

    await Config.put("feature.enabled", True)
    second = await api.get("/config")

    assert int(second.headers["X-Config-Version"]) == int(first.headers["X-Config-Version"]) + 1
    assert second.body["feature"]["enabled"] is True


async def test_get_config_with_a_path_query_is_the_subtree_at_that_path(api: Api) -> None:
    answer = await api.get("/config", params={"path": "rate_limiting"})

    assert answer.status == 200
    assert answer.body == DEFAULTS["rate_limiting"]
    assert answer.headers["X-Config-Version"] == str(await version())


async def test_get_config_with_a_path_query_redacts_a_section_holding_a_secret(api: Api) -> None:
    answer = await api.get("/config", params={"path": "db"})

    assert answer.status == 200
    assert answer.body == (await Config.dump())["db"]
    assert DB_PASSWORD not in answer.text


async def test_get_config_with_a_slashed_path_query_is_400_suggesting_dots(api: Api) -> None:
    answer = await api.get("/config", params={"path": "rate_limiting/per_ip"})

    assert answer.status == 400
    assert "rate_limiting.per_ip" in answer.error


# -- GET /config/{path} ---------------------------------------------------------------------


async def test_get_config_path_is_the_scalar_at_that_path(api: Api) -> None:
    answer = await api.get("/config/rate_limiting.per_ip")

    assert (answer.status, answer.body) == (200, 10)
    assert answer.headers["X-Config-Version"] == str(await version())


async def test_get_config_path_is_the_section_at_that_path_redacted(api: Api) -> None:
    answer = await api.get("/config/db")

    assert answer.status == 200
    assert answer.body == (await Config.dump())["db"]
    assert answer.body["host"] == "db.local"
    assert DB_PASSWORD not in answer.text


async def test_get_config_path_of_a_secret_leaf_is_redacted_as_dump(api: Api) -> None:
    answer = await api.get("/config/db.password")

    assert answer.status == 200
    assert answer.body == (await Config.dump())["db"]["password"]
    assert DB_PASSWORD not in answer.text


async def test_get_config_path_that_is_absent_is_404_naming_the_path(api: Api) -> None:
    answer = await api.get("/config/rate_limiting.nothing_here")

    assert answer.status == 404
    assert "rate_limiting.nothing_here" in answer.error


async def test_get_config_path_with_an_empty_segment_is_400(api: Api) -> None:
    answer = await api.get("/config/a..b")

    assert answer.status == 400
    assert "a..b" in answer.error


async def test_get_config_path_with_slashes_is_400_suggesting_dots(api: Api) -> None:
    answer = await api.get("/config/rate_limiting/per_ip")

    assert answer.status == 400
    assert "rate_limiting.per_ip" in answer.error


# -- GET /explain/{path} --------------------------------------------------------------------


async def test_explain_names_the_winning_source_and_every_contribution(api: Api) -> None:
    await Config.put("rate_limiting.per_ip", 99)

    answer = await api.get("/explain/rate_limiting.per_ip")

    assert answer.status == 200
    body = answer.body
    assert set(body) == {"path", "value", "source", "origin", "contributions"}
    assert (body["path"], body["value"]) == ("rate_limiting.per_ip", 99)
    explained = await Config.explain("rate_limiting.per_ip")
    assert (body["source"], body["origin"]) == (explained.source, explained.origin)
    assert [c["value"] for c in body["contributions"]] == [99, 10]
    assert [c["source"] for c in body["contributions"]] == [
        c.source for c in explained.contributions
    ]
    assert all(set(c) == {"source", "origin", "value"} for c in body["contributions"])


async def test_explain_of_a_secret_redacts_the_value_and_every_contribution(api: Api) -> None:
    answer = await api.get("/explain/db.password")

    assert answer.status == 200
    assert answer.body["value"] == (await Config.dump())["db"]["password"]
    assert DB_PASSWORD not in answer.text


async def test_explain_of_an_invalid_path_is_400(api: Api) -> None:
    answer = await api.get("/explain/a..b")

    assert answer.status == 400


# -- PUT /config/{path} ---------------------------------------------------------------------


async def test_put_answers_the_path_and_the_version_it_was_published_at(api: Api) -> None:
    before = await version()

    answer = await api.put("rate_limiting.per_ip", 25)

    assert answer.status == 200
    assert answer.body == {"path": "rate_limiting.per_ip", "version": before + 1}
    assert await version() == before + 1


async def test_put_value_is_visible_to_config_get_at_once(api: Api) -> None:
    await api.put("rate_limiting.per_ip", 25)

    assert await Config.get("rate_limiting.per_ip") == 25


async def test_put_of_a_json_object_replaces_the_section(api: Api) -> None:
    answer = await api.put("feature", {"enabled": True, "ratio": 0.5, "tags": ["a", "b"]})

    assert answer.status == 200
    assert await Config.get("feature") == {"enabled": True, "ratio": 0.5, "tags": ("a", "b")}


async def test_put_calls_a_subscriber_of_the_path(api: Api) -> None:
    recorder = Recorder()
    await Config.subscribe("rate_limiting.**", recorder)

    await api.put("rate_limiting.burst", 40)

    assert await recorder.settled(1) == [("rate_limiting.burst", 20, 40)]


async def test_put_of_a_value_that_fails_validation_is_422_and_not_applied(serve: Serve) -> None:
    api = await serve(spec={"validators": {"rate_limiting.*": positive}})

    answer = await api.put("rate_limiting.per_ip", -5)

    assert answer.status == 422
    assert [p["path"] for p in answer.body["problems"]] == ["rate_limiting.per_ip"]
    assert await Config.get("rate_limiting.per_ip") == 10


# -- PATCH /config --------------------------------------------------------------------------


async def test_patch_applies_every_value_as_one_version(api: Api) -> None:
    before = await version()
    values = {"rate_limiting.per_ip": 11, "rate_limiting.burst": 22, "feature.enabled": True}

    answer = await api.patch(values)

    assert answer.status == 200
    assert answer.body == {"paths": list(values), "version": before + 1}
    for path, value in values.items():
        assert await Config.get(path) == value


async def test_patch_with_invalid_values_applies_none_and_is_422_naming_each(
    serve: Serve,
) -> None:
    api = await serve(spec={"validators": {"rate_limiting.*": positive}})
    before = await version()

    answer = await api.patch(
        {"rate_limiting.per_ip": -1, "rate_limiting.burst": 0, "rate_limiting.window": 30}
    )

    assert answer.status == 422
    problems = answer.body["problems"]
    assert sorted(p["path"] for p in problems) == ["rate_limiting.burst", "rate_limiting.per_ip"]
    assert all(isinstance(p["message"], str) and p["message"] for p in problems)
    assert await Config.get("rate_limiting") == DEFAULTS["rate_limiting"]
    assert await version() == before


@pytest.mark.parametrize("body", [[1, 2], {}, "rate_limiting.per_ip", 3, None])
async def test_patch_whose_body_is_not_a_non_empty_object_is_400(api: Api, body: Any) -> None:
    answer = await api.patch(body)

    assert answer.status == 400
    assert "object" in answer.error


async def test_patch_with_an_invalid_path_key_is_400_and_applies_nothing(api: Api) -> None:
    answer = await api.patch({"rate_limiting.per_ip": 1, "rate_limiting..burst": 2})

    assert answer.status == 400
    assert await Config.get("rate_limiting.per_ip") == 10


async def test_patch_with_thousands_of_keys_within_the_limit_is_applied(api: Api) -> None:
    values = {f"rate_limiting.k{i}": i for i in range(5000)}
    assert len(json.dumps(values)) < 1024 * 1024
    before = await version()

    answer = await api.patch(values)

    assert answer.status == 200
    assert answer.body["version"] == before + 1
    assert len(answer.body["paths"]) == 5000
    assert await Config.get("rate_limiting.k4999") == 4999


# -- DELETE /config/{path} ------------------------------------------------------------------


async def test_delete_removes_an_override_and_the_lower_layer_shows_through(api: Api) -> None:
    await Config.put("rate_limiting.per_ip", 99)
    before = await version()

    answer = await api.delete("rate_limiting.per_ip")

    assert answer.status == 200
    assert answer.body == {"path": "rate_limiting.per_ip", "removed": True, "version": before + 1}
    assert await Config.get("rate_limiting.per_ip") == 10


async def test_delete_without_an_override_says_removed_false(api: Api) -> None:
    before = await version()

    answer = await api.delete("rate_limiting.per_ip")

    assert answer.status == 200
    assert answer.body == {"path": "rate_limiting.per_ip", "removed": False, "version": before}


# -- POST /reload ---------------------------------------------------------------------------


async def test_reload_picks_up_a_file_changed_on_disk(serve: Serve, tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("[rate_limiting]\nper_ip = 10\n")
    api = await serve(sources=[FileSource(settings, watch=False, name="settings")])
    before = await version()
    settings.write_text("[rate_limiting]\nper_ip = 77\n")

    answer = await api.call("POST", "/reload")

    assert answer.status == 200
    assert answer.body == {"version": before + 1, "changed": ["rate_limiting.per_ip"], "errors": {}}
    assert await Config.get("rate_limiting.per_ip") == 77


async def test_reload_with_nothing_changed_keeps_the_version(api: Api) -> None:
    before = await version()

    answer = await api.call("POST", "/reload")

    assert answer.status == 200
    assert answer.body == {"version": before, "changed": [], "errors": {}}


# -- GET /status, /health -------------------------------------------------------------------


async def test_status_has_every_field_of_status_and_healthy(api: Api) -> None:
    answer = await api.get("/status", token=READ_SECRET)

    assert answer.status == 200
    status = await Config.status()
    fields = {f.name for f in dataclasses.fields(status)}
    assert set(answer.body) == fields | {"healthy"}
    assert answer.body["healthy"] is True
    assert answer.body["id"] == status.id
    assert answer.body["version"] == status.version
    assert answer.body["config_hash"] == status.config_hash
    assert answer.body["admin_url"] == api.url
    assert [s["name"] for s in answer.body["sources"]] == [s.name for s in status.sources]


async def test_status_needs_a_token_unless_public(api: Api) -> None:
    answer = await api.get("/status", token=None)

    assert answer.status == 401


async def test_health_is_200_when_the_tree_runs_and_every_source_is_healthy(api: Api) -> None:
    answer = await api.get("/health")

    assert (answer.status, answer.body) == (200, {"healthy": True, "reasons": []})


async def test_health_is_public_by_default(api: Api) -> None:
    answer = await api.get("/health", token=None)

    assert answer.status == 200


async def test_health_needs_a_token_when_nothing_is_public(serve: Serve) -> None:
    api = await serve(public=())

    assert (await api.get("/health", token=None)).status == 401
    assert (await api.get("/health", token=READ_SECRET)).status == 200


async def test_status_and_metrics_may_be_made_public(serve: Serve) -> None:
    api = await serve(public=("health", "status", "metrics"))

    assert (await api.get("/status", token=None)).status == 200
    assert (await api.get("/config", token=None)).status == 401


async def test_health_is_503_naming_a_required_source_that_fails(
    serve: Serve, tmp_path: Path
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("[rate_limiting]\nper_ip = 10\n")
    api = await serve(
        sources=[DefaultsSource(DEFAULTS), FileSource(settings, watch=False, name="settings")]
    )
    settings.write_text("[rate_limiting\nper_ip = = 10\n")  # not TOML
    reloaded = await api.call("POST", "/reload")
    assert reloaded.status == 200 and "settings" in reloaded.body["errors"]

    answer = await api.get("/health")

    assert answer.status == 503
    assert answer.body["healthy"] is False
    assert len(answer.body["reasons"]) == 1
    assert "settings" in answer.body["reasons"][0]
    assert await Config.get("rate_limiting.per_ip") == 10  # the last good layer still serves


async def test_health_stays_200_when_an_optional_source_fails(serve: Serve, tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text("[feature]\nenabled = true\n")
    api = await serve(
        sources=[
            DefaultsSource(DEFAULTS),
            FileSource(extra, watch=False, optional=True, name="extra"),
        ]
    )
    extra.write_text("[feature\n")  # not TOML
    await api.call("POST", "/reload")
    status = await Config.status()
    assert [s.healthy for s in status.sources if s.name == "extra"] == [False]

    answer = await api.get("/health")

    assert (answer.status, answer.body) == (200, {"healthy": True, "reasons": []})
    assert (await api.get("/status")).body["healthy"] is True  # one rule for both


# -- GET /metrics ---------------------------------------------------------------------------


def _metrics_or_skip() -> Any:
    try:
        from prometheus_client.parser import text_string_to_metric_families

        from otpylib_config import metrics  # noqa: F401
    except ImportError as exc:  # pragma: no cover - written concurrently by someone else
        pytest.skip(f"otpylib_config.metrics is not importable yet: {exc}")
    return text_string_to_metric_families


async def test_metrics_are_the_prometheus_text_format_of_this_tree(api: Api) -> None:
    parse = _metrics_or_skip()
    await Config.put("feature.enabled", True)

    answer = await api.get("/metrics", token=READ_SECRET)

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in parse(answer.text)}
    samples = families["otpylib_config_version"].samples
    assert [(s.labels, s.value) for s in samples] == [({"id": "default"}, await version())]


async def test_metrics_need_a_token_by_default(api: Api) -> None:
    answer = await api.get("/metrics", token=None)

    assert answer.status == 401


# -- the prefix -----------------------------------------------------------------------------


async def test_every_route_starts_with_the_prefix(serve: Serve) -> None:
    api = await serve(prefix="/admin")

    assert api.url.endswith("/admin")
    assert (await api.get("/config/db.host")).body == "db.local"
    root = api.url.removesuffix("/admin")
    async with asyncio.timeout(WAIT), api.session.get(root + "/health") as response:
        assert response.status == 404


# -- auth -----------------------------------------------------------------------------------


async def test_no_authorization_header_is_401_with_a_bearer_challenge(api: Api) -> None:
    answer = await api.get("/config", token=None)

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="otpylib-config"'
    assert "token" in answer.error


async def test_an_unknown_token_is_401_with_a_bearer_challenge(api: Api) -> None:
    answer = await api.get("/config", token=UNKNOWN_SECRET)

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="otpylib-config"'


async def test_a_known_secret_in_the_basic_scheme_is_401(api: Api) -> None:
    answer = await api.get("/config", authorization=f"Basic {READ_SECRET}")

    assert answer.status == 401


async def test_an_empty_bearer_is_401(api: Api) -> None:
    answer = await api.get("/config", authorization="Bearer ")

    assert answer.status == 401


async def test_the_right_token_is_accepted_and_a_wrong_one_of_the_same_length_is_not(
    api: Api,
) -> None:
    wrong = READ_SECRET[:-1] + ("x" if READ_SECRET[-1] != "x" else "y")
    assert len(wrong) == len(READ_SECRET)

    assert (await api.get("/config", token=READ_SECRET)).status == 200
    assert (await api.get("/config", token=wrong)).status == 401


async def test_a_read_token_may_read_and_a_write_token_may_read_too(api: Api) -> None:
    assert (await api.get("/config/db.host", token=READ_SECRET)).status == 200
    assert (await api.get("/config/db.host", token=WRITE_SECRET)).status == 200


WRITES = [
    pytest.param("PUT", "/config/rate_limiting.per_ip", 5, id="PUT"),
    pytest.param("PATCH", "/config", {"rate_limiting.per_ip": 5}, id="PATCH"),
    pytest.param("DELETE", "/config/rate_limiting.per_ip", _NOTHING, id="DELETE"),
    pytest.param("POST", "/reload", _NOTHING, id="POST-reload"),
]


@pytest.mark.parametrize(("method", "route", "body"), WRITES)
async def test_a_read_token_on_a_write_route_is_403(
    api: Api, method: str, route: str, body: Any
) -> None:
    await Config.put("rate_limiting.per_ip", 99)
    before = await version()

    answer = await api.call(method, route, token=READ_SECRET, json_body=body)

    assert answer.status == 403
    assert "reader" in answer.error and "write" in answer.error
    assert await version() == before
    assert await Config.get("rate_limiting.per_ip") == 99


@pytest.mark.parametrize(("method", "route", "body"), WRITES)
async def test_no_token_on_a_write_route_is_401(
    api: Api, method: str, route: str, body: Any
) -> None:
    answer = await api.call(method, route, token=None, json_body=body)

    assert answer.status == 401


async def test_a_put_outside_every_writable_glob_is_403_naming_the_path(api: Api) -> None:
    answer = await api.put("db.host", "evil.example")

    assert answer.status == 403
    assert "db.host" in answer.error
    assert await Config.get("db.host") == "db.local"


async def test_a_delete_outside_every_writable_glob_is_403_naming_the_path(api: Api) -> None:
    await Config.put("db.host", "override.local")

    answer = await api.delete("db.host")

    assert answer.status == 403
    assert "db.host" in answer.error
    assert await Config.get("db.host") == "override.local"


async def test_a_patch_with_one_path_outside_the_globs_is_403_and_applies_nothing(
    api: Api,
) -> None:
    answer = await api.patch({"rate_limiting.per_ip": 1, "db.port": 1})

    assert answer.status == 403
    assert "db.port" in answer.error
    assert await Config.get("rate_limiting.per_ip") == 10
    assert await Config.get("db.port") == 5432


async def test_a_glob_covers_the_section_itself_and_everything_below(api: Api) -> None:
    assert (await api.put("rate_limiting", {"per_ip": 1})).status == 200
    assert (await api.put("rate_limiting.new.deep", 1)).status == 200
    assert (await api.put("rate_limiting_other", 1)).status == 403


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [p for p in WRITES if p.id != "POST-reload"],
)
async def test_with_no_writable_globs_every_write_of_a_path_is_403(
    serve: Serve, method: str, route: str, body: Any
) -> None:
    api = await serve(writable=())

    answer = await api.call(method, route, json_body=body)

    assert answer.status == 403
    assert "rate_limiting.per_ip" in answer.error


async def test_a_token_secret_never_appears_in_answers_logs_or_telemetry(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with telemetry.capture_events(*ALL_TELEMETRY_EVENTS) as events:
        api = await serve(spec={"validators": {"rate_limiting.*": positive}})
        for secret in SECRETS:
            for authorization in (f"Bearer {secret}", f"Basic {secret}", secret):
                calls = [
                    api.get("/config", authorization=authorization),
                    api.get("/nope", authorization=authorization),
                    api.put("rate_limiting.per_ip", 3, authorization=authorization),
                    api.put("rate_limiting.per_ip", -3, authorization=authorization),
                    api.put("db.host", "x", authorization=authorization),
                    api.patch([1], authorization=authorization),
                    api.call("POST", "/reload", authorization=authorization),
                    api.call("PUT", "/config/a..b", data=b"{", authorization=authorization),
                ]
                for call in calls:
                    answer = await call
                    texts += [answer.text, str(dict(answer.headers))]
        async with Events(api, token=READ_SECRET) as stream:
            texts.append(str(await stream.expect("snapshot")))
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) + str(record.exc_text) for record in caplog.records]
    texts += [repr(event) for event in events]
    assert any(event.name == telemetry.ADMIN_WRITE for event in events)
    assert any(record.name == "otpylib_config.admin" for record in caplog.records)
    for secret in SECRETS:
        assert not [text for text in texts if secret in text]


def test_admin_token_repr_masks_the_secret() -> None:
    spec = ConfigSpec(admin=AdminSpec(tokens=(READ, WRITE)))

    for shown in (repr(READ), str(WRITE), repr(spec.admin), repr(spec)):
        assert READ_SECRET not in shown and WRITE_SECRET not in shown
    assert repr(READ) == "AdminToken(name='reader', secret='****', scope='read')"


def test_admin_token_from_env_reads_the_variable() -> None:
    token = AdminToken.from_env("ops", "OPS_TOKEN", scope="write", environ={"OPS_TOKEN": "s" * 20})

    assert (token.name, token.scope) == ("ops", "write") and token.matches(b"s" * 20)


def test_admin_token_from_env_with_the_variable_unset_names_the_variable() -> None:
    with pytest.raises(AdminTokenError, match=r"\$OPS_TOKEN is not set"):
        AdminToken.from_env("ops", "OPS_TOKEN", environ={})


def test_admin_token_from_env_with_a_short_secret_names_the_variable_not_the_value() -> None:
    with pytest.raises(AdminTokenError) as info:
        AdminToken.from_env("ops", "OPS_TOKEN", environ={"OPS_TOKEN": "tiny-Secret"})

    assert "OPS_TOKEN" in str(info.value)
    assert "tiny-Secret" not in str(info.value)


def test_admin_token_from_file_strips_the_content(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(WRITE_SECRET + "\n")

    token = AdminToken.from_file("ops", path, scope="write")

    assert token.scope == "write" and token.matches(WRITE_SECRET.encode())


def test_admin_token_from_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-token"

    with pytest.raises(AdminTokenError, match="no-such-token"):
        AdminToken.from_file("ops", path)


def test_admin_token_from_a_file_with_a_short_secret_names_the_file_not_the_value(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short-token"
    path.write_text("tiny-Secret\n")

    with pytest.raises(AdminTokenError) as info:
        AdminToken.from_file("ops", path)

    assert "short-token" in str(info.value)
    assert "tiny-Secret" not in str(info.value)


async def test_a_token_from_the_environment_is_accepted_by_the_server(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTPYLIB_CONFIG_TEST_TOKEN", UNKNOWN_SECRET)
    api = await serve(tokens=(AdminToken.from_env("env", "OTPYLIB_CONFIG_TEST_TOKEN"),))

    assert (await api.get("/config/db.host", token=UNKNOWN_SECRET)).status == 200
    assert (await api.get("/config/db.host", token=READ_SECRET)).status == 401


# -- bad requests ---------------------------------------------------------------------------


async def put_raw(api: Api, data: Any, content_type: str | None, **options: Any) -> Answer:
    headers = {} if content_type is None else {"Content-Type": content_type}
    skip = () if content_type is not None else ("Content-Type",)
    return await api.call(
        "PUT",
        "/config/rate_limiting.per_ip",
        data=data,
        headers=headers,
        skip_auto_headers=skip,
        **options,
    )


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    answer = await put_raw(api, b"{not json", "application/json")

    assert answer.status == 400
    assert "JSON" in answer.error
    await api.still_serving()


async def test_a_text_plain_body_is_415(api: Api) -> None:
    answer = await put_raw(api, b"5", "text/plain")

    assert answer.status == 415
    assert "application/json" in answer.error
    assert await Config.get("rate_limiting.per_ip") == 10


async def test_a_body_without_content_type_is_415(api: Api) -> None:
    answer = await put_raw(api, b"5", None)

    assert answer.status == 415
    assert await Config.get("rate_limiting.per_ip") == 10


async def test_a_json_body_with_a_charset_is_accepted(api: Api) -> None:
    answer = await put_raw(api, b"5", "application/json; charset=utf-8")

    assert answer.status == 200
    assert await Config.get("rate_limiting.per_ip") == 5


async def test_a_body_over_max_body_with_content_length_is_413(serve: Serve) -> None:
    api = await serve(max_body=1024)

    answer = await put_raw(api, json.dumps("x" * 2000).encode(), "application/json")

    assert answer.status == 413
    assert "1024" in answer.error
    await api.still_serving()


async def test_a_body_over_max_body_is_refused_before_it_is_sent(serve: Serve) -> None:
    """Only the headers are sent: the 413 comes without the server waiting for the body."""
    api = await serve(max_body=1024)
    reader, writer = await api.raw()
    try:
        writer.write(
            b"PUT /config/rate_limiting.per_ip HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {WRITE_SECRET}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
        )
        async with asyncio.timeout(WAIT):
            status_line = await reader.readline()
    finally:
        writer.close()

    assert status_line.startswith(b"HTTP/1.1 413 ")
    await api.still_serving()


async def _chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    yield b'"'
    for _ in range(total // size):
        yield b"x" * size
        await asyncio.sleep(0)
    yield b'"'


async def test_a_chunked_body_over_max_body_is_413(serve: Serve) -> None:
    api = await serve(max_body=1024)

    answer = await put_raw(api, _chunks(4096), "application/json")

    assert answer.status == 413
    await api.still_serving()


async def test_a_chunked_body_over_max_body_is_refused_before_it_ends(serve: Serve) -> None:
    api = await serve(max_body=1024)
    reader, writer = await api.raw()
    try:
        writer.write(
            b"PUT /config/rate_limiting.per_ip HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {WRITE_SECRET}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"800\r\n"
            + b" " * 0x800
            + b"\r\n"  # one chunk over the limit, and no last chunk
        )
        async with asyncio.timeout(WAIT):
            status_line = await reader.readline()
    finally:
        writer.close()

    assert status_line.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "[1, NaN]"])
async def test_a_json_body_with_a_non_json_constant_is_400(api: Api, constant: str) -> None:
    answer = await put_raw(api, constant.encode(), "application/json")

    assert answer.status == 400
    assert await Config.get("rate_limiting.per_ip") == 10


async def test_a_deeply_nested_json_body_is_400_and_the_server_keeps_serving(api: Api) -> None:
    answer = await put_raw(api, b"[" * 100_000, "application/json")

    assert answer.status == 400
    await api.still_serving()


async def test_a_deeply_nested_but_complete_json_value_is_400(api: Api) -> None:
    answer = await put_raw(api, b"[" * 5000 + b"]" * 5000, "application/json")

    assert answer.status == 400
    assert await Config.get("rate_limiting.per_ip") == 10
    await api.still_serving()


async def test_a_body_that_is_not_utf8_is_400(api: Api) -> None:
    answer = await put_raw(api, b'"\xff\xfe"', "application/json")

    assert answer.status == 400
    assert "UTF-8" in answer.error
    await api.still_serving()


async def test_an_unknown_route_is_404_in_json(api: Api) -> None:
    answer = await api.get("/no/such/route")

    assert answer.status == 404
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.error


async def test_a_method_the_route_does_not_take_is_405_in_json(api: Api) -> None:
    answer = await api.call("POST", "/config/rate_limiting.per_ip", json_body=1)

    assert answer.status == 405
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.error


async def test_a_405_lists_the_methods_the_route_takes_in_allow(api: Api) -> None:
    answer = await api.call("POST", "/config/rate_limiting.per_ip", json_body=1)

    assert answer.status == 405
    assert {"GET", "PUT", "DELETE"} <= set(
        answer.headers.get("Allow", "").replace(" ", "").split(",")
    )


async def test_a_client_that_sends_only_part_of_its_body_is_answered_408_or_dropped(
    serve: Serve,
) -> None:
    api = await serve(request_timeout=0.5)
    reader, writer = await api.raw()
    try:
        writer.write(
            b"PUT /config/rate_limiting.per_ip HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {WRITE_SECRET}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b"1234567890"
        )
        async with asyncio.timeout(WAIT):
            status_line = await reader.readline()
    finally:
        writer.close()

    assert status_line == b"" or status_line.startswith(b"HTTP/1.1 408 ")
    assert await Config.get("rate_limiting.per_ip") == 10
    await api.still_serving()


async def test_a_connection_that_sends_nothing_is_closed_after_keepalive_timeout(
    serve: Serve,
) -> None:
    api = await serve(keepalive_timeout=0.5)
    reader, writer = await api.raw()
    try:
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""
    finally:
        writer.close()
    await api.still_serving()


async def test_a_connection_that_never_finishes_its_headers_is_closed(serve: Serve) -> None:
    api = await serve(keepalive_timeout=0.5, request_timeout=0.5)
    reader, writer = await api.raw()
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""
    finally:
        writer.close()
    await api.still_serving()


# -- audit ----------------------------------------------------------------------------------

VALUE_MARK = 424242
"""A value that only the request body holds: it must not reach the audit trail."""


@dataclasses.dataclass
class AuditCase:
    method: str
    route: str
    body: Any
    token: str | None
    token_name: str | None
    path: Any
    outcome: str
    status: int


AUDIT_CASES = [
    pytest.param(
        AuditCase(
            "PUT", "/config/rate_limiting.per_ip", VALUE_MARK, WRITE_SECRET, "writer",
            "rate_limiting.per_ip", "ok", 200,
        ),
        id="ok",
    ),
    pytest.param(
        AuditCase(
            "PUT", "/config/rate_limiting.per_ip", VALUE_MARK, READ_SECRET, "reader",
            "rate_limiting.per_ip", "denied", 403,
        ),
        id="denied-scope",
    ),
    pytest.param(
        AuditCase(
            "PUT", "/config/db.port", VALUE_MARK, WRITE_SECRET, "writer", "db.port",
            "denied", 403,
        ),
        id="denied-writable",
    ),
    pytest.param(
        AuditCase(
            "PUT", "/config/rate_limiting.per_ip", VALUE_MARK, None, None,
            "rate_limiting.per_ip", "unauthorized", 401,
        ),
        id="unauthorized",
    ),
    pytest.param(
        AuditCase(
            "PATCH", "/config", {"rate_limiting.per_ip": -VALUE_MARK, "rate_limiting.burst": 1},
            WRITE_SECRET, "writer", ["rate_limiting.per_ip", "rate_limiting.burst"],
            "rejected", 422,
        ),
        id="rejected",
    ),
    pytest.param(
        AuditCase(
            "DELETE", "/config/rate_limiting.per_ip", _NOTHING, WRITE_SECRET, "writer",
            "rate_limiting.per_ip", "ok", 200,
        ),
        id="delete",
    ),
    pytest.param(
        AuditCase("POST", "/reload", _NOTHING, WRITE_SECRET, "writer", "/reload", "ok", 200),
        id="reload",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", AUDIT_CASES)
async def test_every_write_is_audited_once_in_telemetry_and_in_the_log(
    serve: Serve, caplog: pytest.LogCaptureFixture, case: AuditCase
) -> None:
    api = await serve(spec={"validators": {"rate_limiting.*": positive}})
    caplog.set_level(logging.DEBUG)
    caplog.clear()

    with telemetry.capture_events(telemetry.ADMIN_WRITE) as events:
        answer = await api.call(case.method, case.route, token=case.token, json_body=case.body)

    assert answer.status == case.status
    assert len(events) == 1
    metadata = events[0].metadata
    assert metadata == {
        "id": "default",
        "token": case.token_name,
        "method": case.method,
        "path": case.path,
        "outcome": case.outcome,
        "status": case.status,
        "version": await version(),
    }
    assert "duration_s" in events[0].measurements
    lines = [r for r in caplog.records if r.name == "otpylib_config.admin"]
    assert len(lines) == 1
    message = lines[0].getMessage()
    assert case.method in message and case.outcome in message and str(case.status) in message
    assert (case.token_name or "no valid token") in message
    for shown in (message, repr(events[0])):
        assert str(VALUE_MARK) not in shown


async def test_reads_are_not_audited(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with telemetry.capture_events(telemetry.ADMIN_WRITE) as events:
        await api.get("/config")
        await api.get("/config", token=None)

    assert events == []


# -- GET /events ----------------------------------------------------------------------------


async def test_events_start_with_a_snapshot_of_the_version_and_redacted_config(
    api: Api,
) -> None:
    async with Events(api) as events:
        snapshot = await events.expect("snapshot")

    current = await version()
    assert snapshot.id == str(current)
    assert snapshot.data == {"version": current, "config": await Config.dump()}
    assert DB_PASSWORD not in json.dumps(snapshot.data)


async def test_events_stream_one_change_per_put_with_its_version(api: Api) -> None:
    async with Events(api) as events:
        await events.expect("snapshot")
        await api.put("rate_limiting.per_ip", 11)
        await Config.put("rate_limiting.burst", 21)

        first = await events.expect("change")
        second = await events.expect("change")

    current = await version()
    assert (first.id, first.data) == (
        str(current - 1),
        {"path": "rate_limiting.per_ip", "old": 10, "new": 11, "version": current - 1},
    )
    assert (second.id, second.data) == (
        str(current),
        {"path": "rate_limiting.burst", "old": 20, "new": 21, "version": current},
    )


async def test_events_pattern_lets_only_matching_changes_through(api: Api) -> None:
    async with Events(api, pattern="rate_limiting.**") as events:
        await events.expect("snapshot")
        await Config.put("feature.enabled", True)
        await Config.put("db.port", 1)
        await Config.put("rate_limiting.window", 30)

        change = await events.expect("change")

    assert change.data["path"] == "rate_limiting.window"


async def test_events_section_pattern_gets_the_leaves_below_it(api: Api) -> None:
    async with Events(api, pattern="rate_limiting") as events:
        await events.expect("snapshot")
        await Config.put("feature.enabled", True)
        await Config.put_many({"rate_limiting.per_ip": 1, "rate_limiting.burst": 2})

        changes = [await events.expect("change"), await events.expect("change")]

    assert sorted(c.data["path"] for c in changes) == [
        "rate_limiting.burst",
        "rate_limiting.per_ip",
    ]
    # one version: only its last change carries the id (docs/admin.md, Events)
    assert [c.id for c in changes] == [None, str(await version())]


async def test_events_with_an_invalid_pattern_are_400(api: Api) -> None:
    answer = await api.get("/events", params={"pattern": "a..b"}, token=READ_SECRET)

    assert answer.status == 400


async def test_events_need_a_token(api: Api) -> None:
    answer = await api.get("/events", token=None)

    assert answer.status == 401


async def test_events_redact_secrets_in_changes(api: Api) -> None:
    async with Events(api) as events:
        await events.expect("snapshot")
        await Config.put("db.password", "new-db-password-Rt5")

        change = await events.expect("change")

    redacted = (await Config.dump())["db"]["password"]
    assert change.data["path"] == "db.password"
    assert change.data["old"] == change.data["new"] == redacted
    assert "new-db-password-Rt5" not in json.dumps(change.data)
    assert DB_PASSWORD not in json.dumps(change.data)


async def test_a_reconnect_with_last_event_id_replays_exactly_the_missed_changes(
    api: Api,
) -> None:
    async with Events(api) as events:
        last = (await events.expect("snapshot")).id
    assert last is not None
    for value in (1, 2, 3):
        await Config.put("rate_limiting.per_ip", value)

    async with Events(api, last_id=last) as events:
        missed = [await events.expect("change") for _ in range(3)]
        await Config.put("feature.enabled", True)
        live = await events.expect("change")

    base = int(last)
    assert [(e.id, e.data["new"]) for e in missed] == [
        (str(base + 1), 1),
        (str(base + 2), 2),
        (str(base + 3), 3),
    ]
    assert (live.id, live.data["path"]) == (str(base + 4), "feature.enabled")


async def test_a_reconnect_that_missed_nothing_gets_no_snapshot(api: Api) -> None:
    async with Events(api, last_id=str(await version())) as events:
        await Config.put("feature.enabled", True)
        change = await events.expect("change")

    assert change.data["path"] == "feature.enabled"


async def test_a_reconnect_after_more_changes_than_kept_gets_a_snapshot_first(
    serve: Serve,
) -> None:
    api = await serve(events_kept=2)
    async with Events(api) as events:
        last = (await events.expect("snapshot")).id
    assert last is not None
    for value in range(1, 6):
        await Config.put("rate_limiting.per_ip", value)

    async with Events(api, last_id=last) as events:
        snapshot = await events.expect("snapshot")
        await Config.put("feature.enabled", True)
        change = await events.expect("change")

    assert snapshot.id == str(int(last) + 5)
    assert snapshot.data["config"]["rate_limiting"]["per_ip"] == 5
    assert (change.id, change.data["path"]) == (str(int(last) + 6), "feature.enabled")


@pytest.mark.parametrize("last_id", ["abc", "-1", "1.5", "999999", ""])
async def test_an_invalid_last_event_id_gets_a_snapshot(api: Api, last_id: str) -> None:
    async with Events(api, last_id=last_id) as events:
        snapshot = await events.expect("snapshot")

    assert snapshot.id == str(await version())


async def test_an_idle_stream_sends_keep_alive_comments(serve: Serve) -> None:
    api = await serve(heartbeat=0.2)
    async with Events(api) as events:
        await events.expect("snapshot")
        comment = await events.next(comments=True)

    assert comment == SseEvent(comment="keep-alive")


async def _stalled_events(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An ``/events`` request whose answer the test does not read (past the snapshot):
    the server's writes stall once the kernel's buffers are full."""
    reader, writer = await api.raw()
    writer.write(
        b"GET /events HTTP/1.1\r\nHost: test\r\n"
        + f"Authorization: Bearer {READ_SECRET}\r\n\r\n".encode()
    )
    async with asyncio.timeout(WAIT):
        await writer.drain()
        await reader.readuntil(b"event: snapshot")
    return reader, writer


LAST_CHUNK = b"\r\n0\r\n\r\n"
"""How a chunked answer ends (the connection itself may be kept alive after it)."""


async def _read_to_the_end(reader: asyncio.StreamReader) -> bytes:
    """Everything still in flight, until the server ends the stream: its last chunk or
    the connection's end (bounded)."""
    received = bytearray()
    async with asyncio.timeout(60):
        while not received.endswith(LAST_CHUNK):
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            received += chunk
    return bytes(received)


async def test_a_client_that_never_reads_does_not_block_puts_and_its_stream_ends(
    serve: Serve,
) -> None:
    api = await serve(request_timeout=2.0)
    reader, writer = await _stalled_events(api)
    try:
        big = "x" * 2000
        async with asyncio.timeout(120):  # bounds a hang only
            for i in range(10_000):
                await Config.put(f"feature.k{i % 64}", f"{big}{i}")
        assert await Config.get("feature.k15") == f"{big}9999"
        received = await _read_to_the_end(reader)  # the stream ends: EOF
    finally:
        writer.close()

    assert b"event: change" in received
    assert received.count(b"event: change") < 10_000
    await api.still_serving()


async def test_a_stalled_stream_ends_without_a_second_response_inside_it(serve: Serve) -> None:
    api = await serve(request_timeout=0.5)
    reader, writer = await _stalled_events(api)
    try:
        big = "y" * 5000
        for i in range(3000):  # under the queue's bound: the write timeout ends the stream
            await Config.put(f"feature.k{i % 64}", f"{big}{i}")
        await asyncio.sleep(2.0)  # the server's write times out meanwhile
        received = await _read_to_the_end(reader)
    finally:
        writer.close()

    assert b"event: change" in received
    assert b"HTTP/1.1 " not in received  # what came after the first event: the stream only


async def test_a_batch_bigger_than_a_stream_queue_is_not_lost_across_a_reconnect(
    api: Api,
) -> None:
    leaves = {f"feature.k{i}": i for i in range(5000)}
    seen: set[str] = set()
    last: str | None = None
    async with Events(api) as events:
        last = (await events.expect("snapshot")).id
        await Config.put_many(leaves)
        async with asyncio.timeout(60):
            while (event := await events.next()) is not None:
                seen.add(event.data["path"])
                last = event.id
    assert last is not None

    async with Events(api, last_id=last) as events:
        await Config.put("feature.enabled", True)  # a marker: everything replayed is before it
        async with asyncio.timeout(60):
            while (event := await events.next()) is not None:
                if event.event == "snapshot":
                    seen.update(f"feature.{key}" for key in event.data["config"]["feature"])
                elif event.data["path"] == "feature.enabled":
                    break
                else:
                    seen.add(event.data["path"])

    assert set(leaves) <= seen


async def test_stopping_the_tree_ends_open_streams(api: Api) -> None:
    async with Events(api) as events:
        await events.expect("snapshot")
        async with asyncio.timeout(WAIT):
            await api.tree.stop()
        await events.ended()


async def test_many_streams_each_get_every_change(api: Api) -> None:
    async with Events(api) as one, Events(api, pattern="feature.*") as two:
        await one.expect("snapshot")
        await two.expect("snapshot")
        await api.put("feature.enabled", True)

        seen = [await one.expect("change"), await two.expect("change")]

    assert [e.data["path"] for e in seen] == ["feature.enabled", "feature.enabled"]


# -- input no reader could use later --------------------------------------------------------


async def test_a_lone_surrogate_put_is_served_back_as_valid_json(api: Api) -> None:
    answer = await api.call(
        "PUT",
        "/config/feature.name",
        data=b'"\\ud800"',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 200

    for route in ("/config", "/config/feature.name", "/explain/feature.name"):
        read = await api.get(route)
        assert read.status == 200, (route, read.text)
        read.body  # noqa: B018  (valid JSON)
    await api.still_serving()


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
async def test_a_number_too_large_for_a_float_is_400(api: Api, number: str) -> None:
    answer = await api.call(
        "PUT",
        "/config/rate_limiting.per_ip",
        data=number.encode(),
        headers={"Content-Type": "application/json"},
    )

    assert answer.status == 400 and "too large" in answer.error
    assert await Config.get("rate_limiting.per_ip") == 10


@pytest.mark.parametrize("header", ["[" * 5000, "9" * 40, "-3", "1e3", "٣"])
async def test_a_crafted_last_event_id_gets_a_snapshot(api: Api, header: str) -> None:
    async with asyncio.timeout(WAIT):
        async with api.session.get(
            api.url + "/events",
            headers={"Authorization": f"Bearer {READ_SECRET}", "Last-Event-ID": header},
        ) as response:
            assert response.status == 200
            assert await response.content.readline() == b"event: snapshot\n"


async def test_a_path_with_a_newline_stays_one_audit_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otpylib_config.admin")
    forged = "feature.x\nadmin PUT db.host by token 'root': ok (200), version 9"
    await api.patch({forged: 1})

    lines = [r.getMessage() for r in caplog.records if r.name == "otpylib_config.admin"]
    assert lines and all("\n" not in line for line in lines)


async def test_an_admin_host_that_cannot_be_resolved_fails_the_start_at_once(
    start_tree: StartTree,
) -> None:
    from otpylib_config.admin.server import AdminBindError

    with pytest.raises(Exception) as caught:
        async with asyncio.timeout(WAIT):
            await start_tree(
                sources=[DefaultsSource(DEFAULTS)],
                admin=AdminSpec(host="a" * 64, port=0, tokens=(READ,)),
            )
    assert isinstance(caught.value, AdminBindError) or "cannot listen" in str(caught.value)
