"""The one place that writes to the terminal.

Nothing else in the package writes to ``sys.stdout`` or ``sys.stderr``: commands get an
:class:`Output` and say what to show, so tests can capture it and the colour rule lives in
one spot. Colour is used on a stream only when it is a terminal and ``NO_COLOR`` is unset
or empty (https://no-color.org), so piped output and CI logs stay plain text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "cyan": "36",
}


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` may get ANSI colour: a terminal, and no ``NO_COLOR`` asking not."""
    variables = os.environ if environ is None else environ
    if variables.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """Lines for stdout (the command's answer) and stderr (errors, progress, notices)."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self.colour = wants_colour(self._out)
        self._err_colour = wants_colour(self._err)

    def style(self, text: str, *styles: str) -> str:
        """``text`` in ``styles`` (``"red"``, ``"bold"``...) if stdout takes colour."""
        return _paint(text, styles) if self.colour else text

    def line(self, text: str = "") -> None:
        """One line of the answer, flushed so a follower (``watch``) sees it at once."""
        self._out.write(text + "\n")
        self._out.flush()

    def text(self, text: str) -> None:
        """A block of the answer (a document), newline-terminated."""
        self._out.write(text if text.endswith("\n") else text + "\n")
        self._out.flush()

    def notice(self, text: str) -> None:
        """Progress for a person (``watching ...``, ``reconnecting``): stderr, dimmed."""
        self._write_err(_paint(text, ("dim",)) if self._err_colour else text)

    def error(self, prog: str, message: str, details: tuple[str, ...] = ()) -> None:
        """``prog: error: message`` and each detail indented below it, on stderr."""
        label = _paint("error", ("red", "bold")) if self._err_colour else "error"
        self._write_err(f"{prog}: {label}: {message}")
        for detail in details:
            self._write_err(f"  {detail}")

    def _write_err(self, text: str) -> None:
        self._err.write(text + "\n")
        self._err.flush()


def _paint(text: str, styles: tuple[str, ...]) -> str:
    codes = ";".join(_CODES[s] for s in styles)
    return f"\x1b[{codes}m{text}\x1b[0m"


def silence_broken_pipe() -> None:
    """After ``| head`` closed the pipe: point stdout at devnull so the interpreter's final
    flush does not print a second traceback (the Python docs' recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's StringIO)
        pass
    finally:
        os.close(devnull)


def quiet_library_logs() -> None:
    """The library logs what a server operator needs (a source failed, kept its last good
    layer); the CLI reports the same failure itself as one error, so those log lines
    would only say it twice. A NullHandler keeps logging's last resort from printing them."""
    import logging

    for name in ("otpylib_config", "otpylib"):
        logging.getLogger(name).addHandler(logging.NullHandler())
