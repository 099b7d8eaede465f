"""Runtime overrides persisted to a file survive a restart; a corrupt file is kept and reported."""

from __future__ import annotations

import json
from pathlib import Path

from otpylib_config import Config, DefaultsSource, RuntimeSource, telemetry

from .conftest import StartTree


async def test_overrides_survive_a_restart(start_tree: StartTree, tmp_path: Path) -> None:
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])
    await Config.put("a", 2)
    await Config.put("limits.api", {"rps": 10})
    await Config.put("gone", True)
    await Config.delete("gone")
    await tree.stop()

    await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])

    assert await Config.get("a") == 2
    assert await Config.get("limits.api") == {"rps": 10}
    assert await Config.get("gone") is None
    explained = await Config.explain("a")
    assert explained.source == "runtime"


async def test_each_acknowledged_put_is_on_disk(start_tree: StartTree, tmp_path: Path) -> None:
    store = tmp_path / "overrides.json"
    await start_tree(sources=[RuntimeSource(path=store)])

    await Config.put("feature.flag", [1, 2])

    document = json.loads(store.read_text())
    assert [(e["path"], e["value"]) for e in document["overrides"]] == [("feature.flag", [1, 2])]
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed over


async def test_a_corrupt_file_is_reported_and_kept_aside(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    store.write_text('{"format": "otpylib-config-overrides", "overrides": [')

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])

    assert await Config.get("a") == 1
    aside = list(tmp_path.glob("overrides.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().endswith("[")
    assert errors[0].metadata["source"] == "runtime"
    runtime = next(s for s in (await Config.status()).sources if s.name == "runtime")
    assert not runtime.healthy and "moved it to" in (runtime.last_error or "")
    await Config.put("a", 3)  # and the tree keeps working, writing a fresh file
    assert json.loads(store.read_text())["overrides"][0]["value"] == 3
