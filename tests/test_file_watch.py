"""FileWatcher on real files with real watchdog events.

Timeouts only bound a hang. "Nothing else was reported" is shown without sleeping: the test
changes a sentinel file in the same directory and waits for its notification. One directory's
events reach the loop in order, and an earlier event's timer is due earlier, so once the
sentinel is reported every earlier notification has been queued already. The sentinel's
change is a ``touch`` without an open (an attribute change alone), which always waits for the
debounce: an event that completes a file reports at once, so it cannot come after it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otpylib_config.sources import file_watch
from otpylib_config.sources.file_watch import (
    CLOSE_EVENTS,
    MAX_DELAY,
    FileWatcher,
    WatchedFile,
    fingerprint,
    watch_paths,
)

from .conftest import eventually

TIMEOUT = 5.0
SENTINEL = "sentinel"

Call = tuple[str, str | None]
"""``(key, the key's file content when on_change ran)``; ``None`` if it was missing."""


class Changes:
    """``on_change`` that records each call with what the file held at that moment (for the
    sentinel: its mtime, which ``quiet`` sets)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.queue: asyncio.Queue[Call] = asyncio.Queue()

    def __call__(self, key: str) -> None:
        if key == SENTINEL:
            self.queue.put_nowait((key, str(self.files[key].stat().st_mtime_ns)))
        else:
            self.queue.put_nowait((key, _read(self.files[key])))

    async def until(self, key: str, content: str) -> list[Call]:
        """Calls up to the first that saw ``key``'s file hold ``content``."""
        calls: list[Call] = []
        while (key, content) not in calls:
            try:
                calls.append(await asyncio.wait_for(self.queue.get(), TIMEOUT))
            except TimeoutError:
                pytest.fail(f"no on_change({key!r}) saw {content!r}; calls: {calls}")
        return calls

    async def quiet(self) -> list[Call]:
        """Everything reported before a touch of the sentinel file; see the module doc."""
        sentinel = self.files[SENTINEL]
        stamp = next(_STAMPS)
        os.utime(sentinel, ns=(stamp, stamp))  # an attribute change alone: debounced
        calls = await self.until(SENTINEL, str(stamp))
        return [call for call in calls if call[0] != SENTINEL]

    def empty(self) -> bool:
        return self.queue.empty()


_STAMPS = itertools.count(1_000_000_000_000_000_000, 1_000)
"""Distinct mtimes (ns) for the sentinel."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


NewWatcher = Callable[..., tuple[FileWatcher, Changes]]


@pytest.fixture
def new_watcher(tmp_path: Path) -> Iterator[NewWatcher]:
    """``new_watcher(key=path, ..., debounce=0.05)`` → a started watcher and its ``Changes``.

    Every watcher also watches ``sentinel.toml`` in ``tmp_path`` (for ``Changes.quiet``).
    """
    made: list[FileWatcher] = []

    def make(*, debounce: float = 0.05, **files: Path) -> tuple[FileWatcher, Changes]:
        files[SENTINEL] = tmp_path / "sentinel.toml"
        if not files[SENTINEL].exists():
            files[SENTINEL].touch()
        changes = Changes(files)
        watcher = FileWatcher(changes, debounce=debounce)
        for key, path in files.items():
            watcher.watch(key, path)
        watcher.start()
        made.append(watcher)
        return watcher, changes

    yield make
    for watcher in made:
        watcher.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("a = 0")
    return path


async def test_in_place_write(new_watcher: NewWatcher, config: Path) -> None:
    _, changes = new_watcher(config=config)
    config.write_text("a = 1")
    assert await changes.until("config", "a = 1") == [("config", "a = 1")]
    assert await changes.quiet() == []


async def test_touch_asks_for_a_reload(new_watcher: NewWatcher, config: Path) -> None:
    _, changes = new_watcher(config=config)
    os.utime(config)
    assert await changes.until("config", "a = 0") == [("config", "a = 0")]


async def test_reading_the_file_notifies_nobody(new_watcher: NewWatcher, config: Path) -> None:
    """A reload reads the file; if that counted as a change, the watcher would loop."""
    _, changes = new_watcher(config=config)
    for _ in range(3):
        config.read_bytes()
    assert await changes.quiet() == []


async def test_write_temp_then_rename_over(new_watcher: NewWatcher, config: Path) -> None:
    """The way vim and VS Code save; the second save shows the watch survived the first."""
    _, changes = new_watcher(config=config)
    for n, temp in enumerate([".config.toml.swp", "config.toml.tmp"], start=1):
        (config.parent / temp).write_text(f"a = {n}")
        os.replace(config.parent / temp, config)
        assert await changes.until("config", f"a = {n}") == [("config", f"a = {n}")]


async def test_delete_then_recreate(new_watcher: NewWatcher, config: Path) -> None:
    _, changes = new_watcher(config=config)
    config.unlink()
    config.write_text("a = 1")
    calls = await changes.until("config", "a = 1")
    calls += await changes.quiet()
    assert 1 <= len(calls) <= 2
    assert calls[-1] == ("config", "a = 1")


async def test_kubernetes_configmap_symlink_swap(new_watcher: NewWatcher, tmp_path: Path) -> None:
    """The directory layout and update sequence of kubelet's atomic writer."""
    config = tmp_path / "config.toml"
    old = _configmap_version(tmp_path, "..2025_01_01_00_00_00.000", "a = 0")
    os.symlink(old.name, tmp_path / "..data")
    os.symlink("..data/config.toml", config)
    _, changes = new_watcher(config=config)
    for n in (1, 2):
        new = _configmap_version(tmp_path, f"..2025_01_01_00_00_0{n}.000", f"a = {n}")
        os.symlink(new.name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        shutil.rmtree(old)
        old = new
        calls = await changes.until("config", f"a = {n}")
        # one report of the new version (a swap of ..data may also report the sentinel,
        # which sits in the same directory)
        assert [call for call in calls if call[0] == "config"] == [("config", f"a = {n}")]


async def test_a_symlink_swap_under_any_name(new_watcher: NewWatcher, tmp_path: Path) -> None:
    """``config.toml -> current/config.toml`` and ``current`` retargeted: seen by real path."""
    config = tmp_path / "config.toml"
    _configmap_version(tmp_path, "v0", "a = 0")
    os.symlink("v0", tmp_path / "current")
    os.symlink("current/config.toml", config)
    _, changes = new_watcher(config=config)
    _configmap_version(tmp_path, "v1", "a = 1")
    os.symlink("v1", tmp_path / "current.new")
    os.replace(tmp_path / "current.new", tmp_path / "current")
    assert await changes.until("config", "a = 1") == [("config", "a = 1")]


def _configmap_version(directory: Path, name: str, content: str) -> Path:
    version = directory / name
    version.mkdir()
    (version / "config.toml").write_text(content)
    return version


async def test_a_burst_of_writes_is_reported_once(new_watcher: NewWatcher, config: Path) -> None:
    _, changes = new_watcher(config=config, debounce=0.1)
    for n in range(20):
        config.write_text(f"a = {n}")
        await asyncio.sleep(0.001)
    calls = await changes.until("config", "a = 19")
    calls += await changes.quiet()
    assert 1 <= len(calls) <= 2  # 2 only if the loaded machine paused the burst for 0.1 s
    assert calls[-1] == ("config", "a = 19")


async def test_other_files_in_the_directory_are_ignored(
    new_watcher: NewWatcher, config: Path
) -> None:
    _, changes = new_watcher(config=config)
    config.write_text("a = 1")
    await changes.until("config", "a = 1")  # the watcher is alive
    for other in ["other.txt", "config.toml.bak", ".config.toml.swp", "xconfig.toml"]:
        (config.parent / other).write_text("x")
    os.replace(config.parent / "other.txt", config.parent / "renamed.txt")
    (config.parent / "config.toml.bak").unlink()
    assert await changes.quiet() == []


async def test_two_keys_in_one_directory_are_told_apart(
    new_watcher: NewWatcher, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    watcher, changes = new_watcher(first=first)
    changes.files["second"] = second
    watcher.watch("second", second)  # after start()
    first.write_text("a = 1")
    assert await changes.until("first", "a = 1") == [("first", "a = 1")]
    second.write_text("b = 1")
    assert await changes.until("second", "b = 1") == [("second", "b = 1")]
    assert await changes.quiet() == []


async def test_a_file_that_appears_later_is_noticed(
    new_watcher: NewWatcher, tmp_path: Path
) -> None:
    optional = tmp_path / "optional.toml"
    _, changes = new_watcher(optional=optional)
    optional.write_text("a = 1")
    assert await changes.until("optional", "a = 1") == [("optional", "a = 1")]


async def test_a_directory_reached_through_a_symlink(
    new_watcher: NewWatcher, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real", target_is_directory=True)
    config = tmp_path / "link" / "config.toml"
    _, changes = new_watcher(config=config)
    (tmp_path / "real" / "config.toml").write_text("a = 1")
    assert await changes.until("config", "a = 1") == [("config", "a = 1")]


async def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    watcher = FileWatcher(lambda key: None)
    with pytest.raises(FileNotFoundError, match="directory does not exist") as info:
        watcher.watch("config", missing / "config.toml")
    assert info.value.filename == str(missing)


async def test_on_change_raising_does_not_stop_the_watcher(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    changes = Changes({"config": config})
    failures = ["first call fails"]

    def on_change(key: str) -> None:
        if failures:
            raise RuntimeError(failures.pop())
        changes(key)

    watcher = FileWatcher(on_change, debounce=0.05)
    watcher.watch("config", config)
    watcher.start()
    try:
        config.write_text("a = 1")
        await eventually(lambda: not failures)
        config.write_text("a = 2")
        await changes.until("config", "a = 2")
    finally:
        watcher.stop()
    errors = [r for r in caplog.records if r.name == "otpylib_config" and r.exc_info]
    assert "first call fails" in str(errors[0].exc_info)


async def test_stop_joins_every_thread_and_is_idempotent(config: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    before = threading.enumerate()
    watcher = FileWatcher(lambda key: None)
    watcher.watch("config", config)
    watcher.watch("sub", tmp_path / "sub" / "config.toml")
    watcher.start()
    assert watcher.running
    assert threading.active_count() > len(before)
    watcher.stop()
    watcher.stop()
    assert not watcher.running
    assert [t for t in threading.enumerate() if t not in before] == []
    assert threading.active_count() <= len(before)


async def test_nothing_is_reported_after_stop(new_watcher: NewWatcher, config: Path) -> None:
    """A second watcher on the same file shows the events happened."""
    stopped, silent = new_watcher(config=config)
    _, witness = new_watcher(config=config)
    config.write_text("a = 1")
    stopped.stop()  # before the loop sees any event: queued ones are dropped too
    await witness.until("config", "a = 1")
    config.write_text("a = 2")
    await witness.until("config", "a = 2")
    # The witness's report of its sentinel was armed after stop(), with the same debounce as
    # any timer of the stopped watcher: those were due earlier and would have run first.
    assert await witness.quiet() == []
    assert silent.empty()


async def test_stop_cancels_pending_notifications(new_watcher: NewWatcher, config: Path) -> None:
    """The witness (short debounce) is told first; the slow watcher's timer is then pending.
    A later witness, with a longer debounce than the slow watcher's, is told of the same
    change after the slow watcher's timer would have fired. The change is a ``touch`` with
    no open (an attribute change alone), which always takes the debounce."""
    slow, silent = new_watcher(config=config, debounce=0.3)
    _, witness = new_watcher(config=config)
    _, later = new_watcher(config=config, debounce=0.45)
    os.utime(config)
    await witness.until("config", "a = 0")
    slow.stop()
    assert await later.until("config", "a = 0") == [("config", "a = 0")]
    assert silent.empty()


async def test_poke_reports_after_the_debounce_and_merges_with_events(
    new_watcher: NewWatcher, config: Path
) -> None:
    watcher, changes = new_watcher(config=config)

    watcher.poke("config")
    config.write_text("a = 2")  # inside the debounce: one report, of the new content

    assert await changes.until("config", "a = 2") == [("config", "a = 2")]
    assert await changes.quiet() == []


async def test_watch_paths_looks_once_at_start_then_on_each_change(config: Path) -> None:
    calls: asyncio.Queue[str] = asyncio.Queue()

    async def changed() -> None:
        calls.put_nowait(config.read_text())

    task = asyncio.create_task(watch_paths([config], changed, debounce=0.02))
    try:
        assert await asyncio.wait_for(calls.get(), TIMEOUT) == "a = 0"  # nothing changed yet
        config.write_text("a = 3")
        assert await asyncio.wait_for(calls.get(), TIMEOUT) == "a = 3"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watch_paths_does_not_report_a_file_that_still_looks_as_seen(config: Path) -> None:
    calls: asyncio.Queue[str] = asyncio.Queue()

    async def changed() -> None:
        calls.put_nowait(config.read_text())

    witnessed: asyncio.Queue[str] = asyncio.Queue()

    async def witness_changed() -> None:
        witnessed.put_nowait(config.read_text())

    seen = [fingerprint(config)]
    attached: list[WatchedFile] = []
    watch = watch_paths([config], changed, debounce=0.02, seen=seen, attach=attached.extend)
    tasks = [asyncio.create_task(watch)]
    try:
        await eventually(lambda: len(attached) == 1)  # it has looked at the file by now
        # A witness with no ``seen`` looks later and reports its look after the same
        # debounce: a report of the first one's look would have come before it.
        tasks.append(asyncio.create_task(watch_paths([config], witness_changed, debounce=0.02)))
        assert await asyncio.wait_for(witnessed.get(), TIMEOUT) == "a = 0"
        assert calls.empty()
        config.write_text("a = 4")
        assert await asyncio.wait_for(calls.get(), TIMEOUT) == "a = 4"  # the first report
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_report_falls_due_while_writes_go_on(new_watcher: NewWatcher, config: Path) -> None:
    """Writes 5 ms apart never leave the 50 ms debounce a quiet period; a report still goes
    out every ``MAX_DELAY`` debounces, each of a complete (closed) version."""
    _, changes = new_watcher(config=config)
    calls: list[Call] = []
    for n in range(1, 121):  # 0.6 s: three times MAX_DELAY debounces
        config.write_text(f"a = {n}")
        await asyncio.sleep(0.005)
        while not changes.empty():
            calls.append(changes.queue.get_nowait())
    assert len(calls) >= 1, f"no report while the writes went on ({MAX_DELAY=})"
    assert all(content is not None and content.startswith("a = ") for _, content in calls)
    if ("config", "a = 120") not in calls:  # the last report may have come inside the loop
        await changes.until("config", "a = 120")


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_due_report_waits_for_the_writer_to_close(
    new_watcher: NewWatcher, config: Path
) -> None:
    _, changes = new_watcher(config=config, debounce=0.02)
    with open(config, "w") as handle:
        handle.write("a = ")
        handle.flush()
        # Each round reports a later write to the sentinel, after a debounce of its own:
        # MAX_DELAY + 1 rounds take the config file's report far past due, and it is held.
        for _ in range(MAX_DELAY + 1):
            assert await changes.quiet() == []
        handle.write("1")
    assert await changes.until("config", "a = 1") == [("config", "a = 1")]
    assert await changes.quiet() == []


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports opens and closes")
async def test_reads_are_counted_but_never_reported(new_watcher: NewWatcher, config: Path) -> None:
    watcher, changes = new_watcher(config=config)
    file = watcher.file("config")
    generation = file.generation
    for _ in range(3):
        config.read_bytes()
    assert await changes.quiet() == []
    assert (file.opens, file.closes, file.handles) == (3, 3, 0)
    assert file.generation == generation


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_writer_and_its_handle_are_followed(new_watcher: NewWatcher, config: Path) -> None:
    watcher, _ = new_watcher(config=config)
    file = watcher.file("config")
    with open(config, "a") as handle:
        await eventually(lambda: file.handles == 1 and not file.writing)  # opened, unwritten
        handle.write("\nb = 1")
        handle.flush()
        await eventually(lambda: file.writing)
    await eventually(lambda: not file.writing and file.handles == 0)
    assert file.orphans == 0


async def test_when_takes_the_moment_of_the_event_that_made_it_hold(
    new_watcher: NewWatcher, config: Path
) -> None:
    watcher, changes = new_watcher(config=config)
    file = watcher.file("config")
    generation = file.generation
    moment = file.when(lambda: file.generation > generation)
    config.write_text("a = 1")
    config.write_text("a = 2")
    await changes.until("config", "a = 2")
    result = await asyncio.wait_for(moment, TIMEOUT)
    assert result is not None and result.generation == generation + 1 < file.generation


async def test_watch_paths_hands_over_the_live_watched_files(config: Path) -> None:
    attached: list[WatchedFile] = []

    async def changed() -> None:
        pass

    task = asyncio.create_task(watch_paths([config], changed, attach=attached.extend))
    try:
        await eventually(lambda: len(attached) == 1)
        (file,) = attached
        assert file.live and file.path == str(config)
        pending = file.when(lambda: False)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not file.live
    assert await asyncio.wait_for(pending, TIMEOUT) is None  # waiters learn the watch ended


# -- when a change is reported: at the writer's close or the rename, or after the debounce ----
#
# Each test below touches the sentinel first (an attribute change alone, so it waits for the
# debounce), then completes the config file: a report of the config file before the
# sentinel's did not wait for the debounce. The debounce is long enough that both events
# arrive within it even on a busy machine.

ORDER_DEBOUNCE = 0.5


def touch_sentinel(changes: Changes) -> str:
    stamp = next(_STAMPS)
    os.utime(changes.files[SENTINEL], ns=(stamp, stamp))
    return str(stamp)


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_writers_close_is_reported_without_waiting_for_the_debounce(
    new_watcher: NewWatcher, config: Path
) -> None:
    _, changes = new_watcher(config=config, debounce=ORDER_DEBOUNCE)
    stamp = touch_sentinel(changes)

    with open(config, "w") as handle:
        handle.write("a = 1")

    assert await changes.until(SENTINEL, stamp) == [("config", "a = 1"), (SENTINEL, stamp)]


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_rename_over_the_file_is_reported_without_waiting_for_the_debounce(
    new_watcher: NewWatcher, config: Path
) -> None:
    _, changes = new_watcher(config=config, debounce=ORDER_DEBOUNCE)
    temp = config.with_name(".config.toml.swp")
    temp.write_text("a = 1")  # another name: not the config file's business
    stamp = touch_sentinel(changes)

    os.replace(temp, config)

    assert await changes.until(SENTINEL, stamp) == [("config", "a = 1"), (SENTINEL, stamp)]


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports renames in whole")
async def test_a_file_moved_in_from_another_directory_is_reported_at_once(
    new_watcher: NewWatcher, config: Path, tmp_path: Path
) -> None:
    """inotify tells it as a creation without a writer (its source is not watched); it is
    complete content, not an empty file about to be written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "new.toml").write_text("a = 1")
    _, changes = new_watcher(config=config, debounce=ORDER_DEBOUNCE)
    stamp = touch_sentinel(changes)

    os.replace(elsewhere / "new.toml", config)

    assert await changes.until(SENTINEL, stamp) == [("config", "a = 1"), (SENTINEL, stamp)]


async def test_a_symlink_created_at_the_files_name_is_reported(
    new_watcher: NewWatcher, tmp_path: Path
) -> None:
    """``ln -s``: nobody writes a symlink, so no writer's close is waited for."""
    config = tmp_path / "config.toml"
    (tmp_path / "v1.toml").write_text("a = 1")
    _, changes = new_watcher(config=config)

    config.symlink_to("v1.toml")

    assert await changes.until("config", "a = 1") == [("config", "a = 1")]
    assert await changes.quiet() == []


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_close_soon_after_a_report_is_a_burst_and_waits_for_the_debounce(
    new_watcher: NewWatcher, config: Path
) -> None:
    _, changes = new_watcher(config=config, debounce=ORDER_DEBOUNCE)
    config.write_text("a = 1")
    assert await changes.until("config", "a = 1") == [("config", "a = 1")]  # at once
    stamp = touch_sentinel(changes)

    config.write_text("a = 2")  # within the debounce of that report

    assert await changes.until("config", "a = 2") == [(SENTINEL, stamp), ("config", "a = 2")]


async def test_without_close_events_every_change_waits_for_the_debounce(
    new_watcher: NewWatcher, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What other platforms do: their observers report no closes."""
    monkeypatch.setattr(file_watch, "CLOSE_EVENTS", False)
    _, changes = new_watcher(config=config, debounce=ORDER_DEBOUNCE)
    stamp = touch_sentinel(changes)

    config.write_text("a = 1")

    assert await changes.until("config", "a = 1") == [(SENTINEL, stamp), ("config", "a = 1")]
