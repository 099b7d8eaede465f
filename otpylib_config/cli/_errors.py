"""Exit codes and the one exception a command raises to end with one.

Every failure a user can cause or meet ends in a :class:`CliError` carrying the exit code
its kind documents (``--help``, docs/cli.md), so scripts and CI can tell "the config is
invalid" from "the server is down" without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
"""The answer is "no": validation failed, a diff found differences, the server is
unhealthy, a reload reported errors (and ``fleet wait`` timing out, later)."""
EXIT_USAGE = 2
"""The command line is wrong: argparse's own code, kept for every usage error."""
EXIT_UNREACHABLE = 3
"""The server cannot be reached, refused the credentials (401, 403) or is unavailable (503)."""
EXIT_NOT_FOUND = 4
"""No value at the path (offline, or a 404 from the server)."""
EXIT_SERVER = 5
"""The server gave an answer the CLI did not expect (a 5xx, a body that is not JSON)."""

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  validation failed, diff found differences, server unhealthy, reload had errors
  2  usage error (bad option, path, JSON value or --spec)
  3  cannot reach the server, or it refused the token (401/403), or it is unavailable (503)
  4  not found (no value at the path)
  5  unexpected answer from the server"""


class CliError(Exception):
    """End the command with ``code`` after printing ``message`` (and ``details``, one
    per line, such as every validation problem) on stderr."""

    def __init__(self, message: str, code: int, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = tuple(details)


class UsageError(CliError):
    """A mistake on the command line: exit code 2, with a pointer to ``--help``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
