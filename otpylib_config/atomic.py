"""Files replaced atomically: the runtime layer's snapshot and the Consul source's cache.

Temp file, fsync, rename, fsync the directory, so that a crash at any point leaves the old
file or the new one, never a mix (and at worst a temp file, which its owner removes).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Temp file, fsync, rename, fsync the directory: a crash leaves the old or the new file
    (and at worst a temp file, which ``restore`` removes). Mode 0600, as mkstemp makes it."""
    descriptor, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for piece in [data] if isinstance(data, bytes) else data:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """``document`` as indented JSON, written atomically (the Consul source's cache)."""
    write_atomically(path, json.dumps(document, indent=1, sort_keys=True).encode())


def fsync_directory(directory: Path) -> None:
    """A rename or a new file is durable only once its directory is synced."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
