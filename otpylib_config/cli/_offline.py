"""Offline commands: read the application's own sources once and answer from them.

Values leave the CLI redacted exactly as ``dump()`` redacts them, ``get`` included: a
shell history or a CI log is output like any other, and a secret has no business there.
"""

from __future__ import annotations

import argparse
from typing import Any

from otpylib_config.cli._errors import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, CliError, UsageError
from otpylib_config.cli._formats import render, to_json
from otpylib_config.cli._output import Output
from otpylib_config.cli._render import explanation_data, explanation_lines
from otpylib_config.cli._sources import Recipe, build, load_args, problem_lines
from otpylib_config.errors import ConfigError, InvalidPathError, LoadError
from otpylib_config.oneshot import LoadedConfig, load
from otpylib_config.paths import Path, parse_path


def checked_path(path: str) -> Path:
    """``path`` split into segments; a usage error (exit 2) if it is not a path."""
    try:
        return parse_path(path)
    except InvalidPathError as exc:
        raise UsageError(str(exc)) from None


def subtree(loaded: LoadedConfig, path: str | None) -> Any:
    """The redacted value at ``path`` (the whole dump for ``None``); exit 4 if absent."""
    if path is not None:
        checked_path(path)
    try:
        return loaded.dump(path)
    except KeyError:
        raise CliError(f"no value at {path!r}", EXIT_NOT_FOUND) from None


def show(args: argparse.Namespace, out: Output) -> int:
    """The merged configuration, or the subtree at ``--path``, as a document."""
    value = subtree(load_args(args), args.path)
    what = f"the value at {args.path!r}" if args.path else "the configuration"
    out.text(render(value, args.format, what))
    return EXIT_OK


def get(args: argparse.Namespace, out: Output) -> int:
    """The value at PATH as JSON (``--raw``: a string as itself); exit 4 if absent."""
    write_value(subtree(load_args(args), args.path), args.raw, out)
    return EXIT_OK


def write_value(value: Any, raw: bool, out: Output) -> None:
    """A value as ``get`` prints it, online and offline alike."""
    out.text(value if raw and isinstance(value, str) else to_json(value))


def explain(args: argparse.Namespace, out: Output) -> int:
    """Where the value at PATH came from and what it overrides; exit 4 if nothing sets it."""
    checked_path(args.path)
    data = explanation_data(load_args(args).explain(args.path))
    return write_explanation(data, args.json, out)


def write_explanation(data: dict[str, Any], as_json: bool, out: Output) -> int:
    """An explanation as text (or JSON), online and offline alike; 4 if nothing sets it."""
    if as_json:
        out.text(to_json(data))
    else:
        for line in explanation_lines(data, out):
            out.line(line)
    return EXIT_OK if data.get("contributions") else EXIT_NOT_FOUND


def validate(args: argparse.Namespace, out: Output) -> int:
    """Load and validate as start-up would: one OK line, or every problem and exit 1."""
    recipe = Recipe.from_args(args)
    spec = build(recipe)
    try:
        load(spec)
    except LoadError as exc:
        return _invalid(problem_lines(exc), exc, args.json, out)
    except ConfigError as exc:  # not a load of the sources at all (an unreadable env_file)
        raise CliError(f"the configuration cannot be loaded: {exc}", EXIT_FAILED) from None
    names = ", ".join(source.name for source in spec.sources) or "no sources"
    if args.json:
        out.text(to_json({"valid": True, "problems": []}))
    else:
        out.line(f"{out.style('OK', 'green', 'bold')}: the configuration is valid ({names})")
    return EXIT_OK


def _invalid(lines: list[str], error: LoadError, as_json: bool, out: Output) -> int:
    if as_json:
        problems = [{"path": path, "message": message} for path, message in error.problems]
        out.text(to_json({"valid": False, "problems": problems}))
        return EXIT_FAILED
    count = len(lines)
    raise CliError(
        f"the configuration is invalid: {count} problem{'s' if count != 1 else ''}",
        EXIT_FAILED,
        lines,
    )
