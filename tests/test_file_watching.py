"""End to end: a supervised tree picks up file saves through watchdog, with no timer.

Every tree here has ``reload_interval=None``, so only the file watcher can cause a reload.
"Nothing was published" is shown without sleeping: the test waits for the reload telemetry
of the save (``config.reload.stop`` with reason ``changed:<source>``) and then asserts.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otpylib import process

from otpylib_config import Config, FileSource, telemetry
from otpylib_config.client import current_table
from otpylib_config.sources.base import Source
from otpylib_config.sources.file_watch import CLOSE_EVENTS
from otpylib_config.values import Section

from .conftest import FakeSource, Recorder, StartTree, eventually


class Reloads:
    """``config.reload.stop`` events caused by a watched source, as they happen."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, measurements: Any, metadata: Any, config: Any) -> None:
        if str(metadata.get("reason", "")).startswith("changed:"):
            self.events.append({**metadata, **measurements})

    async def next(self, after: int) -> dict[str, Any]:
        await eventually(lambda: len(self.events) > after)
        return self.events[after]


@pytest.fixture
def reloads() -> Iterator[Reloads]:
    recorder = Reloads()
    telemetry.attach("test-reloads", telemetry.RELOAD_STOP, recorder)
    yield recorder
    telemetry.detach("test-reloads")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 8000\n")
    return path


async def watched(start_tree: StartTree, *sources: Source) -> Recorder:
    await start_tree(sources=list(sources), reload_interval=None, watch_debounce=0.02)
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    return recorder


async def test_an_in_place_write_reaches_subscribers(start_tree: StartTree, config: Path) -> None:
    recorder = await watched(start_tree, FileSource(config))

    config.write_text("[server]\nport = 9000\n")

    assert await recorder.settled(1) == [("server.port", 8000, 9000)]


async def test_an_editor_save_by_rename_over(start_tree: StartTree, config: Path) -> None:
    recorder = await watched(start_tree, FileSource(config))

    temp = config.with_name(".config.toml.swp")
    temp.write_text("[server]\nport = 9001\n")
    os.replace(temp, config)

    assert await recorder.settled(1) == [("server.port", 8000, 9001)]


async def test_delete_keeps_the_last_good_layer_and_recreate_recovers(
    start_tree: StartTree, config: Path, reloads: Reloads
) -> None:
    recorder = await watched(start_tree, FileSource(config))

    config.unlink()
    failed = await reloads.next(0)
    assert "file not found" in failed["errors"][f"file:{config}"]
    assert Config.get_nowait("server.port") == 8000
    (status,) = (await Config.status()).sources
    assert not status.healthy and "file not found" in (status.last_error or "")

    config.write_text("[server]\nport = 9002\n")

    assert await recorder.settled(1) == [("server.port", 8000, 9002)]
    assert (await Config.status()).sources[0].healthy


async def test_a_kubernetes_configmap_symlink_swap(start_tree: StartTree, tmp_path: Path) -> None:
    def publish(version: str, port: int) -> None:
        data = tmp_path / f"..{version}"
        data.mkdir()
        (data / "config.toml").write_text(f"[server]\nport = {port}\n")
        link = tmp_path / "..data_tmp"
        link.symlink_to(data.name)
        os.replace(link, tmp_path / "..data")

    publish("2026_11_23_01", 8000)
    (tmp_path / "config.toml").symlink_to("..data/config.toml")
    recorder = await watched(start_tree, FileSource(tmp_path / "config.toml"))

    publish("2026_11_23_02", 8080)

    assert await recorder.settled(1) == [("server.port", 8000, 8080)]


async def test_a_save_that_changes_nothing_notifies_nobody(
    start_tree: StartTree, config: Path, reloads: Reloads
) -> None:
    recorder = await watched(start_tree, FileSource(config))

    config.write_text("# reformatted\n[server]\nport   =   8000\n")

    assert (await reloads.next(0))["changes"] == 0
    assert recorder.events == []


async def test_an_invalid_save_is_never_published_and_a_good_one_recovers(
    start_tree: StartTree, config: Path, reloads: Reloads
) -> None:
    recorder = await watched(start_tree, FileSource(config))

    config.write_text("[server]\nport = 90")  # half written: still valid TOML, a new value
    config.write_text("[server\nport = 9003\n")  # broken
    await eventually(lambda: any(e["errors"] for e in reloads.events))

    assert Config.get_nowait("server.port") in (8000, 90)
    error = (await Config.status()).sources[0].last_error or ""
    assert "invalid TOML" in error and str(config) in error

    config.write_text("[server]\nport = 9003\n")

    await eventually(lambda: Config.get_nowait("server.port") == 9003)
    assert recorder.events[-1] == ("server.port", recorder.events[-1][1], 9003)
    assert (await Config.status()).sources[0].healthy


async def test_an_optional_file_is_picked_up_when_it_appears(
    start_tree: StartTree, config: Path
) -> None:
    local = config.with_name("config.local.toml")
    recorder = await watched(start_tree, FileSource(config), FileSource(local, optional=True))

    local.write_text("[server]\nport = 7000\n")

    assert await recorder.settled(1) == [("server.port", 8000, 7000)]


async def test_a_later_file_overrides_an_earlier_one_as_it_changes(
    start_tree: StartTree, config: Path
) -> None:
    override = config.with_name("config.worker.toml")
    override.write_text("[server]\nport = 7001\n")
    recorder = await watched(start_tree, FileSource(config), FileSource(override))

    config.write_text("[server]\nport = 9004\nhost = 'a'\n")  # the port stays overridden

    assert await recorder.settled(1) == [("server.host", None, "a")]
    assert Config.get_nowait("server.port") == 7001


async def test_watch_false_leaves_the_file_to_the_timer(
    start_tree: StartTree, config: Path
) -> None:
    await start_tree(sources=[FileSource(config, watch=False)], reload_interval=0.05)
    assert process.whereis(current_table().watcher_name(f"file:{config}")) is None

    config.write_text("[server]\nport = 9005\n")

    await eventually(lambda: Config.get_nowait("server.port") == 9005)


async def test_stopping_the_tree_stops_the_watchdog_threads(
    start_tree: StartTree, config: Path
) -> None:
    before = watchdog_threads()
    tree = await start_tree(sources=[FileSource(config)])
    await eventually(lambda: len(watchdog_threads() - before) > 0)

    await tree.stop()

    assert watchdog_threads() - before == set()


def watchdog_threads() -> set[threading.Thread]:
    """Live threads of watchdog (the observer and its emitters); AnyIO's pooled workers,
    which idle between file reads, are not ours to stop."""
    return {t for t in threading.enumerate() if type(t).__module__.startswith("watchdog")}


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_writer_that_pauses_half_way_is_not_read_half_way(
    start_tree: StartTree, config: Path
) -> None:
    recorder = await watched(start_tree, FileSource(config))

    with open(config, "w") as handle:
        handle.write("[server]\n")  # valid TOML on its own: it would drop server.port
        handle.flush()
        await asyncio.sleep(0.3)  # the writer pauses (pacing): far longer than the debounce
        handle.write("port = 9006\n")

    def save_again() -> None:
        config.write_text("[server]\nport = 9106\n")

    # a read half way would have published server.port = None before either of these
    assert await recorder.settled(1, then=save_again) == [
        ("server.port", 8000, 9006),
        ("server.port", 9006, 9106),
    ]


async def test_starting_the_watch_does_not_read_an_unchanged_file_again(
    start_tree: StartTree, config: Path, reloads: Reloads
) -> None:
    other = config.with_name("other.toml")
    other.write_text("x = 1\n")
    source, witness = FileSource(config), FileSource(other)
    recorder = await watched(start_tree, source, witness)
    # the watch has looked at the file (it hands over its watched file right after looking)
    await eventually(lambda: source._file is not None and source._file.live)

    # A touch of the other file (an attribute change alone) is reported after the same
    # debounce, from a later moment: a reload of the look would have come first.
    os.utime(other)
    first = await reloads.next(0)
    assert first["reason"] == f"changed:{witness.name}" and first["changes"] == 0

    config.write_text("[server]\nport = 9007\n")

    assert (await reloads.next(1))["reason"] == f"changed:{source.name}"
    assert await recorder.settled(1) == [("server.port", 8000, 9007)]


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports opens and closes")
async def test_a_reader_that_keeps_the_file_open_does_not_hold_up_saves(
    start_tree: StartTree, config: Path
) -> None:
    """``less config.toml`` in another terminal: an open handle that never writes."""
    recorder = await watched(start_tree, FileSource(config))

    with open(config, "rb"):
        config.write_text("[server]\nport = 9008\n")
        assert await recorder.settled(1) == [("server.port", 8000, 9008)]
        assert (await Config.reload()).errors == {}


# -- the races of what the source keeps (docs/sources.md, FileSource) --------------------------


class CountedFileSource(FileSource):
    """A FileSource that records each layer its loads return, so a test knows a read is done."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.layers: list[Section] = []

    async def load(self) -> Section:
        layer = await super().load()
        self.layers.append(layer)
        return layer


async def test_a_save_while_a_reading_is_out_is_published_and_not_undone(
    start_tree: StartTree, config: Path
) -> None:
    """A reload read the file, then the file was saved and the watcher's reload published it
    while the first reading was still out (held up by a slow source): that reading's older
    layer comes back later and must not undo the save."""
    source, slow = CountedFileSource(config), FakeSource("slow", required=False)
    recorder = await watched(start_tree, source, slow)
    gate = slow.block_next()
    loaded = len(source.layers)

    reload = asyncio.ensure_future(Config.reload())
    await gate.reached()
    await eventually(lambda: len(source.layers) > loaded)  # it has read port = 8000
    config.write_text("[server]\nport = 9000\n")
    await eventually(lambda: Config.get_nowait("server.port") == 9000)
    gate.release()
    assert (await reload).errors == {}

    assert Config.get_nowait("server.port") == 9000

    async def save_again() -> None:
        config.write_text("[server]\nport = 9001\n")

    assert await recorder.settled(1, then=save_again) == [
        ("server.port", 8000, 9000),
        ("server.port", 9000, 9001),
    ]


async def test_a_watch_that_failed_looks_again_when_it_starts_again(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """The watch of a file whose directory is not there yet fails, and the source reports it;
    once the directory appears, the next watch looks at once, though the file still looks as
    the last read found it (missing), so that the failure is cleared."""
    directory = tmp_path / "conf.d"
    local = directory / "local.toml"
    source = FileSource(local, optional=True)
    source.watch_retry_first, source.watch_retry_max = 0.05, 0.2
    await start_tree(sources=[source], reload_interval=None, watch_debounce=0.02)
    state = current_table().sources[source.name]
    await eventually(lambda: "directory does not exist" in str(state.last_error))

    directory.mkdir()

    await eventually(lambda: state.last_error is None)
    local.write_text("a = 1\n")
    await eventually(lambda: Config.get_nowait("a") == 1)


async def test_a_save_made_before_the_watch_began_is_picked_up(
    start_tree: StartTree, config: Path
) -> None:
    """The file changed between the tree's first read and the watch's start, when no event
    could tell: the starting watch compares the file with the last read, and looks again."""

    class SavedBeforeItsWatch(FileSource):
        async def watch(self, changed: Any) -> None:
            if not saved:
                saved.append(True)
                # another size: on a file system with coarse timestamps, the size is what
                # tells a rewrite made within the same tick (docs/sources.md)
                config.write_text("[server]\nport = 9009\nhost = 'a'\n")
            await super().watch(changed)

    saved: list[bool] = []
    await watched(start_tree, SavedBeforeItsWatch(config))

    await eventually(lambda: Config.get_nowait("server.port") == 9009)


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
@pytest.mark.parametrize("how", ["in place", "rename over"])
async def test_a_save_is_reloaded_at_its_close_or_rename_not_after_the_debounce(
    start_tree: StartTree, config: Path, reloads: Reloads, how: str
) -> None:
    """Another file is touched first (an attribute change alone waits for the debounce), then
    the config file is saved: the save's reload comes first."""
    other = config.with_name("other.toml")
    other.write_text("x = 1\n")
    source, witness = FileSource(config), FileSource(other)
    await start_tree(sources=[source, witness], reload_interval=None, watch_debounce=0.5)
    recorder = Recorder()
    await Config.subscribe("**", recorder)
    await eventually(lambda: all(s._file is not None and s._file.live for s in (source, witness)))

    os.utime(other)
    if how == "in place":
        with open(config, "w") as handle:
            handle.write("[server]\nport = 9010\n")
    else:
        temp = config.with_name(".config.toml.swp")
        temp.write_text("[server]\nport = 9010\n")
        os.replace(temp, config)

    assert (await reloads.next(0))["reason"] == f"changed:{source.name}"
    assert (await reloads.next(1))["reason"] == f"changed:{witness.name}"
    assert recorder.events == [("server.port", 8000, 9010)]
