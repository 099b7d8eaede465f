"""A Consul KV prefix (or one key holding a whole document) as a layer, pushed by
blocking queries (docs/consul.md; what the source keeps between calls, docs/sources.md).

Prefix mode: ``myapp/config/database/url`` under ``prefix="myapp/config/"`` is the path
``database.url``; values decode as UTF-8 and are coerced like environment values (kept as
text where the schema wants text). Document mode (``key=...``): one key holds a TOML, JSON
or YAML document.

``load`` is one bounded read (``timeout``), so Consul being down at start-up delays the
start by at most that long; the source is not required by default, so the tree starts on
its other sources and ``status()`` shows this one failing until Consul answers. ``watch``
keeps one blocking query open and follows Consul's index rules: index went down → reset
and read again. It hands each answer it decodes to the manager as ``changed(layer)``, so the
read travels in the message and no later ``load`` has to find it: the first answer of every
watch (the manager catches up with whatever happened while no watch ran), and every later
one whose data differs from the layer the tree serves (so an index bump alone notifies
nobody, and a layer the manager did not take is handed over again at the next answer).
Errors end the watch with a :class:`ConsulError`; the source's watcher process reports it
and starts a new watch after a backoff.

``cache_path``: every layer the tree accepted (validated and committed) is saved there
atomically, readable by the owner only; a process that starts while Consul is down serves
the saved values, still reported as failing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from otpylib_config import threads
from otpylib_config.atomic import write_json_atomically
from otpylib_config.errors import InvalidValueError, SourceError
from otpylib_config.parsers import ParseError, format_of, parse
from otpylib_config.schema_shape import SchemaShape, coerce_at
from otpylib_config.sources.base import Changed, Source, SourceContext
from otpylib_config.sources.consul_kv import ConsulError, Entry, KVClient, KVRead, decode_entries
from otpylib_config.tree import PathClash, build
from otpylib_config.values import Section, check_key, freeze, same

logger = logging.getLogger("otpylib_config")

DEFAULT_URL = "http://127.0.0.1:8500"
TOKEN_ENV = "CONSUL_HTTP_TOKEN"

KeyPath = tuple[str, ...]

UNACCEPTED = 8
"""How many layers read but not (yet) accepted the source remembers the origins and raw
entries of: one per reading or watch answer still on its way through the manager, and the
few the manager dropped or rejected, which nothing ever asks for again."""


@dataclass(frozen=True, slots=True, eq=False)
class _Decoded:
    """One read, decoded: the layer, each path's origin, and Consul's JSON for the cache."""

    layer: Section
    origins: Mapping[KeyPath, str]
    document: list[Any] | None
    """``None``: not known (a layer whose read was forgotten): nothing to cache."""


class ConsulSource(Source):
    """Keys under ``prefix`` (or the document in ``key``) on the Consul agent at ``url``.

    ``token`` (else ``$CONSUL_HTTP_TOKEN``) is sent as ``X-Consul-Token``. ``wait``: how
    long one blocking query may be held. ``timeout``: the bound on a plain read (and the
    margin on a blocking one); keep it below ``ConfigSpec.write_timeout``, which bounds
    ``Config.reload()``. ``min_interval``: the least time between queries.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        format: str | None = None,
        url: str = DEFAULT_URL,
        token: str | None = None,
        name: str | None = None,
        required: bool = False,
        secret: bool = False,
        wait: float = 60.0,
        timeout: float = 2.0,
        min_interval: float = 0.1,
        retry_first: float = 0.25,
        retry_max: float = 60.0,
        cache_path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (prefix is None) == (key is None):
            raise ValueError("ConsulSource takes either a prefix or a key=, not both")
        self.key = _key_or_prefix(prefix, key)
        self.recurse = prefix is not None
        self.format = None if self.recurse else format_of(self.key, format)
        self.url = url
        environ = os.environ if environ is None else environ
        self._token = token if token is not None else environ.get(TOKEN_ENV) or None
        self.name = name or f"consul:{self.key}"
        self.required = required
        self.secret = secret
        self.wait = wait
        self.timeout = timeout
        self.min_interval = min_interval
        self.watch_retry_first = retry_first
        self.watch_retry_max = retry_max
        self.cache_path = None if cache_path is None else Path(cache_path)
        # What each field is for, who writes and who reads it: docs/sources.md, ConsulSource.
        self._unaccepted: deque[_Decoded] = deque(maxlen=UNACCEPTED)
        """Reads handed out (by ``load`` or ``watch``) and not accepted yet, found by the
        identity of their layer: ``accepted`` takes exactly its own layer's metadata."""
        self._serving: _Decoded | None = None
        """The layer the tree serves, as last ``accepted``; only ``accepted`` writes it."""
        self._cached_document: list[Any] | None = None
        """What the cache file holds, as this process last wrote it (``accepted`` only)."""
        self._cached_origins: Mapping[KeyPath, str] = {}
        """The origins of the cache's layer, which ``load`` hands out as its fallback and
        the tree serves while it has accepted nothing from Consul."""

    _shape: SchemaShape | None = None
    """The schema's shape: prefix-mode values are text where the schema wants text."""

    def configure(self, context: SourceContext) -> None:
        self._shape = context.shape

    # -- loading ---------------------------------------------------------------------------

    async def load(self) -> Section:
        try:
            async with self._client() as client:
                read = await client.read(self.key, recurse=self.recurse, timeout=self.timeout)
            decoded = self._decode(read)
        except ConsulError as exc:
            raise SourceError(self.name, str(exc), fallback=await self._fallback()) from None
        return self._hand_out(decoded)

    def _hand_out(self, decoded: _Decoded) -> Section:
        """Remember ``decoded`` until its layer is accepted (or forgotten), and return it."""
        self._unaccepted.append(decoded)
        return decoded.layer

    async def accepted(self, layer: Section) -> None:
        """Only now is ``layer`` what the tree serves: remember it, and cache it on disk.

        Whichever read it came from, and in whatever order the manager committed them: a
        layer accepted after a newer one is still what the tree serves from now on."""
        decoded = self._take(layer)
        self._serving = decoded
        if decoded.document is not None:
            await self._save(decoded.document)

    def _take(self, layer: Section) -> _Decoded:
        if self._serving is not None and self._serving.layer is layer:
            return self._serving  # accepted again: nothing new to learn
        decoded = self._find(layer)
        if decoded is not None:
            self._unaccepted.remove(decoded)  # compared by identity: _Decoded has eq=False
            return decoded
        # Forgotten (more reads in flight than UNACCEPTED): served, but with no key to name.
        logger.debug("%s: accepted a layer whose read was forgotten", self.name)
        return _Decoded(layer, {}, None)

    def _find(self, layer: Section) -> _Decoded | None:
        return next((decoded for decoded in self._unaccepted if decoded.layer is layer), None)

    def origin(self, path: KeyPath, layer: Section | None = None) -> str:
        """The key (and its ``ModifyIndex``) behind ``path`` in the layer the tree serves,
        or in ``layer`` if given and still remembered (a candidate that validation judges)."""
        origins = self._origins_of(layer)
        return origins.get(path) or origins.get(()) or self.name

    def _origins_of(self, layer: Section | None) -> Mapping[KeyPath, str]:
        candidate = self._find(layer) if layer is not None else None
        if candidate is not None:
            return candidate.origins
        serving = self._serving
        return serving.origins if serving is not None else self._cached_origins

    # -- watching --------------------------------------------------------------------------

    @property
    def pushes(self) -> bool:
        return True

    async def watch(self, changed: Changed) -> None:
        """Blocking queries until cancelled; raises :class:`ConsulError` on any failure.

        The index a query resumes from is local to this watch: a new watch starts again
        from an ordinary read, and hands over its first answer whatever it holds.
        """
        loop = asyncio.get_running_loop()
        index, last_query, first = 0, float("-inf"), True
        async with self._client() as client:
            while True:
                await asyncio.sleep(max(0.0, last_query + self.min_interval - loop.time()))
                last_query = loop.time()
                read = await client.read(
                    self.key,
                    recurse=self.recurse,
                    index=index,
                    wait=self.wait,
                    timeout=self.wait * 17 / 16 + self.timeout,
                )
                if read.index < index:  # a snapshot restore or reaped tombstones
                    index = 0
                    continue
                index = read.index
                decoded = self._decode(read)
                # Compared on every answer, not only on a new index, and with the layer the
                # tree serves, not with the last one handed over: a layer that was dropped
                # or rejected after an earlier answer is handed over again at the next one.
                serving = self._serving
                if first or serving is None or not same(decoded.layer, serving.layer):
                    first = False
                    await changed(self._hand_out(decoded))

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, read: KVRead) -> _Decoded:
        if self.recurse:
            layer, origins = self._prefix_layer(read.entries)
        else:
            layer, origins = self._document_layer(read.entries)
        return _Decoded(layer, origins, read.document)

    def _prefix_layer(self, entries: tuple[Entry, ...]) -> tuple[Section, dict[KeyPath, str]]:
        found = [(e, path) for e in entries if (path := self._path_of(e.key)) is not None]
        try:
            layer = build((repr(e.key), path, _value(e, path, self._shape)) for e, path in found)
        except PathClash as exc:
            raise ConsulError(f"Consul keys {exc}") from None
        origins = {path: f"consul:{e.key} (ModifyIndex {e.modify_index})" for e, path in found}
        return layer, origins

    def _path_of(self, key: str) -> KeyPath | None:
        """The config path of a key under the prefix; ``None`` for folder markers."""
        relative = key[len(self.key) :] if key.startswith(self.key) else None
        if not relative or relative.endswith("/"):
            return None
        segments = tuple(relative.split("/"))
        try:
            for segment in segments:
                check_key(segment, relative)
        except InvalidValueError as exc:
            raise ConsulError(f"Consul key {key!r} cannot be a config path: {exc}") from None
        return segments

    def _document_layer(self, entries: tuple[Entry, ...]) -> tuple[Section, dict[KeyPath, str]]:
        entry = next((e for e in entries if e.key == self.key), None)
        if entry is None or entry.value is None:
            return Section(), {}
        assert self.format is not None
        try:
            layer = parse(entry.value, self.format)
        except ParseError as exc:
            raise ConsulError(f"Consul key {self.key!r}: {exc}") from None
        origin = f"consul:{self.key} (ModifyIndex {entry.modify_index})"
        return layer, {(): origin}

    # -- plumbing --------------------------------------------------------------------------

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[KVClient]:
        async with aiohttp.ClientSession() as session:
            yield KVClient(session, self.url, self._token, slow_retry=self.watch_retry_max)

    async def _save(self, document: list[Any]) -> None:
        if self.cache_path is None or document == self._cached_document:
            return
        saved = {"url": self.url, "key": self.key, "saved_at": time.time(), "entries": document}
        try:
            await threads.run_sync(write_json_atomically, self.cache_path, saved)
        except OSError as exc:
            logger.warning("%s: cannot save the cache %s: %s", self.name, self.cache_path, exc)
            return
        self._cached_document = document

    async def _fallback(self) -> Section | None:
        """The cached layer, while nothing was accepted from Consul in this process.

        The file is read in a worker thread; the origins are kept here, on the loop."""
        if self.cache_path is None or self._serving is not None:
            return None
        try:
            cached = await threads.run_sync(self._read_cache)
        except (OSError, ValueError, ConsulError) as exc:
            logger.warning("%s: cannot use the cache %s: %s", self.name, self.cache_path, exc)
            return None
        if cached is None:
            return None
        logger.warning("%s: serving the values cached in %s", self.name, self.cache_path)
        self._cached_origins = {path: f"{where} [cached]" for path, where in cached.origins.items()}
        return cached.layer

    def _read_cache(self) -> _Decoded | None:
        assert self.cache_path is not None
        try:
            saved = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            raise ValueError("it was saved for another Consul key or is not a cache file")
        entries = decode_entries(saved.get("entries"), str(self.cache_path))
        return self._decode(KVRead(1, entries, saved["entries"]))

    def __repr__(self) -> str:
        token = ", token=***" if self._token else ""
        return f"ConsulSource({self.key!r}, url={self.url!r}{token})"


def _key_or_prefix(prefix: str | None, key: str | None) -> str:
    text = prefix if prefix is not None else key
    if not isinstance(text, str) or text.startswith("/"):
        raise ValueError(f"a Consul key or prefix is a str not starting with '/', got {text!r}")
    if prefix is not None and prefix and not prefix.endswith("/"):
        return prefix + "/"  # "app/config" would also match "app/configx"
    if key is not None and (not key or key.endswith("/")):
        raise ValueError(f"ConsulSource(key=...) names one key, got {key!r}")
    return text


def _value(entry: Entry, path: KeyPath, shape: SchemaShape | None) -> Any:
    if entry.value is None:
        return ""
    try:
        text = entry.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConsulError(
            f"Consul key {entry.key!r}: value is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        return freeze(coerce_at(text, path, shape), ".".join(path))
    except ValueError as exc:  # InvalidValueError too: JSON with NaN or a dotted key
        raise ConsulError(f"Consul key {entry.key!r}: {exc}") from None
