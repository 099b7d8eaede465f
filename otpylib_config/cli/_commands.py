"""The built-in commands, one registry record each.

Only what a command is (its arguments, help, and which functions run it offline or
online) lives here; what it does lives in :mod:`._offline`, :mod:`._online`,
:mod:`._diff` and :mod:`._watch`, which are imported only when a command runs, so
``--help`` and offline commands never import aiohttp.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from otpylib_config.cli._parser import format_option, json_option, positive_int
from otpylib_config.cli._registry import Command, register

if TYPE_CHECKING:
    from otpylib_config.cli._http import AdminClient
    from otpylib_config.cli._output import Output

Args = argparse.Namespace


def _offline(name: str) -> Callable[[Args, Output], int]:
    """The offline function ``name``, imported when it runs."""

    def run(args: Args, out: Output) -> int:
        from otpylib_config.cli import _diff, _offline

        module = _diff if name == "diff" else _offline
        function: Callable[[Args, Output], int] = getattr(module, name)
        return function(args, out)

    return run


def _online(name: str) -> Callable[[AdminClient, Args, Output], Awaitable[int]]:
    """The online function ``name``, imported (with aiohttp's client) when it runs."""

    async def run(client: AdminClient, args: Args, out: Output) -> int:
        from otpylib_config.cli import _online, _watch

        module = _watch if name == "watch" else _online
        function: Callable[[AdminClient, Args, Output], Awaitable[int]] = getattr(module, name)
        return await function(client, args, out)

    return run


def _path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a dotted configuration path (database.url)")


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    format_option(parser)
    parser.add_argument("--path", metavar="P", help="only the subtree at P")


def _get_arguments(parser: argparse.ArgumentParser) -> None:
    _path(parser)
    parser.add_argument(
        "-r", "--raw", action="store_true", help="a string value as itself, without JSON quotes"
    )


def _explain_arguments(parser: argparse.ArgumentParser) -> None:
    _path(parser)
    json_option(parser, "the explanation")


def _put_arguments(parser: argparse.ArgumentParser) -> None:
    _path(parser)
    parser.add_argument(
        "value", metavar="VALUE", help="the value as JSON: 200, true, '\"info\"', '{\"a\": 1}'"
    )


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what to compare against (combine them freely)")
    group.add_argument("--against", metavar="PROFILE", help="the same sources, another profile")
    group.add_argument("--against-spec", metavar="MODULE:ATTR", help="another spec")
    group.add_argument(
        "--against-file",
        dest="against_files",
        metavar="PATH",
        action="append",
        help="other files instead of the --file ones (repeatable, lowest priority first)",
    )
    json_option(parser, "the differences")


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pattern",
        metavar="PATTERN",
        nargs="?",
        default="**",
        help="a glob of paths: * one segment, ** any (default: **, everything)",
    )
    parser.add_argument(
        "--count", metavar="N", type=positive_int, help="exit 0 after N changes were printed"
    )


register(
    Command(
        "show",
        "print the merged configuration (redacted)",
        "Print the whole merged configuration, or the subtree at --path, redacted as dump()\n"
        "redacts it.",
        "  {prog} show --spec myapp.config:spec --format toml\n"
        "  {prog} show --file config.toml --env-prefix APP_ --path database\n"
        "  {prog} show --url http://127.0.0.1:8081",
        _show_arguments,
        _offline("show"),
        _online("show"),
    )
)
register(
    Command(
        "get",
        "print the value at PATH as JSON (exit 4 if absent)",
        "Print the value (or section) at PATH as JSON, redacted. Exit 4 if there is none.",
        "  {prog} get database.pool_size --spec myapp.config:spec\n"
        "  {prog} get log.level --raw --url http://127.0.0.1:8081",
        _get_arguments,
        _offline("get"),
        _online("get"),
    )
)
register(
    Command(
        "explain",
        "say where the value at PATH comes from and what it overrides",
        "Print the value at PATH, the source and origin (file and key, variable, put) that\n"
        "gave it, and every lower layer it overrides. Exit 4 if nothing sets it.",
        "  {prog} explain database.pool_size --file config.toml --env-prefix APP_\n"
        "  {prog} explain rate_limiting --json --url http://127.0.0.1:8081",
        _explain_arguments,
        _offline("explain"),
        _online("explain"),
    )
)
register(
    Command(
        "validate",
        "load and validate as start-up would (for CI and init containers)",
        "Load every source and validate the result exactly as start-up would. Print one OK\n"
        "line and exit 0, or print every problem (its path and where the value came from)\n"
        "and exit 1.",
        "  {prog} validate --spec myapp.config:spec --profile prod\n"
        "  {prog} validate --file config.toml --file config.{profile}.toml --profile staging",
        lambda parser: json_option(parser, "the verdict and problems"),
        _offline("validate"),
    )
)
register(
    Command(
        "diff",
        "compare two configurations (profiles, specs or files); exit 1 if they differ",
        "Compare the configuration the offline options describe (the left side) with another\n"
        "one: --against PROFILE keeps the sources and changes the profile, --against-spec\n"
        "and --against-file replace the spec or the files. Prints added (+), removed (-) and\n"
        "changed (~) paths with redacted values; exit 0 if equal, 1 if they differ.",
        "  {prog} diff --spec myapp.config:spec --profile dev --against prod\n"
        "  {prog} diff --spec old.config:spec --against-spec new.config:spec\n"
        "  {prog} diff --file config.toml --against-file config.toml --against-file next.toml",
        _diff_arguments,
        _offline("diff"),
    )
)
register(
    Command(
        "put",
        "set a runtime override (VALUE is JSON)",
        "Set the runtime override at PATH to VALUE (JSON: quote strings, '\"info\"'). It wins\n"
        "over every source until deleted; the server's writable globs say where it may go.",
        "  {prog} put rate_limiting.per_ip 200\n  {prog} put log.level '\"debug\"'",
        _put_arguments,
        online=_online("put"),
    )
)
register(
    Command(
        "delete",
        "remove the runtime override at PATH",
        "Remove the runtime override at or below PATH, so the lower layers show again.\n"
        "No override there is not an error.",
        "  {prog} delete rate_limiting.per_ip",
        _path,
        online=_online("delete"),
    )
)
register(
    Command(
        "reload",
        "reload every source now (exit 1 if one failed)",
        "Reload every source now and print the version and the changed paths; exit 1 if a\n"
        "source reported an error.",
        "  {prog} reload --url http://127.0.0.1:8081",
        lambda parser: json_option(parser, "the reload result"),
        online=_online("reload"),
    )
)
register(
    Command(
        "status",
        "print the server's health (exit 1 if unhealthy)",
        "Print the version, the config hash, each source's and process's health; exit 0 if\n"
        "the tree is healthy, 1 if not.",
        "  {prog} status --url http://127.0.0.1:8081\n  {prog} status --json",
        lambda parser: json_option(parser, "the status"),
        online=_online("status"),
    )
)
register(
    Command(
        "watch",
        "print one line per change as it happens",
        "Follow the server's change events: one line per change, 'VERSION PATH: OLD -> NEW'\n"
        "(redacted). A dropped connection is resumed (Last-Event-ID) with a bounded backoff;\n"
        "if the server no longer kept what was missed, one 'resynced' line says so. Ctrl-C\n"
        "or SIGTERM stops it with exit 0.",
        "  {prog} watch 'rate_limiting.**'\n  {prog} watch --count 1 feature_flags.new_ui",
        _watch_arguments,
        online=_online("watch"),
    )
)

from otpylib_config.cli import _fleet  # noqa: E402, F401  (registers the fleet group)
