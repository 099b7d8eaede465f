"""The change log behind ``GET /events`` (docs/admin.md, Events).

One telemetry handler per admin server turns each ``config.changed`` event of its tree (one
per changed leaf, with its exact version, values already redacted) into an entry of a
bounded log, and hands it to every open stream. The log remembers from which version on it
is complete (``floor``), so a client that reconnects with ``Last-Event-ID`` either gets
exactly the changes it missed or, when some are gone, a fresh snapshot first.

The handler runs inside the manager, synchronously, as telemetry handlers do: it only
appends and ``put_nowait``s, so nothing a client does (reading slowly, not at all, or
thousands of clients) can slow a write. A stream that cannot keep up is marked overflowed
and ends; its client resumes from its last id. Only the last change of each version
carries the id, so an id always means "every change up to this version was sent".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from otpylib_config import telemetry
from otpylib_config.jsonable import dumps
from otpylib_config.paths import Path
from otpylib_config.patterns import PatternIndex

logger = logging.getLogger("otpylib_config.admin")

STREAM_QUEUE = 4096
"""Changes a stream may fall behind by before it is disconnected (it resumes by id)."""


class Entry:
    """One changed leaf, as an SSE event; its JSON is built once for every stream."""

    __slots__ = ("_data", "new", "old", "path", "segments", "version")

    def __init__(self, version: int, path: str, old: Any, new: Any) -> None:
        self.version, self.path, self.old, self.new = version, path, old, new
        self.segments: Path = tuple(path.split("."))
        self._data: str | None = None

    def frame(self, *, last_of_version: bool) -> bytes:
        """The event; only the last change of a version carries ``id``, so a client cut
        off inside a version resumes from the version before it and misses nothing (an
        event without ``id`` leaves a client's last event id as it was)."""
        if self._data is None:
            body = {"path": self.path, "old": self.old, "new": self.new, "version": self.version}
            self._data = dumps(body)
        id_line = f"id: {self.version}\n" if last_of_version else ""
        return f"event: change\n{id_line}data: {self._data}\n\n".encode()


def sse(event: str, version: int, data: Any) -> bytes:
    """One Server-Sent Event; ``data`` as one line of JSON (JSON has no raw newlines)."""
    return f"event: {event}\nid: {version}\ndata: {dumps(data)}\n\n".encode()


def frames(entries: Sequence[Entry]) -> list[bytes]:
    """``entries`` (whole versions) as events, each version's last one with its id."""
    return [
        entry.frame(
            last_of_version=i + 1 == len(entries) or entries[i + 1].version != entry.version
        )
        for i, entry in enumerate(entries)
    ]


class Stream:
    """One open ``/events`` response: what its pattern lets through, queued for it.

    A version's changes are queued together: the manager emits them in one step, with no
    await between them, so whenever the stream's writer runs, every version it finds
    queued is whole (an overflow empties the queue and ends the stream)."""

    def __init__(self, pattern: Path) -> None:
        self.index: PatternIndex[bool] = PatternIndex()
        self.index.add(pattern, True)
        self.queue: asyncio.Queue[Entry | None] = asyncio.Queue(STREAM_QUEUE)
        self.overflowed = False

    def wants(self, entry: Entry) -> bool:
        return self.index.matches(entry.segments)

    def offer(self, entry: Entry) -> None:
        if self.overflowed or not self.wants(entry):
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.overflowed = True
            self.close()

    def close(self) -> None:
        """End the stream: whatever is queued is dropped and its writer sees ``None``
        next. Nothing queued was sent, and the client's last id names the last whole
        version it got, so it gets the dropped changes again when it resumes."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def take(self) -> list[bytes] | None:
        """Wait for changes; then the events of every version queued (each whole), or
        ``None`` once the stream has ended (overflowed, or the server stops)."""
        entries: list[Entry] = []
        item = await self.queue.get()
        while item is not None:
            entries.append(item)
            if self.queue.empty():
                return frames(entries)
            item = self.queue.get_nowait()
        return None


class EventLog:
    """The last ``kept`` changes of one tree, complete for every version above ``floor``."""

    def __init__(self, tree: str, kept: int, version: int) -> None:
        self.tree = tree
        self.entries: deque[Entry] = deque()
        self.kept = kept
        self.floor = version  # every change after this version is in ``entries``
        self.streams: set[Stream] = set()
        self.handler_id = f"otpylib_config.admin.events.{tree}.{id(self)}"

    def attach(self) -> None:
        telemetry.attach(self.handler_id, telemetry.CHANGED, self._changed)

    def close(self) -> None:
        telemetry.detach(self.handler_id)
        for stream in list(self.streams):
            stream.close()
        self.streams.clear()

    def _changed(self, _event: str, _m: Any, metadata: Any, _config: Any) -> None:
        if metadata.get("id") != self.tree:
            return
        try:
            entry = Entry(
                metadata["version"], metadata["path"], metadata["old_value"], metadata["new_value"]
            )
            self._append(entry)
        except Exception:  # a bug here must not detach the handler: say so and go on
            logger.exception("admin event log failed on a change of %s", metadata.get("path"))

    def _append(self, entry: Entry) -> None:
        if len(self.entries) >= self.kept:
            self.floor = max(self.floor, self.entries.popleft().version)
        self.entries.append(entry)
        for stream in self.streams:
            stream.offer(entry)

    def since(self, last_id: int, current: int, stream: Stream) -> list[bytes] | None:
        """The events of every kept change after version ``last_id`` that ``stream``
        wants, or ``None`` if some are gone (or the id is not one of this log's: from the
        future, or negative). Every version above ``floor`` is whole in the log."""
        if last_id < self.floor or last_id > current:
            return None
        kept = [e for e in self.entries if e.version > last_id and stream.wants(e)]
        return frames(kept)

    def open(self, pattern: Path) -> Stream:
        stream = Stream(pattern)
        self.streams.add(stream)
        return stream

    def release(self, stream: Stream) -> None:
        self.streams.discard(stream)


def parse_last_id(header: str | None) -> int | None:
    """``Last-Event-ID`` as a version, or ``None`` when absent or not one of ours."""
    text = (header or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None
