"""Online commands: ask a running tree's admin API (docs/admin.md).

Each is one request and a rendering of its answer; the client turns every failure into
the exit code of its kind, so these functions only say what success looks like.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from otpylib_config.cli._errors import EXIT_FAILED, EXIT_OK, UsageError
from otpylib_config.cli._formats import render, to_json
from otpylib_config.cli._http import AdminClient
from otpylib_config.cli._offline import checked_path, write_explanation, write_value
from otpylib_config.cli._output import Output
from otpylib_config.cli._render import status_lines


async def show(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``GET /config`` (``?path=`` for a subtree) as a document."""
    params = {}
    if args.path is not None:
        checked_path(args.path)
        params["path"] = args.path
    answer = await client.request("GET", client.route("config"), params=params)
    what = f"the value at {args.path!r}" if args.path else "the configuration"
    out.text(render(answer.body, args.format, what))
    return EXIT_OK


async def get(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``GET /config/{path}``: the value as JSON; a 404 is exit 4."""
    checked_path(args.path)
    answer = await client.request("GET", client.route("config", args.path))
    write_value(answer.body, args.raw, out)
    return EXIT_OK


async def explain(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``GET /explain/{path}``, rendered as offline ``explain`` renders it."""
    checked_path(args.path)
    answer = await client.request("GET", client.route("explain", args.path))
    body = answer.body if isinstance(answer.body, dict) else {"path": args.path}
    return write_explanation(body, args.json, out)


def parse_value(path: str, text: str) -> Any:
    """VALUE as JSON; a usage error with a hint to quote strings, which is the usual slip.
    The text is never echoed back: it may be a secret typed without its quotes."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise UsageError(
            f"VALUE for {path} must be JSON ({exc}); quote a string as JSON, "
            """e.g. '"info"' for the string info"""
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value the configuration can hold")


async def put(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``PUT /config/{path}``: a runtime override, published when this returns."""
    checked_path(args.path)
    value = parse_value(args.path, args.value)
    answer = await client.request("PUT", client.route("config", args.path), body=value)
    out.line(f"{args.path}: set (version {_field(answer.body, 'version')})")
    return EXIT_OK


async def delete(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``DELETE /config/{path}``: lower layers show again; no override there is not an error."""
    checked_path(args.path)
    answer = await client.request("DELETE", client.route("config", args.path))
    removed = bool(_field(answer.body, "removed"))
    what = "override removed" if removed else "no override was set"
    out.line(f"{args.path}: {what} (version {_field(answer.body, 'version')})")
    return EXIT_OK


async def reload(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``POST /reload``: every source now; exit 1 if a source failed to load."""
    body = (await client.request("POST", client.route("reload"))).body
    changed = list(_field(body, "changed") or ())
    errors = list(_field(body, "errors") or ())
    if args.json:
        out.text(to_json(body))
        return EXIT_FAILED if errors else EXIT_OK
    out.line(f"reloaded: version {_field(body, 'version')}, {len(changed)} changed")
    for path in changed:
        out.line(f"  changed {path}")
    for error in errors:
        out.line(f"  {out.style('error', 'red')} {error}")
    return EXIT_FAILED if errors else EXIT_OK


async def status(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """``GET /status``: exit 0 if the tree is healthy, 1 if not (a health check)."""
    body = (await client.request("GET", client.route("status"))).body
    if args.json:
        out.text(to_json(body))
    else:
        for line in status_lines(body if isinstance(body, dict) else {}, out):
            out.line(line)
    return EXIT_OK if _field(body, "healthy") else EXIT_FAILED


def _field(body: Any, name: str) -> Any:
    return body.get(name) if isinstance(body, dict) else None
