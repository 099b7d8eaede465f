"""A fleet of three services on one etcd: run with ``.venv/bin/python examples/fleet_demo.py``.

The demo starts a single etcd member (Debian's ``etcd-server``; without it the demo says so
and exits) on free loopback ports with its data in a temporary directory, and three node
processes (this file run with ``--node N``). Each node is one tree whose source is
``EtcdSource`` on ``/fleet-demo/config/`` and which announces itself in etcd with
``FleetSpec(node="node-N")`` (docs/fleet.md). Then one write to etcd reaches every node (each
prints its change), the fleet converges on one config hash (``otpylib-config fleet wait``)
and ``otpylib-config fleet status`` shows it; then the nodes, and etcd, are stopped. Every
step is bounded: nothing waits forever.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

import otpylib_config
from otpylib_config import Config, ConfigSpec, EtcdSource
from otpylib_config.fleet import FleetSpec, read_fleet

TREE = "fleet_demo"  # the tree id: nodes announce themselves under {fleet prefix}fleet_demo/
CONFIG_PREFIX = "/fleet-demo/config/"
NODES = 3
STEP_TIMEOUT_S = 20.0  # the bound on every wait of the demo


def find_etcd() -> str | None:
    found = shutil.which("etcd")
    if found is None and os.access("/usr/bin/etcd", os.X_OK):
        found = "/usr/bin/etcd"
    return found


# ------------------------------------------------------------------------------ a node


async def node(index: int, etcd_url: str) -> None:
    """One service: its config comes from etcd, and it announces itself in the fleet."""
    name = f"node-{index}"
    spec = ConfigSpec(
        id=TREE,
        sources=[EtcdSource(CONFIG_PREFIX, endpoints=[etcd_url])],
        reload_interval=None,  # the etcd watch pushes every change
        fleet=FleetSpec(node=name, endpoints=[etcd_url], ttl=5.0),
    )
    async with otpylib_config.running(spec):

        def on_change(path: str, old: Any, new: Any) -> None:
            print(f"   {name}: {path}: {old!r} -> {new!r}", flush=True)

        await Config.subscribe("**", on_change)
        pool_size = await Config.get("database.pool_size")
        print(f"   {name}: started, database.pool_size = {pool_size}", flush=True)
        # Serve until the demo closes our stdin (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# ------------------------------------------------------------------------------ etcd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_etcd(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One etcd member on free loopback ports, healthy; its process and client URL."""
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    log = directory / "etcd.log"
    with log.open("wb") as output:
        etcd = subprocess.Popen(
            [
                binary,
                "--name=demo",
                f"--data-dir={directory / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=demo={peer}",
                "--logger=zap",
                "--log-level=error",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not healthy(client):
        if etcd.poll() is not None or time.monotonic() > deadline:
            stop_process(etcd)
            raise SystemExit(f"etcd did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return etcd, client


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as answer:
            return b'"true"' in answer.read()
    except (OSError, urllib.error.URLError):
        return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def etcd_put(url: str, key: str, value: str) -> None:
    """A write with etcd's own HTTP API (``POST /v3/kv/put``, key and value base64)."""
    body = {"key": b64(key), "value": b64(value)}
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{url}/v3/kv/put", json=body) as response,
    ):
        response.raise_for_status()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------------------ the demo


class Nodes:
    """The node processes; their output is printed as it comes, and remembered."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.lines: list[str] = []
        self.arrived = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, etcd_url: str, directory: Path) -> None:
        for i in range(NODES):
            with (directory / f"node-{i}.log").open("wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--node",
                    str(i),
                    "--etcd",
                    etcd_url,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
            self.processes.append(proc)
            self.readers.append(asyncio.create_task(self._read(proc)))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode().rstrip()
            print(line, flush=True)
            self.lines.append(line)
            self.arrived.set()

    async def wait_for(self, text: str, count: int) -> None:
        """Until ``count`` lines of the nodes contain ``text`` (at most STEP_TIMEOUT_S)."""
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while sum(text in line for line in self.lines) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def stop(self) -> None:
        """Close each node's stdin (it stops its tree, withdrawing its announcement); kill
        one that has not exited within 10 s."""
        for proc in self.processes:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()
        for proc in self.processes:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for reader in self.readers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(reader, 5)


async def cli(*arguments: str) -> int:
    """``python -m otpylib_config ARGUMENTS`` as an operator would run it: its output, its
    exit status. A subprocess of the event loop (never a blocking ``subprocess.run``, which
    would stop this process's loop, and with it the reading of the nodes' output),
    killed if it takes more than STEP_TIMEOUT_S."""
    print(f"   $ otpylib-config {' '.join(arguments)}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "otpylib_config",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise SystemExit(f"otpylib-config {' '.join(arguments)} did not finish in time") from None
    for line in (out + err).decode(errors="replace").rstrip().splitlines():
        print(f"   {line}")
    assert proc.returncode is not None
    return proc.returncode


async def fleet_hashes(etcd_url: str, count: int, not_hash: str | None = None) -> str:
    """Wait (at most STEP_TIMEOUT_S) until ``count`` nodes are announced and agree on one
    config hash (other than ``not_hash``); that hash."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        fleet = await read_fleet([etcd_url], tree=TREE)
        if len(fleet.nodes) == count and fleet.agree:
            (config_hash,) = fleet.hashes
            if config_hash != not_hash:
                return config_hash
        if time.monotonic() > deadline:
            raise SystemExit(f"the fleet did not converge: {fleet.as_dict()}")
        await asyncio.sleep(0.1)


def show(title: str) -> None:
    print(f"\n== {title}", flush=True)


async def demo(etcd_url: str, directory: Path) -> None:
    await etcd_put(etcd_url, CONFIG_PREFIX + "database/pool_size", "5")
    await etcd_put(etcd_url, CONFIG_PREFIX + "features/new_ui", "false")

    show(f"{NODES} nodes start, each a tree on etcd:{CONFIG_PREFIX} announcing itself")
    nodes = Nodes()
    try:
        await nodes.start(etcd_url, directory)
        await nodes.wait_for(": started,", NODES)
        before = await fleet_hashes(etcd_url, NODES)
        await cli("fleet", "status", "--etcd", etcd_url)

        show("one write to etcd reaches every node")
        await etcd_put(etcd_url, CONFIG_PREFIX + "database/pool_size", "20")
        await nodes.wait_for("database.pool_size: 5 -> 20", NODES)

        show("the fleet converges on the new config")
        after = await fleet_hashes(etcd_url, NODES, not_hash=before)
        waited = await cli("fleet", "wait", "--hash", after, "--timeout", "10", "--etcd", etcd_url)
        status = await cli("fleet", "status", "--etcd", etcd_url)
        fleet = await read_fleet([etcd_url], tree=TREE)
        print(
            f"   read_fleet: {len(fleet.nodes)} nodes, agree={fleet.agree}, "
            f"hash {after[:12]} (was {before[:12]}); "
            f"fleet wait exit {waited}, fleet status exit {status}"
        )
    except BaseException:
        for log in sorted(directory.glob("node-*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        raise
    finally:
        show("stopping")
        await nodes.stop()
    print(f"   nodes stopped: exit codes {[proc.returncode for proc in nodes.processes]}")
    left = await read_fleet([etcd_url], tree=TREE)  # a node that stops withdraws itself
    print(f"   announced after the stop: {len(left.nodes)} nodes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node is not None:
        asyncio.run(node(args.node, args.etcd))
        return 0

    binary = find_etcd()
    if binary is None:
        print(
            "This demo needs etcd: no etcd binary on PATH or at /usr/bin/etcd "
            "(apt-get install etcd-server). Nothing to show without it."
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="fleet-demo-") as tmp:
        etcd, url = start_etcd(binary, Path(tmp))
        try:
            print(f"etcd {url} (data in {tmp})")
            asyncio.run(demo(url, Path(tmp)))
        finally:
            stop_process(etcd)
    print("\netcd stopped, temporary directory removed: stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
