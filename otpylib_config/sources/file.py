"""A TOML, JSON or YAML file as a layer.

The file is read in a worker thread so a large parse never stalls the event loop. A file
that does not parse raises :class:`SourceError` naming the file and the position; the
manager then keeps the file's last good layer. ``{profile}`` in the path is replaced by the
tree's profile (``config.{profile}.toml``); ``${VAR}`` placeholders are expanded from the
environment (see :mod:`otpylib_config.interpolate`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import anyio.to_thread

from otpylib_config.errors import SourceError
from otpylib_config.interpolate import InterpolationError, expand_layer, render_templates
from otpylib_config.parsers import ParseError, format_of, parse
from otpylib_config.paths import Path as KeyPath
from otpylib_config.sources.base import Changed, Source, SourceContext
from otpylib_config.values import Section
from otpylib_config.watcher import Fingerprint, fingerprint, watch_paths

PROFILE = "{profile}"


class FileSource(Source):
    """One configuration file.

    ``optional=True``: a missing file is an empty layer, picked up when it appears.
    ``watch=False``: only the timer and ``reload()`` reload it. ``secret=True``: every value
    is redacted in output. ``environ``: where placeholders are looked up (``os.environ``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        optional: bool = False,
        watch: bool = True,
        secret: bool = False,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.template = os.fspath(path)
        self.path = Path(self.template)
        self.format = format_of(self.template, format)
        self.required = not optional
        self.watched = watch
        self._debounce = SourceContext.watch_debounce
        self._read_as: Fingerprint | None = None
        self._resync = False
        self.secret = secret
        self.name = name or f"file:{self.template}"
        self._environ = environ

    def configure(self, context: SourceContext) -> None:
        self._debounce = context.watch_debounce
        if PROFILE not in self.template:
            return
        if context.profile is None:
            raise SourceError(
                self.name,
                f"{self.template} needs a profile: set ConfigSpec(profile=...) "
                "or the environment variable named by ConfigSpec.profile_env",
            )
        self.path = Path(self.template.replace(PROFILE, context.profile))

    def origin(self, path: KeyPath) -> str:
        return f"{self.path}: {'.'.join(path)}"

    @property
    def pushes(self) -> bool:
        return self.watched

    async def watch(self, changed: Changed) -> None:
        seen = None if self._resync else [self._read_as]
        try:
            await watch_paths([self.path], changed, debounce=self._debounce, seen=seen)
        except BaseException:
            self._resync = True  # the next watch reports at once: status must catch up
            raise

    async def load(self) -> Section:
        return await anyio.to_thread.run_sync(self._load_sync)

    def _load_sync(self) -> Section:
        self._read_as = fingerprint(self.path)  # before reading: a later write looks new
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if not self.required:
                return Section()
            raise SourceError(self.name, f"file not found: {self.path}") from None
        except OSError as exc:
            raise SourceError(self.name, f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            return self._parse(data)
        except (ParseError, InterpolationError) as exc:
            raise SourceError(self.name, f"{self.path}: {exc}") from exc

    def _parse(self, data: bytes) -> Section:
        """Parse, expanding placeholders; a file without ``$`` (the usual case) skips both passes.

        The environment is read here, on every load, so a reload sees variables that changed.
        """
        if b"$" not in data:
            return parse(data, self.format)
        environ = os.environ if self._environ is None else self._environ
        layer = parse(render_templates(data, self.format, environ), self.format)
        return expand_layer(layer, environ)
