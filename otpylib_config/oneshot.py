"""``load(spec)``: read a spec's configuration once, synchronously, with no tree running.

Scripts, migrations, Celery workers and tests read settings without an otpylib runtime or
an event loop; they must see exactly what ``start`` would serve, so ``load`` runs the same
first load (sources read and merged, placeholders expanded, the schema applied) and fails
the same way (one :class:`~otpylib_config.errors.LoadError` with every problem).

It never writes: no watch, no timer, no persisted runtime overrides (those belong to the
running service, whose journal a script must not touch), no source cache (``accepted`` is
not called). Its sources are configured afresh, so give it its own spec rather than the
one of a tree running in the same process. Called
from inside a running event loop (a notebook, an async test) it runs the load on a thread
of its own, since a loop cannot wait for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Any

from otpylib_config import commit
from otpylib_config.client import dump, dump_at, lookup, model_of
from otpylib_config.provenance import Explanation, explain
from otpylib_config.sources.runtime import RuntimeSource
from otpylib_config.spec import ConfigSpec
from otpylib_config.table import ConfigTable
from otpylib_config.tree import MISSING


class LoadedConfig:
    """A read-only view of one load: ``get``, ``model``, ``explain``, ``dump``."""

    def __init__(self, table: ConfigTable) -> None:
        self._table = table

    def get(self, path: str, default: Any = None) -> Any:
        """The value (or read-only section) at ``path``, or ``default`` if absent."""
        return lookup(self._table, path, default)

    @property
    def model(self) -> Any:
        """The validated instance of the spec's pydantic ``schema``."""
        return model_of(self._table)

    def explain(self, path: str) -> Explanation:
        """Which source gave the value at ``path``, from where, and what it overrides."""
        return explain(self._table, path)

    def dump(self, path: str | None = None) -> Any:
        """The whole configuration as plain data, secrets redacted; with ``path``, the
        value there, redacted the same way (``KeyError`` if there is none)."""
        if path is None:
            return dump(self._table)
        value = dump_at(self._table, path)
        if value is MISSING:
            raise KeyError(path)
        return value

    def __repr__(self) -> str:
        return f"LoadedConfig(id={self._table.spec.id!r})"


def load(spec: ConfigSpec) -> LoadedConfig:
    """Load ``spec`` once and return a read-only view of it; raises ``LoadError``."""
    table = ConfigTable(dataclasses.replace(spec, sources=[*spec.sources, RuntimeSource()]))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(commit.initial(table, accept=False))
    else:
        with concurrent.futures.ThreadPoolExecutor(1, "otpylib-config-load") as pool:
            pool.submit(asyncio.run, commit.initial(table, accept=False)).result()
    return LoadedConfig(table)
