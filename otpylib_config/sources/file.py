"""A TOML, JSON or YAML file as a layer.

The file is read, parsed, expanded and frozen in a worker thread, so a large parse never
stalls the event loop; the loop only takes a copy of the process's variables first, because
the thread must not iterate a mapping the loop may be changing. A file that does not parse
raises :class:`SourceError` naming the file and the position; the manager then keeps the
file's last good layer. ``{profile}`` in the path is replaced by the tree's profile
(``config.{profile}.toml``); ``${VAR}`` placeholders are expanded from the environment (see
:mod:`otpylib_config.interpolate`).

**A load of an unchanged file reads nothing.** Each proven read keeps its outcome (the layer,
or the error) with what it depended on: the file's stamp (real path, device, inode, size,
mtime and ctime, or that it did not exist), a hash of its bytes, and the value of every
variable its placeholders looked up. The next load looks first, in the same worker thread
call as its read: if the stamp and those variables are unchanged, it gives the same outcome
again, the very same layer object, without opening the file, so the reload can skip it by
identity. A stamp proves the content only if a later write would have moved it: the read
must have come more than ``SETTLE`` (``COARSE_SETTLE`` on a file system that keeps whole
seconds) after the file's last change. Otherwise (a rewrite of the same size within one
timestamp tick would keep the stamp) the load reads the file, and bytes that hash the same
give the same outcome unparsed, as they do after a ``touch`` or a save that changed
nothing; once such a read comes late enough, the stamp is trusted. What this means for a
layer that validation rejected: docs/sources.md, FileSource.

A layer comes only from complete content. Another process may rewrite the file at any
moment, in place, and half a TOML file often parses (a section with fewer keys, a number cut
short), so a read counts only once it is proven whole. Every proof starts from the file's
``fstat`` (inode, size, mtime, ctime) being the same before and after the read, with as many
bytes read as the size says. Then either

* its timestamps prove it: the last change is older than ``SETTLE``, so a write during the
  read would have moved them (a timestamp is as coarse as a kernel tick: two writes a few
  milliseconds apart can leave mtime, ctime and size alike, which is why a younger file
  needs more); or
* the watcher's events prove it (Linux, a live watch, the real file in the watched
  directory): nothing relevant happened between the read's own open and close events, and
  no writer had the file half-written at either. One directory's events arrive in order, so
  every write that overlapped the read was reported by the time its close arrived, however
  late watchdog delivers. A writer whose open the kernel merged into the read's would write
  later with no handle known open; the read's open is fenced by opening the directory
  around it, which leaves that only the moment between two system calls, and such a read
  is published only if no such write follows: its change would be queued right behind the
  read's own close, so the load waits ``GRACE`` from the read's close, or twice as long as
  that close took to arrive if that is longer (a busy machine).

With a watch, either proof also needs that no writer has the file half-written and that no
other open handle can be a writer that has changed the file without saying so yet: a
change is reported when its system call ends, and truncating takes long enough to be seen
first, but a writer's open is reported before it changes anything, so a handle opened
since the last writer event (and less than ``FORGET_HANDLES`` ago) is such a suspect; a
reader that keeps the file open is not.

A read that is not proven is dropped and the file read again at the next event (or once its
timestamps can prove it), a few times (``READ_ATTEMPTS``); a file the watcher knows to be
half-written is waited for first, up to ``MAX_WRITE_WAIT``, which is what a timer or
``reload()`` load needs (a watched load starts at the writer's close anyway). If no read can
be proven, ``load`` raises :class:`NotReady`: the file keeps its last layer and health, and
the watcher's next report (the writer's close) loads it again. Before any layer was accepted
there is nothing to keep, so that case is a :class:`SourceError` instead. Reads of one source
run one at a time, because the events cannot tell this process's reads apart.

What this cannot see: a writer that was already half-way through when the watch started, a
writer whose open the kernel merged into another process's read of the file, several
writers of one file at once, and, without close events (other platforms) or a watch
(``watch=False``, the first load), a writer that pauses for longer than ``SETTLE`` with the
file half-written.

The watch never reads the file's content, so it has no layer to hand over: it says
``changed()`` and the reload reads, which is where a read's errors belong (a ``SourceError``
with its problems, or ``NotReady``). What the source keeps, and which task writes and reads
each field (the watcher's knowledge of the file, the last read's outcome and what it
depended on, whether a layer was accepted): docs/sources.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from otpylib_config import threads
from otpylib_config.environment import EnvFileError, Environment, PlaceholderNames
from otpylib_config.errors import SourceError
from otpylib_config.interpolate import InterpolationError, expand_file
from otpylib_config.parsers import ParseError, format_of, parse
from otpylib_config.paths import Path as KeyPath
from otpylib_config.sources.base import Changed, NotReady, Source, SourceContext
from otpylib_config.values import Section

if TYPE_CHECKING:  # file_watch imports watchdog: only a watch that starts imports it
    from otpylib_config.sources.file_watch import Fingerprint, Moment, WatchedFile

logger = logging.getLogger("otpylib_config")

PROFILE = "{profile}"

MAX_WRITE_WAIT = 2.0
"""Seconds a load waits for a writer the watcher knows of to close the file."""
READ_ATTEMPTS = 4
"""Reads a load makes before it gives up on proving one whole."""
MARKER_WAIT = 1.0
"""Seconds a load waits for its own read's events: watchdog holds a directory's events for
up to half a second after a rename."""
SETTLE = 0.02
"""Seconds since its last change after which a file's timestamps would show a new write:
longer than a kernel tick (10 ms at HZ=100)."""
COARSE_SETTLE = 1.0 + SETTLE
"""The same for a file system that keeps whole seconds only."""
GRACE = 0.005
"""Seconds after a read's close in which a writer that hid its open would be heard of, at
least: its change is reported right behind the read's own close, so a load waits twice as
long as that close took to arrive when that is longer (a busy machine)."""
CLOCK_SKEW = 1.0
"""A change further than this in the future means the clock moved: timestamps prove nothing."""


Stamp = tuple[str, int, int, int, int, int]
"""``(real path, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of a file."""


class _Marks(NamedTuple):
    """A :class:`WatchedFile`'s counters just before a read began."""

    opens: int
    closes: int
    orphans: int


class _Read(NamedTuple):
    """One read of the file: what it looked like before and after, and what it held."""

    real: str
    started_ns: int
    """Wall clock just before the file was opened."""
    before: os.stat_result | None
    """``None``: the file does not exist (or could not be opened, then ``error`` says why)."""
    after: os.stat_result | None
    length: int = 0
    """Bytes read: fewer or more than the size means the content moved under the read."""
    closed_at: float = 0.0
    """``time.monotonic()`` just after the file was closed."""
    kept: _Outcome | None = None
    """The last outcome, when these bytes are the ones it was read from: given again,
    unparsed, once this read is proven."""
    layer: Section | None = None
    error: SourceError | None = None
    """What parsing gave; neither if the file changed while it was read (not parsed)."""
    trusted: bool = False
    """The read came late enough after the file's last change for its stamp to show any
    later write (:func:`_trusted`)."""
    digest: bytes | None = None
    """A hash of the bytes: a later read of the same bytes gives the same outcome."""
    variables: Mapping[str, str | None] | None = None
    """Each variable the placeholders looked up and its value (``None``: unset); ``None``
    if the read did not get as far as parsing."""

    @property
    def steady(self) -> bool:
        """The file's inode, size, mtime and ctime did not move while it was read, and the
        size is what was read."""
        return self.before is None or (
            self.after is not None
            and _stamp(self.before) == _stamp(self.after)
            and self.length == self.before.st_size
        )


class _Outcome(NamedTuple):
    """What a proven read gave (a layer, or an error), and what it depended on: a load gives
    it again, without reading, while the file's stamp and those variables are unchanged."""

    stamp: Stamp | None
    """``None``: the file did not exist."""
    trusted: bool
    digest: bytes | None
    variables: Mapping[str, str | None]
    layer: Section | None = None
    error: SourceError | None = None

    def fingerprint(self) -> Fingerprint | None:
        """What a starting watch compares (``file_watch.fingerprint``)."""
        if self.stamp is None:
            return None
        real, _dev, ino, size, mtime_ns, _ctime_ns = self.stamp
        return (real, mtime_ns, size, ino)

    def give(self) -> Section:
        """The layer, or the error raised anew (a copy: one exception object raised twice
        would grow its traceback)."""
        error = self.error
        if error is not None:
            raise SourceError(
                error.source, error.reason, problems=error.problems, partial=error.partial
            )
        assert self.layer is not None
        return self.layer


class _Looked(Mapping[str, str]):
    """The variables as the placeholders see them, noting each name they look up (and its
    value, ``None`` if unset): the layer depends on exactly those. Iterating notes every
    variable, so that a lookup this does not foresee still counts."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = variables
        self.names: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        value = self._variables.get(name)
        self.names[name] = value
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        self.names.update(self._variables)
        return iter(self._variables)

    def __len__(self) -> int:
        self.names.update(self._variables)
        return len(self._variables)


class FileSource(Source):
    """One configuration file.

    ``optional=True``: a missing file is an empty layer, picked up when it appears.
    ``watch=False``: only the timer and ``reload()`` reload it. ``secret=True``: every value
    is redacted in output. Placeholders are looked up in the tree's environment (the
    process's variables over ``ConfigSpec.env_file``); ``environ`` replaces the process's part.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        optional: bool = False,
        watch: bool = True,
        secret: bool = False,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.template = os.fspath(path)
        self.path = Path(self.template)
        self.format = format_of(self.template, format)
        self.required = not optional
        self.watched = watch
        self._debounce = SourceContext.watch_debounce
        # Who writes and who reads each field below, and why it must exist: docs/sources.md.
        self._last: _Outcome | None = None
        """What the last proven read gave and depended on: written by the reads (one at a
        time), read by the next load (which gives it again if nothing it depended on
        moved) and by a starting watch (which looks again only if the file moved since)."""
        self._empty = Section()
        """The layer of an optional file with no profile: the same object at every load."""
        self._resync = False
        """A watch failed: the next one looks at once (status must catch up). Written and
        read by the watches only, which run one after the other."""
        self._file: WatchedFile | None = None
        """What the running watch knows of the file: written by the watch when it starts,
        read by the reads for their proof (loop thread only)."""
        self._has_layer = False
        """A layer of this source was accepted: ``NotReady`` leaves something to serve.
        Written by ``accepted`` only (never back to ``False`` but by ``configure``)."""
        self._no_profile = False  # an optional {profile} file and no profile: always empty
        self._turns = _OneAtATime(self._load_whole)
        self.secret = secret
        self.name = name or f"file:{self.template}"
        self._environ = environ
        self._environment = Environment(environ=environ)
        """Where placeholders are looked up: the tree's, once configured."""

    def configure(self, context: SourceContext) -> None:
        """Take the tree's debounce and environment (``environ=`` replaces its process
        part), fill ``{profile}``, and claim the variables the placeholders name, so that a
        ``.env`` line that only fills a placeholder is not reported as unknown."""
        self._debounce = context.watch_debounce
        self._forget()
        self._environment = context.environment.override(environ=self._environ)
        if PROFILE in self.template:
            self._place_profile(context)
        context.environment.claim(self, PlaceholderNames(self.path))

    def _forget(self) -> None:
        """A new tree (or ``load()``) starts from nothing: what an earlier tree's reads and
        watch learnt, and its reads on its own event loop, are not this one's."""
        self._last, self._resync, self._file = None, False, None
        self._has_layer = self._no_profile = False
        self._turns = _OneAtATime(self._load_whole)

    def _place_profile(self, context: SourceContext) -> None:
        """``{profile}`` is the tree's profile. Without one, an optional file is an empty
        layer (nothing to watch; a profile set later takes a restart) and a required one
        fails, saying what to set."""
        if context.profile is not None:
            self.path = Path(self.template.replace(PROFILE, context.profile))
            return
        if not self.required:
            self.watched = False
            self._no_profile = True
            logger.info(
                "%s: no profile is set (%s), so it is an empty layer",
                self.name,
                context.profile_env or "ConfigSpec.profile",
            )
            return
        variable = (
            f"set the environment variable {context.profile_env} (ConfigSpec.profile_env) or "
            if context.profile_env
            else ""
        )
        raise SourceError(
            self.name,
            f"{self.template} needs a profile: {variable}pass ConfigSpec(profile=...), "
            "or make the file optional=True",
        )

    def origin(self, path: KeyPath, layer: Section | None = None) -> str:
        return f"{self.path}: {'.'.join(path)}"

    @property
    def pushes(self) -> bool:
        return self.watched

    @property
    def _read_as(self) -> Fingerprint | None:
        """The file as the last proven read found it (``None``: missing, or never read)."""
        return None if self._last is None else self._last.fingerprint()

    async def watch(self, changed: Changed) -> None:
        from otpylib_config.sources.file_watch import watch_paths  # imports watchdog

        seen, self._resync = (None if self._resync else [self._read_as]), False
        try:
            await watch_paths(
                [self.path], changed, debounce=self._debounce, seen=seen, attach=self._attach
            )
        except BaseException:
            self._resync = True  # the next watch reports at once: status must catch up
            raise

    def _attach(self, files: Sequence[WatchedFile]) -> None:
        (self._file,) = files

    async def accepted(self, layer: Section) -> None:
        self._has_layer = True

    async def load(self) -> Section:
        if self._no_profile:
            return self._empty
        return await self._turns()

    async def _load_whole(self) -> Section:
        """The last outcome again if nothing it depended on moved (module doc); else read
        until a read is proven whole; ``NotReady`` (or, with no layer to keep,
        ``SourceError``) if none is within ``READ_ATTEMPTS`` and ``MAX_WRITE_WAIT``."""
        environment = self._environment.override(environ=dict(self._environment.process))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_WRITE_WAIT
        why = "it kept changing while it was read"
        for _ in range(READ_ATTEMPTS):
            file = self._file if self._file is not None and self._file.live else None
            if file is not None and not await _writer_closed(file, deadline - loop.time()):
                why = f"a writer kept it open for {MAX_WRITE_WAIT:g}s"
                break
            events = file is not None and _close_events()
            marks = _Marks(file.opens, file.closes, file.orphans) if events and file else None
            try:
                read = await threads.run_sync(self._read_sync, events, environment, self._last)
            except SourceError:
                self._last = None  # the .env file failed: nothing to give again
                raise
            if isinstance(read, _Outcome):  # nothing it depended on moved
                self._last = read
                return read.give()
            wait = await _unproven(read, file, marks)
            if wait is None:
                return self._accept(read)
            await _pause(file, min(wait, deadline - loop.time()))
        if not self._has_layer:
            raise SourceError(self.name, f"{self.path} could not be read whole: {why}")
        raise NotReady(f"{self.path}: {why}")

    def _accept(self, read: _Read) -> Section:
        """Keep a proven read's outcome, and give it."""
        if read.kept is not None:
            self._last = read.kept
            return read.kept.give()
        if read.before is None:
            if read.error is not None:  # unreadable: look again next time
                self._last = None
                raise read.error
            if self.required:
                missing = SourceError(self.name, f"file not found: {self.path}")
                self._last = _Outcome(None, True, None, {}, error=missing)
            else:
                self._last = _Outcome(None, True, None, {}, layer=Section())
            return self._last.give()
        variables = {} if read.variables is None else read.variables
        self._last = _Outcome(
            _stamp_of(read.real, read.before),
            read.trusted,
            read.digest,
            variables,
            read.layer,
            read.error,
        )
        return self._last.give()

    def _unmoved(
        self, last: _Outcome | None, real: str, environment: Environment
    ) -> _Outcome | None:
        """In a worker thread: ``last`` if the file's stamp (trusted) and the variables its
        placeholders looked up are as they were, so that the file need not be opened; else
        ``None``."""
        if last is None or not last.trusted:
            return None
        try:
            st: os.stat_result | None = os.stat(real)
        except FileNotFoundError:
            st = None
        except OSError:
            return None
        if (None if st is None else _stamp_of(real, st)) != last.stamp:
            return None
        return last if _same_variables(last, environment) else None

    def _read_sync(
        self, fenced: bool, environment: Environment, last: _Outcome | None
    ) -> _Read | _Outcome:
        """In a worker thread: ``last`` if nothing it depended on moved (:meth:`_unmoved`);
        else read through one open file, between two ``fstat``s, and parse only what did
        not change meanwhile and is not the content ``last`` was read from (its hash).

        ``fenced``: open the directory around the file's open. The kernel merges an event
        into an identical one queued right before it, so a writer opening the file just
        after this read would hide its open in the read's; the directory's own open and
        close events, queued on either side, keep the read's open apart.
        """
        real = os.path.realpath(self.path)
        started = time.time_ns()
        unmoved = self._unmoved(last, real, environment)
        if unmoved is not None:
            return unmoved
        fence = _open_directory(os.path.dirname(real)) if fenced else None
        try:
            with open(real, "rb") as handle:
                if fence is not None:
                    os.close(fence)
                    fence = None
                before = os.fstat(handle.fileno())
                data = handle.read()
                after = os.fstat(handle.fileno())
        except FileNotFoundError:
            return _Read(real, started, None, None)
        except OSError as exc:
            error = SourceError(self.name, f"cannot read {self.path}: {exc.strerror}")
            return _Read(real, started, None, None, error=error)
        finally:
            if fence is not None:
                os.close(fence)
        read = _Read(real, started, before, after, len(data), time.monotonic())
        if not read.steady:
            return read
        trusted = _trusted(started, before)
        digest = _digest(data)
        if last is not None and digest == last.digest and _same_variables(last, environment):
            # the bytes the last outcome came from: the same outcome, now with this stamp
            kept = last._replace(stamp=_stamp_of(real, before), trusted=trusted)
            return read._replace(kept=kept)
        read = read._replace(trusted=trusted, digest=digest)
        looked: dict[str, str | None] = {}
        try:
            layer = self._parse(data, environment, looked)
            return read._replace(layer=layer, variables=looked)
        except InterpolationError as exc:  # every problem, and what is left for validation
            problems = [(path, f"{self.path}: {message}") for path, message in exc.problems]
            error = SourceError(
                self.name, f"{self.path}: {exc}", problems=problems, partial=exc.partial
            )
            return read._replace(error=error, variables=looked)
        except ParseError as exc:
            error = SourceError(self.name, f"{self.path}: {exc}")
            return read._replace(error=error, variables=looked)

    def _parse(
        self, data: bytes, environment: Environment, looked: dict[str, str | None]
    ) -> Section:
        """Parse, expanding placeholders; a file without ``$`` (the usual case) skips both
        passes. Each variable looked up goes into ``looked``: the layer depends on it.

        The environment is read here, on every read, so a reload sees variables that
        changed; ``environment`` holds a copy of the process's variables, taken on the loop.
        """
        if b"$" not in data:
            return parse(data, self.format)
        try:
            variables = environment.variables()
        except EnvFileError as exc:
            raise SourceError(self.name, f"{self.path}: placeholders: {exc}") from None
        seen = _Looked(variables)
        try:
            return expand_file(data, self.format, seen)
        finally:
            looked.update(seen.names)


def _close_events() -> bool:
    """Whether the watcher's events include opens and closes; asked only once a watch has
    started, so importing its module (and watchdog) costs nothing more then."""
    from otpylib_config.sources.file_watch import CLOSE_EVENTS

    return CLOSE_EVENTS


def _same_variables(last: _Outcome, environment: Environment) -> bool:
    """Whether every variable ``last``'s placeholders looked up has the value it had."""
    if not last.variables:
        return True
    try:
        now = environment.variables()
    except EnvFileError:
        return False
    return all(now.get(name) == value for name, value in last.variables.items())


def _stamp_of(real: str, st: os.stat_result) -> Stamp:
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _trusted(started_ns: int, st: os.stat_result) -> bool:
    """Whether a read that began at ``started_ns`` (wall clock) came late enough after the
    file's last change that any later write would move its mtime or ctime: a timestamp is
    as coarse as a kernel tick, or a whole second on some file systems. A change in the
    future means the clock moved, and then the timestamps prove nothing."""
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    settle = COARSE_SETTLE if changed % 1_000_000_000 == 0 else SETTLE
    return (started_ns - changed) / 1e9 > settle


def _open_directory(directory: str) -> int | None:
    """A handle on ``directory``, whose open and close are the fence (``None`` if none)."""
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # not readable: the read goes unfenced, and is just less often proven
        return None


async def _pause(file: WatchedFile | None, seconds: float) -> None:
    """Wait before reading again: ``seconds``, or with a watch and nothing to wait out, until
    the next event of the file (at most ``SETTLE``): nothing changes before it."""
    if file is None or seconds > 0.0:
        await asyncio.sleep(max(0.0, seconds))
        return
    events = file.events
    await _wait(file, lambda: file.events > events, SETTLE)


async def _writer_closed(file: WatchedFile, timeout: float) -> bool:
    """Wait until no writer the watcher knows of has the file open; ``False`` on timeout."""
    return await _wait(file, lambda: not file.writing, timeout) is not None or not file.live


async def _unproven(read: _Read, file: WatchedFile | None, marks: _Marks | None) -> float | None:
    """``None`` if ``read`` is proven whole (see the module doc), else seconds to wait before
    reading again (``0.0``: as soon as something happens)."""
    if read.before is None:  # missing or unreadable: nothing to tear
        return None
    if not read.steady:
        return 0.0
    settling = _unsettled(read)
    if read.length == 0 and file is not None and _empty_for(read) is not None:
        return 0.0  # a watched file: every truncating writer passes through it empty
    if file is None or marks is None or read.real != file.real:  # no events of its own
        writing = file is not None and file.writing
        return 0.0 if settling is None and writing else settling
    closed = await _wait(file, lambda: file.opens > marks.opens and file.closes > marks.closes)
    if closed is None:  # its own events never came: only the timestamps
        return 0.0 if settling is None and file.writing else settling
    alone = closed.opens == marks.opens + 1  # the one open since the read began is its own
    if alone:
        file.claim(closed.opens)
    if _unannounced(file, closed, marks, alone):
        return 0.0 if settling is None else settling
    if settling is None:
        return None
    opened = file.at_open(closed.opens) if alone else None
    if _quiet(opened, closed) and await _no_orphans(file, closed, marks, read.closed_at):
        return None
    return settling


def _unannounced(file: WatchedFile, closed: Moment, marks: _Marks, alone: bool) -> bool:
    """Whether a writer may have the file half-written without the events saying so yet: one
    had written it and not closed it when the read closed, one wrote with no handle known
    open (its open merged into another), or a handle other than the read's is open that is
    younger than the last writer event and than ``FORGET_HANDLES``."""
    if closed.writing or closed.orphans != marks.orphans:
        return True
    return closed.handles > 0 and (not alone or file.suspects(marks.opens, closed))


def _quiet(opened: Moment | None, closed: Moment) -> bool:
    """No writer had the file half-written at the read's open, and nothing relevant happened
    between the read's open and its close."""
    return opened is not None and not opened.writing and closed.generation == opened.generation


async def _no_orphans(file: WatchedFile, closed: Moment, marks: _Marks, closed_at: float) -> bool:
    """Whether no writer hid its open in the read's: it would be heard of right after the
    read's close, as a write with no open handle (a write is reported once it is done).
    Waits for the next relevant event, or until ``GRACE`` after the read's close
    (``closed_at``, monotonic), or twice as long as the read's own close took to arrive if
    that is longer: the hidden writer's change is queued right behind it. Only a file
    changed within ``SETTLE`` needs this: a hidden writer's change is younger than the
    read's open."""
    late = time.monotonic() - closed_at
    wait = max(GRACE, 2 * late) - late
    await _wait(file, lambda: file.generation > closed.generation, wait)
    return file.orphans == marks.orphans


EMPTY_SETTLE = 1.0
"""Seconds an empty file must have stayed empty before it is read as a whole (empty)
document: a writer that truncates and then writes leaves it empty in between, and under
load its events can come too late to say so, so only a longer age proves an empty file."""


def _empty_for(read: _Read) -> float | None:
    """``None`` if the empty file is older than ``EMPTY_SETTLE``, else how long it has to go.
    A file emptied on purpose is published by the first load after that (the timer's, a
    request's or the next event's)."""
    assert read.before is not None
    changed = max(read.before.st_mtime_ns, read.before.st_ctime_ns)
    age = (read.started_ns - changed) / 1e9
    return None if age > EMPTY_SETTLE or age < -CLOCK_SKEW else EMPTY_SETTLE - age


def _unsettled(read: _Read) -> float | None:
    """``None`` if the file's last change is old enough for timestamps to prove the read,
    else how long until it is."""
    assert read.before is not None
    changed = max(read.before.st_mtime_ns, read.before.st_ctime_ns)
    settle = COARSE_SETTLE if changed % 1_000_000_000 == 0 else SETTLE
    age = (read.started_ns - changed) / 1e9
    if age > settle or age < -CLOCK_SKEW:
        return None
    return settle - age


async def _wait(
    file: WatchedFile, predicate: Callable[[], bool], timeout: float = MARKER_WAIT
) -> Moment | None:
    """The moment ``predicate()`` held (see :meth:`WatchedFile.when`); ``None`` on timeout or
    if the watch stopped."""
    future = file.when(predicate)
    if not future.done():
        await asyncio.wait({future}, timeout=max(0.0, timeout))
    if not future.done():
        future.cancel()
        return None
    return future.result()


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(eq=False)
class _Turn:
    task: asyncio.Task[Section]
    waiters: int = 0


class _OneAtATime:
    """Runs one read of the file at a time; loads that arrive while one reads share the
    next, which starts when it ends.

    Why: a read's proof finds its own open and close among the file's events, and another
    read of this process in between would pass for them. And under continuous writes, one
    queued load per report would fall ever further behind; sharing keeps at most two.
    """

    def __init__(self, run: Callable[[], Awaitable[Section]]) -> None:
        self._run = run
        self._reading: _Turn | None = None
        self._queued: _Turn | None = None

    async def __call__(self) -> Section:
        turn = self._queued
        if turn is None:
            turn = self._queued = _Turn(asyncio.ensure_future(self._take(self._reading)))
            turn.task.add_done_callback(_retrieve)
        turn.waiters += 1
        try:
            return await asyncio.shield(turn.task)
        except asyncio.CancelledError:
            if turn.waiters == 1:  # nobody else wants it
                turn.task.cancel()
                if self._queued is turn:
                    self._queued = None
            raise
        finally:
            turn.waiters -= 1

    async def _take(self, before: _Turn | None) -> Section:
        if before is not None and not before.task.done():
            await asyncio.wait({before.task})
        self._reading, self._queued = self._queued, None
        return await self._run()


def _retrieve(task: asyncio.Task[Section]) -> None:
    """Mark the outcome seen: every load that wanted it may have been cancelled."""
    if not task.cancelled():
        task.exception()
