"""The argparse parser, built from the command registry.

Each command gets the option groups of the modes it runs in: offline (the application's
own sources) and online (a running server). ``--help`` of every command therefore lists
exactly what applies to it, with examples and the exit codes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from otpylib_config.cli._errors import EXIT_CODES_HELP
from otpylib_config.cli._formats import FORMATS
from otpylib_config.cli._http import TOKEN_ENV, URL_ENV
from otpylib_config.cli._registry import Command, commands

PROG = "otpylib-config"
DEFAULT_TIMEOUT = 10.0

DESCRIPTION = """\
Inspect and operate otpylib-config configurations.

Offline, from the application's own sources (--spec module:attribute, or --file and
--env-prefix): show, get, explain, validate and diff see exactly what the service would
load at start-up. Online, against a running tree's admin API (--url, or $OTPYLIB_CONFIG_URL):
show, get, explain, put, delete, reload, status and watch. Against etcd, where trees
with ConfigSpec(fleet=...) announce themselves: fleet status and fleet wait. Values are
printed redacted as dump() redacts them."""

EPILOG = f"""\
examples:
  {PROG} validate --spec myapp.config:spec --profile prod
  {PROG} show --file config.toml --file config.{{profile}}.toml --profile dev --format yaml
  {PROG} diff --spec myapp.config:spec --profile dev --against prod
  {PROG} get database.pool_size --url http://127.0.0.1:8081
  {PROG} put rate_limiting.per_ip 200 --url http://127.0.0.1:8081
  {PROG} watch 'rate_limiting.**' --url http://127.0.0.1:8081
  {PROG} fleet wait --hash 3f2a9c1 --nodes 3 --etcd http://127.0.0.1:2379

Run '{PROG} COMMAND --help' for the options of a command.

environment:
  {URL_ENV}    admin API base URL (like --url)
  {TOKEN_ENV}  bearer token (like --token; preferred: a flag shows in ps)
  OTPYLIB_CONFIG_ETCD   etcd endpoints for the fleet commands, comma-separated
  NO_COLOR              set to turn colour off (colour is only used on a terminal)

{EXIT_CODES_HELP}"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; wider option column so help reads in one pass."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _append_file(optional: bool) -> type[argparse.Action]:
    """An action appending ``(path, optional)`` to ``files``, so ``--file`` and
    ``--optional-file`` keep their relative order (the order is the priority)."""

    class AppendFile(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: str | Sequence[Any] | None,
            option_string: str | None = None,
        ) -> None:
            files = list(getattr(namespace, self.dest, None) or [])
            files.append((str(values), optional))
            setattr(namespace, self.dest, files)

    return AppendFile


def _offline_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "offline: read the application's own sources (what it would load at start-up)"
    )
    group.add_argument(
        "--spec",
        metavar="MODULE:ATTR",
        help="the application's ConfigSpec, or a zero-argument callable returning one "
        "(myapp.config:spec); the current directory is on sys.path",
    )
    group.add_argument(
        "--file",
        dest="files",
        metavar="PATH",
        action=_append_file(False),
        help="a TOML/JSON/YAML file layered on top (repeatable, lowest priority first; "
        "{profile} in the path is the profile)",
    )
    group.add_argument(
        "--optional-file",
        dest="files",
        metavar="PATH",
        action=_append_file(True),
        help="like --file, but a missing file is an empty layer",
    )
    group.add_argument(
        "--env-prefix",
        dest="env_prefixes",
        metavar="PREFIX",
        action="append",
        help="environment variables PREFIX* on top (APP_DB__PORT -> db.port); repeatable",
    )
    group.add_argument("--env-file", metavar="PATH", help="a .env file under the environment")
    group.add_argument(
        "--profile",
        metavar="NAME",
        help="the profile ({profile} in file paths); default: the spec's, or $CONFIG_PROFILE",
    )
    return parent


def _online_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("online: ask a running server's admin API")
    group.add_argument("--url", metavar="URL", help=f"the admin API base URL (default: ${URL_ENV})")
    group.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"bearer token (default: ${TOKEN_ENV}, which keeps it out of ps and history)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        help=f"how long a request may take (default {DEFAULT_TIMEOUT:g})",
    )
    return parent


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts (``watch --count``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def format_option(parser: argparse.ArgumentParser) -> None:
    """``--format json|toml|yaml``, shared by the commands that print documents."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json (default, pretty), toml (needs [cli]) or yaml (needs [yaml])",
    )


def json_option(parser: argparse.ArgumentParser, what: str = "the answer") -> None:
    parser.add_argument("--json", action="store_true", help=f"{what} as JSON, for scripts")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per registered command (groups nest)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_commands(parser, commands(), PROG)
    return parser


def _add_commands(parser: argparse.ArgumentParser, group: Sequence[Command], prog: str) -> None:
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    sub.required = True
    offline, online = _offline_options(), _online_options()
    for command in group:
        parents = [
            p for mode, p in (("offline", offline), ("online", online)) if mode in command.modes
        ]
        child = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            epilog=_epilog(command, f"{prog} {command.name}"),
            formatter_class=_Formatter,
            parents=parents,
        )
        child.set_defaults(command_record=command, command_parser=child)
        command.arguments(child)
        if command.children:
            _add_commands(child, command.children, f"{prog} {command.name}")


def _epilog(command: Command, prog: str) -> str:
    modes = " and ".join(command.modes)
    where = f"runs {modes}" if command.modes else "a group of commands"
    examples = command.examples.replace("{prog}", PROG)
    head = f"examples:\n{examples}\n\n" if examples else ""
    if command.direct is not None:
        return head + (command.exit_codes or EXIT_CODES_HELP)
    return head + f"{prog} {where}.\n\n{command.exit_codes or EXIT_CODES_HELP}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otpylib-config")
    except PackageNotFoundError:
        return "(not installed)"
