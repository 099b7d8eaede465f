"""The runtime layer's place among the sources: where ``Config.put`` writes, and where it
is persisted. The overrides themselves are :mod:`otpylib_config.overrides`; the manager
holds them, this source is never loaded."""

from __future__ import annotations

import os
from pathlib import Path as FilePath

from otpylib_config.errors import SourceError
from otpylib_config.sources.base import Source
from otpylib_config.values import Section


class RuntimeSource(Source):
    """Marks where runtime overrides go; always the highest priority, added if omitted.

    ``path``: persist the overrides to this JSON file (and a journal next to it) so they
    survive a restart. A directory is refused here, when the mistake is made; whether the
    file's directory exists and is writable is checked when the tree starts.
    """

    name = "runtime"
    required = False

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is not None and FilePath(path).is_dir():
            raise SourceError("runtime", f"cannot persist overrides to {path}: it is a directory")
        self.path = path

    async def load(self) -> Section:
        raise NotImplementedError("the runtime layer is held by the manager, not loaded")
