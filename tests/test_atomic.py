"""Specification of otpylib_config.atomic: files replaced atomically.

The runtime layer's snapshot and the Consul source's last-known-good cache are written by a
temp file in the same directory, fsync, rename and fsync of the directory (README.md,
Persistence), so that a reader or a crash sees the old file or the new one, never a mix;
the file is owner-readable only; a write that fails leaves the old file and no temp file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpylib_config.atomic import fsync_directory, write_atomically, write_json_atomically


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_writes_the_bytes(tmp_path: Path) -> None:
    target = tmp_path / "overrides.json"
    write_atomically(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'


def test_it_writes_an_iterable_of_pieces_in_order(tmp_path: Path) -> None:
    target = tmp_path / "overrides.json"
    write_atomically(target, iter([b"one ", b"two ", b"", b"three"]))
    assert target.read_bytes() == b"one two three"


def test_it_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "overrides.json"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["overrides.json"]


def test_the_file_is_owner_readable_only_whatever_it_was_and_whatever_the_umask(
    tmp_path: Path,
) -> None:
    target = tmp_path / "cache.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    previous = os.umask(0)
    try:
        write_atomically(target, b"new")
    finally:
        os.umask(previous)
    assert mode(target) == 0o600


def test_while_it_writes_the_old_file_is_whole_and_the_temp_file_is_a_hidden_sibling(
    tmp_path: Path,
) -> None:
    target = tmp_path / "overrides.json"
    target.write_bytes(b"old")
    seen: list[tuple[bytes, list[str]]] = []

    def pieces() -> Iterator[bytes]:
        yield b"new, "
        temps = sorted(name for name in os.listdir(tmp_path) if name != "overrides.json")
        seen.append((target.read_bytes(), temps))
        yield b"done"

    write_atomically(target, pieces())

    [(during, temps)] = seen
    assert during == b"old"  # a reader meanwhile sees the old file, whole
    assert len(temps) == 1 and temps[0].startswith(".overrides.json.")
    assert target.read_bytes() == b"new, done"
    assert os.listdir(tmp_path) == ["overrides.json"]  # the temp file became the file


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "overrides.json"
    target.write_bytes(b"old")

    def pieces() -> Iterator[bytes]:
        yield b"half of the new"
        raise error

    with pytest.raises(type(error)):
        write_atomically(target, pieces())

    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["overrides.json"]


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a directory cannot be replaced by a file
    (target / "inside").write_text("kept")

    with pytest.raises(OSError):
        write_atomically(target, b"new")

    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "inside").read_text() == "kept"


def test_a_missing_directory_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "overrides.json", b"new")
    assert os.listdir(tmp_path) == []


def test_json_is_written_indented_with_sorted_keys(tmp_path: Path) -> None:
    target = tmp_path / "cache.json"
    document = {"b": [1, 2], "a": {"y": None, "x": "ü"}}

    write_json_atomically(target, document)

    assert target.read_text() == json.dumps(document, indent=1, sort_keys=True)
    assert json.loads(target.read_text()) == document
    assert mode(target) == 0o600


def test_a_document_that_is_not_json_fails_before_the_old_file_is_touched(
    tmp_path: Path,
) -> None:
    target = tmp_path / "cache.json"
    target.write_text('{"a": 1}')
    with pytest.raises(TypeError):
        write_json_atomically(target, {"a": {1, 2}})
    assert target.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["cache.json"]


def test_fsync_directory_syncs_a_directory_and_refuses_a_missing_one(tmp_path: Path) -> None:
    fsync_directory(tmp_path)  # returns: nothing to observe but that it does not raise
    assert tmp_path.is_dir()
    with pytest.raises(FileNotFoundError):
        fsync_directory(tmp_path / "missing")
