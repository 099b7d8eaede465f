"""One environment for a whole tree: the process's variables over a ``.env`` file.

Every :class:`~otpylib_config.sources.env.EnvironmentSource`, every ``FileSource``'s
``${VAR}`` placeholders and ``ConfigSpec.profile_env`` read the same variables, as one
pydantic-settings class does: a value the ``.env`` file gives is seen by all of them, so a
``.env`` that picks the profile or fills a placeholder works like one that sets a field.
Variables of the process win over the file.

It is read again each time it is asked, nothing is cached: a reload must see an edited
``.env`` and a changed variable. The file is parsed by python-dotenv (the ``[dotenv]`` extra,
imported only once a file is named). A statement python-dotenv cannot parse is an error
naming the file and the line: python-dotenv alone would log a warning and drop the line, and
a dropped ``SECRET_KEY=...`` means a service starting on a default. A named file that does
not exist is an error too, unless it is marked optional (a developer's ``.env`` that CI does
not have). The error is an :class:`EnvFileError`; each source that reads the environment
raises it as its own ``SourceError``, so a start fails and a reload keeps the last good
layers, like any source error.

A source may replace a part of the tree's environment (:meth:`Environment.override`):
``environ=`` stands for the process's variables (a test seam), ``env_file=`` for the file.

**Claims**: with a schema, a variable that the tree has no use for is reported (a typo must
not vanish silently), and which ones those are is a question about the whole tree: a ``.env``
variable may fill a placeholder or pick the profile rather than set a field. Whatever reads
the environment says which names it uses (:meth:`Environment.claim`); a source asks
:meth:`Environment.claimed` before it reports a name it does not take itself. Claims are
made when the tree is configured and only read afterwards (docs/sources.md).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

Claim = Callable[[str], bool]
"""Whether the one that registered it uses the variable of that name."""


class EnvFileError(ValueError):
    """The ``.env`` file is missing (and not optional), unreadable, or has a statement
    python-dotenv cannot parse; the message names the file (and the line)."""


@dataclass(frozen=True)
class Variables(Mapping[str, str]):
    """One reading of the environment: the process's variables over the file's.

    ``from_file``: the names whose value is the file's (the process does not set them);
    ``file_names``: every name the file sets, for telling a stray ``.env`` line.
    """

    merged: Mapping[str, str]
    """Every variable and its value."""
    env_file: Path | None = None
    from_file: frozenset[str] = frozenset()
    file_names: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> str:
        return self.merged[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.merged)

    def __len__(self) -> int:
        return len(self.merged)

    def origin(self, name: str) -> str:
        """Where the value of ``name`` comes from, for ``explain``: ``$NAME`` or the file."""
        return f"{self.env_file}: {name}" if name in self.from_file else f"${name}"


@dataclass(eq=False)
class _Claims:
    """Who uses which variables; shared by a tree's environment and its overrides."""

    by_owner: dict[int, tuple[object, Claim]] = field(default_factory=dict)

    def add(self, owner: object, claim: Claim) -> None:
        self.by_owner[id(owner)] = (owner, claim)  # again (a restarted start-up): replaced

    def claimed(self, name: str, besides: object) -> bool:
        return any(claim(name) for owner, claim in self.by_owner.values() if owner is not besides)


class Environment:
    """The variables a tree's sources see; ``variables()`` reads them anew."""

    def __init__(
        self,
        env_file: str | os.PathLike[str] | None = None,
        *,
        optional: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.env_file = None if env_file is None else Path(env_file)
        self.optional = optional
        self._environ = environ
        self._claims = _Claims()

    @property
    def process(self) -> Mapping[str, str]:
        """The process's variables: ``os.environ``, or the mapping injected instead."""
        return os.environ if self._environ is None else self._environ

    def variables(self) -> Variables:
        """The process's variables over the file's; raises :class:`EnvFileError`."""
        process = dict(self.process)
        if self.env_file is None:
            return Variables(process)
        from_file = read_env_file(self.env_file, optional=self.optional)
        return Variables(
            {**from_file, **process},
            self.env_file,
            frozenset(from_file.keys() - process.keys()),
            frozenset(from_file),
        )

    def override(
        self,
        *,
        env_file: str | os.PathLike[str] | None = None,
        optional: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Environment:
        """This environment with the parts a source names replaced: ``env_file`` (and
        whether it is ``optional``) for the file, ``environ`` for the process's variables.
        Claims stay shared: they are about the whole tree."""
        if env_file is None and environ is None:
            return self
        replaced = Environment(
            self.env_file if env_file is None else env_file,
            optional=self.optional if env_file is None else optional,
            environ=self._environ if environ is None else environ,
        )
        replaced._claims = self._claims
        return replaced

    def claim(self, owner: object, claim: Claim) -> None:
        """Say that ``owner`` uses the variables ``claim`` accepts (see the module doc)."""
        self._claims.add(owner, claim)

    def claimed(self, name: str, *, besides: object) -> bool:
        """Whether anything but ``besides`` uses the variable ``name``."""
        return self._claims.claimed(name, besides)


def read_env_file(path: Path, *, optional: bool = False) -> dict[str, str]:
    """The variables a ``.env`` file sets (a name without ``=`` sets nothing).

    Every statement is checked with python-dotenv's own parser before its values are
    taken, so a line it would drop with a warning is an error naming the line instead.
    """
    try:
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream
    except ImportError:
        raise EnvFileError(
            f"reading the env file {path} needs python-dotenv: pip install 'otpylib-config[dotenv]'"
        ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if optional:
            return {}
        raise EnvFileError(
            f"env file not found: {path} (env_file_optional=True makes it optional)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc}") from None
    bad = [binding.original.line for binding in parse_stream(io.StringIO(text)) if binding.error]
    if bad:
        where = f"line {bad[0]}" if len(bad) == 1 else f"lines {', '.join(map(str, bad))}"
        raise EnvFileError(
            f"{path}: {where}: python-dotenv cannot parse the statement starting there"
        )
    values = dotenv_values(stream=io.StringIO(text))
    return {name: value for name, value in values.items() if value is not None}


_PLACEHOLDER = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class PlaceholderNames:
    """The claim of a configuration file: the variables its ``${VAR}`` placeholders name.

    Found in the file's text when asked, so a ``.env`` line that only fills a placeholder
    is not reported even before the file is first parsed; cached while the file's
    ``stat`` does not move. Asked only when some variable would otherwise be reported.
    An escaped ``$${X}`` counts too: a claim too many only keeps a report back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[tuple[int, int, int], frozenset[str]] | None = None

    def __call__(self, name: str) -> bool:
        return name in self.names()

    def names(self) -> frozenset[str]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._seen is None or self._seen[0] != stamp:
                found = _PLACEHOLDER.findall(self.path.read_bytes())
                self._seen = (stamp, frozenset(n.decode("ascii") for n in found))
        except OSError:
            return frozenset()
        return self._seen[1]
