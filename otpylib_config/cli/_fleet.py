"""``fleet status`` and ``fleet wait``: the nodes announced in etcd, and whether they agree
(docs/fleet.md).

These commands read etcd directly (``--etcd``, or ``$OTPYLIB_CONFIG_ETCD``): neither the
application's sources (offline) nor one server's admin API (online). The etcd client
(aiohttp) is imported only when a command runs, so ``--help`` stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from otpylib_config.cli._errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    UsageError,
)
from otpylib_config.cli._output import Output
from otpylib_config.cli._parser import json_option, positive_int
from otpylib_config.cli._registry import Command, register
from otpylib_config.fleet.options import DEFAULT_PREFIX
from otpylib_config.sources.etcd_kv import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from otpylib_config.fleet import Fleet, FleetReader, Node

ETCD_ENV = "OTPYLIB_CONFIG_ETCD"
DEFAULT_ETCD = DEFAULT_ENDPOINT
REQUEST_TIMEOUT = 5.0
POLL_S = 0.5
SHORT_HASH = 12
MIN_HASH_PREFIX = 7

Args = argparse.Namespace

FLEET_HELP = f"""\
fleet commands read etcd directly: --etcd URL (repeatable), else ${ETCD_ENV}
(comma-separated), else {DEFAULT_ETCD}. The password comes from the variable that
--password-env names, never from the command line. --ca-file, --cert-file and --key-file
set up TLS for https endpoints. One command uses one connection and one etcd token.

exit codes:
  0  status: the nodes agree on the config hash and are healthy; wait: they converged
  1  status: they disagree, one is unhealthy, or none is announced; wait: timed out
  2  usage error (bad option, endpoint, prefix or hash)
  3  etcd cannot be reached (wait: no read succeeded during the wait), or it refused the
     credentials"""


# -- arguments -------------------------------------------------------------------------------


def _etcd_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("etcd: where the nodes announce themselves")
    group.add_argument(
        "--etcd",
        dest="etcd",
        metavar="URL",
        action="append",
        help=f"an etcd endpoint (repeatable; default: ${ETCD_ENV}, comma-separated, "
        f"else {DEFAULT_ETCD})",
    )
    group.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        metavar="P",
        help=f"the key prefix of the announcements (default {DEFAULT_PREFIX})",
    )
    group.add_argument("--tree", metavar="ID", help="only the nodes of config tree ID")
    group.add_argument("--username", metavar="U", help="etcd user (with --password-env)")
    group.add_argument(
        "--password-env",
        metavar="VAR",
        help="the environment variable holding the etcd user's password",
    )
    group.add_argument(
        "--ca-file", metavar="FILE", help="TLS: the CA bundle that signs etcd's certificate"
    )
    group.add_argument(
        "--cert-file", metavar="FILE", help="TLS: a client certificate (PEM) for etcd"
    )
    group.add_argument(
        "--key-file", metavar="FILE", help="TLS: the client certificate's key (with --cert-file)"
    )


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _etcd_arguments(parser)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=REQUEST_TIMEOUT,
        help=f"how long the read of etcd may take (default {REQUEST_TIMEOUT:g})",
    )
    json_option(parser, "the nodes and the verdict")


def _wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hash",
        required=True,
        metavar="H",
        help=f"the config hash to wait for (the whole hash, or its first {MIN_HASH_PREFIX}+ "
        "characters)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=60.0,
        help="give up after this long: exit 1, naming the nodes that do not agree (default 60)",
    )
    parser.add_argument(
        "--nodes",
        metavar="N",
        type=positive_int,
        help="also wait until at least N nodes are announced",
    )
    _etcd_arguments(parser)
    json_option(parser, "the final verdict")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


# -- what the options say ------------------------------------------------------------------------


def endpoints_of(args: Args, environ: Mapping[str, str]) -> list[str]:
    given = [e for e in (args.etcd or ()) if e.strip()]
    if given:
        return [e.strip() for e in given]
    from_env = [e.strip() for e in environ.get(ETCD_ENV, "").split(",") if e.strip()]
    return from_env or [DEFAULT_ETCD]


def credentials_of(args: Args, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    if args.password_env is None:
        if args.username is not None:
            raise UsageError("--username needs --password-env VAR (the variable with the password)")
        return None, None
    if args.username is None:
        raise UsageError("--password-env needs --username")
    password = environ.get(args.password_env)
    if not password:
        raise UsageError(f"--password-env: ${args.password_env} is not set")
    return args.username, password


def tls_of(args: Args) -> tuple[str | None, str | None, str | None]:
    if args.key_file is not None and args.cert_file is None:
        raise UsageError("--key-file needs --cert-file")
    return args.ca_file, args.cert_file, args.key_file


def reader_of(args: Args) -> FleetReader:
    """One reader for the whole command: one session, one etcd token (``fleet wait`` polls
    through it rather than authenticating again on every read)."""
    from otpylib_config.fleet import FleetReader

    endpoints = endpoints_of(args, os.environ)
    username, password = credentials_of(args, os.environ)
    ca_file, cert_file, key_file = tls_of(args)
    try:
        return FleetReader(
            endpoints,
            args.prefix,
            tree=args.tree,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
    except ValueError as exc:  # a bad endpoint, prefix, tree id or TLS file (named)
        raise UsageError(str(exc)) from None


async def _read(reader: FleetReader, timeout: float) -> Fleet:
    from otpylib_config.fleet import FleetError

    try:
        return await reader.read(timeout)
    except FleetError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from None


async def _status(args: Args) -> Fleet:
    async with reader_of(args) as reader:
        return await _read(reader, args.timeout)


# -- fleet status --------------------------------------------------------------------------------


def status(args: Args, out: Output) -> int:
    fleet = asyncio.run(_status(args))
    ok = fleet.agree and fleet.healthy
    for problem in fleet.problems:
        out.notice(f"skipped {problem}")
    if args.json:
        from otpylib_config.cli._formats import to_json

        out.text(to_json({**fleet.as_dict(), "ok": ok}))
        return EXIT_OK if ok else EXIT_FAILED
    if not fleet.nodes:
        out.line(f"no node is announced under {args.prefix}{args.tree + '/' if args.tree else ''}")
        return EXIT_FAILED
    for line in table_lines(fleet.nodes, out):
        out.line(line)
    out.line(verdict(fleet, out))
    return EXIT_OK if ok else EXIT_FAILED


def table_lines(nodes: Sequence[Node], out: Output, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    header = ("NODE", "TREE", "VERSION", "HASH", "HEALTHY", "STARTED", "AGE")
    rows = [
        (
            node.node,
            node.tree,
            str(node.version),
            node.config_hash[:SHORT_HASH],
            "yes" if node.healthy else "NO",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.started_at)),
            f"{max(0.0, node.age(now)):.1f}s",
        )
        for node in nodes
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str], healthy: bool = True) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if not healthy:
            cells[4] = out.style(cells[4], "red", "bold")
        return "  ".join(cells).rstrip()

    return [
        out.style(line(header), "bold"),
        *(line(row, n.healthy) for row, n in zip(rows, nodes, strict=True)),
    ]


def verdict(fleet: Fleet, out: Output) -> str:
    count = len(fleet.nodes)
    nodes = f"{count} node{'s' if count != 1 else ''}"
    unhealthy = [n.node for n in fleet.nodes if not n.healthy]
    sick = f"; unhealthy: {', '.join(unhealthy)}" if unhealthy else ""
    if fleet.agree:
        (only,) = fleet.hashes
        text = f"{nodes} agree on hash {only[:SHORT_HASH]}{sick}"
        return out.style(text, "green" if not unhealthy else "yellow")
    groups = "; ".join(
        f"{h[:SHORT_HASH]}: {', '.join(names)}"
        for h, names in sorted(fleet.hashes.items(), key=lambda item: -len(item[1]))
    )
    return out.style(
        f"{nodes} DISAGREE: {len(fleet.hashes)} hashes ({groups}){sick}", "red", "bold"
    )


# -- fleet wait ----------------------------------------------------------------------------------


def matches(node: Node, wanted: str) -> bool:
    return node.config_hash == wanted or (
        len(wanted) >= MIN_HASH_PREFIX and node.config_hash.startswith(wanted)
    )


def laggards(fleet: Fleet, wanted: str) -> list[str]:
    """Each node that does not report ``wanted`` and healthy, with what it reports."""
    return [
        f"{node.node} ({node.tree}): hash {node.config_hash[:SHORT_HASH]}, version "
        f"{node.version}{'' if node.healthy else ', UNHEALTHY'}"
        for node in fleet.nodes
        if not (matches(node, wanted) and node.healthy)
    ]


def wait(args: Args, out: Output) -> int:
    wanted = args.hash.strip().lower()
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise UsageError(f"--hash must be a hexadecimal config hash, got {args.hash!r}")
    if len(wanted) < MIN_HASH_PREFIX:
        raise UsageError(f"--hash needs at least {MIN_HASH_PREFIX} characters of the hash")
    return asyncio.run(_wait(args, wanted, out))


async def _wait(args: Args, wanted: str, out: Output) -> int:
    async with reader_of(args) as reader:
        return await _poll(reader, args, wanted, out)


async def _poll(reader: FleetReader, args: Args, wanted: str, out: Output) -> int:
    deadline = time.monotonic() + args.timeout
    minimum = args.nodes or 1
    last: Fleet | None = None
    last_error: str | None = None
    shown: tuple[Any, ...] | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            fleet = await _read(reader, max(0.1, min(REQUEST_TIMEOUT, left)))
        except CliError as exc:
            if exc.code != EXIT_UNREACHABLE:
                raise
            last_error = exc.message
            if shown != ("unreachable",):
                out.notice(f"etcd unreachable, retrying: {exc.message}")
                shown = ("unreachable",)
        else:
            last, last_error = fleet, None
            behind = laggards(fleet, wanted)
            if not behind and len(fleet.nodes) >= minimum:
                return _converged(fleet, wanted, args, out)
            progress = (len(fleet.nodes), tuple(behind))
            if progress != shown:
                out.notice(
                    f"waiting: {len(fleet.nodes) - len(behind)} of {len(fleet.nodes)} "
                    f"node(s) report {wanted[:SHORT_HASH]}"
                    + (f" (need at least {minimum})" if args.nodes else "")
                )
                shown = progress
        if time.monotonic() + POLL_S > deadline:
            break
        await asyncio.sleep(POLL_S)
    if last is None:
        raise CliError(
            f"etcd could not be reached within {args.timeout:g}s",
            EXIT_UNREACHABLE,
            (last_error,) if last_error else (),
        )
    return _timed_out(last, wanted, minimum, args, out, last_error)


def _converged(fleet: Fleet, wanted: str, args: Args, out: Output) -> int:
    if args.json:
        from otpylib_config.cli._formats import to_json

        out.text(to_json({**fleet.as_dict(), "converged": True, "hash": wanted}))
    else:
        count = len(fleet.nodes)
        out.line(
            out.style(
                f"{count} node{'s' if count != 1 else ''} report hash {wanted[:SHORT_HASH]} "
                "and are healthy",
                "green",
            )
        )
    return EXIT_OK


def _timed_out(
    fleet: Fleet, wanted: str, minimum: int, args: Args, out: Output, error: str | None
) -> int:
    behind = laggards(fleet, wanted)
    details = [*behind]
    if len(fleet.nodes) < minimum:
        details.append(f"only {len(fleet.nodes)} node(s) announced, {minimum} wanted")
    if error:
        details.append(f"the last read failed: {error}")
    if args.json:
        from otpylib_config.cli._formats import to_json

        out.text(
            to_json({**fleet.as_dict(), "converged": False, "hash": wanted, "behind": details})
        )
        return EXIT_FAILED
    raise CliError(
        f"the fleet did not converge on hash {wanted[:SHORT_HASH]} within {args.timeout:g}s",
        EXIT_FAILED,
        details,
    )


# -- the group -----------------------------------------------------------------------------------


register(
    Command(
        "fleet",
        "the nodes announced in etcd (FleetSpec) and whether they agree",
        "Read the announcements that trees with ConfigSpec(fleet=FleetSpec(...)) keep in\n"
        "etcd: which nodes run, at which version and config hash, and whether they are\n"
        "healthy.",
        "  {prog} fleet status --etcd http://etcd-1:2379 --tree myapp\n"
        "  {prog} fleet wait --hash 3f2a9c1 --timeout 120 --nodes 3",
        children=(
            Command(
                "status",
                "one line per node; exit 0 if they agree on the hash and are healthy",
                "Print every announced node (node, tree, version, short config hash, healthy,\n"
                "when it started, how long ago its announcement last changed) and whether\n"
                "they all report the same config hash. Exit 0 if they agree and all are\n"
                "healthy, 1 if not (or no node is announced), 3 if etcd cannot be read.",
                "  {prog} fleet status --etcd http://127.0.0.1:2379\n"
                "  {prog} fleet status --tree myapp --json\n"
                "  {prog} fleet status --username ops --password-env ETCD_PASSWORD",
                _status_arguments,
                direct=status,
                exit_codes=FLEET_HELP,
            ),
            Command(
                "wait",
                "wait until every node reports config hash H and is healthy",
                "Poll etcd until every announced node (at least N with --nodes) reports the\n"
                "config hash H and is healthy: exit 0. After --timeout, exit 1 naming the\n"
                "nodes that do not; exit 3 if no read of etcd succeeded meanwhile.",
                "  {prog} fleet wait --hash 3f2a9c1d --timeout 60\n"
                "  {prog} fleet wait --hash 3f2a9c1d --nodes 3 --tree myapp",
                _wait_arguments,
                direct=wait,
                exit_codes=FLEET_HELP,
            ),
        ),
    )
)
