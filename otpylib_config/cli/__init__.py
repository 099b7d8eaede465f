"""The ``otpylib-config`` command: inspect configurations offline, operate servers online.

``main(argv)`` parses, picks the mode, runs the command and returns its exit code; every
expected failure is a :class:`~._errors.CliError` printed as one message (and its
details), never a traceback. What each module does:

* ``_parser``: argparse, built from ``_registry`` (``_commands`` registers the commands)
* ``_dispatch``: offline or online, and running the command there
* ``_sources`` / ``_specref``: the offline spec (``--spec``, ``--file``, ``--env-prefix``)
* ``_offline``, ``_diff``: offline commands; ``_http``, ``_online``, ``_watch``: online ones
* ``_render``, ``_formats``: answers as text; ``_output``: the only writer to the terminal
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from otpylib_config.cli._errors import EXIT_CODES_HELP, EXIT_USAGE, CliError
from otpylib_config.cli._output import Output, quiet_library_logs, silence_broken_pipe
from otpylib_config.cli._registry import Command, commands, register

__all__ = ["EXIT_CODES_HELP", "Command", "commands", "main", "register"]

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from otpylib_config.cli import _commands  # noqa: F401  (registers the built-in commands)
    from otpylib_config.cli._dispatch import run
    from otpylib_config.cli._parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output()
    quiet_library_logs()
    prog = args.command_parser.prog  # "otpylib-config get", "otpylib-config fleet wait"
    try:
        return run(args.command_record, args, out)
    except CliError as exc:
        out.error(prog, exc.message, exc.details)
        if exc.code == EXIT_USAGE:
            out.notice(f"see '{prog} --help'")
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head` stopped reading: not an error of ours
        silence_broken_pipe()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
