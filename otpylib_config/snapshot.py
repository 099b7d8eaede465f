"""The published, immutable view of the effective configuration
(docs/architecture.md, The one rule).

Readers look paths up here without sending any message. Each snapshot memoises the paths
it has been asked for in ``cache``, so a repeated read is one dict lookup. When the manager
publishes a successor it hands the cache over, looking up again only the entries of nodes
that changed (every ancestor-or-self of a changed leaf) in the new tree: a path that was read
before stays one dict lookup after it changed (the writer pays the walk, once, instead of
the first reader), a put stays O(depth) (without a schema that transforms the tree, which
makes a whole new view; see schema_view), and the old snapshot, which loses its cache, still
answers correctly by walking its tree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from otpylib_config.paths import Path, parse_path
from otpylib_config.tree import MISSING, get_in
from otpylib_config.values import EMPTY, Section


class Snapshot:
    """One version of the effective configuration; never changes once published."""

    __slots__ = ("_hash", "cache", "model", "raw", "tree", "version")

    def __init__(
        self,
        tree: Section = EMPTY,
        version: int = 0,
        model: Any = None,
        raw: Section | None = None,
    ) -> None:
        self.tree = tree
        self.version = version
        self.model = model  # the schema's validated model, if the spec has a pydantic schema
        self.raw = tree if raw is None else raw
        """The merged sources and overrides, before the schema made ``tree`` of them (the
        same object when there is no schema that transforms)."""
        self.cache: dict[str, Any] = {}
        self._hash: str | None = None

    def lookup(self, path: str) -> Any:
        """The value at ``path`` or ``MISSING``; raises ``InvalidPathError`` for bad paths."""
        value = get_in(self.tree, parse_path(path))
        if value is not MISSING:
            self.cache[path] = value
        return value

    def successor(
        self, tree: Section, changed: Iterable[Path], model: Any = None, raw: Section | None = None
    ) -> Snapshot:
        """The next version, taking over this snapshot's cache with the changed nodes that
        were in it looked up again in ``tree`` (dropped if gone)."""
        nxt = Snapshot(tree, self.version + 1, model, raw)
        cache, self.cache = self.cache, {}
        for leaf in changed:
            for depth in range(1, len(leaf) + 1):
                key = ".".join(leaf[:depth])
                if key in cache:
                    value = get_in(tree, leaf[:depth])
                    if value is MISSING:
                        del cache[key]
                    else:
                        cache[key] = value
        nxt.cache = cache
        return nxt

    def with_raw(self, raw: Section, model: Any) -> Snapshot:
        """This version again, over a merged tree that changed where the schema's view did
        not (a value written ``"8001"`` instead of ``8001``): readers see nothing new."""
        same = Snapshot(self.tree, self.version, model, raw)
        same.cache, self.cache = self.cache, {}
        same._hash = self._hash
        return same

    @property
    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON form; equal configurations hash equal."""
        if self._hash is None:
            text = json.dumps(self.tree, sort_keys=True, separators=(",", ":"), default=str)
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash
