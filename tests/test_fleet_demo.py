"""examples/fleet_demo.py runs as its docstring says: three node processes on a real etcd
each see one write, and the fleet agrees on the new config (docs/fleet.md).

The demo is run as a user would run it, as a subprocess; it starts and stops its own etcd
and nodes. Without an etcd binary it explains that and exits 0, which is checked instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .etcd_cluster import ETCD

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "fleet_demo.py"


def run_demo() -> str:
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=300,  # above the sum of the demo's own bounds: it cleans up first
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_fleet_demo_three_nodes_see_the_write_and_agree() -> None:
    out = run_demo()
    if ETCD is None:
        assert "This demo needs etcd" in out
        return
    for i in range(3):
        assert f"node-{i}: started, database.pool_size = 5" in out
        assert f"node-{i}: database.pool_size: 5 -> 20" in out
    assert out.count("database.pool_size: 5 -> 20") == 3
    assert "$ otpylib-config fleet status --etcd http://127.0.0.1:" in out
    assert "read_fleet: 3 nodes, agree=True" in out
    assert "fleet wait exit 0, fleet status exit 0" in out
    assert "nodes stopped: exit codes [0, 0, 0]" in out
    assert "announced after the stop: 0 nodes" in out
    assert out.rstrip().endswith("stopped cleanly")
