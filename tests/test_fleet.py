"""The fleet view against real etcd (otpylib_config/fleet/; docs/fleet.md): a tree announces
itself under a lease, announces changes promptly, withdraws at once when it stops and
lapses after ``ttl`` when it is killed, survives etcd restarts, data loss and an etcd
that is down at start-up, and comes back when its process is killed; ``read_fleet`` reads
several nodes (each a tree in its own subprocess) and says whether they agree.

Announcements are read with etcd's own HTTP API (the harness), never through the code
under test, except where ``read_fleet`` is the subject. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from otpylib import atom, process

import otpylib_config
from otpylib_config import Config, ConfigSpec, DefaultsSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.fleet import FleetError, FleetReader, FleetSpec, decode, read_fleet
from otpylib_config.fleet.announcer import FleetState, state_of
from otpylib_config.supervisor import in_process
from otpylib_config.table import ConfigTable

from .conftest import StartTree, eventually
from .etcd_cluster import ETCD, EtcdCluster, b64, etcd, etcd_module, free_port, next_prefix

__all__ = ["etcd", "etcd_module"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary (apt-get install etcd-server)")

WAIT = 15.0
"""Bounds every wait for etcd or a subprocess; none comes near it unless something hangs."""
PASSWORD = "fleet-secret-pw-4711"


# -- helpers ---------------------------------------------------------------------------------


async def announcement(cluster: EtcdCluster, key: str) -> tuple[dict[str, Any], int] | None:
    """The JSON at ``key`` and the lease it is attached to, or ``None`` if absent."""
    answer = await cluster.call("/v3/kv/range", {"key": b64(key)})
    kvs = answer.get("kvs") or []
    if not kvs:
        return None
    value = json.loads(base64.b64decode(kvs[0]["value"]))
    return value, int(kvs[0].get("lease", 0))


async def announced(
    cluster: EtcdCluster, key: str, check: Any = None, timeout: float = WAIT
) -> tuple[dict[str, Any], int]:
    """Wait until ``key`` holds an announcement for which ``check(value)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await announcement(cluster, key)
        except (RuntimeError, OSError):  # etcd restarting
            found = None
        if found is not None and (check is None or check(found[0])):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{key} never held the announcement expected; last: {found}")
        await asyncio.sleep(0.05)


async def gone(cluster: EtcdCluster, key: str, timeout: float = WAIT) -> float:
    """Wait until ``key`` is absent; how long it took."""
    began = time.monotonic()
    while await announcement(cluster, key) is not None:
        if time.monotonic() - began > timeout:
            pytest.fail(f"{key} is still announced after {timeout:g}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def fleet(cluster: EtcdCluster, prefix: str, node: str = "n1", **options: Any) -> FleetSpec:
    options.setdefault("ttl", 30.0)  # long: only a revoke or a put explains what is seen
    return FleetSpec(node, endpoints=cluster.endpoints, prefix=prefix, **options)


def fleet_handlers() -> list[str]:
    """The announcers' telemetry handlers attached now."""
    ids = {a.handler_id for entries in telemetry._table.values() for a in entries}
    return sorted(h for h in ids if h.startswith("otpylib_config.fleet."))


def fleet_state(table: ConfigTable) -> FleetState:
    state = state_of(table)
    assert state is not None, "no announcer ran"
    return state


# -- nodes in subprocesses ---------------------------------------------------------------------

NODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import otpylib_config
    from otpylib_config import Config, ConfigSpec, DefaultsSource
    from otpylib_config.fleet import FleetSpec

    async def main():
        node, endpoints, prefix, ttl, tree = sys.argv[1:6]
        spec = ConfigSpec(
            id=tree,
            sources=[DefaultsSource({"x": 1})],
            reload_interval=None,
            fleet=FleetSpec(node, endpoints=endpoints.split(","), prefix=prefix, ttl=float(ttl)),
        )
        running = await otpylib_config.start(spec)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("started", (await Config.status()).config_hash, flush=True)
        while line := await reader.readline():
            command = json.loads(line)
            if command[0] == "put":
                await Config.put(command[1], command[2])
                print("put", (await Config.status()).config_hash, flush=True)
            elif command[0] == "stop":
                break
        await running.stop()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


class Node:
    """A tree with a ``FleetSpec`` in its own process; commands go in as JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, key: str) -> None:
        self.proc, self.name, self.key = proc, name, key
        self.hash = ""

    @classmethod
    async def start(
        cls,
        script: Path,
        name: str,
        cluster: EtcdCluster | list[str],
        prefix: str,
        *,
        ttl: float = 30.0,
        tree: str = "app",
    ) -> Node:
        endpoints = cluster if isinstance(cluster, list) else cluster.endpoints
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            name,
            ",".join(endpoints),
            prefix,
            str(ttl),
            tree,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        node = cls(proc, name, f"{prefix}{tree}/{name}")
        node.hash = (await node.expect("started")).split()[1]
        return node

    async def expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT * 2):  # a cold interpreter start on a busy machine
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    pytest.fail(f"node {self.name} exited (code {self.proc.returncode})")
                if line.startswith(word):
                    return line.strip()

    async def put(self, path: str, value: Any) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(["put", path, value]) + "\n").encode())
        await self.proc.stdin.drain()
        self.hash = (await self.expect("put")).split()[1]
        return self.hash

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b'["stop"]\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), WAIT)
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)


@pytest.fixture
def node_script(tmp_path: Path) -> Path:
    script = tmp_path / "fleet_node.py"
    script.write_text(NODE_SCRIPT)
    return script


@contextlib.asynccontextmanager
async def nodes(
    script: Path, cluster: EtcdCluster, prefix: str, names: list[str], **options: Any
) -> AsyncIterator[list[Node]]:
    started = await asyncio.gather(
        *(Node.start(script, name, cluster, prefix, **options) for name in names),
        return_exceptions=True,
    )
    running = [n for n in started if isinstance(n, Node)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield running
    finally:
        for node in running:
            node.kill()
        await asyncio.gather(*(n.proc.wait() for n in running))


# -- FleetSpec, no etcd needed -------------------------------------------------------------------


def test_fleet_spec_defaults_and_validation_naming_the_field() -> None:
    spec = FleetSpec("web-1")
    assert spec.endpoints == ("http://127.0.0.1:2379",)
    assert (spec.prefix, spec.ttl, spec.username, spec.password) == (
        "/otpylib-config/fleet/",
        10.0,
        None,
        None,
    )
    assert spec.key("app") == "/otpylib-config/fleet/app/web-1"
    assert FleetSpec("a", endpoints="http://e:2379").endpoints == ("http://e:2379",)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"node": ""}, "FleetSpec.node"),
        ({"node": "a/b"}, "FleetSpec.node"),
        ({"node": "a\nb"}, "FleetSpec.node"),
        ({"node": 3}, "FleetSpec.node"),
        ({"node": "a", "ttl": 1.5}, "FleetSpec.ttl"),
        ({"node": "a", "ttl": float("nan")}, "FleetSpec.ttl"),
        ({"node": "a", "ttl": True}, "FleetSpec.ttl"),
        ({"node": "a", "prefix": "fleet/"}, "FleetSpec.prefix"),
        ({"node": "a", "prefix": "/fleet"}, "FleetSpec.prefix"),
        ({"node": "a", "endpoints": []}, "FleetSpec.endpoints"),
        ({"node": "a", "endpoints": ["etcd:2379"]}, "FleetSpec.endpoints"),
        ({"node": "a", "username": "u"}, "together"),
        ({"node": "a", "key_file": "k.pem"}, "key_file"),
    ]
    for options, named in bad:
        with pytest.raises(ValueError, match=named.replace(".", r"\.")):
            FleetSpec(**options)
    assert FleetSpec("a", ttl=2).ttl == 2.0


def test_fleet_spec_never_shows_the_password() -> None:
    spec = FleetSpec("a", username="app", password=PASSWORD)
    for text in (repr(spec), str(spec), repr(ConfigSpec(fleet=spec))):
        assert PASSWORD not in text
    assert "password=***" in repr(spec) and "'app'" in repr(spec)
    with pytest.raises(ValueError) as caught:
        FleetSpec("a", endpoints=[f"http://app:{PASSWORD}@etcd:2379"])
    assert PASSWORD not in str(caught.value)
    with pytest.raises(TypeError, match="FleetSpec"):
        ConfigSpec(fleet="a")  # type: ignore[arg-type]


def test_fleet_spec_reads_the_tls_files_naming_the_option_and_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for options, named in [
        ({"ca_file": missing}, f"FleetSpec.ca_file '{missing}'"),
        ({"ca_file": str(not_pem)}, f"FleetSpec.ca_file '{not_pem}'"),
        ({"cert_file": missing}, f"FleetSpec.cert_file '{missing}'"),
        ({"cert_file": str(not_pem), "key_file": missing}, f"'{missing}'"),
        ({"ca_file": str(tmp_path)}, f"FleetSpec.ca_file '{tmp_path}'"),  # a directory
    ]:
        with pytest.raises(ValueError) as caught:
            FleetSpec("a", **options)
        assert named in str(caught.value), (options, str(caught.value))


def test_importing_the_fleet_options_does_not_import_aiohttp() -> None:
    code = (
        "import sys; from otpylib_config import ConfigSpec; from otpylib_config.fleet import "
        "FleetSpec, read_fleet; ConfigSpec(fleet=FleetSpec('a')); print('aiohttp' in sys.modules)"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


BENCH_CHECK = """
import asyncio, sys
sys.path.insert(0, "benchmarks")
import run

async def main():
    fleet = run.Fleet(2)
    seen = fleet.expect(7)
    fleet.record(0, 7, 1.0)
    fleet.record(0, 7, 2.0)  # node 0 twice: node 1 has not seen 7 yet
    assert not seen.done(), "a node called twice stood in for one never called"
    fleet.record(1, 7, 3.0)
    assert seen.done() and seen.result() == [1.0, 3.0], seen.result()
    print("ok")

asyncio.run(main())
"""


def test_the_fleet_benchmark_counts_distinct_nodes_per_value() -> None:
    """Rows 21a/21b (benchmarks/run.py, ``Fleet``): a write has reached the fleet when each
    node has called back, not when there were as many callbacks as nodes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", BENCH_CHECK], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_decode_says_what_is_wrong_with_an_announcement() -> None:
    good = {
        "node": "a",
        "tree": "t",
        "version": 3,
        "config_hash": "ab" * 32,
        "healthy": True,
        "sources": {"defaults": True},
        "started_at": 1.0,
        "announced_at": 2.0,
        "pid": 7,
        "host": "h",
        "admin_url": None,
    }
    node = decode(json.dumps(good).encode(), "/k", 5)
    assert (node.node, node.version, node.key, node.mod_revision) == ("a", 3, "/k", 5)
    for raw, says in [
        (b"not json", "not a JSON announcement"),
        (b"[1]", "not a JSON object"),
        (b"\xff", "not a JSON announcement"),
        (json.dumps({**good, "version": "3"}).encode(), "version"),
        (json.dumps({**good, "version": True}).encode(), "version"),
        (json.dumps({k: v for k, v in good.items() if k != "node"}).encode(), "node"),
        (json.dumps({**good, "sources": {"a": 1}}).encode(), "sources"),
        (json.dumps({**good, "announced_at": "now"}).encode(), "announced_at"),
        (b"[" * 100_000, "nested too deeply"),  # RecursionError inside json
        (b'{"version": ' + b"7" * 5000 + b"}", "not a JSON announcement"),  # int > 4300 digits
        (json.dumps({**good, "node": "a\x1b[31m"}).encode(), "node is not printable"),
        (json.dumps({**good, "tree": "t\n"}).encode(), "tree is not printable"),
        (json.dumps({**good, "host": "h\x1b]0;pwned\x07"}).encode(), "host is not printable"),
        (json.dumps({**good, "config_hash": "ab\r"}).encode(), "config_hash is not printable"),
        (json.dumps({**good, "admin_url": "http://x\x1b[2J"}).encode(), "admin_url"),
        (json.dumps({**good, "sources": {"s\x1b": True}}).encode(), "sources"),
        (json.dumps({**good, "node": "a\u202eb"}).encode(), "node is not printable"),  # bidi
    ]:
        with pytest.raises(ValueError, match=says):
            decode(raw)


# -- one tree, in this process -------------------------------------------------------------------


async def test_a_tree_announces_itself_with_its_status(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    before = time.time()
    await start_tree(
        id="shop", sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd_module, prefix)
    )
    key = f"{prefix}shop/n1"
    value, lease = await announced(etcd_module, key)
    status = await Config.status()
    assert lease != 0
    assert value["node"] == "n1" and value["tree"] == "shop"
    assert value["version"] == status.version and value["config_hash"] == status.config_hash
    assert value["healthy"] is True and value["sources"] == {"defaults": True}
    assert value["pid"] == os.getpid() and value["host"] == socket.gethostname()
    assert value["admin_url"] is None
    assert before - 1 <= value["started_at"] <= value["announced_at"] <= time.time() + 1
    assert [p.alive for p in status.processes if p.role == "fleet"] == [True]
    state = fleet_state(current_table())
    assert state.announcing and state.key == key


async def test_a_put_is_announced_promptly(start_tree: StartTree, etcd_module: EtcdCluster) -> None:
    prefix = next_prefix()
    await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd_module, prefix))
    key = f"{prefix}default/n1"
    first, lease = await announced(etcd_module, key)
    with telemetry.capture_events(telemetry.FLEET_ANNOUNCED) as events:
        await Config.put("x", 2)
        status = await Config.status()
        # ttl 30: the next refresh is 10 s away, so only the change explains this
        value, same_lease = await announced(
            etcd_module, key, lambda v: v["version"] == status.version, timeout=5
        )
    assert value["config_hash"] == status.config_hash != first["config_hash"]
    assert same_lease == lease
    assert [e.metadata["reason"] for e in events][:1] == ["change"]


async def revision_and_lease(cluster: EtcdCluster, key: str) -> tuple[int, int] | None:
    """``key``'s mod_revision and lease, or ``None`` if absent."""
    kvs = (await cluster.call("/v3/kv/range", {"key": b64(key)})).get("kvs") or []
    return (int(kvs[0]["mod_revision"]), int(kvs[0].get("lease", 0))) if kvs else None


async def test_an_idle_node_keeps_its_lease_alive_without_writing_revisions(
    start_tree: StartTree, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd_module, prefix, ttl=3))
    key = f"{prefix}default/n1"
    first, _ = await announced(etcd_module, key)
    before = await revision_and_lease(etcd_module, key)
    assert before is not None
    state = fleet_state(current_table())
    with telemetry.capture_events(telemetry.FLEET_ANNOUNCED) as events:
        # 5 s: more than the 3 s TTL (only keepalives keep the key) and about 5 refreshes
        await asyncio.sleep(5.0)
        after = await revision_and_lease(etcd_module, key)
    assert after == before, "the key was written again (or lost) though nothing changed"
    assert events == [] and state.announcements == 1 and state.announcing
    assert state.announced_at == first["announced_at"]  # when this content was written
    ttl = await etcd_module.call("/v3/lease/timetolive", {"ID": str(before[1])})
    assert int(ttl["TTL"]) > 0  # kept alive

    await Config.put("x", 2)  # a change is written at once, under the same lease
    value, lease = await announced(etcd_module, key, lambda v: v["version"] == 2, timeout=5)
    changed = await revision_and_lease(etcd_module, key)
    assert changed is not None and changed[0] > before[0] and lease == before[1]
    assert value["announced_at"] > first["announced_at"]


async def test_the_announcer_survives_any_failure_and_retries_until_it_works(
    start_tree: StartTree,
    etcd_module: EtcdCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    system_ca = ssl.get_default_verify_paths().cafile
    if system_ca is None or not os.path.exists(system_ca):
        pytest.skip("no system CA bundle to stand for a CA file")
    ca_file = tmp_path / "ca.pem"
    shutil.copyfile(system_ca, ca_file)
    prefix = next_prefix()
    spec = fleet(etcd_module, prefix, ca_file=str(ca_file))  # http endpoints: TLS unused
    ca_file.unlink()  # gone after the spec was checked: the announcer cannot read it
    with telemetry.capture_events(telemetry.FLEET_ERROR) as errors:
        await start_tree(sources=[DefaultsSource({"x": 1})], fleet=spec)
        table = current_table()
        state = fleet_state(table)
        await eventually(lambda: state.failures >= 2, timeout=WAIT)  # retried, not dead
    assert table.fleet_task is not None and not table.fleet_task.done()
    assert str(ca_file) in (state.last_error or "") and not state.announcing
    assert "cannot announce itself in etcd" in caplog.text and str(ca_file) in caplog.text
    assert errors and errors[0].metadata["stage"] == "grant"
    assert str(ca_file) in errors[0].metadata["error"]
    assert await announcement(etcd_module, f"{prefix}default/n1") is None
    assert (await Config.status()).healthy  # best effort: the tree is fine

    shutil.copyfile(system_ca, ca_file)  # fixed: the next retry announces the node
    await announced(etcd_module, f"{prefix}default/n1", timeout=WAIT)
    await eventually(lambda: state.announcing, timeout=WAIT)


async def test_stop_withdraws_the_announcement_at_once(
    otp_runtime: Any, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    spec = ConfigSpec(sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd_module, prefix))
    tree = await otpylib_config.start(spec)
    key = f"{prefix}default/n1"
    await announced(etcd_module, key)
    table = tree.table
    await tree.stop()
    assert await announcement(etcd_module, key) is None  # ttl 30: the revoke did it
    assert table.fleet_task is None
    assert fleet_handlers() == []


@pytest.mark.parametrize("reason", [atom.ensure("kill"), atom.ensure("boom"), "a string"], ids=repr)
async def test_the_announcer_comes_back_after_its_process_is_killed(
    start_tree: StartTree, etcd_module: EtcdCluster, reason: Any
) -> None:
    prefix = next_prefix()
    await start_tree(
        sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd_module, prefix), max_restarts=100
    )
    table = current_table()
    key = f"{prefix}default/n1"
    _, lease = await announced(etcd_module, key)
    old = process.whereis(table.name_of("fleet"))

    await in_process(lambda: process.exit(old, reason))
    await eventually(lambda: process.whereis(table.name_of("fleet")) not in (None, old))
    await eventually(lambda: fleet_state(table).lease not in (None, lease), timeout=WAIT)
    _, new_lease = await announced(etcd_module, key, lambda v: True)
    assert new_lease != lease  # the old one was revoked on the way out
    assert len(fleet_handlers()) == 1  # the dead task's handler is gone
    status = await Config.status()
    (health,) = [p for p in status.processes if p.role == "fleet"]
    assert health.alive and health.restarts == 1
    assert status.manager_restarts == 0
    await Config.put("x", 2)
    await announced(etcd_module, key, lambda v: v["version"] == 2)


async def test_a_tree_starts_while_etcd_is_down_and_announces_once_it_is_up(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = EtcdCluster(tmp_path / "etcd")  # not started yet
    prefix = next_prefix()
    try:
        began = time.monotonic()
        await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(cluster, prefix, ttl=3))
        assert time.monotonic() - began < 5  # not held up by etcd
        assert await Config.get("x") == 1
        table = current_table()
        state = fleet_state(table)
        await eventually(lambda: state.last_error is not None, timeout=WAIT)
        assert not state.announcing and state.failures >= 1
        assert "cannot announce itself in etcd" in caplog.text
        assert (await Config.status()).healthy  # best effort: the tree is fine

        await asyncio.to_thread(cluster.launch)
        value, _ = await announced(cluster, f"{prefix}default/n1", timeout=WAIT)
        assert value["version"] == 1
        await eventually(lambda: state.announcing, timeout=WAIT)
    finally:
        cluster.stop()


async def test_etcd_restarted_with_its_data_keeps_or_restores_the_announcement(
    start_tree: StartTree, etcd: EtcdCluster
) -> None:
    prefix = next_prefix()
    await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd, prefix, ttl=3))
    key = f"{prefix}default/n1"
    await announced(etcd, key)
    await asyncio.to_thread(etcd.members[0].stop)
    await asyncio.sleep(1.5)  # keepalives fail meanwhile
    await asyncio.to_thread(etcd.restart)
    await announced(etcd, key)
    await Config.put("x", 2)
    await announced(etcd, key, lambda v: v["version"] == 2)
    await asyncio.sleep(4)  # more than the ttl: the lease is being kept alive again
    await announced(etcd, key, lambda v: v["version"] == 2, timeout=1)


async def test_etcd_that_lost_its_data_gets_a_new_lease_and_the_node_again(
    start_tree: StartTree, etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = next_prefix()
    await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(etcd, prefix, ttl=3))
    key = f"{prefix}default/n1"
    _, lease = await announced(etcd, key)
    member = etcd.members[0]
    await asyncio.to_thread(member.stop)
    shutil.rmtree(member.directory / "data")  # a new, empty cluster on the same port
    await asyncio.to_thread(etcd.restart)
    _, new_lease = await announced(etcd, key, timeout=WAIT)
    assert new_lease != lease
    assert "no longer has the lease" in caplog.text


async def test_credentials_work_and_never_show(
    start_tree: StartTree, etcd: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await etcd.enable_auth(root_password=PASSWORD)
    prefix = next_prefix()
    wrong = fleet(etcd, prefix, node="bad", username="root", password="not-" + PASSWORD)
    await start_tree(id="bad", sources=[DefaultsSource({"x": 1})], fleet=wrong)
    bad_table = current_table()
    state = fleet_state(bad_table)
    await eventually(lambda: state.last_error is not None, timeout=WAIT)
    assert "root" in (state.last_error or "")
    right = fleet(etcd, prefix, node="good", username="root", password=PASSWORD)
    await start_tree(id="good", sources=[DefaultsSource({"x": 1})], fleet=right)
    await announced(etcd, f"{prefix}good/good")
    found = await read_fleet(etcd.endpoints, prefix, username="root", password=PASSWORD)
    assert [n.node for n in found.nodes] == ["good"]
    with pytest.raises(FleetError) as refused:
        await read_fleet(etcd.endpoints, prefix, username="root", password="x" + PASSWORD)
    shown = [caplog.text, str(refused.value), repr(state), repr(bad_table.spec)]
    shown += [repr(await Config.of(tree).status()) for tree in ("bad", "good")]
    assert all(PASSWORD not in text for text in shown)


# -- several nodes, in subprocesses --------------------------------------------------------------


async def test_a_killed_node_disappears_when_its_lease_lapses(
    node_script: Path, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    async with nodes(node_script, etcd_module, prefix, ["doomed"], ttl=2) as (node,):
        _, lease = await announced(etcd_module, node.key)
        assert lease != 0
        node.kill()
        await node.proc.wait()
        assert await announcement(etcd_module, node.key) is not None  # nobody revoked it
        took = await gone(etcd_module, node.key, timeout=WAIT)
    assert took < WAIT


async def test_read_fleet_sees_three_nodes_agree_then_disagree(
    node_script: Path, etcd_module: EtcdCluster
) -> None:
    prefix = next_prefix()
    async with nodes(node_script, etcd_module, prefix, ["a", "b", "c"]) as running:
        for node in running:
            await announced(etcd_module, node.key)
        await etcd_module.put(f"{prefix}app/garbage", "{not json")
        await etcd_module.put(f"{prefix}other/x", json.dumps({"node": "x"}))

        found = await read_fleet(etcd_module.endpoints, prefix, tree="app")
        assert [n.node for n in found.nodes] == ["a", "b", "c"]
        assert found.agree and found.healthy
        assert found.hashes == {running[0].hash: ["a", "b", "c"]}
        assert len(found.problems) == 1 and f"{prefix}app/garbage" in found.problems[0]
        everything = await read_fleet(etcd_module.endpoints, prefix)
        assert any(f"{prefix}other/x" in p for p in everything.problems)

        changed = await running[1].put("x", 2)
        await announced(etcd_module, running[1].key, lambda v: v["config_hash"] == changed)
        found = await read_fleet(etcd_module.endpoints, prefix, tree="app")
        assert not found.agree
        assert found.hashes == {running[0].hash: ["a", "c"], changed: ["b"]}
        assert {n.node: n.version for n in found.nodes} == {"a": 1, "b": 2, "c": 1}
        await asyncio.gather(*(n.stop() for n in running))
        for node in running:
            assert await announcement(etcd_module, node.key) is None
    assert not (await read_fleet(etcd_module.endpoints, prefix, tree="app")).agree


GOOD = {
    "node": "ok",
    "tree": "app",
    "version": 1,
    "config_hash": "ab" * 32,
    "healthy": True,
    "sources": {},
    "started_at": 1.0,
    "announced_at": 2.0,
    "pid": 7,
    "host": "h",
    "admin_url": None,
}
HOSTILE = {  # key under {prefix}app/ -> value: each is skipped, none raises
    "deep": b"[" * 100_000,
    "digits": b'{"version": ' + b"9" * 5000 + b"}",
    "ansi": json.dumps({**GOOD, "node": "evil\x1b[2J"}).encode(),
    "bell\x07\x1b[31m": b"{not json",
}


async def test_read_fleet_skips_hostile_announcements_and_escapes_their_keys(
    etcd_module: EtcdCluster,
) -> None:
    prefix = next_prefix()
    await etcd_module.put(f"{prefix}app/ok", json.dumps(GOOD))
    for name, raw in HOSTILE.items():
        await etcd_module.put(f"{prefix}app/{name}".encode(), raw)
    found = await read_fleet(etcd_module.endpoints, prefix, tree="app")
    assert [n.node for n in found.nodes] == ["ok"] and found.agree
    assert len(found.problems) == len(HOSTILE)
    assert all("\x1b" not in p and "\x07" not in p for p in found.problems)
    assert any("nested too deeply" in p for p in found.problems)
    assert any("node is not printable" in p for p in found.problems)
    assert any(repr(f"{prefix}app/bell\x07\x1b[31m") in p for p in found.problems)


async def test_read_fleet_takes_the_tls_files_naming_a_bad_one(tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(ValueError, match=f"ca_file '{missing}'"):
        await read_fleet(["https://127.0.0.1:2379"], ca_file=missing)
    with pytest.raises(ValueError, match="key_file"):
        await read_fleet(["https://127.0.0.1:2379"], key_file=missing)
    system_ca = ssl.get_default_verify_paths().cafile
    if system_ca is not None and os.path.exists(system_ca):
        reader = FleetReader(["https://127.0.0.1:2379"], ca_file=system_ca)
        async with reader:
            assert isinstance(reader.client.tls, ssl.SSLContext)  # it reaches the client


async def test_the_lease_ttl_etcd_grants_is_logged_when_raised_above_ttl(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # etcd's minimum lease TTL is 1.5 x its election timeout: 3 s here -> 5 s (ceil 4.5)
    flags = {"election-timeout": "3000", "heartbeat-interval": "100"}
    cluster = EtcdCluster(tmp_path / "etcd", **flags)
    try:
        await asyncio.to_thread(cluster.launch)
        prefix = next_prefix()
        await start_tree(sources=[DefaultsSource({"x": 1})], fleet=fleet(cluster, prefix, ttl=2))
        _, lease = await announced(cluster, f"{prefix}default/n1")
        granted = int(
            (await cluster.call("/v3/lease/timetolive", {"ID": str(lease)}))["grantedTTL"]
        )
        assert granted > 2
        state = fleet_state(current_table())
        assert state.lease_ttl == granted
        assert f"a TTL of {granted}s, not the 2s asked" in caplog.text
    finally:
        cluster.stop()


async def test_read_fleet_raises_fleet_error_when_etcd_is_unreachable() -> None:
    with pytest.raises(FleetError, match="cannot read the fleet"):
        await read_fleet([f"http://127.0.0.1:{free_port()}"], timeout=1)
    with pytest.raises(ValueError, match="prefix"):
        await read_fleet(["http://127.0.0.1:2379"], "no-slash")
