"""A TOML, JSON or YAML file as a layer.

The file is read in a worker thread so a large parse never stalls the event loop. A file
that does not parse raises :class:`SourceError` naming the file and the position; the
manager then keeps the file's last good layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio.to_thread

from otpylib_config.errors import SourceError
from otpylib_config.parsers import FORMATS_BY_SUFFIX, ParseError, check_format, parse
from otpylib_config.sources.base import Source
from otpylib_config.values import Section


class FileSource(Source):
    """One configuration file. ``optional=True``: a missing file is an empty layer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        optional: bool = False,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        suffix_format = FORMATS_BY_SUFFIX.get(self.path.suffix.lower())
        fmt = format or suffix_format
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of {str(self.path)!r} from its suffix; "
                f"pass format='toml', 'json' or 'yaml'"
            )
        self.format = check_format(fmt)
        self.optional = optional
        self.required = not optional
        self.name = name or f"file:{self.path}"

    async def load(self) -> Section:
        return await anyio.to_thread.run_sync(self._load_sync)

    def _load_sync(self) -> Section:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self.optional:
                return Section()
            raise SourceError(self.name, f"file not found: {self.path}") from None
        except OSError as exc:
            raise SourceError(self.name, f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            return parse(data, self.format)
        except ParseError as exc:
            raise SourceError(self.name, f"{self.path}: {exc}") from exc
