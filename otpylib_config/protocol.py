r"""The manager's message protocol, in one place: every message it takes, and the reply.

Every write is a message to the ``ConfigManager`` process: a small immutable object of one
of the types below, which the manager dispatches on by type (``manager._dispatch``), with an
explicit catch-all that logs and keeps serving. A *request* carries ``reply``, an asyncio
future that the manager resolves after it has committed and published, or fails with the
error; the client awaits it instead of using ``gen_server.call`` (docs/architecture.md,
The one rule). A *notice* has no reply. Paths and other request data never become atoms.

===============================  ===========================  ==============================
message                          sent by                      ``reply`` gets
===============================  ===========================  ==============================
:class:`Put`                     ``Config.put``               ``None`` once published
:class:`PutMany`                 ``Config.put_many``          ``None``; one version or none
:class:`Delete`                  ``Config.delete``            ``True`` if an override went
:class:`Reload`                  ``Config.reload``            :class:`ReloadResult`
:class:`Subscribe`               ``Config.subscribe``         :class:`SubscriptionHandle`
:class:`Unsubscribe`             ``Config.unsubscribe``       ``True`` if it existed
:class:`ReadDone`                the manager's reading task   :class:`ReloadResult`, if
                                                              ``reply`` is not ``None``
:class:`SourceChanged`           a source's watcher process   notice: reload (or apply) it
:class:`SourceFailed`            a source's watcher process   notice: record the error
:class:`Tick`                    ``send_after`` (the timer)   notice: reload every source
``(DOWN, ref, kind, pid, why)``  otpylib, for a monitor       notice: a subscriber exited
===============================  ===========================  ==============================

A reply's errors: ``ValidationError`` (nothing changed) or another ``ConfigError`` for a
bad request; any other exception fails the reply too, and the manager logs it (its type and
frames, never its text) and keeps serving.

The notifier takes one message, :class:`Wake`: some subscriptions have pending events.

The types are ``NamedTuple``\s, not frozen dataclasses: CPython 3.11 generates a frozen
dataclass's methods when its module is imported, about 0.6 ms a class, and start-up counts
(docs/performance.md). Nothing compares or unpacks a message, so their being tuples changes
nothing else. The two without fields are plain classes, because an empty tuple is false and
equal to every other one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from otpylib import atom

from otpylib_config.paths import Path
from otpylib_config.values import Section

if TYPE_CHECKING:
    from otpylib_config.pipeline import Reading
    from otpylib_config.subscriptions import Subscription, SubscriptionHandle

DOWN = atom.ensure("DOWN")
"""The tag of otpylib's monitor message; the one message not made here."""


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the new version, the paths of changed leaves, and source errors
    (a failed source kept its last good layer)."""

    version: int
    changed: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)


class Put(NamedTuple):
    """Set the runtime override at ``segments``; ``value`` was frozen by the client."""

    reply: asyncio.Future[None]
    segments: Path
    path: str
    value: Any


class PutMany(NamedTuple):
    """Set several overrides as one version, all or nothing; ``(segments, path, value)``."""

    reply: asyncio.Future[None]
    entries: tuple[tuple[Path, str, Any], ...]


class Delete(NamedTuple):
    """Remove the runtime override at or below ``segments``."""

    reply: asyncio.Future[bool]
    segments: Path
    path: str


class Reload(NamedTuple):
    """Read every source now (``reason`` is for telemetry)."""

    reply: asyncio.Future[ReloadResult]
    reason: str = "request"


class Subscribe(NamedTuple):
    """Add ``subscription`` (idempotent by its id, so a retried request adds it once)."""

    reply: asyncio.Future[SubscriptionHandle]
    subscription: Subscription


class Unsubscribe(NamedTuple):
    reply: asyncio.Future[bool]
    sub_id: int


class ReadDone(NamedTuple):
    """A reading task read its sources outside the manager: apply ``reading`` now."""

    reply: asyncio.Future[ReloadResult] | None
    reading: Reading


class SourceChanged(NamedTuple):
    """Source ``name`` may have changed. ``layer``: what its watch already read, to apply
    as it stands; ``None``: reload just that source."""

    name: str
    layer: Section | None = None


class SourceFailed(NamedTuple):
    """Source ``name``'s watch failed with ``error`` (already free of secrets)."""

    name: str
    error: str


class Tick:
    """The reload timer fired. Fieldless, so a class of its own: an empty tuple would be
    false and equal to every other empty one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Tick()"


class Wake:
    """To the notifier: some subscriptions have pending events, or changes wait to be
    turned into events."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Wake()"


Request = Put | PutMany | Delete | Reload | Subscribe | Unsubscribe
"""The messages that carry a ``reply`` the client waits for."""

Message = Request | ReadDone | SourceChanged | SourceFailed | Tick
"""Every message the manager takes, besides otpylib's ``DOWN``."""

TICK = Tick()
WAKE = Wake()
