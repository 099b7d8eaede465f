"""The subcommand registry: each command is one record, not a branch of a big function.

A command names its arguments and how it runs offline (reading the application's own
sources) and/or online (asking a running server's admin API). The parser and the
dispatcher are built from the registry, so a later command or group (``fleet status``,
``fleet wait``) is one :func:`register` call in a module of its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otpylib_config.cli._http import AdminClient
    from otpylib_config.cli._output import Output

OfflineRun = Callable[[argparse.Namespace, "Output"], int]
"""Reads the sources named on the command line and returns the exit code."""
OnlineRun = Callable[["AdminClient", argparse.Namespace, "Output"], Awaitable[int]]
"""Talks to the server through a connected client and returns the exit code."""
DirectRun = Callable[[argparse.Namespace, "Output"], int]
"""Runs by itself, with neither the sources nor the admin API (``fleet`` reads etcd)."""


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without arguments of its own."""


@dataclass(frozen=True)
class Command:
    """One subcommand. ``summary`` is its line in the command list, ``description`` and
    ``examples`` its ``--help``; a group (``children``) runs nothing itself. A command runs
    offline and/or online, or ``direct``: by itself, with options of its own only.
    ``exit_codes``: its own ``--help`` text for them, when the general one does not fit."""

    name: str
    summary: str
    description: str
    examples: str = ""
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    offline: OfflineRun | None = None
    online: OnlineRun | None = None
    direct: DirectRun | None = None
    exit_codes: str = ""
    children: tuple[Command, ...] = field(default=())

    @property
    def modes(self) -> tuple[str, ...]:
        """``("offline", "online")``, or the one of them the command has."""
        return tuple(
            mode for mode, run in (("offline", self.offline), ("online", self.online)) if run
        )


_COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a top-level command (or group); a second one of the same name is a bug."""
    if command.name in _COMMANDS:
        raise ValueError(f"the command {command.name!r} is registered twice")
    if not command.children and not command.modes and command.direct is None:
        raise ValueError(f"the command {command.name!r} has no way to run")
    _COMMANDS[command.name] = command
    return command


def commands() -> tuple[Command, ...]:
    """Every registered command, in registration order (the order ``--help`` lists)."""
    return tuple(_COMMANDS.values())
