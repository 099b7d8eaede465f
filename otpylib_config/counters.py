"""The names of ``Status.counters``: how many times each thing happened since the tree
started (they survive restarts of the manager and the notifier, not of the tree).

Each constant says who counts it. The manager's counters and the notifier's live in two
``Counter`` objects of the table, one per writer, which ``status()`` shows as one mapping.
"""

from typing import Final

# -- counted by the manager ----------------------------------------------------------------

PUTS: Final = "puts"
"""Paths put (``put`` counts 1, ``put_many`` one per path), once published."""
DELETES: Final = "deletes"
"""``delete`` calls that removed an override."""
CHANGES: Final = "changes"
"""Leaves changed in published versions (a put of a 3-leaf section may count 3)."""
RELOADS: Final = "reloads"
"""Readings applied: timer, request, push, restart."""
RELOAD_ERRORS: Final = "reload_errors"
"""Readings applied with at least one source error or a validation failure."""
VALIDATION_FAILURES: Final = "validation_failures"
"""Configurations rejected by validation (a reload or a put)."""
SOURCE_LOAD_ERRORS: Final = "source_load_errors"
"""A source's ``load`` failed (it kept its last good layer)."""
SOURCE_WATCH_ERRORS: Final = "source_watch_errors"
"""A source's ``watch`` failed (its watcher retries after a backoff)."""
SOURCE_RESTORE_ERRORS: Final = "source_restore_errors"
"""The persisted runtime overrides did not read back at start-up."""

# -- counted by the notifier ---------------------------------------------------------------

EVENTS_DELIVERED: Final = "events_delivered"
"""Callbacks that returned (an async one: that completed in ``callback_timeout``)."""
SUBSCRIBER_ERRORS: Final = "subscriber_errors"
"""Callbacks that raised or timed out."""


def source_errors(stage: str) -> str:
    """The counter of a source failure at ``stage`` (``load``, ``watch`` or ``restore``)."""
    return {
        "load": SOURCE_LOAD_ERRORS,
        "watch": SOURCE_WATCH_ERRORS,
        "restore": SOURCE_RESTORE_ERRORS,
    }[stage]


ALL: Final = (
    PUTS,
    DELETES,
    CHANGES,
    RELOADS,
    RELOAD_ERRORS,
    VALIDATION_FAILURES,
    EVENTS_DELIVERED,
    SUBSCRIBER_ERRORS,
    SOURCE_LOAD_ERRORS,
    SOURCE_WATCH_ERRORS,
    SOURCE_RESTORE_ERRORS,
)
"""Every counter, in the order README lists them."""
