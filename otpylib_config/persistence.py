"""Persistence of the runtime layer, so that overrides survive a process restart.

With ``RuntimeSource(path="overrides.json")`` the overrides live in two kinds of file::

    overrides.json                      the snapshot: every override, as of sequence number S
    overrides.json.journal.0000000043   a journal segment: one JSON line per put or delete,
                                        sequence numbers 43 and up

A put or delete appends one line to the current segment and syncs it *before* it is
acknowledged, so a ``kill -9`` loses nothing acknowledged, and its cost is the size of that
one operation, whatever the number of overrides (rewriting every override on each put made a
put cost O(n)). Once the journal holds more records than ``max(COMPACT_FLOOR, overrides in
the last snapshot)``, the next put starts a new segment and a worker thread writes a new
snapshot (temp file, fsync, rename, fsync the directory) and deletes the segments it covers.
``Overrides`` is immutable, so the reference taken at that moment is a consistent snapshot
while puts go on; a snapshot costs O(n) but comes after at least n puts, so the cost per put
stays constant on average.

Restoring reads the snapshot and replays, in order, the journal records with a higher
sequence number. A final line that does not parse is a write cut short by a crash (its put was
never acknowledged): it is ignored, and truncated away where appends continue. Anything else
that does not read back (a corrupt snapshot, a bad record before the end) is reported (log,
telemetry, ``status()``) and the file is moved aside under a name never used before, so that
nothing in it is lost or overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from otpylib_config import threads
from otpylib_config.atomic import fsync_directory, write_atomically
from otpylib_config.errors import ConfigError, SourceError
from otpylib_config.overrides import Change, Override, Overrides
from otpylib_config.paths import Path as KeyPath
from otpylib_config.paths import parse_path
from otpylib_config.tree import build
from otpylib_config.values import freeze

if TYPE_CHECKING:
    pass

logger = logging.getLogger("otpylib_config")

FORMAT = "otpylib-config-overrides"
VERSION = 2  # 1: one document and no journal; it still restores, as a snapshot at sequence 0
COMPACT_FLOOR = 1000
"""Compaction waits for at least this many journal records, so that a tree with few
overrides does not rewrite its snapshot every few puts."""

_sync_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
_TEMP_NAME = "[a-z0-9_]{8}"  # what tempfile.mkstemp puts after the prefix
_CHUNK = 256  # overrides per line of a snapshot: one C encoder call, a millisecond or so


class Persistence:
    """Reads and writes one tree's runtime overrides; does nothing without a path.

    ``restore`` must run first (``load_initial`` does): it checks the directory, cleans up
    after an earlier crash and learns where the journal stands. ``close`` waits for a
    compaction in flight.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, *, compact_floor: int | None = None
    ) -> None:
        self.path = None if path is None else Path(path)
        self.compact_floor = COMPACT_FLOOR if compact_floor is None else compact_floor
        self._store = None if self.path is None else _Store(self.path)
        self._restored = False
        self._closed = False
        self.compaction: asyncio.Task[None] | None = None
        """The compaction in flight, if any (``close`` waits for it)."""

    async def restore(self) -> tuple[Overrides | None, str | None]:
        """The saved overrides (``None`` if nothing is persisted), and the error if the file
        did not read back: it was moved aside, and the tree starts without it. Raises
        ``SourceError`` if the file's directory is missing or not writable."""
        if self._store is None:
            return None, None
        try:
            error = await threads.run_sync(self._store.recover)
        except OSError as exc:
            raise SourceError(
                "runtime", f"cannot restore overrides from {self.path}: {exc}"
            ) from exc
        assert self._store.saved is not None
        self._restored = True
        return self._store.saved, error

    async def save(self, overrides: Overrides) -> None:
        """Make ``overrides`` durable before the put or delete that made it is acknowledged:
        one journal record if it follows the state on disk, else a full snapshot."""
        if self._store is None:
            return
        if not self._restored:
            raise SourceError("runtime", f"overrides saved to {self.path} before restore()")
        store, change = self._store, overrides.change
        try:
            if change is not None and store.follows(change):
                await threads.run_sync(store.append, overrides, change)
            else:  # built directly, or after a failed write: the journal cannot describe it
                await threads.run_sync(store.resync, overrides)
        except OSError as exc:
            raise SourceError("runtime", f"cannot persist overrides to {self.path}: {exc}") from exc
        self._maybe_compact(overrides)

    async def close(self) -> None:
        """Wait for the compaction in flight; none starts afterwards. Cancelling ``close``
        cancels the compaction's task (its thread still finishes or abandons its temp file:
        the files on disk stay valid either way)."""
        self._closed = True
        task = self.compaction
        if task is None:
            return
        current = asyncio.current_task()
        try:
            await task
        except asyncio.CancelledError:
            if current is not None and current.cancelling():
                raise

    def _maybe_compact(self, overrides: Overrides) -> None:
        store = self._store
        if store is None or self.compaction is not None or self._closed:
            return
        if store.records <= max(self.compact_floor, store.snapshot_count):
            return
        seq = store.rotate()
        loop = asyncio.get_running_loop()
        # an empty context: the task must not run as (or die with) the manager's process
        coroutine = self._compact(store, overrides, seq)
        self.compaction = loop.create_task(coroutine, context=contextvars.Context())

    async def _compact(self, store: _Store, overrides: Overrides, seq: int) -> None:
        started = time.perf_counter()
        try:
            await threads.run_sync(store.snapshot, overrides, seq)
        except Exception:  # nothing is lost: the journal still holds every record
            logger.warning("compacting the overrides in %s failed", self.path, exc_info=True)
        else:
            elapsed = time.perf_counter() - started
            logger.debug("compacted the overrides in %s at %d in %.3f s", self.path, seq, elapsed)
        finally:
            self.compaction = None


class _Store:
    """The files of one path and where the journal stands. Every method but ``follows``
    and ``rotate`` is blocking I/O for a worker thread; the locks keep a background
    snapshot and the manager's appends from stepping on each other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0  # the last sequence number used
        self.segment = 1  # the first sequence number of the segment appended to
        self.segment_on_disk = False  # created, and its directory entry synced
        self.records = 0  # journal records written since the last snapshot started
        self.snapshot_seq = 0  # what the snapshot on disk includes
        self.snapshot_count = 0  # overrides in it (or restored)
        self.saved: Overrides | None = None  # what the files hold; None: unknown
        self._append_lock = threading.Lock()
        self._snapshot_lock = _path_lock(path)

    # -- names ----------------------------------------------------------------------------

    def segment_path(self, first: int) -> Path:
        return self.path.with_name(f"{self.path.name}.journal.{first:010d}")

    def segments(self) -> list[tuple[int, Path]]:
        """The journal segments on disk, oldest first."""
        pattern = re.compile(rf"{re.escape(self.path.name)}\.journal\.(\d+)")
        found = [
            (int(match.group(1)), self.path.with_name(entry.name))
            for entry in os.scandir(self.path.parent)
            if (match := pattern.fullmatch(entry.name))
        ]
        return sorted(found)

    # -- start-up -------------------------------------------------------------------------

    def recover(self) -> str | None:
        """Check the directory, remove stale temp files, and read the overrides back into
        ``saved``; the error to report, if a file had to be moved aside. Waits for a
        compaction of the same path still running in this process (a tree stopped without
        ``close`` and started again), which would otherwise delete segments being read."""
        with self._snapshot_lock:
            return self._recover()

    def _recover(self) -> str | None:
        _check_usable(self.path)
        _remove_stale_temps(self.path)
        segments = self.segments()
        try:
            overrides, self.snapshot_seq = _read_snapshot(self.path)
        except (ValueError, RecursionError, ConfigError) as exc:
            moved = [_move_aside(self.path), *(_move_aside(p) for _, p in segments)]
            self._start_empty()
            return f"cannot restore overrides from {self.path} ({exc}); {_moved(moved)}"
        segments = self._drop_covered(segments)
        overrides, error = self._replay(overrides, segments)
        self.saved = overrides
        self.snapshot_count = sum(1 for _ in overrides.items())
        if error is not None:  # the good records of a moved segment must not be lost
            self.resync(overrides)
        return error

    def _start_empty(self) -> None:
        self.seq, self.segment, self.segment_on_disk = 0, 1, False
        self.records = self.snapshot_seq = self.snapshot_count = 0
        self.saved = Overrides()

    def _drop_covered(self, segments: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
        """Delete the segments whose records the snapshot includes (a compaction that
        stopped before deleting them), and return the others."""
        kept: list[tuple[int, Path]] = []
        for index, (first, path) in enumerate(segments):
            following = segments[index + 1][0] if index + 1 < len(segments) else None
            if following is not None and following - 1 <= self.snapshot_seq:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                kept.append((first, path))
        return kept

    def _replay(
        self, overrides: Overrides, segments: list[tuple[int, Path]]
    ) -> tuple[Overrides, str | None]:
        """Apply the records after the snapshot; stops at a bad record, moving its segment
        and every later one aside (they build on it), and says so."""
        previous, applied = 0, 0
        for index, (_, path) in enumerate(segments):
            parsed = _parse_segment(path.read_bytes(), previous)
            for record in parsed.records:
                if record.seq > self.snapshot_seq:
                    overrides = record.apply(overrides)
                    applied += 1
                previous = record.seq
            if parsed.error is not None:
                self.seq, self.records = max(previous, self.snapshot_seq), applied
                moved = [_move_aside(p) for _, p in segments[index:]]
                return overrides, f"cannot restore overrides from {path} ({parsed.error}); " + (
                    f"restored the records before it; {_moved(moved)}"
                )
            if parsed.torn and index == len(segments) - 1:
                _truncate(path, parsed.end)
        self.seq, self.records = max(previous, self.snapshot_seq), applied
        if segments:  # go on appending to the newest segment
            self.segment, self.segment_on_disk = segments[-1][0], True
        else:
            self.segment, self.segment_on_disk = self.seq + 1, False
        return overrides, None

    # -- writes ---------------------------------------------------------------------------

    def follows(self, change: Change) -> bool:
        """Whether ``change`` was made from the state the files hold."""
        return self.saved is not None and change.parent() is self.saved

    def append(self, overrides: Overrides, change: Change) -> None:
        """One record, synced; ``saved`` is updated here, in the thread, so that it matches
        the files even if the awaiting manager is cancelled meanwhile."""
        with self._append_lock:
            self.seq += 1
            line = _encode_record(self.seq, change)
            self.saved = None  # until the line is on disk, what the files hold is unknown
            path = self.segment_path(self.segment)
            _append_synced(path, line)
            if not self.segment_on_disk:
                fsync_directory(path.parent)
                self.segment_on_disk = True
            self.saved = overrides
            self.records += 1

    def rotate(self) -> int:
        """Start a new segment for the next records; the sequence number a snapshot taken
        now includes."""
        with self._append_lock:
            self.segment, self.segment_on_disk, self.records = self.seq + 1, False, 0
            return self.seq

    def resync(self, overrides: Overrides) -> None:
        """Write ``overrides`` as a snapshot now, under a new sequence number: what follows a
        write that failed half-way, or overrides the journal cannot describe."""
        with self._append_lock:
            self.saved = None
            self.seq += 1
            self.segment, self.segment_on_disk, self.records = self.seq + 1, False, 0
            self.snapshot(overrides, self.seq)
            self.saved = overrides

    def snapshot(self, overrides: Overrides, seq: int) -> None:
        """Write the snapshot at ``seq`` and delete the segments it covers; a snapshot older
        than the one on disk (a slow compaction overtaken by a resync) is dropped."""
        with self._snapshot_lock:
            if seq <= self.snapshot_seq:
                return
            entries = _entries(overrides)
            write_atomically(self.path, _snapshot_lines(entries, seq))
            self.snapshot_seq, self.snapshot_count = seq, len(entries)
            removed = False
            for first, path in self.segments():
                if first <= seq:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed = True
            if removed:
                fsync_directory(self.path.parent)


# -- the directory ---------------------------------------------------------------------------

_path_locks: dict[str, threading.RLock] = {}
_path_locks_guard = threading.Lock()


def _path_lock(path: Path) -> threading.RLock:
    """One lock per file in this process, held while a snapshot is written or the files
    are read back; reentrant, since a restore may write a snapshot itself."""
    with _path_locks_guard:
        return _path_locks.setdefault(os.path.abspath(path), threading.RLock())


def _check_usable(path: Path) -> None:
    """Refuse a path whose overrides could not be written, at start-up rather than on the
    first put. A probe file is created, since permission bits say nothing for root or for
    a read-only mount."""
    parent = path.parent

    def refuse(reason: str) -> SourceError:
        return SourceError("runtime", f"cannot persist overrides to {path}: {reason}")

    if path.is_dir():
        raise refuse("it is a directory")
    if not parent.exists():
        raise refuse(f"directory {parent} does not exist")
    if not parent.is_dir():
        raise refuse(f"{parent} is not a directory")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise refuse(f"cannot create files in {parent} ({exc.strerror or exc})") from exc
    os.close(descriptor)
    os.unlink(probe)


def _remove_stale_temps(path: Path) -> None:
    """Temp files of snapshot writes (and probes) that a crash left behind."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP_NAME}")
    for entry in os.scandir(path.parent):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            logger.info("removed %s, left behind by an interrupted write", entry.path)


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<time>[-n]``, never over an existing file: a
    hard link fails if the name is taken, where a rename would silently replace it."""
    stamp = int(time.time())
    for attempt in itertools.count():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            os.link(path, aside)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if aside.exists():
                continue
            os.rename(path, aside)
            return aside
        os.unlink(path)
        return aside
    raise AssertionError("unreachable")


def _moved(moves: list[Path]) -> str:
    return "moved it to " + ", ".join(str(p) for p in moves)


def _truncate(path: Path, length: int) -> None:
    logger.info("ignored a half-written record at the end of %s (never acknowledged)", path)
    with open(path, "r+b") as handle:
        handle.truncate(length)
        handle.flush()
        os.fsync(handle.fileno())


# -- the snapshot ----------------------------------------------------------------------------


def _read_snapshot(path: Path) -> tuple[Overrides, int]:
    """The overrides and the sequence number they include; nothing at all if absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Overrides(), 0
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} document")
    version, seq = document.get("version", 1), document.get("seq", 0)
    if version not in (1, VERSION):
        raise ValueError(f"unsupported version {version!r}")
    if type(seq) is not int or seq < 0:
        raise ValueError(f"bad sequence number {seq!r}")
    entries = document.get("overrides", [])
    if not isinstance(entries, list):
        raise ValueError("'overrides' is not a list")
    return Overrides(build(_snapshot_entry(entry) for entry in entries)), seq


def _snapshot_entry(entry: Any) -> tuple[str, KeyPath, Override]:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"bad entry {entry!r:.80}")
    text = entry["path"]
    at = entry.get("at", time.time())
    if "value" not in entry or not isinstance(at, int | float):
        raise ValueError(f"entry {text} needs a value and a time")
    return text, parse_path(text), Override(freeze(entry["value"], text), float(at))


def _snapshot_lines(entries: list[dict[str, Any]], seq: int) -> Iterator[bytes]:
    """The snapshot document, a line per ``_CHUNK`` overrides, written as it is encoded. Each
    line is one call of the C encoder (a call per override costs twice as much, and
    ``json.dump`` with an indent does not use it at all). The GIL is handed back between
    lines (``sleep(0)``) and no multi-megabyte string is ever built, so that a compaction in
    its worker thread holds the event loop up for about one line at a time."""
    yield f'{{"format": "{FORMAT}", "version": {VERSION}, "seq": {seq}, "overrides": [\n'.encode()
    for start in range(0, len(entries), _CHUNK):
        line = json.dumps(entries[start : start + _CHUNK])[1:-1]  # without "[" and "]"
        yield (",\n" if start else "").encode() + line.encode()
        time.sleep(0)
    yield b"\n]}\n"


def _entries(overrides: Overrides) -> list[dict[str, Any]]:
    """Every override as a snapshot entry, in the order :meth:`Overrides.items` gives."""
    return [
        {"path": ".".join(path), "value": override.value, "at": override.at}
        for path, override in overrides.items()
    ]


# -- the journal -----------------------------------------------------------------------------


class _Record(NamedTuple):
    seq: int
    path: KeyPath
    value: Any
    at: float
    deleted: bool
    puts: tuple[tuple[KeyPath, Any], ...] | None = None  # a put_many, applied as one

    def apply(self, overrides: Overrides) -> Overrides:
        if self.puts is not None:
            return overrides.put_many(self.puts, self.at)[0]
        if not self.deleted:
            return overrides.put(self.path, self.value, self.at)[0]
        outcome = overrides.delete(self.path, self.at)
        return overrides if outcome is None else outcome[0]


class _Segment(NamedTuple):
    """What one segment holds: its good records, the length they take, and what follows."""

    records: list[_Record]
    end: int
    torn: bool = False  # a final line cut short by a crash follows
    error: str | None = None  # a bad record follows that is not the final line


def _encode_record(seq: int, change: Change) -> bytes:
    record: dict[str, Any] = {
        "seq": seq,
        "op": "delete" if change.deleted else "put",
        "path": ".".join(change.path),
        "at": change.at,
    }
    if change.batch:
        record["op"] = "put_many"
        record["puts"] = [{"path": ".".join(path), "value": v} for path, v in change.value]
    elif not change.deleted:
        record["value"] = change.value
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def _parse_segment(data: bytes, previous: int) -> _Segment:
    """Records in order, each with a sequence number above the one before (``previous``
    for the first). JSON escapes newlines inside strings, so a record is exactly a line."""
    *lines, tail = data.split(b"\n")
    records: list[_Record] = []
    end = 0
    for number, line in enumerate(lines, start=1):
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):  # not JSON: half a record, or damage
            if number == len(lines) and not tail:
                return _Segment(records, end, torn=True)
            return _Segment(records, end, error=f"line {number} is not a JSON record")
        try:
            record = _decode_record(raw, previous)
        except (ValueError, ConfigError) as exc:
            return _Segment(records, end, error=f"line {number}: {exc}")
        records.append(record)
        previous = record.seq
        end += len(line) + 1
    return _Segment(records, end, torn=bool(tail))


def _decode_record(raw: Any, previous: int) -> _Record:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    seq, op, text, at = raw.get("seq"), raw.get("op"), raw.get("path"), raw.get("at")
    if type(seq) is not int or seq <= previous:
        raise ValueError(f"sequence number {seq!r} does not follow {previous}")
    if not isinstance(text, str) or not isinstance(at, int | float):
        raise ValueError("a record needs a path and a time")
    if op == "put_many":
        return _Record(seq, (), None, float(at), False, _decode_puts(raw.get("puts")))
    path = parse_path(text)
    if op == "delete":
        return _Record(seq, path, None, float(at), True)
    if op != "put" or "value" not in raw:
        raise ValueError(f"unknown operation {op!r}, or a put without a value")
    return _Record(seq, path, freeze(raw["value"], text), float(at), False)


def _decode_puts(puts: Any) -> tuple[tuple[KeyPath, Any], ...]:
    if not isinstance(puts, list) or not all(
        isinstance(p, dict) and isinstance(p.get("path"), str) and "value" in p for p in puts
    ):
        raise ValueError("a put_many record needs a list of puts with a path and a value")
    return tuple((parse_path(p["path"]), freeze(p["value"], p["path"])) for p in puts)


def _append_synced(path: Path, line: bytes) -> None:
    """Append and sync (data only: the inode times need not be durable). Mode 0600: the
    overrides may hold secrets."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(descriptor, view) :]
        _sync_data(descriptor)
    finally:
        os.close(descriptor)
