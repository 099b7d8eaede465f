"""``watch [PATTERN]``: follow ``GET /events`` and print one line per change.

The stream is Server-Sent Events. The first connection starts with a ``snapshot`` (the
state the changes apply to), which is not a change and is not printed. A dropped
connection is retried with a bounded exponential backoff and ``Last-Event-ID``, so the
server replays what was missed; if it no longer keeps those changes it sends a fresh
snapshot instead, and one line says the watch resynced (a consumer then knows it may have
missed changes). Ctrl-C and SIGTERM stop it cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from otpylib_config.cli._errors import EXIT_OK, EXIT_SERVER, CliError, UsageError
from otpylib_config.cli._formats import compact
from otpylib_config.cli._http import AdminClient, Unreachable
from otpylib_config.cli._output import Output
from otpylib_config.paths import parse_pattern

if TYPE_CHECKING:
    import aiohttp

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
"""Seconds between reconnects: doubling from the first, never more than the max."""
MAX_LINE = 64 * 1024 * 1024
"""The longest line of the stream (a snapshot of a large configuration is one line)."""


@dataclass(frozen=True)
class Event:
    """One dispatched SSE event."""

    name: str
    id: str | None
    data: str


@dataclass
class Follower:
    """What the watch knows between connections: where it is, how much it printed."""

    pattern: str
    limit: int | None
    out: Output
    last_id: str | None = None
    printed: int = 0
    connected: bool = False
    heard: bool = field(default=False)
    """The current connection delivered something: the backoff starts over."""

    def handle(self, event: Event) -> bool:
        """Print what ``event`` means; ``True`` once ``--count`` changes were printed."""
        self.heard = True
        data = _json(event.data)
        if event.name == "snapshot":
            self._snapshot(data, event.id)
        elif event.name == "change":
            self._change(data)
        if event.id is not None:
            self.last_id = event.id
        return self.limit is not None and self.printed >= self.limit

    def _snapshot(self, data: Any, event_id: str | None) -> None:
        version = data.get("version", event_id) if isinstance(data, dict) else event_id
        if self.last_id is None:
            self.out.notice(f"watching {self.pattern!r} from version {version} (Ctrl-C to stop)")
        else:
            self.out.line(
                f"{version} resynced: the changes after version {self.last_id} are no longer "
                f"kept by the server; now at version {version}"
            )

    def _change(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        path = self.out.style(str(data.get("path")), "bold")
        old, new = compact(data.get("old")), compact(data.get("new"))
        self.out.line(f"{data.get('version')} {path}: {old} -> {new}")
        self.printed += 1


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CliError("the server sent an event whose data is not JSON", EXIT_SERVER) from None


async def watch(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """Follow the changes until ``--count`` of them were printed or a signal stops it."""
    try:
        parse_pattern(args.pattern)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    follower = Follower(args.pattern, args.count, out)
    task = asyncio.create_task(_follow(client, follower))
    with _stopping(task) as stopped:
        try:
            return await task
        except asyncio.CancelledError:
            if not stopped:
                raise
    out.notice(f"stopped after {follower.printed} change{'s' if follower.printed != 1 else ''}")
    return EXIT_OK


@contextlib.contextmanager
def _stopping(task: asyncio.Task[int]) -> Iterator[list[int]]:
    """SIGINT and SIGTERM cancel ``task``; the list they fill says a signal did it."""
    loop = asyncio.get_running_loop()
    stopped: list[int] = []
    installed = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
    try:
        yield stopped
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _follow(client: AdminClient, follower: Follower) -> int:
    """Connect, read, and reconnect after a drop, with the backoff between attempts."""
    attempt = 0
    while True:
        follower.heard = False
        try:
            if await _connection(client, follower):
                return EXIT_OK
            reason = "the server closed the stream"
        except Unreachable as exc:
            if not follower.connected:
                raise
            reason = exc.message
        attempt = 0 if follower.heard else attempt + 1
        delay = min(BACKOFF_FIRST * 2 ** max(attempt - 1, 0), BACKOFF_MAX)
        follower.out.notice(f"connection lost ({reason}); reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)


async def _connection(client: AdminClient, follower: Follower) -> bool:
    """One connection's events; ``True`` once the watch has printed enough."""
    headers = {} if follower.last_id is None else {"Last-Event-ID": follower.last_id}
    params = {"pattern": follower.pattern}
    async with client.stream(client.route("events"), params, headers) as body:
        follower.connected = True
        async for event in _events(body, follower):
            if follower.handle(event):
                return True
    return False


async def _events(body: aiohttp.StreamReader, follower: Follower) -> AsyncIterator[Event]:
    """The SSE events of ``body`` (https://html.spec.whatwg.org/#event-stream-interpretation):
    ``event``/``id``/``data`` fields, a blank line dispatches, ``:`` starts a comment."""
    name, event_id = "message", None
    data: list[str] = []
    async for line in _lines(body):
        if not line:
            if data:
                yield Event(name, event_id, "\n".join(data))
            name, data = "message", []
            continue
        if line.startswith(":"):
            follower.heard = True  # a keep-alive: the connection works
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id" and "\0" not in value:
            event_id = value


async def _lines(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Lines of the body (``\\n``, ``\\r\\n`` or ``\\r``), however long, up to MAX_LINE.
    Only each new chunk is scanned, so a long line (a big snapshot) costs its length once."""
    pending = bytearray()
    held = False  # the last chunk ended in \r: maybe half of a \r\n
    async for chunk in body.iter_any():
        if held:
            chunk = b"\r" + chunk
        held = chunk.endswith(b"\r")
        parts = (chunk[:-1] if held else chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        first, *rest = parts.split(b"\n")
        pending += first
        for part in rest:
            yield pending.decode("utf-8", "replace")
            pending = bytearray(part)
        if len(pending) > MAX_LINE:
            raise CliError("the server sent a line longer than 64 MiB", EXIT_SERVER)
    if held:  # a \r at the very end ends its line too
        yield pending.decode("utf-8", "replace")
