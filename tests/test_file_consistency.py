"""A watched file is published only from complete content, however another process writes it.

The fuzz test runs a writer in a separate OS process (so its writes race the tree's reads
for real, outside the GIL) that rewrites a TOML file several hundred times in every way
scripts and editors do: in place, in place with a pause half-way, truncate-then-write,
rename-over, and invalid versions, 0-6 ms apart. Every key of the section ``s`` holds the
version number, so any read of a half-written file shows as a section with missing keys or
mixed values. The reader polls ``Config.get_nowait`` as fast as the loop allows.

Timeouts only bound a hang. Liveness (versions are published while the writes go on) is
shown without timing anything: at three checkpoints the writer leaves a valid version in place
and waits on its stdin until the reader has seen that version published, then writes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import Config, FileSource
from otpylib_config.sources import file as file_module
from otpylib_config.sources.file_watch import CLOSE_EVENTS

from .conftest import StartTree, eventually

KEYS = 123
WRITES = 320
SEED = 20261123

WRITER = r'''
"""Rewrites a TOML file in every way a writer can; prints the valid versions as JSON."""
import json, os, random, sys, time

path, seed, writes, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)

def content(version):
    return "[s]\n" + "".join(f"k{i:03d} = {version}\n" for i in range(keys))

def broken(version):
    text = content(version)
    cut = rng.randrange(len(text) // 4, len(text))
    return text[:cut] + "\n= = broken\n" + text[cut:]

def in_place(text):
    with open(path, "w") as f:
        f.write(text)

def paused(text):
    with open(path, "w") as f:
        half = rng.randrange(1, len(text))
        f.write(text[:half])
        f.flush()
        time.sleep(rng.uniform(0.001, 0.006))
        f.write(text[half:])

def truncate_then_write(text):
    with open(path, "r+") as f:
        f.truncate(0)
        f.flush()
        time.sleep(rng.uniform(0.001, 0.006))
        f.write(text)

def rename_over(text):
    temp = path + ".tmp"
    with open(temp, "w") as f:
        f.write(text)
    os.replace(temp, path)

def checkpoint(version):
    # the reader answers once it has seen this version published; no answer means it never was
    print(json.dumps({"checkpoint": version}), flush=True)
    if sys.stdin.readline().strip() != "seen":
        sys.exit(f"version {version} was never published")

valid = []
version = 0
checkpoints = {writes // 4, writes // 2, 3 * writes // 4}
for n in range(writes):
    how = rng.choice([in_place, in_place, paused, paused, truncate_then_write, rename_over])
    if rng.random() < 0.15 and n < writes - 1:  # the last version is valid: it must show
        how(broken(version + 1))
    else:
        version += 1
        how(content(version))
        valid.append(version)
        if n in checkpoints:
            checkpoint(version)
    time.sleep(rng.uniform(0, 0.006))
print(json.dumps({"valid": valid}), flush=True)
'''


def content(version: int) -> str:
    return "[s]\n" + "".join(f"k{i:03d} = {version}\n" for i in range(KEYS))


def complete_version(section: Any) -> int | None:
    """The version a section holds, or ``None`` if it is not one whole version."""
    if not isinstance(section, Mapping) or len(section) != KEYS:
        return None
    values = set(section.values())
    if len(values) != 1:
        return None
    (value,) = values
    return value if isinstance(value, int) else None


@pytest.mark.parametrize(
    "debounce",
    [
        # a close reports at once unless the file was reported within the debounce (a burst)
        pytest.param(0.005, id="reports-between-writes"),  # shorter than most gaps
        pytest.param(0.02, id="never-quiet"),  # longer than any gap: a burst, MAX_DELAY reports
    ],
)
async def test_a_file_rewritten_by_another_process_is_only_published_whole(
    start_tree: StartTree, tmp_path: Path, caplog: pytest.LogCaptureFixture, debounce: float
) -> None:
    caplog.set_level(logging.CRITICAL, logger="otpylib_config")  # invalid versions log errors
    config = tmp_path / "config.toml"
    config.write_text(content(0))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    await start_tree(sources=[FileSource(config)], watch_debounce=debounce)

    started = time.monotonic()
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(config),
        str(SEED),
        str(WRITES),
        str(KEYS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdin is not None and writer.stdout is not None
    lines = asyncio.ensure_future(writer.stdout.readline())
    reads, torn, seen, checkpoints = 0, 0, [], []
    examples: list[Any] = []
    waiting_for: int | None = None  # a checkpoint the writer waits on
    valid: set[int] | None = None
    try:
        async with asyncio.timeout(120):  # bounds a hang only
            while valid is None:
                section = Config.get_nowait("s")
                reads += 1
                version = complete_version(section)
                if version is None:
                    torn += 1
                    examples = [*examples[:2], section]
                elif not seen or seen[-1] != version:
                    seen.append(version)
                if waiting_for is not None and version == waiting_for:
                    checkpoints.append(waiting_for)
                    waiting_for = None
                    writer.stdin.write(b"seen\n")
                if lines.done():
                    line = json.loads(lines.result() or b"{}")
                    if "checkpoint" in line:
                        waiting_for = line["checkpoint"]
                        lines = asyncio.ensure_future(writer.stdout.readline())
                    else:
                        valid = set(line["valid"])
                await asyncio.sleep(0)
    finally:
        lines.cancel()
        if writer.returncode is None:
            writer.kill()
        await writer.wait()
    write_phase = time.monotonic() - started
    last = max(valid)

    await eventually(lambda: complete_version(Config.get_nowait("s")) == last, timeout=10.0)

    report = f"{reads} reads, {torn} torn, versions seen {seen} in {write_phase:.1f}s"
    print(report)
    assert torn == 0, f"{report}; e.g. {examples}"
    assert set(seen) <= valid | {0}, report
    # the writer went on past each checkpoint only once its version was published
    assert len(checkpoints) == 3 and set(checkpoints) <= valid, report


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_reload_waits_for_a_writer_that_holds_the_file_open(
    start_tree: StartTree, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content(1))
    source = FileSource(config)
    await start_tree(sources=[source], watch_debounce=0.02)
    await eventually(lambda: source._file is not None and source._file.live)
    file = source._file  # what the watcher knows of the file, as the source consults it
    assert file is not None
    text = content(2)

    with open(config, "w") as handle:
        handle.write(text[: len(text) // 2].rsplit("\n", 1)[0] + "\n")  # parses: 61 keys
        handle.flush()
        await eventually(lambda: file.writing)  # the watcher has seen the writer
        reload = asyncio.ensure_future(Config.reload())
        await eventually(lambda: bool(file._waiters))  # the reload waits for the writer
        assert not reload.done()
        assert complete_version(Config.get_nowait("s")) == 1
        handle.seek(0)
        handle.write(text)

    result = await asyncio.wait_for(reload, 5.0)
    assert result.errors == {}
    assert complete_version(Config.get_nowait("s")) == 2


@pytest.mark.skipif(not CLOSE_EVENTS, reason="only inotify reports when a writer closes a file")
async def test_a_reload_gives_up_on_a_writer_that_never_closes_without_an_error(
    start_tree: StartTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "MAX_WRITE_WAIT", 0.2)
    config = tmp_path / "config.toml"
    config.write_text(content(1))
    source = FileSource(config)
    await start_tree(sources=[source], watch_debounce=0.02)
    await eventually(lambda: source._file is not None and source._file.live)
    file = source._file  # what the watcher knows of the file, as the source consults it
    assert file is not None
    text = content(2)

    with open(config, "w") as handle:
        handle.write(text[: len(text) // 2].rsplit("\n", 1)[0] + "\n")
        handle.flush()
        await eventually(lambda: file.writing)  # the watcher has seen the write
        result = await asyncio.wait_for(Config.reload(), 5.0)
        assert result.errors == {}
        assert complete_version(Config.get_nowait("s")) == 1
        (status,) = (await Config.status()).sources
        assert status.healthy
        handle.seek(0)
        handle.write(text)

    await eventually(lambda: complete_version(Config.get_nowait("s")) == 2)
