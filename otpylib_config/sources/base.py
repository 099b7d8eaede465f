"""The source contract: a source turns something outside the process into a layer.

A layer is a frozen nested :class:`Section`. ``load`` either returns the complete layer or
raises :class:`SourceError`; it never returns a partial one. What happens on failure is the
manager's policy, not the source's: at start-up a required source's error fails the start,
afterwards the source keeps its last good layer and the error shows in ``status()``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from otpylib_config.environment import Environment
from otpylib_config.paths import Path
from otpylib_config.schema_shape import SchemaShape
from otpylib_config.values import Section

DEFAULT_DEBOUNCE = 0.05
"""Seconds a watched file must be quiet after an event that does not finish it (a write
without a close, a burst) before it counts as changed; a source that watches files uses
it, and it is here so that the contract needs no file watcher."""


@dataclass(frozen=True)
class SourceContext:
    """What a tree tells its sources once, before the first load."""

    profile: str | None = None
    watch_debounce: float = DEFAULT_DEBOUNCE
    """Seconds a watched file must be quiet after an event before it counts as changed."""
    environment: Environment = field(default_factory=Environment)
    """The tree's variables (the process's over ``ConfigSpec.env_file``), which every
    source that reads variables reads, and where each says which names it uses."""
    shape: SchemaShape | None = None
    """What the schema expects at each path (``None``: no pydantic model), so that values
    from text can be handed over as text where the schema wants a string."""
    profile_env: str | None = "CONFIG_PROFILE"
    """The variable the profile comes from, for messages that say what to set."""
    strict_env: bool = False
    """``ConfigSpec.strict_env``: a variable that maps to no field is an error, not a
    warning (for sources that do not say otherwise)."""


class NotReady(Exception):
    """Raised by ``load`` when the source cannot give a consistent layer right now, though
    nothing is wrong with it: a file still being written, say. The reading is skipped for
    this source: it is neither loaded nor failing, it keeps its last layer and its health,
    and whatever made it busy (the writer's close, for a watched file) asks for another
    load later. A source raises it only while it has a layer to keep; before that, it must
    raise ``SourceError``, so that a tree never starts without a required source."""


class Changed(Protocol):
    """What a push source awaits when it may have new content: ``await changed()`` has the
    manager reload just it; ``await changed(layer)`` hands over the layer the watch already
    read, which the manager applies exactly as if ``load`` had returned it (and calls
    ``accepted`` if it is committed), so the watch need not leave it for ``load``."""

    def __call__(self, layer: Section | None = None, /) -> Awaitable[None]: ...


class Source(abc.ABC):
    """Base class of every source. Subclasses set ``name`` and implement ``load``."""

    #: Shown in ``status()``, errors and ``explain``; unique within one ConfigSpec.
    name: str
    #: A required source that fails at start-up fails the start.
    required: bool = True
    #: Every value of a secret source is redacted in logs, telemetry, status and dumps.
    secret: bool = False
    #: After a failed ``watch``: the first wait in seconds, doubled per failure up to the max.
    watch_retry_first: float = 0.5
    watch_retry_max: float = 30.0

    @abc.abstractmethod
    async def load(self) -> Section:
        """Read the source and return its whole layer, or raise ``SourceError``."""

    def configure(self, context: SourceContext) -> None:  # noqa: B027 (optional hook)
        """Called once when the tree is built, before the first load."""

    async def accepted(self, layer: Section) -> None:  # noqa: B027 (optional hook)
        """Called once ``layer``, which ``load`` returned, is part of the configuration in
        use: merged, validated and committed. A layer the validation rejected never gets
        here, so a source that remembers or caches what it serves does so in this hook."""

    def origin(self, path: Path, layer: Section | None = None) -> str:
        """Where this source's value at ``path`` comes from, for ``explain`` and validation
        errors: in ``layer`` (one ``load`` returned; validation asks before it is accepted),
        or in the layer in use when ``layer`` is ``None``."""
        return self.name

    def warnings_of(self, layer: Section) -> tuple[str, ...]:
        """What the source reports with ``layer`` (one ``load`` returned) that is not an
        error, such as variables that map to no field; shown in ``status()`` while that
        layer is in use, logged once."""
        return ()

    @property
    def pushes(self) -> bool:
        """Whether :meth:`watch` tells of changes; the tree gives each such source a watcher
        process. Sources without push are reloaded by the timer and ``reload()`` only."""
        return False

    async def watch(self, changed: Changed) -> None:
        """Run until cancelled and ``await changed()`` whenever the source may have changed.

        ``changed`` asks the manager to reload just this source; the reload decides whether
        anything really changed, so a spurious call costs one load and notifies nobody.

        Raise on failure: the source's watcher records the error in ``status()`` and
        telemetry (the last good layer keeps serving) and calls ``watch`` again after a
        backoff with jitter; an exception with a ``retry_after`` attribute (seconds) waits
        at least that long. A new ``watch`` should call ``changed()`` once it is connected,
        so the manager catches up with what happened while it was failing.
        """
        raise NotImplementedError(f"{self.kind} does not push changes")

    @property
    def kind(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.kind}(name={self.name!r})"
