"""Persistence of the runtime layer, so that overrides survive a process restart.

With ``RuntimeSource(path=...)`` every put and delete is written to a JSON file *before* it
is acknowledged: temp file in the same directory, fsync, rename over, fsync the directory.
A file that cannot be read back at start-up is reported (log, telemetry, ``status()``) and
moved aside to ``<path>.corrupt-<time>`` so that nothing in it is lost or overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from otpylib_config.errors import ConfigError, SourceError
from otpylib_config.paths import parse_path
from otpylib_config.sources.runtime import Override, Overrides
from otpylib_config.values import Section, freeze, thaw

if TYPE_CHECKING:
    from otpylib_config.table import ConfigTable

logger = logging.getLogger("otpylib_config")
FORMAT = "otpylib-config-overrides"


class Persistence:
    """Reads and writes one tree's runtime overrides; does nothing without a path."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)

    async def save(self, overrides: Overrides) -> None:
        if self.path is None:
            return
        document = {"format": FORMAT, "version": 1, "overrides": list(_entries(overrides.root))}
        try:
            await anyio.to_thread.run_sync(write_json_atomically, self.path, document)
        except OSError as exc:
            raise SourceError("runtime", f"cannot persist overrides to {self.path}: {exc}") from exc

    async def restore(self, table: ConfigTable) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            text = await anyio.to_thread.run_sync(self.path.read_text)
            table.overrides = _parse(text)
            table.runtime_state.succeeded(Section())
        except (OSError, ValueError, ConfigError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            error = f"cannot restore overrides from {self.path} ({exc}); moved it to {aside}"
            table.record_failure(table.runtime_state, error, stage="restore")


def _entries(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    if isinstance(node, Override):
        yield {"path": ".".join(prefix), "value": thaw(node.value), "at": node.at}
        return
    for key, child in node.items():
        yield from _entries(child, (*prefix, key))


def _parse(text: str) -> Overrides:
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} document")
    overrides = Overrides()
    for entry in document.get("overrides", []):
        path = parse_path(entry["path"])
        at = float(entry.get("at", time.time()))
        overrides, _ = overrides.put(path, freeze(entry["value"], entry["path"]), at)
    return overrides


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Temp file, fsync, rename, fsync the directory: a crash leaves the old or the new file."""
    descriptor, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
