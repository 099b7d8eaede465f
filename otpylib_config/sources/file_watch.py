"""``FileWatcher``: tells the event loop that a watched file changed, once its writer is
done, and keeps what a reader needs to know whether the file was being written while it read
it.

Each file is watched through its parent directory with one watchdog ``Observer``, because
a watch on the file itself dies with the file's inode: editors save by writing a temporary
file and renaming it over the original, and Kubernetes updates a ConfigMap volume by swapping
a ``..data`` symlink (watchers of other libraries died after such saves). An event counts
for a key when

* its source or destination path names the file (same directory, same base name), or
* it touches a ``..``-prefixed entry of the directory (the Kubernetes atomic writer), or
* the file's resolved path, mtime, size or inode differ from what was last seen: this catches
  a change reached through a symlink whose target lives in a directory nobody watches.

Events arrive on watchdog's threads and are handed to the loop with
``call_soon_threadsafe``; everything else happens on the loop, so no state is shared between
threads (the only value the loop hands the other way is an immutable set of paths, replaced
whole). ``on_change(key)`` only says "look again": the caller reloads, validates and notifies
only if the content changed.

**When a change is reported.** On Linux, inotify says when a writer closes the file and when
a rename puts a file in place, and those are the moments its new content is complete. So an
event that completes the file (:func:`_completes`: a close after writing, a rename onto it or
onto a ``..`` entry, a file moved in from another directory) reports at once. Every other
event (a write, a creation, a deletion, ``touch``'s attribute change on its own) arms a
debounce per key, and a quiet period of ``debounce`` seconds reports it; so does a completing
event that comes within ``debounce`` of the key's last report: a burst (an editor that
writes twice per save, a writer that rewrites the file every few milliseconds) then costs
one more report at its end, not one per close. A report the debounce is about to send is held
while a writer has the file open (its close reports it), and a quiet period alone never comes
while a writer keeps writing, so a report also falls due ``MAX_DELAY`` debounces after its
first event and goes out at the next close (or at once if no writer has the file open):
under continuous writes the newest version is still looked at every few debounces. Other
platforms report no closes, so there every event takes the debounce.

Every :class:`WatchedFile` also keeps what a reader needs to prove that no write overlapped
its read (``FileSource`` does the proving): a generation bumped by each relevant event,
whether a writer has written the file and not closed it, and the file's opens and
closes-without-write, with the number of handles they leave open. Opens and closes are
markers, never reasons to report (a reload reads the file, and reacting to that would reload
forever). They matter because one directory's events reach the loop in the order they
happened: once a read's own open and close have arrived, every event before its close has
too, however late watchdog delivers (it holds a directory's events for up to half a second
after a rename). Two kernel habits limit what the markers say: a change is reported when
its system call ends, so a truncation can be visible well before its event (hence the open
handles: a writer's open is reported before it changes anything), and an event identical to
the one queued right before it is merged into it, so two opens in a row count as one (hence
the orphans: the writer whose open was swallowed later writes with no handle known open).

Not handled, on purpose: a watched directory that is deleted or replaced stops delivering
events (the reload timer is the safety net), and a directory reached through a symlink is
watched where the symlink pointed when ``watch()`` was called.

A :class:`WatchedFile` is the one piece of a ``FileSource``'s state that two tasks share on
purpose: the watch's events write it, the reads consult it and mark their own opens
(docs/sources.md, FileSource). This module imports watchdog, so ``FileSource`` imports it
only once it starts watching: a tree without a watched file never loads watchdog.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from otpylib_config.sources.base import DEFAULT_DEBOUNCE

logger = logging.getLogger("otpylib_config")

MAX_DELAY = 4
"""A report falls due this many debounces after its first event, quiet period or not."""

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
    FileOpenedEvent,  # markers only (see MARKERS)
    FileClosedNoWriteEvent,
]
"""What the observer reports."""

OPENED, CLOSED_NO_WRITE, MOVED = "opened", "closed_no_write", "moved"
MARKERS = frozenset({OPENED, CLOSED_NO_WRITE})
"""Event kinds a read causes: counted for readers, never a reason to report."""

CLOSE_EVENTS = sys.platform.startswith("linux")
"""inotify reports opens and closes (and whether the closer wrote); other observers do not."""

OPEN_HISTORY = 64
"""How many opens of a file a :class:`WatchedFile` remembers."""
FORGET_HANDLES = 2.0
"""Seconds after which a handle that wrote nothing counts as a reader's: a writer's change
is reported when its system call ends, far sooner. Also how long a file must go without
events before its count of open handles is forgotten (the count can be off, see
:attr:`WatchedFile.handles`)."""

Fingerprint = tuple[str, int, int, int]
"""``(real path, st_mtime_ns, st_size, st_ino)`` of a file."""


class Moment(NamedTuple):
    """What a :class:`WatchedFile` looked like right after one event."""

    generation: int
    writing: bool
    handles: int
    opens: int
    orphans: int
    writer_mark: int
    """``opens`` at the last event of a writer: opens after it are writers not heard from."""


@dataclass(eq=False, slots=True)
class WatchedFile:
    """One key's file: where it is, and what the watcher has seen happen to it.

    Read and written on the loop thread only. A reader (``FileSource.load``) uses it to
    wait for a writer and to prove that no write overlapped its read; see the module doc.
    """

    path: str
    """The file as given, made absolute; may be a symlink, may not exist."""
    directory: str
    """The real path of the parent directory: what the observer watches and reports."""
    name: str
    seen: Fingerprint | None
    """``None`` while the file does not exist."""
    writing: bool = False
    """The file was written and not closed since: a writer may be half-way through."""
    generation: int = 0
    """Bumped by every relevant event: an unchanged generation means nothing happened."""
    events: int = 0
    """Bumped by every event of the file, markers included."""
    opens: int = 0
    """Open events of the file, by any process (a reader's own included)."""
    closes: int = 0
    """Close-without-write events of the file, by any process."""
    handles: int = 0
    """Opens not closed yet, as far as events tell (readers' and writers' alike: an open
    event does not say which). The kernel merges an event into an identical one queued
    right before it, so this can be off either way; it is forgotten after
    ``FORGET_HANDLES`` without events, and handles opened before the watch are unknown."""
    orphans: int = 0
    """Writes and closes-after-write that came while no handle was known to be open: a
    writer whose open was merged into another one's shows up so."""
    live: bool = False
    """Its watcher is running: without that, nothing here is kept up to date."""
    _last_event: float = 0.0
    _writer_mark: int = 0
    _opens_log: deque[_Open] = field(default_factory=lambda: deque(maxlen=OPEN_HISTORY))
    _waiters: list[tuple[Callable[[], bool], asyncio.Future[Moment | None]]] = field(
        default_factory=list
    )

    @property
    def real(self) -> str:
        """Where the file's own events come from: its real path at the last event."""
        return self.seen[0] if self.seen is not None else os.path.join(self.directory, self.name)

    def moment(self) -> Moment:
        return Moment(
            self.generation, self.writing, self.handles, self.opens, self.orphans, self._writer_mark
        )

    def at_open(self, count: int) -> Moment | None:
        """The moment right after the ``count``-th open, if it is still remembered."""
        entry = self._open(count)
        return entry.moment if entry is not None else None

    def claim(self, count: int) -> None:
        """The ``count``-th open was the reader's own: it is no writer to suspect."""
        entry = self._open(count)
        if entry is not None:
            entry.own = True

    def suspects(self, upto: int, at: Moment) -> bool:
        """Whether an open up to the ``upto``-th may have been a writer that had changed the
        file without saying so yet at moment ``at``: one after the last writer event before
        it, not claimed, and younger than ``FORGET_HANDLES``. An open no longer remembered is
        suspect."""
        mark = at.writer_mark
        if upto <= mark:
            return False
        if not self._opens_log or self._opens_log[0].count > mark + 1:
            return True
        now = asyncio.get_running_loop().time()
        return any(
            mark < entry.count <= upto and not entry.own and now - entry.at < FORGET_HANDLES
            for entry in self._opens_log
        )

    def _open(self, count: int) -> _Open | None:
        for entry in self._opens_log:
            if entry.count == count:
                return entry
        return None

    def when(self, predicate: Callable[[], bool]) -> asyncio.Future[Moment | None]:
        """A future of the moment ``predicate()`` first holds, checked now and after each
        event; ``None`` if the watcher stops first. Taking the moment synchronously, at the
        event that made it hold, keeps later events out of it."""
        future: asyncio.Future[Moment | None] = asyncio.get_running_loop().create_future()
        self._settle(predicate, future)
        return future

    def _settle(self, predicate: Callable[[], bool], future: asyncio.Future[Moment | None]) -> None:
        """Resolve ``future`` if the watch ended or ``predicate`` holds; else keep waiting."""
        if not self.live:
            future.set_result(None)
        elif predicate():
            future.set_result(self.moment())
        else:
            self._waiters.append((predicate, future))

    def _marker(self, kind: str) -> None:
        """An open or a close-without-write of the file."""
        self._event()
        if kind == OPENED:
            self.opens += 1
            self.handles += 1
            self._opens_log.append(_Open(self.opens, self.moment(), self._last_event))
        else:
            self.closes += 1
            self._closed()
        self._updated()

    def _changed(self, paths: tuple[str, ...], kind: str) -> None:
        """A relevant event; also follows whether a writer has the file open.

        A creation counts as a writer too: a file created empty and written later is not
        yet its content (a symlink is complete once it exists: nobody writes it). Creating,
        deleting or moving the file puts another inode (or none) under its name, whose
        handles start from nothing.
        """
        self._event()
        self.generation += 1
        own = {os.path.join(self.directory, self.name), self.real}
        if CLOSE_EVENTS and not own.isdisjoint(paths):
            if kind in ("modified", "closed") and self.handles == 0:
                self.orphans += 1
            if kind != "attrib":
                self._writer_mark = self.opens
            if kind in ("created", "deleted", "moved"):
                self.handles = 0
            if kind == "modified" or (kind == "created" and not os.path.islink(paths[0])):
                self.writing = True
            elif kind in ("closed", "deleted", "moved"):
                self.writing = False
            if kind == "closed":
                self._closed()
        self._updated()

    def _event(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_event > FORGET_HANDLES:
            self.handles = 0  # a reader that keeps the file open, or a miscount
        self._last_event = now
        self.events += 1

    def _closed(self) -> None:
        self.handles = max(0, self.handles - 1)  # below 0: opened before the watch began

    def _updated(self) -> None:
        waiting, self._waiters = self._waiters, []
        for predicate, future in waiting:
            if not future.done():
                self._settle(predicate, future)

    def _stopped(self) -> None:
        self.live = False
        self._updated()


@dataclass(eq=False, slots=True)
class _Open:
    """One open of a watched file, as a reader's proof needs it."""

    count: int
    moment: Moment
    at: float
    """Loop time it arrived."""
    own: bool = False


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
        self._watched: dict[str, WatchedFile] = {}
        self._forwarders: dict[str, _Forwarder] = {}
        """Directories scheduled on the running observer, and their handlers."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._armed_at: dict[str, float] = {}
        """When each pending report was first armed: it falls due ``MAX_DELAY`` later."""
        self._reported_at: dict[str, float] = {}
        """When each key was last reported: a completing event within ``debounce`` of it is
        part of a burst, and waits for the debounce (module doc)."""

    @property
    def running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._observer is not None

    def watch(self, key: str, path: str | os.PathLike[str]) -> WatchedFile:
        """Report changes of ``path`` as ``on_change(key)``; returns what is known of it.

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
        watched = WatchedFile(file, directory, os.path.basename(file), fingerprint(file))
        previous = self._watched.get(key)
        if previous is not None:
            previous._stopped()
        self._watched[key] = watched
        if self._observer is not None:
            self._schedule(self._observer, directory)
            watched.live = True
        return watched

    def file(self, key: str) -> WatchedFile:
        return self._watched[key]

    def start(self) -> None:
        """Start the observer thread; a second call while running does nothing."""
        if self._observer is not None:
            return
        self._loop = asyncio.get_running_loop()
        observer = _new_observer()
        try:
            for directory in {w.directory for w in self._watched.values()}:
                self._schedule(observer, directory)
            observer.start()
        except BaseException:
            _shut_down(observer)
            self._forwarders.clear()
            raise
        self._observer = observer
        for watched in self._watched.values():
            watched.live = True

    def stop(self) -> None:
        """Stop and join the observer's threads and drop pending notifications; idempotent.

        Blocking the loop here is brief: watchdog's threads never wait for the loop.
        """
        observer, self._observer = self._observer, None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._armed_at.clear()
        self._reported_at.clear()
        self._forwarders.clear()
        for watched in self._watched.values():
            watched._stopped()
        if observer is not None:
            _shut_down(observer)

    def poke(self, key: str) -> None:
        """Report ``key`` after the debounce as if an event had arrived: a caller that may
        have missed changes made before ``start()`` asks to look once more."""
        if self._observer is not None and key in self._watched:
            self._arm(key)

    def _schedule(self, observer: BaseObserver, directory: str) -> None:
        if directory not in self._forwarders:
            forward = _Forwarder(directory, self._post)
            observer.schedule(forward, directory, recursive=False, event_filter=EVENTS)
            self._forwarders[directory] = forward
        self._refresh_markers(directory)

    def _refresh_markers(self, directory: str) -> None:
        """Tell the directory's handler which files' opens and closes to pass on: a reader
        of some other file there is none of the loop's business."""
        forward = self._forwarders.get(directory)
        if forward is not None:
            forward.markers = frozenset(
                w.real for w in self._watched.values() if w.directory == directory
            )

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
        for key, watched in list(self._watched.items()):  # a due report calls out: copy
            if watched.directory != directory:
                continue
            if kind in MARKERS:
                if watched.real in paths:
                    watched._marker(kind)
                continue
            real = watched.real
            if _relevant(watched, paths):
                watched._changed(paths, kind)
                if watched.real != real:
                    self._refresh_markers(directory)
                if CLOSE_EVENTS and _completes(watched, paths, kind):
                    self._complete(key)
                else:
                    self._arm(key)

    def _complete(self, key: str) -> None:
        """The file's new content is complete: report it now, unless the key was reported
        less than a debounce ago; then this is a burst, and the debounce reports its end."""
        loop = asyncio.get_running_loop()
        last = self._reported_at.get(key)
        if last is not None and loop.time() - last < self._debounce:
            self._arm(key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._report(key)

    def _arm(self, key: str) -> None:
        """(Re)start the debounce of ``key``'s report, or send it now if it is due."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        now = loop.time()
        due_in = self._armed_at.setdefault(key, now) + self._debounce * MAX_DELAY - now
        if due_in > 0:
            self._timers[key] = loop.call_later(min(self._debounce, due_in), self._fire, key)
        elif not self._watched[key].writing:
            self._report(key)
        # else: due, but a writer has the file open; its close arms this again

    def _fire(self, key: str) -> None:
        """The debounce passed (or the report fell due): report, unless a writer still has
        the file open; then its close reports it."""
        self._timers.pop(key, None)
        watched = self._watched.get(key)
        if watched is not None and not watched.writing:
            self._report(key)

    def _report(self, key: str) -> None:
        self._armed_at.pop(key, None)
        self._reported_at[key] = asyncio.get_running_loop().time()
        try:
            self._on_change(key)
        except Exception:
            logger.exception("file watcher: on_change(%r) raised; still watching", key)


class _Forwarder(FileSystemEventHandler):
    """Passes every event of one directory to ``post(directory, paths, kind)``; opens and
    closes-without-write only of the paths in ``markers``."""

    def __init__(self, directory: str, post: Callable[[str, tuple[str, ...], str], None]) -> None:
        self._directory = directory
        self._post = post
        self.markers: frozenset[str] = frozenset()
        """Replaced whole by the loop thread, read here: never mutated in place."""

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = tuple(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)
        kind = event.event_type
        if kind in MARKERS and not self.markers.intersection(paths):
            return
        if kind == MOVED and not event.dest_path:  # moved out of the directory: gone
            kind = "deleted"
        self._post(self._directory, paths, kind)


def _completes(watched: WatchedFile, paths: tuple[str, ...], kind: str) -> bool:
    """Whether a relevant event leaves the file's new content complete, so that it is
    reported at once: the file exists, no writer is known to have it half-written, and the
    event is a close after writing of the file itself, or a rename (relevant, so it named
    the file or a ``..`` entry, or moved what the file resolves to; a file moved in from
    another directory is one too, thanks to full move events)."""
    if watched.writing or watched.seen is None:
        return False
    if kind == "closed":
        return not {os.path.join(watched.directory, watched.name), watched.real}.isdisjoint(paths)
    return kind == MOVED


def _new_observer() -> BaseObserver:
    """inotify's observer with full move events on Linux, so that a file renamed in from
    another directory is a move (complete content), not a creation (an empty file a writer
    is about to fill); the platform's own observer elsewhere."""
    if CLOSE_EVENTS:
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    return Observer()


def _relevant(watched: WatchedFile, paths: Iterable[str]) -> bool:
    """Whether an event in ``watched.directory`` concerns the file; refreshes ``seen``."""
    now = fingerprint(watched.path)
    moved = now != watched.seen
    watched.seen = now
    return moved or any(_names(watched, path) for path in paths)


def _names(watched: WatchedFile, path: str) -> bool:
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
    attach: Callable[[Sequence[WatchedFile]], None] | None = None,
) -> None:
    """Run until cancelled; ``await changed()`` after each debounced change of any of
    ``paths``, and once watching has started unless every path still looks as in ``seen``
    (its :func:`fingerprint` when last read): a change made before the watch started, or
    while an earlier watch was failing, must not be missed, and an unchanged file need not
    be read again.

    ``attach`` is handed each path's :class:`WatchedFile` once watching has started, so
    that whoever reads the files can consult what the watcher knows (they stop being
    ``live`` when this returns).

    Changes that arrive while ``changed()`` runs are folded into one more call after it, so
    a slow reload never queues a backlog of reloads.
    """
    wake = asyncio.Event()
    watcher = FileWatcher(lambda _key: wake.set(), debounce=debounce)
    keys = list(paths)
    files = [watcher.watch(str(index), path) for index, path in enumerate(keys)]
    watcher.start()
    try:
        if attach is not None:
            attach(files)
        for index, path in enumerate(keys):
            if seen is None or fingerprint(path) != seen[index]:
                watcher.poke(str(index))
        while True:
            await wake.wait()
            wake.clear()
            await changed()
    finally:
        watcher.stop()
