"""Which config trees run in this process, and which one ``Config`` is bound to.

The manager registers its table when it starts (and again after each restart, which must
not move the tree in the order that picks the default), ``shutdown`` unregisters it. The
default tree is the first one registered that is still registered. ``Config``'s hot read
path needs the default table in a module global of its own (one global lookup), so the
client module binds itself with :func:`on_default_changed` rather than asking here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from otpylib_config.errors import NotRunningError

if TYPE_CHECKING:
    from otpylib_config.table import ConfigTable

_tables: dict[str, ConfigTable] = {}
_default: ConfigTable | None = None
_listeners: list[Callable[[ConfigTable | None], None]] = []


def register(table: ConfigTable) -> None:
    """Let ``Config.of(table.spec.id)`` reach ``table``; it becomes the default tree if no
    earlier one is registered."""
    if _tables.get(table.spec.id) is not table:
        _tables.pop(table.spec.id, None)
        _tables[table.spec.id] = table
    _set_default(next(iter(_tables.values())))


def unregister(table: ConfigTable) -> None:
    if _tables.get(table.spec.id) is table:
        del _tables[table.spec.id]
    _set_default(next(iter(_tables.values()), None))


def table_for(spec_id: str) -> ConfigTable | None:
    return _tables.get(spec_id)


def tables() -> list[ConfigTable]:
    """Every registered tree, in the order they registered (the metrics list them all)."""
    return list(_tables.values())


def table_by_id(spec_id: str) -> ConfigTable:
    table = _tables.get(spec_id)
    if table is None:
        raise NotRunningError(f"no otpylib-config tree {spec_id!r} is running")
    return table


def default_table() -> ConfigTable:
    if _default is None:
        raise NotRunningError(
            "no otpylib-config tree is running: add otpylib_config.child_spec(spec) to your "
            "supervision tree or await otpylib_config.start(spec)"
        )
    return _default


def on_default_changed(listener: Callable[[ConfigTable | None], None]) -> None:
    """Call ``listener`` with the default table now and whenever a tree registers or
    unregisters (the default may then be the same one again)."""
    _listeners.append(listener)
    listener(_default)


def _set_default(table: ConfigTable | None) -> None:
    global _default
    _default = table
    for listener in _listeners:
        listener(table)
