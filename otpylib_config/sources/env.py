"""Environment variables (and optionally a ``.env`` file) as a layer.

``APP_DATABASE__POOL_SIZE=20`` with ``prefix="APP_"`` becomes ``database.pool_size = 20``:
the prefix is stripped, ``nested_delimiter`` (``__`` by default) separates segments and
segments are lower-cased. A single ``_`` never becomes a dot (lessons.md #15). ``mapping``
names flat variables explicitly: ``{"JWT_SECRET": "auth.jwt_secret"}``. Values are coerced
by :func:`coerce`. The environment (and the ``.env`` file) is read on every load, so a
reload picks up changes; variables of the process win over the ``.env`` file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from otpylib_config.errors import InvalidPathError, SourceError
from otpylib_config.paths import parse_path
from otpylib_config.sources.base import Source
from otpylib_config.tree import PathClash, build
from otpylib_config.values import Section, coerce, freeze


class EnvironmentSource(Source):
    """Variables starting with ``prefix``, plus those named in ``mapping``."""

    def __init__(
        self,
        prefix: str = "",
        *,
        nested_delimiter: str = "__",
        mapping: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        secret: bool = False,
        name: str | None = None,
    ) -> None:
        if not prefix and not mapping:
            raise ValueError("EnvironmentSource needs a prefix or a mapping (or both)")
        if not nested_delimiter:
            raise ValueError("nested_delimiter must not be empty")
        self.prefix = prefix
        self.nested_delimiter = nested_delimiter
        self.mapping = {var: parse_path(path) for var, path in (mapping or {}).items()}
        self._environ = environ
        self.env_file = None if env_file is None else pathlib.Path(env_file)
        self.secret = secret
        self.name = name or f"env:{prefix or ','.join(self.mapping)}"
        self._origins: dict[tuple[str, ...], str] = {}
        self._loaded: tuple[Section, dict[tuple[str, ...], str]] | None = None

    def origin(self, path: tuple[str, ...]) -> str:
        return self._origins.get(path) or self.name

    async def accepted(self, layer: Section) -> None:
        """The variables behind the layer in use, for ``explain`` (not re-read then)."""
        if self._loaded is not None and self._loaded[0] is layer:
            self._origins = self._loaded[1]
            self._loaded = None

    def _process_env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _variables(self) -> Mapping[str, str]:
        """The process environment over the ``.env`` file's variables."""
        if self.env_file is None:
            return self._process_env()
        return {**_read_env_file(self.env_file, self.name), **self._process_env()}

    async def load(self) -> Section:
        environ = self._variables()
        found = [(var, path) for var in sorted(environ) if (path := self._path_of(var))]
        entries = [(f"${var}", path, self._value(var, path, environ[var])) for var, path in found]
        try:
            layer = build(entries)
        except PathClash as exc:
            raise SourceError(self.name, str(exc)) from None
        process = self._process_env()
        origins = {
            path: f"${var}" if var in process else f"{self.env_file}: {var}" for var, path in found
        }
        self._loaded = (layer, origins)
        return layer

    def _path_of(self, var: str) -> tuple[str, ...] | None:
        if var in self.mapping:
            return self.mapping[var]
        if not self.prefix or not var.startswith(self.prefix) or var == self.prefix:
            return None
        rest = var[len(self.prefix) :].lower()
        try:
            return parse_path(".".join(rest.split(self.nested_delimiter)))
        except InvalidPathError as exc:
            raise SourceError(self.name, f"${var}: cannot map to a path: {exc}") from None

    def _value(self, var: str, path: tuple[str, ...], text: str) -> Any:
        try:
            return freeze(coerce(text), ".".join(path))
        except ValueError as exc:  # InvalidValueError too
            raise SourceError(self.name, f"${var}: {exc}") from None


def _read_env_file(path: pathlib.Path, source: str) -> dict[str, str]:
    """A missing ``.env`` is no error (it is optional by nature); unreadable ones are."""
    try:
        from dotenv import dotenv_values
    except ImportError as exc:
        raise SourceError(
            source, "env_file needs python-dotenv: pip install 'otpylib-config[dotenv]'"
        ) from exc
    if not path.exists():
        return {}
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(source, f"cannot read {path}: {exc}") from exc
    return {key: value for key, value in values.items() if value is not None}
