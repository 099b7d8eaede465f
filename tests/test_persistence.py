"""Runtime overrides persisted to a snapshot and a journal survive a restart, a kill -9 and
damage; a bad file is kept aside and reported. Real files, real trees, real processes."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import re
import signal
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import Config, ConfigTree, DefaultsSource, RuntimeSource, persistence, telemetry
from otpylib_config.errors import SourceError
from otpylib_config.overrides import Overrides
from otpylib_config.paths import parse_path
from otpylib_config.values import EMPTY, freeze

from .conftest import StartTree, eventually


def segments(store: Path) -> list[Path]:
    """The journal segments next to ``store``, oldest first (not the moved-aside ones)."""
    found = store.parent.glob(f"{store.name}.journal.*")
    return sorted(p for p in found if p.name.rsplit(".", 1)[-1].isdigit())


def records(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for seg in segments(store) for line in seg.read_text().splitlines()]


def seed(store: Path, count: int) -> None:
    """A saved file in the single-document format of 0.3.0 and earlier (version 1)."""
    entries = [{"path": f"s{i // 100}.k{i % 100}", "value": i, "at": 1.0} for i in range(count)]
    document = {"format": "otpylib-config-overrides", "version": 1, "overrides": entries}
    store.write_text(json.dumps(document, indent=1))


async def restart(start_tree: StartTree, tree: ConfigTree, store: Path) -> ConfigTree:
    await tree.table.persistence.close()
    await tree.stop()
    return await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])


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
    runtime = next(s for s in (await Config.status()).sources if s.name == "runtime")
    assert runtime.healthy


async def test_each_acknowledged_put_is_one_journal_record(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    await start_tree(sources=[RuntimeSource(path=store)])

    await Config.put("feature.flag", [1, 2])
    await Config.delete("feature.flag")

    assert [(r["seq"], r["op"], r["path"], r.get("value")) for r in records(store)] == [
        (1, "put", "feature.flag", [1, 2]),
        (2, "delete", "feature.flag", None),
    ]
    assert not store.exists()  # no snapshot until the first compaction
    assert [p.name for p in tmp_path.iterdir()] == [segments(store)[0].name]  # no temp files
    assert segments(store)[0].stat().st_mode & 0o077 == 0  # overrides may hold secrets


async def test_puts_and_deletes_restore_exactly(start_tree: StartTree, tmp_path: Path) -> None:
    """Every kind of put and delete, replayed, gives the same overrides, times included."""
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])
    await Config.put("db", {"url": "u", "pool": 5, "opts": {"t": 1}})
    await Config.put("db.pool", 6)  # inside an existing override
    await Config.delete("db.opts.t")  # inside an existing override
    await Config.put("x.y.z", None)
    await Config.put("x", "flat")  # above an existing override: absorbs it
    await Config.put("m.a", 1)
    await Config.put("m.b", 2)
    await Config.delete("m")  # a section holding two overrides
    await Config.put("a", 3)
    await Config.delete("a")  # the lower layer shows again
    before = tree.table.overrides.root

    tree = await restart(start_tree, tree, store)

    assert tree.table.overrides.root == before
    assert await Config.get("db") == {"url": "u", "pool": 6}  # emptied sections go
    assert await Config.get("x") == "flat"
    assert await Config.get("m") is None
    assert await Config.get("a") == 1


async def test_a_saved_file_of_the_old_single_document_format_restores(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    seed(store, 3)
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    assert await Config.get("s0") == {"k0": 0, "k1": 1, "k2": 2}
    await Config.put("s0.k1", 10)

    tree = await restart(start_tree, tree, store)

    assert await Config.get("s0") == {"k0": 0, "k1": 10, "k2": 2}
    assert json.loads(store.read_text())["version"] == 1  # the journal holds the new put


async def test_compaction_writes_a_snapshot_and_drops_the_records_it_holds(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(persistence, "COMPACT_FLOOR", 5)
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])
    for i in range(30):
        await Config.put(f"k.n{i % 8}", i)  # 8 overrides: compaction after more than 8 records
        await eventually(lambda: tree.table.persistence.compaction is None)
    await Config.delete("k.n0")
    await tree.table.persistence.close()
    before = tree.table.overrides.root

    snapshot = json.loads(store.read_text())
    assert snapshot["version"] == 2 and snapshot["seq"] >= 18
    assert all(r["seq"] > snapshot["seq"] for r in records(store))
    assert len(records(store)) <= 9  # at most max(floor, overrides) + 1 are ever kept
    assert len(segments(store)) <= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    tree = await restart(start_tree, tree, store)
    assert tree.table.overrides.root == before
    assert await Config.get("k") == {f"n{i}": 24 + i for i in range(1, 6)} | {"n6": 22, "n7": 23}


async def test_compaction_waits_for_as_many_records_as_there_are_overrides(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a snapshot of n overrides is written at most once per n puts."""
    monkeypatch.setattr(persistence, "COMPACT_FLOOR", 5)
    store = tmp_path / "overrides.json"
    seed(store, 2000)
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    written = store.stat().st_mtime_ns
    for i in range(50):
        await Config.put(f"new.n{i}", i)
    await tree.table.persistence.close()
    assert store.stat().st_mtime_ns == written and len(records(store)) == 50


async def test_close_waits_for_the_compaction_in_flight(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(persistence, "COMPACT_FLOOR", 3)
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    for i in range(4):
        await Config.put(f"k.n{i}", i)
    assert tree.table.persistence.compaction is not None

    await tree.table.persistence.close()

    assert tree.table.persistence.compaction is None
    assert json.loads(store.read_text())["seq"] == 4


async def test_a_torn_last_line_is_ignored_and_truncated(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """What a kill -9 in the middle of an append leaves: that put was never acknowledged."""
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])
    await Config.put("a", 2)
    await Config.put("b", 3)
    await tree.stop()
    journal = segments(store)[-1]
    good = journal.read_bytes()
    with journal.open("ab") as handle:
        handle.write(b'{"seq":3,"op":"put","path":"c","val')

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])

    assert (await Config.get("a"), await Config.get("b"), await Config.get("c")) == (2, 3, None)
    assert errors == [] and journal.read_bytes() == good
    await Config.put("c", 4)
    await restart(start_tree, tree, store)
    assert await Config.get("c") == 4


async def test_a_complete_last_line_that_is_not_json_is_torn_too(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """A crash can persist the block holding a record's newline but not the one before."""
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    await Config.put("a", 2)
    await tree.stop()
    with segments(store)[-1].open("ab") as handle:
        handle.write(b'\0\0\0\0\0\0\0\0,"at":1.5}\n')

    await start_tree(sources=[RuntimeSource(path=store)])

    assert await Config.get("a") == 2
    assert len(records(store)) == 1


async def test_a_corrupt_record_before_the_end_is_moved_aside_and_reported(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    for key in ("a", "damaged", "after"):
        await Config.put(key, True)
    await tree.stop()
    journal = segments(store)[-1]
    first, _, last = journal.read_bytes().splitlines(keepends=True)
    damaged = first + b"{not json}\n" + last
    journal.write_bytes(damaged)

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        await start_tree(sources=[RuntimeSource(path=store)])

    assert await Config.get("a") is True  # the records before the damaged one
    assert await Config.get("damaged") is None
    assert await Config.get("after") is None  # it builds on the damaged one
    (aside,) = tmp_path.glob("*.corrupt-*")
    assert aside.name.startswith(f"{journal.name}.corrupt-") and aside.read_bytes() == damaged
    assert errors[0].metadata["stage"] == "restore"
    assert "line 2" in errors[0].metadata["error"] and str(aside) in errors[0].metadata["error"]


async def test_corrupt_files_moved_aside_in_the_same_second_never_overwrite_each_other(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = types.SimpleNamespace(time=lambda: 1_700_000_000.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(persistence, "time", clock)
    store = tmp_path / "overrides.json"
    journal = tmp_path / "overrides.json.journal.0000000001"
    for round_ in range(2):
        store.write_text(f"snapshot {round_}")
        journal.write_text(f"journal {round_}\n{{}}\n")
        tree = await start_tree(sources=[RuntimeSource(path=store)])
        await tree.stop()

    aside = {p.name: p.read_text() for p in tmp_path.glob("*.corrupt-*")}
    assert aside == {
        "overrides.json.corrupt-1700000000": "snapshot 0",
        "overrides.json.corrupt-1700000000-1": "snapshot 1",
        "overrides.json.journal.0000000001.corrupt-1700000000": "journal 0\n{}\n",
        "overrides.json.journal.0000000001.corrupt-1700000000-1": "journal 1\n{}\n",
    }


async def test_records_before_a_corrupt_one_are_restored_and_kept(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    for key in ("a", "b", "c"):
        await Config.put(key, key)
    await tree.stop()
    journal = segments(store)[-1]
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b'{"seq": 2, "op": "put", "path": "bad..path"}\n' + lines[2])

    tree = await start_tree(sources=[RuntimeSource(path=store)])

    assert [await Config.get(key) for key in "abc"] == ["a", None, None]
    runtime = next(s for s in (await Config.status()).sources if s.name == "runtime")
    assert "line 2" in (runtime.last_error or "") and "restored the records before it" in (
        runtime.last_error or ""
    )
    await restart(start_tree, tree, store)  # the restored record is in a new snapshot now
    assert await Config.get("a") == "a"


async def test_a_corrupt_snapshot_is_reported_and_kept_aside_with_its_journal(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    store.write_text('{"format": "otpylib-config-overrides", "overrides": [')
    journal = tmp_path / "overrides.json.journal.0000000001"
    journal.write_text('{"seq":1,"op":"put","path":"b","value":2,"at":1.0}\n')

    with telemetry.capture_events(telemetry.SOURCE_ERROR) as errors:
        tree = await start_tree(sources=[DefaultsSource({"a": 1}), RuntimeSource(path=store)])

    assert await Config.get("a") == 1 and await Config.get("b") is None
    aside = list(tmp_path.glob("overrides.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().endswith("[")
    assert len(list(tmp_path.glob("overrides.json.journal.*.corrupt-*"))) == 1
    assert errors[0].metadata["source"] == "runtime"
    runtime = next(s for s in (await Config.status()).sources if s.name == "runtime")
    assert not runtime.healthy and "moved it to" in (runtime.last_error or "")
    await Config.put("a", 3)  # and the tree keeps working, writing a fresh journal
    await restart(start_tree, tree, store)
    assert await Config.get("a") == 3


async def test_a_failed_append_is_not_acknowledged_and_never_restored(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half-way (a full disk) leaves half a record; the next put writes
    a snapshot, so the files and the served overrides agree again."""
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    await Config.put("a", 1)
    real_append = persistence._append_synced

    def half_then_fail(path: Path, line: bytes) -> None:
        real_append(path, line[: len(line) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence, "_append_synced", half_then_fail)
    with pytest.raises(SourceError, match="No space left"):
        await Config.put("b", {"big": "value"})
    monkeypatch.setattr(persistence, "_append_synced", real_append)
    assert await Config.get("b") is None
    await Config.put("c", 3)
    await Config.put("d", 4)

    await restart(start_tree, tree, store)

    assert [await Config.get(k) for k in "abcd"] == [1, None, 3, 4]


async def test_a_write_the_served_overrides_do_not_hold_is_never_restored(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """A manager killed while its append was in a worker thread leaves a record of a put
    that was never acknowledged nor served; the next put notices that the journal is ahead
    of the served overrides and writes them as a snapshot instead."""
    store = tmp_path / "overrides.json"
    tree = await start_tree(sources=[RuntimeSource(path=store)])
    await Config.put("a", 1)
    orphan, _ = tree.table.overrides.put(parse_path("orphan"), True)
    assert orphan.change is not None
    tree.table.persistence._store.append(orphan, orphan.change)  # type: ignore[union-attr]
    await Config.put("b", 2)

    await restart(start_tree, tree, store)

    assert [await Config.get(k) for k in ("a", "b", "orphan")] == [1, 2, None]


async def test_a_directory_is_refused(start_tree: StartTree, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path}: it is a directory")):
        RuntimeSource(path=tmp_path)
    store = tmp_path / "overrides.json"
    source = RuntimeSource(path=store)
    store.mkdir()  # after the source was made: refused at start-up
    with pytest.raises(SourceError, match=re.escape("overrides.json: it is a directory")):
        await start_tree(sources=[source])


@pytest.mark.parametrize(
    ("where", "reason"),
    [("missing/overrides.json", "does not exist"), ("a-file/overrides.json", "is not a directory")],
)
async def test_a_directory_that_cannot_hold_the_file_is_refused_at_start(
    start_tree: StartTree, tmp_path: Path, where: str, reason: str
) -> None:
    """As root no permission bit stops a write, but a parent that is a file (or missing)
    does: both are refused before anything is served, naming the path."""
    (tmp_path / "a-file").write_text("")
    store = tmp_path / where
    with pytest.raises(SourceError, match=reason) as refused:
        await start_tree(sources=[RuntimeSource(path=store)])
    assert str(store) in str(refused.value)


async def test_stale_temp_files_of_an_earlier_crash_are_removed(
    start_tree: StartTree, tmp_path: Path
) -> None:
    store = tmp_path / "overrides.json"
    stale = [tmp_path / ".overrides.json.k2j_8x0a", tmp_path / ".overrides.json.00000000"]
    others = [tmp_path / ".overrides.json.swp", tmp_path / ".other.json.k2j_8x0a"]
    for path in stale + others:
        path.write_text("{")

    await start_tree(sources=[RuntimeSource(path=store)])

    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)


async def test_journal_growth_per_put_does_not_depend_on_the_number_of_overrides(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """The scaling guarantee as behaviour: the same puts write the same records, and the
    snapshot is not touched, with 100 or 10,000 overrides already there."""
    written: dict[int, list[dict[str, Any]]] = {}
    for count in (100, 10_000):
        store = tmp_path / str(count) / "overrides.json"
        store.parent.mkdir()
        seed(store, count)
        snapshot = store.stat()
        tree = await start_tree(sources=[RuntimeSource(path=store)])
        for i in range(50):
            await Config.put(f"s{i}.k{i}", f"v{i}")
        await tree.table.persistence.close()
        await tree.stop()
        assert store.stat().st_mtime_ns == snapshot.st_mtime_ns
        assert sum(seg.stat().st_size for seg in segments(store)) < 50 * 100
        written[count] = [{k: v for k, v in r.items() if k != "at"} for r in records(store)]
    assert len(written[100]) == 50 and written[100] == written[10_000]


def operation(index: int) -> tuple[str, str, Any]:
    """The kill -9 child's ``index``-th write: puts, deletes, and puts inside an override."""
    if index == 0:
        return "put", "inside", {"base": True}
    if index % 7 == 3:
        return "delete", f"k.n{index - 1}", None
    if index % 5 == 0:
        return "put", f"inside.n{index % 3}", index
    return "put", f"k.n{index}", index


_CHILD = """
import asyncio, sys
from typing import Any

import otpylib_config
from otpylib_config import Config, ConfigSpec, RuntimeSource, persistence

persistence.COMPACT_FLOOR = 20  # compact often, so that kills land in compactions too

OPERATION

async def main() -> None:
    spec = ConfigSpec(sources=[RuntimeSource(path=sys.argv[1])], reload_interval=None)
    await otpylib_config.start(spec)
    runtime = next(s for s in (await Config.status()).sources if s.name == "runtime")
    print("ready" if runtime.healthy else runtime.last_error, flush=True)
    index = int(sys.argv[2])
    while True:
        kind, path, value = operation(index)
        if kind == "put":
            await Config.put(path, value)
        else:
            await Config.delete(path)
        print(index, flush=True)  # acknowledged
        index += 1


asyncio.run(main())
"""


async def test_every_acknowledged_put_survives_kill_9(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """A child process writes and prints each acknowledged write; it is killed at a random
    point, three times (each run restores what the last one left and goes on); then a fresh
    tree must hold exactly the acknowledged writes, plus perhaps the one in flight."""
    store = tmp_path / "overrides.json"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.replace("OPERATION", inspect.getsource(operation)))
    seed_ = random.randrange(1 << 30)
    rng = random.Random(seed_)
    expected = Overrides()
    next_index = 0
    for _ in range(3):
        last = await _run_and_kill(script, store, next_index, rng.randint(20, 300))
        for index in range(next_index, last + 1):
            expected = _apply(expected, operation(index))
        next_index = last + 1  # the write in flight may or may not be on disk: redo it

    tree = await start_tree(sources=[RuntimeSource(path=store)])
    restored = tree.table.overrides.apply(EMPTY)
    acknowledged = expected.apply(EMPTY)
    with_in_flight = _apply(expected, operation(next_index)).apply(EMPTY)
    assert restored in (acknowledged, with_in_flight), f"seed {seed_}"
    assert all(s.healthy for s in (await Config.status()).sources)
    assert len(restored["k"]) > 20


def _apply(overrides: Overrides, write: tuple[str, str, Any]) -> Overrides:
    kind, path, value = write
    if kind == "put":
        return overrides.put(parse_path(path), freeze(value))[0]
    outcome = overrides.delete(parse_path(path))
    return overrides if outcome is None else outcome[0]


async def _run_and_kill(script: Path, store: Path, start: int, after: int) -> int:
    """Run the child from write ``start`` on, SIGKILL it once it acknowledged ``after``
    writes, and return the index of the last write it acknowledged (read to the end of
    its output: it may have acknowledged more before the signal landed)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(store), str(start), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    last = start - 1
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"  # restored
        while last - start + 1 < after:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line.endswith(b"\n"), "the child exited before it was killed"
            last = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
    for line in (await child.stdout.read()).splitlines(keepends=True):
        if line.endswith(b"\n"):
            last = int(line)
    await child.wait()
    return last


async def test_a_put_many_is_one_record_restored_whole(tmp_path: Path, otp_runtime: Any) -> None:
    import otpylib_config
    from otpylib_config import Config, ConfigSpec, DefaultsSource, RuntimeSource

    path = tmp_path / "overrides.json"
    spec = ConfigSpec(sources=[DefaultsSource({}), RuntimeSource(path=path)], reload_interval=None)
    async with otpylib_config.running(spec):
        await Config.put_many({"a.x": 1, "a.y": 2, "b": {"z": 3}})
    journal = [p for p in tmp_path.iterdir() if ".journal." in p.name]
    records = [json.loads(line) for p in journal for line in p.read_text().splitlines()]
    assert [r["op"] for r in records] == ["put_many"]

    async with otpylib_config.running(spec):
        assert Config.get_nowait("a") == {"x": 1, "y": 2}
        assert Config.get_nowait("b.z") == 3
