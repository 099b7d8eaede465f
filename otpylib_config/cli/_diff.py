"""``diff``: what differs between two configurations of one application.

The left side is what the usual offline options describe; ``--against PROFILE``,
``--against-spec REF`` and ``--against-file PATH`` say what the right side changes (they
combine: another spec *and* another profile). Values are compared as loaded, so two
different secrets count as a change, but printed redacted, so the diff says *that* a secret
differs without showing either.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from otpylib_config.cli._errors import EXIT_FAILED, EXIT_OK, UsageError
from otpylib_config.cli._formats import compact, to_json
from otpylib_config.cli._output import Output
from otpylib_config.cli._render import ABSENT, leaves, shown_at
from otpylib_config.cli._sources import Recipe, load_recipe
from otpylib_config.oneshot import LoadedConfig
from otpylib_config.values import same


@dataclass
class Differences:
    """Leaf paths only on the right (added), only on the left (removed), or in both with
    different values (changed), each with its redacted value(s)."""

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


def against(args: argparse.Namespace, left: Recipe) -> Recipe:
    """The right side: the left one with what the ``--against*`` options replace."""
    if args.against is None and args.against_spec is None and args.against_files is None:
        raise UsageError(
            "diff needs something to compare against: --against PROFILE, "
            "--against-spec MODULE:ATTR or --against-file PATH"
        )
    right = dataclasses.replace(
        left,
        profile=left.profile if args.against is None else args.against,
        spec=left.spec if args.against_spec is None else args.against_spec,
        files=left.files if args.against_files is None else _files(args.against_files),
    )
    if right == left:
        raise UsageError("--against* names the same configuration as the left side")
    return right


def _files(paths: list[str]) -> tuple[tuple[str, bool], ...]:
    """``--against-file`` paths as the left side's ``(path, optional)`` pairs."""
    return tuple((path, False) for path in paths)


def diff(args: argparse.Namespace, out: Output) -> int:
    """Print what changes from the left configuration to the right; exit 1 if anything."""
    left = Recipe.from_args(args)
    right = against(args, left)
    found = compare(load_recipe(left), load_recipe(right))
    if args.json:
        out.text(to_json(_as_data(found, left, right)))
    else:
        _write(found, left, right, out)
    return EXIT_FAILED if found else EXIT_OK


def compare(left: LoadedConfig, right: LoadedConfig) -> Differences:
    """Leaf-by-leaf differences, compared on the real values, shown redacted."""
    shown_left, shown_right = left.dump(), right.dump()
    old, new = dict(_raw_leaves(left, shown_left)), dict(_raw_leaves(right, shown_right))
    found = Differences()
    for path in sorted(old.keys() | new.keys()):
        segments = path.split(".")
        if path not in new:
            found.removed[path] = shown_at(shown_left, segments)
        elif path not in old:
            found.added[path] = shown_at(shown_right, segments)
        elif not same(old[path], new[path]):
            found.changed[path] = (shown_at(shown_left, segments), shown_at(shown_right, segments))
    return found


def _raw_leaves(loaded: LoadedConfig, dumped: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every leaf of the unredacted configuration: ``dump()`` names the top-level keys
    (a public API that hides nothing but values), ``get`` gives each one as loaded."""
    found: list[tuple[str, Any]] = []
    for key in dumped:
        value = loaded.get(key, ABSENT)
        if value is not ABSENT:
            found += leaves(value, key) if isinstance(value, dict) else [(key, value)]
    return found


def _write(found: Differences, left: Recipe, right: Recipe, out: Output) -> None:
    out.line(out.style(f"--- {left.label()}", "red"))
    out.line(out.style(f"+++ {right.label()}", "green"))
    rows = [(p, "-", compact(v)) for p, v in found.removed.items()]
    rows += [(p, "+", compact(v)) for p, v in found.added.items()]
    rows += [(p, "~", f"{compact(a)} -> {compact(b)}") for p, (a, b) in found.changed.items()]
    colours = {"-": "red", "+": "green", "~": "yellow"}
    for path, mark, text in sorted(rows):
        out.line(f"{out.style(mark, colours[mark])} {path}: {text}")
    count = len(found)
    out.line(f"{count} difference{'s' if count != 1 else ''}" if count else "no differences")


def _as_data(found: Differences, left: Recipe, right: Recipe) -> dict[str, Any]:
    return {
        "left": left.label(),
        "right": right.label(),
        "equal": not found,
        "added": found.added,
        "removed": found.removed,
        "changed": {p: {"old": a, "new": b} for p, (a, b) in found.changed.items()},
    }
