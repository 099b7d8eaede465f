"""``otpylib-config fleet status`` and ``fleet wait`` as users run them: a subprocess
reading real etcd (otpylib_config/cli/_fleet.py; docs/fleet.md).

``status`` tests write announcements straight into etcd with the harness (any mix of
versions, hashes, health and garbage); ``wait`` tests run real nodes, each a tree in its
own subprocess, and make one change its configuration. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .etcd_cluster import ETCD, EtcdCluster, etcd, etcd_module, free_port, next_prefix
from .test_cli import arun_cli, clean_env, run_cli
from .test_fleet import PASSWORD, announced, node_script, nodes

__all__ = ["etcd", "etcd_module", "node_script"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary (apt-get install etcd-server)")

HASH_A = "a" * 64
HASH_B = "b" * 64


async def announce(
    cluster: EtcdCluster, prefix: str, node: str, *, tree: str = "app", **fields: Any
) -> None:
    """An announcement as an announcer writes it (without a lease: the test removes it)."""
    now = time.time()
    value = {
        "node": node,
        "tree": tree,
        "version": 1,
        "config_hash": HASH_A,
        "healthy": True,
        "sources": {"defaults": True},
        "started_at": now - 60,
        "announced_at": now,
        "pid": 1,
        "host": "h",
        "admin_url": None,
        **fields,
    }
    await cluster.put(f"{prefix}{tree}/{node}", json.dumps(value))


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- fleet status ---------------------------------------------------------------------------------


async def test_status_lists_the_nodes_and_exits_0_when_they_agree(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "web-1")
    await announce(etcd_module, prefix, "web-2", version=4)
    result = await arun_cli("fleet", "status", "--etcd", etcd_module.url, "--prefix", prefix)
    assert result.code == 0, result.both
    lines = result.out.splitlines()
    assert lines[0].split() == ["NODE", "TREE", "VERSION", "HASH", "HEALTHY", "STARTED", "AGE"]
    assert lines[1].split()[:5] == ["web-1", "app", "1", HASH_A[:12], "yes"]
    assert lines[2].split()[:5] == ["web-2", "app", "4", HASH_A[:12], "yes"]
    assert lines[-1] == f"2 nodes agree on hash {HASH_A[:12]}"
    assert "\x1b[" not in result.out  # not a terminal: no colour


async def test_status_exits_1_when_the_nodes_disagree_or_one_is_unhealthy(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "a")
    await announce(etcd_module, prefix, "b", config_hash=HASH_B)
    await announce(etcd_module, prefix, "c")
    result = await arun_cli("fleet", "status", "--etcd", etcd_module.url, "--prefix", prefix)
    assert result.code == 1, result.both
    assert f"3 nodes DISAGREE: 2 hashes ({HASH_A[:12]}: a, c; {HASH_B[:12]}: b)" in result.out

    sick = next_prefix()
    await announce(etcd_module, sick, "a")
    await announce(etcd_module, sick, "b", healthy=False)
    result = await arun_cli("fleet", "status", "--etcd", etcd_module.url, "--prefix", sick)
    assert result.code == 1, result.both
    assert "2 nodes agree" in result.out and "unhealthy: b" in result.out
    assert any(
        line.split()[:1] == ["b"] and "NO" in line.split() for line in result.out.splitlines()
    )

    empty = await arun_cli("fleet", "status", "--etcd", etcd_module.url, "--prefix", next_prefix())
    assert empty.code == 1 and "no node is announced" in empty.out


async def test_status_filters_by_tree_reports_garbage_and_prints_json(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "a")
    await announce(etcd_module, prefix, "z", tree="other", config_hash=HASH_B)
    await etcd_module.put(f"{prefix}app/broken", "{nope")
    result = await arun_cli(
        "fleet", "status", "--etcd", etcd_module.url, "--prefix", prefix, "--tree", "app", "--json"
    )
    assert result.code == 0, result.both
    body = json.loads(result.out)
    assert [n["node"] for n in body["nodes"]] == ["a"]
    assert body["agree"] is True and body["ok"] is True and body["hashes"] == {HASH_A: ["a"]}
    assert len(body["problems"]) == 1 and f"{prefix}app/broken" in body["problems"][0]
    assert f"skipped '{prefix}app/broken': not a JSON announcement" in result.err
    everything = await arun_cli("fleet", "status", "--etcd", etcd_module.url, "--prefix", prefix)
    assert everything.code == 1 and "DISAGREE" in everything.out


async def test_status_takes_the_endpoints_from_the_environment(etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "a")
    env = clean_env(OTPYLIB_CONFIG_ETCD=f"{unreachable()},{etcd_module.url}")
    result = await arun_cli("fleet", "status", "--prefix", prefix, env=env)
    assert result.code == 0, result.both  # the first endpoint is down: the next one answers
    assert "1 node agree" in result.out


async def test_status_skips_hostile_announcements_and_never_prints_control_characters(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "a")
    await etcd_module.put(f"{prefix}app/deep", b"[" * 100_000)
    await etcd_module.put(f"{prefix}app/digits", b'{"version": ' + b"9" * 5000 + b"}")
    await announce(etcd_module, prefix, "evil", host="\x1b]0;owned\x07")
    await etcd_module.put(f"{prefix}app/\x1b[31mred".encode(), b"{nope")
    for extra in ([], ["--json"]):
        result = await arun_cli(
            "fleet", "status", "--etcd", etcd_module.url, "--prefix", prefix, *extra
        )
        assert result.code == 0, result.both  # "a" agrees with itself; the rest is skipped
        assert "Traceback" not in result.err
        assert "\x1b" not in result.both and "\x07" not in result.both
        assert result.err.count("skipped ") == 4
        assert "nested too deeply" in result.err and "\\x1b[31mred" in result.err


def test_tls_options_reach_the_client_and_a_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-ca.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    base = ["--etcd", "https://127.0.0.1:1"]
    for command in (["status"], ["wait", "--hash", HASH_A, "--timeout", "1"]):
        for options, named in [
            (["--ca-file", missing], f"ca_file '{missing}'"),
            (["--cert-file", str(not_pem)], f"cert_file '{not_pem}'"),
            (["--cert-file", str(not_pem), "--key-file", missing], "_file '"),
            (["--key-file", missing], "--key-file needs --cert-file"),
        ]:
            result = run_cli("fleet", *command, *base, *options)
            assert result.code == 2, (command, options, result.both)
            assert named in result.err and "Traceback" not in result.err


def test_status_exits_3_when_etcd_is_unreachable() -> None:
    result = run_cli("fleet", "status", "--etcd", unreachable(), "--timeout", "2")
    assert result.code == 3, result.both
    assert "cannot read the fleet" in result.err and "Traceback" not in result.err


def test_usage_errors_exit_2() -> None:
    for args in (
        ["fleet", "status", "--username", "root"],
        ["fleet", "status", "--username", "root", "--password-env", "UNSET_VARIABLE_4711"],
        ["fleet", "status", "--prefix", "no-slash"],
        ["fleet", "status", "--etcd", "etcd:2379"],
        ["fleet", "wait", "--hash", "xyz"],
        ["fleet", "wait", "--hash", "abc"],
        ["fleet", "wait"],
        ["fleet"],
    ):
        result = run_cli(*args)
        assert result.code == 2, (args, result.both)
        assert "Traceback" not in result.err


def test_help_lists_the_fleet_commands_without_offline_or_online_options() -> None:
    top = run_cli("--help")
    assert "fleet" in top.out
    group = run_cli("fleet", "--help")
    assert group.code == 0 and "status" in group.out and "wait" in group.out
    status = run_cli("fleet", "status", "--help")
    assert "--etcd" in status.out and "OTPYLIB_CONFIG_ETCD" in status.out
    assert "--spec" not in status.out and "--url" not in status.out
    assert "exit codes:" in status.out and "examples:" in status.out


async def test_a_password_is_used_and_never_printed(etcd: EtcdCluster) -> None:
    prefix = next_prefix()
    await announce(etcd, prefix, "a")
    await etcd.enable_auth(root_password=PASSWORD)
    args = ["fleet", "status", "--etcd", etcd.url, "--prefix", prefix, "--username", "root"]
    right = await arun_cli(*args, "--password-env", "FLEET_PW", env=clean_env(FLEET_PW=PASSWORD))
    assert right.code == 0, right.both
    wrong = await arun_cli(
        *args, "--password-env", "FLEET_PW", env=clean_env(FLEET_PW="no-" + PASSWORD)
    )
    assert wrong.code == 3, wrong.both
    assert "root" in wrong.err
    waited = await arun_cli(
        "fleet",
        "wait",
        "--hash",
        HASH_A,
        "--timeout",
        "2",
        *args[2:],
        "--password-env",
        "FLEET_PW",
        env=clean_env(FLEET_PW="no-" + PASSWORD),
    )
    assert waited.code == 3, waited.both
    for result in (right, wrong, waited):
        assert PASSWORD not in result.both


# -- fleet wait -----------------------------------------------------------------------------------


class CountingProxy:
    """etcd's HTTP API behind an aiohttp server that counts the requests per path."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with aiohttp.ClientSession() as http:

            async def forward(request: web.Request) -> web.Response:
                self.counts[request.path] += 1
                headers = {k: v for k, v in request.headers.items() if k == "Authorization"}
                async with http.post(
                    self.target + request.path_qs, data=await request.read(), headers=headers
                ) as answer:
                    body = await answer.read()
                    return web.Response(
                        body=body, status=answer.status, content_type="application/json"
                    )

            app = web.Application()
            app.router.add_route("POST", "/{tail:.*}", forward)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                await runner.cleanup()


async def test_wait_keeps_one_client_and_authenticates_once(etcd: EtcdCluster) -> None:
    prefix = next_prefix()
    await announce(etcd, prefix, "a", config_hash=HASH_B)  # never converges on HASH_A
    await etcd.enable_auth(root_password=PASSWORD)
    proxy = CountingProxy(etcd.url)
    async with proxy.running() as url:
        result = await arun_cli(
            "fleet", "wait", "--hash", HASH_A, "--timeout", "3", "--etcd", url,
            "--prefix", prefix, "--username", "root", "--password-env", "FLEET_PW",
            env=clean_env(FLEET_PW=PASSWORD),
        )  # fmt: skip
    assert result.code == 1, result.both  # timed out: it did read, several times
    assert proxy.counts["/v3/kv/range"] >= 2, proxy.counts
    assert proxy.counts["/v3/auth/authenticate"] == 1, proxy.counts


async def test_wait_exits_0_once_every_node_reports_the_hash(
    node_script: Path, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    async with nodes(node_script, etcd_module, prefix, ["a", "b"]) as (a, b):
        wanted = await b.put("x", 2)
        await announced(etcd_module, b.key, lambda v: v["config_hash"] == wanted)
        base = ["--etcd", etcd_module.url, "--prefix", prefix, "--tree", "app"]
        waiting = asyncio.create_task(
            arun_cli("fleet", "wait", "--hash", wanted, "--timeout", "30", "--nodes", "2", *base)
        )
        await asyncio.sleep(1.0)
        assert not waiting.done()  # a still reports the old hash
        assert await a.put("x", 2) == wanted
        result = await waiting
        assert result.code == 0, result.both
        assert f"2 nodes report hash {wanted[:12]} and are healthy" in result.out
        short = await arun_cli("fleet", "wait", "--hash", wanted[:8], "--timeout", "5", *base)
        assert short.code == 0, short.both  # a prefix of the hash is enough


async def test_wait_times_out_with_1_naming_the_nodes_that_do_not_agree(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await announce(etcd_module, prefix, "a")
    await announce(etcd_module, prefix, "b", config_hash=HASH_B, version=7)
    await announce(etcd_module, prefix, "c", healthy=False)
    base = ["--etcd", etcd_module.url, "--prefix", prefix]
    began = time.monotonic()
    result = await arun_cli("fleet", "wait", "--hash", HASH_A, "--timeout", "1.5", *base)
    assert result.code == 1, result.both
    assert time.monotonic() - began < 30
    assert "did not converge" in result.err
    assert f"b (app): hash {HASH_B[:12]}, version 7" in result.err
    assert "c (app)" in result.err and "UNHEALTHY" in result.err
    assert "a (app)" not in result.err

    few = next_prefix()
    await announce(etcd_module, few, "a")
    result = await arun_cli(
        "fleet", "wait", "--hash", HASH_A, "--timeout", "1.5", "--nodes", "2",
        "--etcd", etcd_module.url, "--prefix", few,
    )  # fmt: skip
    assert result.code == 1, result.both
    assert "only 1 node(s) announced, 2 wanted" in result.err


def test_wait_exits_3_when_etcd_is_unreachable_throughout() -> None:
    result = run_cli("fleet", "wait", "--hash", HASH_A, "--timeout", "2", "--etcd", unreachable())
    assert result.code == 3, result.both
    assert "could not be reached" in result.err
