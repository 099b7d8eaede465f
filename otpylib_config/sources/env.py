"""Environment variables (and ``.env`` files) as a layer.

**Names to paths**, three ways, which combine:

* ``prefix="APP_"``: ``APP_DATABASE__POOL_SIZE=20`` becomes ``database.pool_size = 20``. The
  prefix is stripped, ``nested_delimiter`` (``__``) separates segments and a single ``_``
  never becomes a dot: ``pool_size`` must not turn into ``pool.size``. The prefix matches
  whatever its case (``app_x`` too), as in pydantic-settings; segments are lower-cased, or
  with a schema spelled as the schema spells them.
* ``mapping={"JWT_SECRET": "auth.jwt_secret"}`` names variables one by one, exactly; it wins
  over the other two for its variables.
* ``flat=True`` (needs a pydantic ``ConfigSpec.schema``): a name, after the prefix if there
  is one, is matched to the schema's leaf whose path joined with ``_`` is the lower-cased
  name: ``REDIS_URL`` is ``redis_url`` at the top or ``redis.url`` in a section, so a
  service's flat ``.env`` needs no mapping entry per option. A name that matches two leaves
  is an error naming both (a mapping entry settles it). Without a prefix only names that
  match a leaf are taken (any variable of the process named like a field, as in
  pydantic-settings); ``SECTION__FIELD`` works too where the schema has that path.

**Values**: with a schema, the text itself where the schema's field wants text (a string
type: see :mod:`otpylib_config.schema_shape`), so ``SECRET_KEY=12345678901234567890``,
``True`` or ``{"a": 1}`` reach a ``str`` field as strings; elsewhere, and without a schema,
:func:`coerce` guesses (``8001`` → int, ``true`` → bool, JSON arrays and objects).

**The environment** is the tree's (:mod:`otpylib_config.environment`): the process's
variables over ``ConfigSpec.env_file``, read on every load so a reload sees changes.
``env_file=`` replaces the tree's file for this source (missing: an error unless
``env_file_optional=True``), ``environ=`` replaces the process's variables (a test seam); the
process's variables still win over either file.

**Unknown variables** (with a schema): a variable under the prefix whose path is no field, a
mapped one whose path is no field, and, for a source without a prefix, a ``.env`` variable
that nothing in the tree uses (no source takes it, no placeholder names it, it is not
``profile_env``) are reported: a warning per variable in ``status()``, the log and the
``config.source.warning`` event, with a suggestion when a name is close. ``strict=True`` (or
``ConfigSpec(strict_env=True)``) makes them an error, so a typo fails start-up. A prefixed
variable is still taken into the layer, where the schema decides what to do with it.

**What it keeps** between a load and the manager's ``accepted`` (the variable behind each
path, for ``explain``; what each load found to report): docs/sources.md.
"""

from __future__ import annotations

import difflib
import os
import pathlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otpylib_config.environment import EnvFileError, Environment, Variables
from otpylib_config.errors import InvalidPathError, SourceError
from otpylib_config.paths import Path, parse_path
from otpylib_config.schema_shape import SchemaShape, coerce_at
from otpylib_config.sources.base import Source, SourceContext
from otpylib_config.tree import PathClash, build
from otpylib_config.values import Section, coerce, freeze

__all__ = ["EnvironmentSource", "coerce"]

Resolved = tuple[Path | None, str | None]
"""A variable's path (``None``: not taken) and what to report about it (``None``: nothing)."""

UNACCEPTED = 8
"""How many loads not (yet) accepted the source remembers the variables of: one per reading
still on its way through the manager, and the few it dropped or rejected."""


@dataclass(frozen=True, slots=True, eq=False)
class _Loaded:
    """One load: the layer, the variable behind each path, and what it found to report."""

    layer: Section
    origins: Mapping[Path, str]
    warnings: tuple[str, ...]


class EnvironmentSource(Source):
    """Variables starting with ``prefix``, those named in ``mapping``, and with
    ``flat=True`` those named like a field of the schema (see the module doc)."""

    def __init__(
        self,
        prefix: str = "",
        *,
        nested_delimiter: str = "__",
        mapping: Mapping[str, str] | None = None,
        flat: bool = False,
        env_file: str | os.PathLike[str] | None = None,
        env_file_optional: bool = False,
        environ: Mapping[str, str] | None = None,
        strict: bool | None = None,
        secret: bool = False,
        name: str | None = None,
    ) -> None:
        if not prefix and not mapping and not flat:
            raise ValueError("EnvironmentSource needs a prefix or a mapping (or flat=True)")
        if not nested_delimiter:
            raise ValueError("nested_delimiter must not be empty")
        self.prefix = prefix
        self.nested_delimiter = nested_delimiter
        self.mapping = {var: parse_path(path) for var, path in (mapping or {}).items()}
        self.flat = flat
        self.strict = strict
        self.env_file = None if env_file is None else pathlib.Path(env_file)
        self.env_file_optional = env_file_optional
        self.secret = secret
        self.name = name or f"env:{prefix or ','.join(self.mapping) or 'flat'}"
        # What each field is for, who writes and who reads it: docs/sources.md.
        self.warnings: tuple[str, ...] = ()
        """What the newest load found to report (unknown variables), which the table takes
        with the layer it commits; :meth:`warnings_of` is exact for one layer."""
        self._environ = environ
        self._environment = Environment(env_file, optional=env_file_optional, environ=environ)
        self._shape: SchemaShape | None = None
        self._strict = bool(strict)
        self._origins: Mapping[Path, str] = {}
        """The variable behind each path of the layer in use: only ``accepted`` writes it."""
        self._unaccepted: deque[_Loaded] = deque(maxlen=UNACCEPTED)
        """Loads handed out and not accepted yet, found by the identity of their layer."""

    def configure(self, context: SourceContext) -> None:
        """Take the tree's environment (with this source's own parts), schema and
        strictness, and tell the tree which variables this source takes."""
        self._environment = context.environment.override(
            env_file=self.env_file, optional=self.env_file_optional, environ=self._environ
        )
        self._shape = context.shape
        self._strict = context.strict_env if self.strict is None else self.strict
        self._environment.claim(self, self.takes)

    def origin(self, path: Path, layer: Section | None = None) -> str:
        """The variable behind ``path`` in ``layer`` if given and not accepted yet (a
        candidate that validation judges: its problems name their variables), else in the
        layer in use, else in the newest layer loaded."""
        loaded = self._find(layer) if layer is not None else None
        if loaded is not None:
            return loaded.origins.get(path) or self.name
        newest = self._unaccepted[-1].origins.get(path) if self._unaccepted else None
        return self._origins.get(path) or newest or self.name

    def warnings_of(self, layer: Section) -> tuple[str, ...]:
        """What the load of ``layer`` found to report, if it is not accepted yet; else what
        the newest load found (``warnings``)."""
        loaded = self._find(layer)
        return loaded.warnings if loaded is not None else self.warnings

    async def accepted(self, layer: Section) -> None:
        """The variables behind the layer in use, for ``explain`` (not re-read then): those
        of exactly this layer's load, whatever was loaded since."""
        loaded = self._find(layer)
        if loaded is not None:
            self._unaccepted.remove(loaded)  # compared by identity: _Loaded has eq=False
            self._origins = loaded.origins

    def _find(self, layer: Section) -> _Loaded | None:
        return next((loaded for loaded in self._unaccepted if loaded.layer is layer), None)

    async def load(self) -> Section:
        try:
            variables = self._environment.variables()
        except EnvFileError as exc:
            raise SourceError(self.name, str(exc)) from None
        found: list[tuple[str, Path]] = []
        unknown: list[str] = []
        for var in sorted(variables):
            path, problem = self._resolve(var, variables)
            if path is not None:
                found.append((var, path))
            if problem is not None and not self._environment.claimed(var, besides=self):
                unknown.append(problem)
        if unknown and self._strict:
            raise SourceError(self.name, "; ".join(unknown))
        entries = [(f"${var}", path, self._value(var, path, variables[var])) for var, path in found]
        try:
            layer = build(entries)
        except PathClash as exc:
            raise SourceError(self.name, str(exc)) from None
        self.warnings = tuple(unknown)
        origins = {path: variables.origin(var) for var, path in found}
        self._unaccepted.append(_Loaded(layer, origins, self.warnings))
        return layer

    def takes(self, var: str) -> bool:
        """Whether this source takes ``var``: other sources do not report what it takes."""
        if var in self.mapping:
            return True
        rest = self._rest(var)
        if not rest:
            return False
        if self.prefix:
            return True
        try:
            return self._unprefixed(var, rest, Variables({}))[0] is not None
        except SourceError:  # ambiguous, but meant for this source all the same
            return True

    # -- names to paths ----------------------------------------------------------------------

    def _resolve(self, var: str, variables: Variables) -> Resolved:
        if var in self.mapping:
            return self._mapped(var)
        rest = self._rest(var)
        if rest is None:
            return None, None if self.prefix else self._stray(var, variables)
        if not rest:  # the bare prefix
            return None, None
        if self.prefix:
            return self._prefixed(var, rest)
        return self._unprefixed(var, rest, variables)

    def _rest(self, var: str) -> str | None:
        """The name after the prefix (matched whatever its case); ``None`` if ``var`` is not
        under it. Without a prefix, the whole name for a flat source."""
        if not self.prefix:
            return var if self.flat else None
        if var[: len(self.prefix)].lower() != self.prefix.lower():
            return None
        return var[len(self.prefix) :]

    def _mapped(self, var: str) -> Resolved:
        path = self.mapping[var]
        if self._shape is None or self._shape.exists(path):
            return path, None
        return path, f"${var} is mapped to {'.'.join(path)}, which is no field of the schema"

    def _prefixed(self, var: str, rest: str) -> Resolved:
        if self.flat and self.nested_delimiter not in rest:
            path = self._flat_path(var, rest)
            if path is not None:
                return path, None
        try:
            path = parse_path(".".join(rest.lower().split(self.nested_delimiter)))
        except InvalidPathError as exc:
            raise SourceError(self.name, f"${var}: cannot map to a path: {exc}") from None
        if self._shape is None:
            return path, None
        spelled = self._shape.spelling(path)
        if spelled is not None:
            return spelled, None
        return path, self._no_field(var, path)

    def _unprefixed(self, var: str, rest: str, variables: Variables) -> Resolved:
        path = self._flat_path(var, rest)
        if path is not None:
            return path, None
        nested = rest.lower().split(self.nested_delimiter)
        if len(nested) > 1 and all(nested) and self._shape is not None:
            spelled = self._shape.spelling(tuple(nested))
            if spelled is not None:
                return spelled, None
        return None, self._stray(var, variables)

    def _flat_path(self, var: str, rest: str) -> Path | None:
        """The one leaf ``rest`` names flat; ``None`` if none; an error if several."""
        paths = self._schema(var).flat_names.get(rest.lower(), ())
        if len(paths) > 1:
            names = " and ".join(".".join(p) for p in paths)
            raise SourceError(
                self.name,
                f"${var} matches more than one field ({names}): "
                f"name one with mapping={{{var!r}: ...}}",
            )
        return paths[0] if paths else None

    def _schema(self, var: str) -> SchemaShape:
        if self._shape is None:
            raise SourceError(
                self.name,
                f"${var}: flat=True matches variables to the schema's fields and needs "
                "ConfigSpec(schema=<a pydantic model>)",
            )
        return self._shape

    # -- what to report ----------------------------------------------------------------------

    def _stray(self, var: str, variables: Variables) -> str | None:
        """A ``.env`` variable an unprefixed source does not take: reported, with a schema
        (the process's own variables are never suspect: PATH, HOME...)."""
        if self._shape is None or var not in variables.file_names:
            return None
        names = [name.upper() for name in self._shape.flat_names]
        return f"${var} (from {variables.env_file}) maps to no field of the schema" + _hint(
            var.upper(), names, "$"
        )

    def _no_field(self, var: str, path: Path) -> str:
        assert self._shape is not None
        dotted = ".".join(path)
        hint = _hint(dotted, self._shape.leaf_paths(), "")
        return f"${var} maps to {dotted}, which is no field of the schema{hint}"

    def _value(self, var: str, path: Path, text: str) -> Any:
        try:
            return freeze(coerce_at(text, path, self._shape), ".".join(path))
        except ValueError as exc:  # InvalidValueError too
            raise SourceError(self.name, f"${var}: {exc}") from None


def _hint(name: str, candidates: list[str], sigil: str) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    return f"; did you mean {sigil}{close[0]}?" if close else ""
