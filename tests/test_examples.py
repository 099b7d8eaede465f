"""The runnable examples work as README.md says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str) -> str:
    """Run ``examples/<name>`` as a user would; its stdout, after checking it exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_demo_runs_and_shows_each_step() -> None:
    out = run_example("quickstart.py")
    assert "database.pool_size   = 20 (from env)" in out
    assert "event rate_limits.api: {'requests': 100, 'window': 60} -> " in out
    assert "server.port          = 8080" in out
    assert "'reason': 'changed:file:" in out
    assert "changed: server.workers" in out
    assert "event queuemizer.tc_rules.eth0: {'rate': '10mbit'" in out
    assert "'path': 'security.secret_key', 'value': '**redacted**'" in out
    assert "security.secret_key  = rotated (get returns secrets)" in out
    assert out.rstrip().endswith("stopped cleanly")


def test_consul_demo_follows_the_loopback_server() -> None:
    out = run_example("consul_demo.py")
    assert "from consul:myapp/config/database/pool_size (ModifyIndex" in out
    assert "event features.new_ui: False -> True" in out
    assert "features.new_ui    = True" in out
    assert "consul source      : failing: consul:myapp/config/: cannot read" in out
    assert "event features.new_ui: True -> False" in out
    assert out.rstrip().endswith("consul source      : healthy\n\nstopped cleanly")
