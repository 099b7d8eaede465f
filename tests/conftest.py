"""Shared fixtures and helpers of the test suite.

* ``otp_runtime``: a fresh otpylib runtime (backend) per test, on the test's own event loop,
  shut down after it, with every tree it ran unregistered. Test bodies that must run inside
  a process go through ``otpylib_config.supervisor.in_process``, so that a failed assert
  fails the test instead of silently ending the process.
* ``start_tree``: start trees from spec options; every one is stopped after the test.
* :func:`eventually`: wait for a condition; the timeout only bounds a hang.
* :class:`Recorder`: a subscriber callback that records its events; ``settled(n, then=...)``
  proves that no other event came, by waiting for the event of a later change.
* :class:`FakeSource`: the one controllable source of the suite (content, failures,
  ``NotReady``, blocked loads, pushes), for tests whose subject is not a real source.
* :func:`tree` and :func:`nested`: frozen layers and deep values to test with.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend

import otpylib_config
from otpylib_config import ConfigSpec, ConfigTree, _otp_compat, registry
from otpylib_config.errors import SourceError
from otpylib_config.sources.base import Changed, NotReady, Source, SourceContext
from otpylib_config.values import Section, freeze


@pytest_asyncio.fixture
async def otp_runtime() -> AsyncIterator[AsyncIOBackend]:
    backend = await _otp_compat.open_runtime()
    yield backend
    await _otp_compat.shutdown_runtime(backend)
    for table in list(registry._tables.values()):  # trees a parent stopped stay readable
        registry.unregister(table)


StartTree = Callable[..., Awaitable[ConfigTree]]


@pytest_asyncio.fixture
async def start_tree(otp_runtime: AsyncIOBackend) -> AsyncIterator[StartTree]:
    """``await start_tree(sources=[...], **spec_options)``; every tree is stopped after."""
    trees: list[ConfigTree] = []

    async def start(**options: Any) -> ConfigTree:
        options.setdefault("reload_interval", None)
        tree = await otpylib_config.start(ConfigSpec(**options))
        trees.append(tree)
        return tree

    yield start
    for tree in reversed(trees):
        await tree.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail with a clear message if it never does.

    The timeout only bounds a hang: no test asserts on how fast anything happens.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition never became true: {predicate}")
        await asyncio.sleep(0.005)


# -- values ----------------------------------------------------------------------------------


def tree(data: Mapping[str, Any]) -> Section:
    """``data`` as a frozen layer (a read-only nested :class:`Section`)."""
    frozen = freeze(data)
    assert isinstance(frozen, Section)
    return frozen


def nested(levels: int, leaf: Any = 1) -> Any:
    """``{"a": {"a": ... leaf}}`` with ``levels`` mappings: the leaf is ``levels`` deep."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


# -- subscribers -----------------------------------------------------------------------------

Event = tuple[str, Any, Any]


class Recorder:
    """A subscriber callback that records ``(path, old, new)`` events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, path: str, old: Any, new: Any) -> None:
        self.events.append((path, old, new))

    async def settled(
        self,
        count: int,
        timeout: float = 5.0,
        *,
        then: Callable[[], Any] | None = None,
    ) -> list[Event]:
        """A copy of the events once ``count`` have come.

        That alone says nothing about events still to come. To prove that no other event
        came, pass ``then``: a callable (awaited if it returns an awaitable) that makes a
        later change this subscription sees, with exactly one event. Events reach one
        subscription in order, so once that event is here every event the earlier changes
        caused is here too: the list returned ends with it, and the test asserts it whole.
        """
        await eventually(lambda: len(self.events) >= count, timeout)
        if then is not None:
            made = then()
            if inspect.isawaitable(made):
                await made
            await eventually(lambda: len(self.events) > count, timeout)
        return list(self.events)


# -- a controllable source -------------------------------------------------------------------


class Gate:
    """Holds one load of a :class:`FakeSource` until :meth:`release`."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        """Set once the load waits here."""
        self._open = asyncio.Event()

    def release(self) -> None:
        self._open.set()

    async def reached(self, timeout: float = 5.0) -> None:
        """Wait until the load it holds has begun and waits here."""
        await eventually(self.entered.is_set, timeout)

    async def _pass(self) -> None:
        self.entered.set()
        await self._open.wait()


class FakeSource(Source):
    """A source the test controls, for tests about what the tree does with sources.

    ``load`` returns ``data`` (frozen, as it stands when the load begins) unless the test
    asked otherwise for the next loads: :meth:`fail_next` (a ``SourceError``, or any
    exception, such as a bug in a source would raise), :meth:`fail_from_now` until
    :meth:`heal`, :meth:`not_ready_next` (``NotReady``: the reading skips the source) and
    :meth:`block_next` (the load waits at a :class:`Gate` until the test releases it).
    What happens to a load is decided when it begins, so a failure asked for while a load
    is blocked hits the next one.

    With ``pushes=True`` the tree gives it a watcher: :meth:`push` (optionally with new
    data) makes its watch ``await changed()``, with no argument, which has the manager
    reload it; :meth:`fail_next_watch` makes the next ``watch`` calls raise.

    Counters: ``loads`` (loads begun), ``served`` (layers returned), ``accepted_layers``
    (what ``accepted`` was given), ``context`` (from ``configure``), ``watches`` (watch calls
    begun) and ``watching`` (watch loops running now).
    """

    def __init__(
        self,
        name: str = "fake",
        data: Mapping[str, Any] | None = None,
        *,
        required: bool = True,
        pushes: bool = False,
        secret: bool = False,
    ) -> None:
        self.name = name
        self.required = required
        self.secret = secret
        self.data: Mapping[str, Any] = {} if data is None else data
        self._pushes = pushes
        self.loads = 0
        self.served: list[Section] = []
        self.accepted_layers: list[Section] = []
        self.context: SourceContext | None = None
        self.watches = 0
        self.watching = 0
        self._gates: deque[Gate] = deque()
        self._failures: deque[Callable[[], BaseException]] = deque()
        self._failing: Callable[[], BaseException] | None = None
        self._not_ready = 0
        self._watch_failures: deque[BaseException] = deque()
        self._pushed = asyncio.Event()

    # -- what the test controls

    def set(self, data: Mapping[str, Any]) -> None:
        """What the next loads return."""
        self.data = data

    def fail_next(self, error: BaseException | str = "injected failure", times: int = 1) -> None:
        """The next ``times`` loads raise ``error`` (a text: ``SourceError(name, text)``)."""
        self._failures.extend([self._error(error)] * times)

    def fail_from_now(self, error: BaseException | str = "injected failure") -> None:
        """Every load raises ``error`` until :meth:`heal`."""
        self._failing = self._error(error)

    def heal(self) -> None:
        """Loads succeed again (failures asked for are forgotten)."""
        self._failing = None
        self._failures.clear()

    def not_ready_next(self, times: int = 1) -> None:
        """The next ``times`` loads raise ``NotReady``."""
        self._not_ready += times

    def block_next(self) -> Gate:
        """The next load not yet begun (after those already held) waits at the gate."""
        gate = Gate()
        self._gates.append(gate)
        return gate

    def push(self, data: Mapping[str, Any] | None = None) -> None:
        """Set ``data`` if given, then make the watch report a change (kept until it runs)."""
        if not self._pushes:
            raise TypeError(f"{self!r} was made with pushes=False")
        if data is not None:
            self.data = data
        self._pushed.set()

    def fail_next_watch(self, error: BaseException | None = None, times: int = 1) -> None:
        """The next ``times`` watch calls raise ``error`` (a ``ConnectionError``)."""
        failure = error or ConnectionError(f"{self.name}: injected watch failure")
        self._watch_failures.extend([failure] * times)

    # -- the Source contract

    def configure(self, context: SourceContext) -> None:
        self.context = context

    async def load(self) -> Section:
        self.loads += 1
        layer = tree(self.data)
        gate = self._gates.popleft() if self._gates else None
        failure = self._failures.popleft() if self._failures else self._failing
        not_ready = failure is None and self._not_ready > 0
        if not_ready:
            self._not_ready -= 1
        if gate is not None:
            await gate._pass()
        if failure is not None:
            raise failure()
        if not_ready:
            raise NotReady(f"{self.name}: injected NotReady")
        self.served.append(layer)
        return layer

    async def accepted(self, layer: Section) -> None:
        self.accepted_layers.append(layer)

    @property
    def pushes(self) -> bool:
        return self._pushes

    async def watch(self, changed: Changed) -> None:
        if not self._pushes:
            return await super().watch(changed)
        self.watches += 1
        if self._watch_failures:
            raise self._watch_failures.popleft()
        self.watching += 1
        try:
            while True:
                await self._pushed.wait()
                self._pushed.clear()
                await changed()
        finally:
            self.watching -= 1

    def _error(self, error: BaseException | str) -> Callable[[], BaseException]:
        if isinstance(error, str):
            return lambda: SourceError(self.name, error)
        return lambda: error
