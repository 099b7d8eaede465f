"""The offline side: a ConfigSpec from ``--spec``/``--file``/``--env-prefix``, loaded once.

Offline commands must see exactly what the service would serve at start-up, so they go
through :func:`otpylib_config.load` (the same first load, the same validation, the same
redaction) rather than reading files themselves. ``--file`` and ``--env-prefix`` add layers
on top of the spec's sources (or make the whole spec without ``--spec``), lowest priority
first, so ``--file staging.toml`` answers "what if this file were deployed too".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass

from otpylib_config.cli._errors import EXIT_FAILED, CliError, UsageError
from otpylib_config.errors import ConfigError, LoadError
from otpylib_config.oneshot import LoadedConfig, load
from otpylib_config.sources.base import Source
from otpylib_config.sources.env import EnvironmentSource
from otpylib_config.sources.file import FileSource
from otpylib_config.spec import ConfigSpec

FileArg = tuple[str, bool]
"""``(path, optional)`` from ``--file`` / ``--optional-file``, in command-line order."""


@dataclass(frozen=True)
class Recipe:
    """What one offline configuration is made of, as the command line said it."""

    spec: str | None
    files: tuple[FileArg, ...]
    env_prefixes: tuple[str, ...]
    profile: str | None
    env_file: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Recipe:
        return cls(
            args.spec,
            tuple(args.files or ()),
            tuple(args.env_prefixes or ()),
            args.profile,
            args.env_file,
        )

    @property
    def given(self) -> bool:
        """Whether the command line named any offline source at all."""
        return bool(self.spec or self.files or self.env_prefixes)

    def label(self) -> str:
        """A short name for this configuration in ``diff`` headers."""
        parts = [self.spec] if self.spec else []
        parts += [path for path, _ in self.files]
        parts += [f"${prefix}*" for prefix in self.env_prefixes]
        name = " + ".join(p for p in parts if p) or "(no sources)"
        return f"{name} (profile {self.profile})" if self.profile else name


def offline_given(args: argparse.Namespace) -> bool:
    """Whether ``args`` ask for the offline mode (``--spec``, ``--file``, ``--env-prefix``)."""
    return Recipe.from_args(args).given


def build(recipe: Recipe) -> ConfigSpec:
    """The ConfigSpec the recipe describes; a :class:`UsageError` for a bad file or prefix."""
    from otpylib_config.cli._specref import resolve

    base = resolve(recipe.spec) if recipe.spec else None
    sources: list[Source] = list(base.sources) if base else []
    sources += [_file(path, optional) for path, optional in recipe.files]
    sources += [_environment(prefix) for prefix in recipe.env_prefixes]
    profile = recipe.profile if recipe.profile is not None else (base.profile if base else None)
    env_file = recipe.env_file if recipe.env_file is not None else (base.env_file if base else None)
    try:
        if base is None:
            return ConfigSpec(sources=sources, profile=profile, env_file=env_file)
        return dataclasses.replace(  # offline: no admin server, no timer
            base, sources=sources, profile=profile, env_file=env_file, admin=None
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def load_recipe(recipe: Recipe) -> LoadedConfig:
    """Load the recipe's configuration once; every load problem at once, exit code 1."""
    spec = build(recipe)
    try:
        return load(spec)
    except LoadError as exc:
        raise CliError(_cannot_load(len(exc.problems)), EXIT_FAILED, problem_lines(exc)) from None
    except ConfigError as exc:
        raise CliError(f"the configuration cannot be loaded: {exc}", EXIT_FAILED) from None


def load_args(args: argparse.Namespace) -> LoadedConfig:
    """:func:`load_recipe` for the sources the command line names."""
    return load_recipe(Recipe.from_args(args))


def problem_lines(error: LoadError) -> list[str]:
    """One line per problem: the path (if any) and the message, which says where the
    value came from (``(from config.toml: server.port)``)."""
    return [f"{path}: {message}" if path else message for path, message in error.problems]


def _cannot_load(count: int) -> str:
    return f"the configuration cannot be loaded: {count} problem{'s' if count != 1 else ''}"


def _file(path: str, optional: bool) -> FileSource:
    try:
        return FileSource(os.path.expanduser(path), optional=optional, watch=False)
    except ValueError as exc:
        raise UsageError(f"--file {path}: {exc}") from None


def _environment(prefix: str) -> EnvironmentSource:
    try:
        return EnvironmentSource(prefix)
    except ValueError as exc:
        raise UsageError(f"--env-prefix {prefix!r}: {exc}") from None
