"""Smoke test of the benchmarks: ``benchmarks/run.py --quick --no-baseline`` runs to the end
and its table has every row.

Nothing here asserts on speed or on pass/miss: performance is measured by the benchmarks
(README.md, Benchmarks), never by timed tests, which a loaded machine would make flaky. The
0.2.9 baseline and the cold-start peers are skipped, so no second virtualenv is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

ROWS = {
    "1": "Config.get_nowait(path)",
    "2a": "await Config.get(path)",
    "2b": "await Config.get(path)",
    "3a": "await Config.put(path, v)",
    "3b": "await Config.put(path, v)",
    "4a": "await Config.put(path, v)",
    "4b": "await Config.put(path, v)",
    "5": "non-matching subscriptions",
    "6": "file saved (in place) → subscriber callback",
    "6b": "file saved (renamed over) → subscriber callback",
    "7a": "await Config.reload()",
    "7b": "events delivered",
    "8": "Consul write → subscriber callback",
    "9": "manager killed",
    "10a": "cold start",
    "10b": "peak RSS",
    "10c": "cold start",
    "10d": "cold start",
    "10e": "cold start",
    "10f": "cold start",
    "10g": "import otpylib_config",
    "11": "unchanged",
    "12": "event-loop stall",
    "13a": "write floor",
    "13b": "await Config.put(path, v)",
    "14": "concurrent writers",
    "15": "schema",
    "16": "flat",
    "17a": "matching subscriptions",
    "17b": "in put order",
    "18a": "Config.get_nowait(path)",
    "18b": "first `Config.get_nowait(path)` after a change",
    "19": "admin `PUT /config/{path}` → subscriber callback",
    "20": "admin `GET /config/{path}`",
    "21a": "etcd write → subscriber callback on all",
    "21b": "Consul (loopback server) write → subscriber callback on all",
    "21c": "node started while etcd is down",
}
BASELINE_ROWS = ("2b", "3b", "4b", "10a", "10b", "10c", "10d", "10f")
"""Rows that need a virtualenv the smoke test does not build (0.2.9 or a cold-start peer)."""


def table_rows(markdown: str) -> dict[str, list[str]]:
    """``{row id: cells}`` of the markdown table in ``markdown``."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("#", ""):
            rows[cells[0]] = cells
    return rows


def test_quick_run_prints_every_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-baseline", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    rows = table_rows(done.stdout)
    assert list(rows) == list(ROWS)
    for row_id, name in ROWS.items():
        assert name in rows[row_id][1], rows[row_id]
        assert len(rows[row_id]) == 7, rows[row_id]
    for row_id in BASELINE_ROWS:
        assert "n/a (--no-baseline)" in rows[row_id][3]

    assert table_rows((tmp_path / "results.md").read_text()) == rows
    raw = json.loads((tmp_path / "results.json").read_text())
    assert [row["id"] for row in raw["rows"]] == list(ROWS)
    assert raw["baseline_029"] is None
    assert len(raw["ours"]["cold_start"]["import_time"]["top_cumulative"]) == 10
