"""``FileWatcher``: tells the event loop, debounced per key, that a watched file changed.

Each file is watched through its parent directory with one watchdog ``Observer``, because
a watch on the file itself dies with the file's inode: editors save by writing a temporary
file and renaming it over the original, and Kubernetes updates a ConfigMap volume by swapping
a ``..data`` symlink (lessons.md item 2). An event counts for a key when

* its source or destination path names the file (same directory, same base name), or
* it touches a ``..``-prefixed entry of the directory (the Kubernetes atomic writer), or
* the file's resolved path, mtime, size or inode differ from what was last seen: this catches
  a change reached through a symlink whose target lives in a directory nobody watches.

Only events that can mean new content are asked for: a reload that opens and reads the file
produces open and close-without-write events, and reacting to those would reload forever.

Events arrive on watchdog's threads and are handed to the loop with
``call_soon_threadsafe``; everything else happens on the loop, so no state is shared between
threads. On the loop each relevant event (re)arms a ``call_later`` per key, so a burst of
events gives one ``on_change(key)`` (lessons.md items 1 and 18). On Linux a report also
waits (up to ``MAX_WRITE_WAIT``) until a writer that has the file open closes it, so a
writer that pauses half-way is not read half-way. ``on_change`` only says "look again":
the caller reloads, validates and notifies only if the content changed.

Not handled, on purpose: a watched directory that is deleted or replaced stops delivering
events (the reload timer is the safety net), and a directory reached through a symlink is
watched where the symlink pointed when ``watch()`` was called.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

logger = logging.getLogger("otpylib_config")

DEFAULT_DEBOUNCE = 0.05
"""Seconds without a relevant event before ``on_change`` runs."""

ATOMIC_WRITER_PREFIX = ".."
"""Kubernetes' atomic writer names its timestamped directories and ``..data`` link so."""

EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,  # ``touch config.toml`` is how operators ask for a reload
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
"""What the observer reports: never opens or reads, which the reload itself causes."""

CLOSE_EVENTS = sys.platform.startswith("linux")
"""inotify reports when a writer closes a file; other platforms' observers do not."""
MAX_WRITE_WAIT = 2.0
"""Seconds a report may wait for a writer to close the file before it goes out anyway."""

Fingerprint = tuple[str, int, int, int]
"""``(real path, st_mtime_ns, st_size, st_ino)`` of a file."""


@dataclass(slots=True)
class _Watched:
    """One key's file: where it is, and what it looked like at the last event."""

    path: str
    """The file as given, made absolute; may be a symlink, may not exist."""
    directory: str
    """The real path of the parent directory: what the observer watches and reports."""
    name: str
    seen: Fingerprint | None
    """``None`` while the file does not exist."""
    writing: bool = False
    """The file was written and not closed since: a writer may be half-way through."""


class FileWatcher:
    """Watches files through their parent directories with one watchdog Observer, and calls
    ``on_change(key)`` on the event loop, debounced per key, after files change.

    ``watch``, ``start`` and ``stop`` are called on the loop thread (``stop`` may also be
    called before ``start``); events are handed to the loop running when ``start()`` is
    called.
    """

    def __init__(
        self,
        on_change: Callable[[str], None],
        *,
        debounce: float = DEFAULT_DEBOUNCE,
    ) -> None:
        if debounce < 0:
            raise ValueError(f"debounce must be >= 0 seconds, got {debounce!r}")
        self._on_change = on_change
        self._debounce = debounce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._watched: dict[str, _Watched] = {}
        self._directories: set[str] = set()
        """Directories scheduled on the running observer."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._armed_at: dict[str, float] = {}
        """When each pending report was first armed: bounds the wait for a writer."""

    @property
    def running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._observer is not None

    def watch(self, key: str, path: str | os.PathLike[str]) -> None:
        """Report changes of ``path`` as ``on_change(key)``.

        The file may not exist yet; its directory must, because a missing directory usually
        means a wrong path, and watching an ancestor instead would hide that. Watching a key
        again moves it to the new path.
        """
        file = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(file)
        if not os.path.isdir(parent):
            raise FileNotFoundError(
                errno.ENOENT, f"cannot watch {file}: its directory does not exist", parent
            )
        directory = os.path.realpath(parent)
        if self._observer is not None:
            self._schedule(self._observer, directory)
        self._watched[key] = _Watched(file, directory, os.path.basename(file), fingerprint(file))

    def start(self) -> None:
        """Start the observer thread; a second call while running does nothing."""
        if self._observer is not None:
            return
        self._loop = asyncio.get_running_loop()
        observer = Observer()
        try:
            for directory in {w.directory for w in self._watched.values()}:
                self._schedule(observer, directory)
            observer.start()
        except BaseException:
            _shut_down(observer)
            self._directories.clear()
            raise
        self._observer = observer

    def stop(self) -> None:
        """Stop and join the observer's threads and drop pending notifications; idempotent.

        Blocking the loop here is brief: watchdog's threads never wait for the loop.
        """
        observer, self._observer = self._observer, None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._armed_at.clear()
        self._directories.clear()
        if observer is not None:
            _shut_down(observer)

    def poke(self, key: str) -> None:
        """Report ``key`` after the debounce as if an event had arrived: a caller that may
        have missed changes made before ``start()`` asks to look once more."""
        if self._observer is not None and key in self._watched:
            self._arm(key)

    def _schedule(self, observer: BaseObserver, directory: str) -> None:
        if directory in self._directories:
            return
        forward = _Forwarder(directory, self._post)
        observer.schedule(forward, directory, recursive=False, event_filter=EVENTS)
        self._directories.add(directory)

    def _post(self, directory: str, paths: tuple[str, ...], kind: str) -> None:
        """On a watchdog thread: hand the event to the loop, never wait for it."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_event, directory, paths, kind)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            logger.debug("file event in %s dropped: the event loop is closed", directory)

    def _on_event(self, directory: str, paths: tuple[str, ...], kind: str) -> None:
        if self._observer is None:  # queued before stop()
            return
        for key, watched in self._watched.items():
            if watched.directory == directory and _relevant(watched, paths):
                _track_writer(watched, paths, kind)
                self._arm(key)

    def _arm(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._armed_at.setdefault(key, loop.time())
        self._timers[key] = loop.call_later(self._debounce, self._fire, key)

    def _fire(self, key: str) -> None:
        """Report ``key``, unless a writer still has it open (then look again later)."""
        self._timers.pop(key, None)
        watched = self._watched.get(key)
        waited = asyncio.get_running_loop().time() - self._armed_at.get(key, 0.0)
        if watched is not None and watched.writing and waited < MAX_WRITE_WAIT:
            self._arm(key)
            return
        self._armed_at.pop(key, None)
        try:
            self._on_change(key)
        except Exception:
            logger.exception("file watcher: on_change(%r) raised; still watching", key)


class _Forwarder(FileSystemEventHandler):
    """Passes every event of one directory to ``post(directory, paths)``."""

    def __init__(self, directory: str, post: Callable[[str, tuple[str, ...], str], None]) -> None:
        self._directory = directory
        self._post = post

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = tuple(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)
        self._post(self._directory, paths, event.event_type)


def _relevant(watched: _Watched, paths: Iterable[str]) -> bool:
    """Whether an event in ``watched.directory`` concerns the file; refreshes ``seen``."""
    now = fingerprint(watched.path)
    moved = now != watched.seen
    watched.seen = now
    return moved or any(_names(watched, path) for path in paths)


def _track_writer(watched: _Watched, paths: tuple[str, ...], kind: str) -> None:
    """Follow whether a writer has the file open, from the events that name it.

    A file is read only once its writer has closed it (or ``MAX_WRITE_WAIT`` has passed), so
    a writer that pauses half-way, longer than the debounce, is not read half-way.
    """
    if not CLOSE_EVENTS or os.path.join(watched.directory, watched.name) not in paths:
        return
    if kind in ("created", "modified"):
        watched.writing = True
    elif kind in ("closed", "deleted", "moved"):
        watched.writing = False


def _names(watched: _Watched, path: str) -> bool:
    """Whether ``path`` is the watched file or an entry of the Kubernetes atomic writer."""
    directory, name = os.path.split(path)
    if directory != watched.directory:
        return False
    return name == watched.name or name.startswith(ATOMIC_WRITER_PREFIX)


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint | None:
    """What a file looks like without reading it; ``None`` if it does not exist."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_mtime_ns, st.st_size, st.st_ino)


def _shut_down(observer: BaseObserver) -> None:
    """Stop the observer and join its thread; watchdog joins its emitters in ``stop()``."""
    observer.stop()
    if observer.ident is not None:  # started
        observer.join()


async def watch_paths(
    paths: Iterable[str | os.PathLike[str]],
    changed: Callable[[], Awaitable[None]],
    *,
    debounce: float = DEFAULT_DEBOUNCE,
    seen: Sequence[Fingerprint | None] | None = None,
) -> None:
    """Run until cancelled; ``await changed()`` after each debounced change of any of
    ``paths``, and once watching has started unless every path still looks as in ``seen``
    (its :func:`fingerprint` when last read): a change made before the watch started, or
    while an earlier watch was failing, must not be missed, and an unchanged file need not
    be read again.

    Changes that arrive while ``changed()`` runs are folded into one more call after it, so
    a slow reload never queues a backlog of reloads.
    """
    wake = asyncio.Event()
    watcher = FileWatcher(lambda _key: wake.set(), debounce=debounce)
    keys = list(paths)
    for index, path in enumerate(keys):
        watcher.watch(str(index), path)
    watcher.start()
    for index, path in enumerate(keys):
        if seen is None or fingerprint(path) != seen[index]:
            watcher.poke(str(index))
    try:
        while True:
            await wake.wait()
            wake.clear()
            await changed()
    finally:
        watcher.stop()
