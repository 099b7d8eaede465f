"""Which mode a command runs in, and running it there.

A command that exists in both modes runs online when a URL is given (``--url`` or
``$OTPYLIB_CONFIG_URL``) and offline when sources are (``--spec``, ``--file``,
``--env-prefix``). Both or neither is a usage error that says which choice there is:
guessing would answer from the wrong configuration, which is worse than no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping

from otpylib_config.cli._errors import UsageError
from otpylib_config.cli._http import TOKEN_ENV, URL_ENV
from otpylib_config.cli._output import Output
from otpylib_config.cli._registry import Command

OFFLINE_OPTIONS = "--spec/--file/--env-prefix"


def run(command: Command, args: argparse.Namespace, out: Output) -> int:
    """Run ``command`` in the mode the arguments choose; its exit code."""
    if command.direct is not None:
        return command.direct(args, out)
    mode = choose_mode(command, args, os.environ)
    if mode == "offline":
        assert command.offline is not None
        return command.offline(args, out)
    return asyncio.run(_online(command, args, out))


def choose_mode(command: Command, args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """``"offline"`` or ``"online"``; a :class:`UsageError` that explains the choice."""
    from otpylib_config.cli._sources import offline_given

    url, where = _url(args, environ)
    offline = "offline" in command.modes and offline_given(args)
    if command.modes == ("offline",):
        if not offline:
            raise UsageError(f"{command.name} reads the application's sources: pass {_HOW}")
        return "offline"
    if command.modes == ("online",):
        if url is None:
            raise UsageError(f"{command.name} asks a running server: pass --url or set ${URL_ENV}")
        return "online"
    if url is not None and offline:
        raise UsageError(
            f"both {where} and {OFFLINE_OPTIONS} were given: {command.name} either asks the "
            f"server (drop {OFFLINE_OPTIONS}) or reads the sources offline "
            f"({'unset $' + URL_ENV if where.startswith('$') else 'drop --url'})"
        )
    if url is None and not offline:
        raise UsageError(
            f"{command.name} needs to know where the configuration is: {_HOW} to read the "
            f"application's sources offline, or --url (or ${URL_ENV}) to ask a running server"
        )
    return "online" if url is not None else "offline"


_HOW = "--spec MODULE:ATTR, or --file PATH / --env-prefix PREFIX"


def _token(given: str | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token, stripped (a mounted secret ends in a newline); a token with a
    control character inside is a usage error that names where it came from, not it."""
    where, token = ("--token", given) if given else (f"${TOKEN_ENV}", environ.get(TOKEN_ENV))
    token = (token or "").strip()
    if any(not c.isprintable() for c in token):
        raise UsageError(f"{where} holds a control character; a bearer token cannot")
    return token or None


def _url(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The admin URL and where it came from (``--url`` or ``$OTPYLIB_CONFIG_URL``)."""
    given = getattr(args, "url", None)
    if given:
        return given, "--url"
    if "url" in vars(args) and environ.get(URL_ENV):
        return environ[URL_ENV], f"${URL_ENV}"
    return None, ""


async def _online(command: Command, args: argparse.Namespace, out: Output) -> int:
    from otpylib_config.cli._http import AdminClient

    assert command.online is not None
    url, _ = _url(args, os.environ)
    assert url is not None
    token = _token(args.token, os.environ)
    async with AdminClient(url, token, args.timeout) as client:
        return await command.online(client, args, out)
