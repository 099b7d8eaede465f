"""The manager's message protocol, in one place.

Every write is a message to the ``ConfigManager`` process, tagged with an atom created here
at import time (paths and other request data never become atoms). Requests carry an asyncio
future that the manager resolves after it has published, or fails with the error; clients
await it instead of using ``gen_server.call`` (docs/architecture.md, The one rule).

===================================  ====================================================
message                              result the future gets
===================================  ====================================================
``(PUT, fut, segments, path, value)``  ``None``; ``value`` is already frozen by the client
``(PUT_MANY, fut, entries)``           ``None``; ``entries``: ``(segments, path, value)``
                                       triples, published as one version or not at all
``(DELETE, fut, segments, path)``      ``True`` if a runtime override was removed
``(RELOAD, fut, reason)``              :class:`ReloadResult`
``(SUBSCRIBE, fut, subscription)``     :class:`SubscriptionHandle` (idempotent by id)
``(UNSUBSCRIBE, fut, sub_id)``         ``True`` if the subscription existed
``(SOURCE_CHANGED, name)``             no future: a push source changed; reload just it
``(SOURCE_FAILED, name, error)``       no future: a push source's watch failed; record it
``(READ, fut, reading)``               a reload's sources were read (by a task, not the
                                       manager): apply it; ``fut`` (or ``None``) gets
                                       the :class:`ReloadResult`
``(TICK,)``                            no future: the reload timer, via ``send_after``
``(DOWN, ref, ..., pid, reason)``      no future: a subscriber process exited
===================================  ====================================================

Errors a future can get: ``ValidationError`` (nothing changed), ``ConfigError`` subclasses
for bad requests. Anything else the manager logs, and it keeps serving.
The notifier process receives only ``(WAKE,)``: some subscriptions have pending events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from otpylib import atom

PUT = atom.ensure("otpylib_config.put")
PUT_MANY = atom.ensure("otpylib_config.put_many")
DELETE = atom.ensure("otpylib_config.delete")
RELOAD = atom.ensure("otpylib_config.reload")
SUBSCRIBE = atom.ensure("otpylib_config.subscribe")
UNSUBSCRIBE = atom.ensure("otpylib_config.unsubscribe")
SOURCE_CHANGED = atom.ensure("otpylib_config.source_changed")
SOURCE_FAILED = atom.ensure("otpylib_config.source_failed")
TICK = atom.ensure("otpylib_config.tick")
READ = atom.ensure("otpylib_config.read")
WAKE = atom.ensure("otpylib_config.wake")
DOWN = atom.ensure("DOWN")


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the new version, the paths of changed leaves, and source errors
    (a failed source kept its last good layer)."""

    version: int
    changed: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)
