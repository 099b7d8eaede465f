"""A Consul KV prefix (or one key holding a whole document) as a layer, pushed by
blocking queries (docs/consul.md).

Prefix mode: ``myapp/config/database/url`` under ``prefix="myapp/config/"`` is the path
``database.url``; values decode as UTF-8 and are coerced like environment values (kept as
text where the schema wants text). Document mode (``key=...``): one key holds a TOML, JSON
or YAML document.

``load`` is one bounded read (``timeout``), so Consul being down at start-up delays the
start by at most that long; the source is not required by default, so the tree starts on
its other sources and ``status()`` shows this one failing until Consul answers. ``watch``
keeps one blocking query open and follows Consul's index rules: index went down → reset
and read again; otherwise ``changed()`` only if the decoded data differs from the layer the
tree serves (so an index bump alone notifies nobody, and a reload that failed is retried at
the next answer). Errors end the watch with a :class:`ConsulError`; the source's watcher
process reports it and starts a new watch after a backoff.

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
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread

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
Decoded = tuple[Section, dict[KeyPath, str], list[Any]]
"""A read, decoded: the layer, each path's origin, and Consul's JSON for the cache."""


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
        self._seen: Section | None = None
        self._origins: dict[KeyPath, str] = {}
        self._cached_document: list[Any] | None = None
        self._loaded: Decoded | None = None
        """What ``load`` returned, until the tree accepts it."""
        self._pending: Decoded | None = None
        """What ``watch`` last read and reported: the next ``load`` takes it instead of
        reading Consul again."""
        self._resync = False
        """A watch failed: the next one reports its first answer even if nothing changed,
        so that the manager's reload clears the failure from ``status()``."""

    _shape: SchemaShape | None = None
    """The schema's shape: prefix-mode values are text where the schema wants text."""

    def configure(self, context: SourceContext) -> None:
        self._shape = context.shape

    # -- loading ---------------------------------------------------------------------------

    async def load(self) -> Section:
        decoded, self._pending = self._pending, None
        if decoded is None:
            try:
                decoded = await self._read()
            except ConsulError as exc:
                raise SourceError(self.name, str(exc), fallback=await self._fallback()) from None
        self._loaded = decoded
        return decoded[0]

    async def _read(self) -> Decoded:
        async with self._client() as client:
            read = await client.read(self.key, recurse=self.recurse, timeout=self.timeout)
        return (*self._decode(read), read.document)

    async def accepted(self, layer: Section) -> None:
        """Only now is ``layer`` what the tree serves: remember it, and cache it on disk."""
        if self._loaded is None or self._loaded[0] is not layer:
            return
        _, origins, document = self._loaded
        self._seen, self._origins, self._loaded = layer, origins, None
        await self._save(document)

    def origin(self, path: KeyPath) -> str:
        return self._origins.get(path) or self._origins.get(()) or self.name

    # -- watching --------------------------------------------------------------------------

    @property
    def pushes(self) -> bool:
        return True

    async def watch(self, changed: Changed) -> None:
        """Blocking queries until cancelled; raises :class:`ConsulError` on any failure."""
        try:
            await self._follow(changed)
        except BaseException:
            self._resync = True
            raise

    async def _follow(self, changed: Changed) -> None:
        loop = asyncio.get_running_loop()
        index, last_query = 0, float("-inf")
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
                layer, origins = self._decode(read)
                # Compared on every answer, not only on a new index: a reload that failed
                # or was rejected after an earlier answer is retried at the next one.
                if self._resync or not same(layer, self._seen):
                    self._resync = False
                    self._pending = (layer, origins, read.document)
                    await changed()

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, read: KVRead) -> tuple[Section, dict[KeyPath, str]]:
        if self.recurse:
            return self._prefix_layer(read.entries)
        return self._document_layer(read.entries)

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
            await anyio.to_thread.run_sync(write_json_atomically, self.cache_path, saved)
        except OSError as exc:
            logger.warning("%s: cannot save the cache %s: %s", self.name, self.cache_path, exc)
            return
        self._cached_document = document

    async def _fallback(self) -> Section | None:
        """The cached layer, while nothing was loaded from Consul in this process."""
        if self.cache_path is None or self._seen is not None:
            return None
        try:
            return await anyio.to_thread.run_sync(self._read_cache)
        except (OSError, ValueError, ConsulError) as exc:
            logger.warning("%s: cannot use the cache %s: %s", self.name, self.cache_path, exc)
            return None

    def _read_cache(self) -> Section | None:
        assert self.cache_path is not None
        try:
            saved = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            raise ValueError("it was saved for another Consul key or is not a cache file")
        entries = decode_entries(saved.get("entries"), str(self.cache_path))
        logger.warning("%s: serving the values cached in %s", self.name, self.cache_path)
        layer, origins = self._decode(KVRead(1, entries, saved["entries"]))
        self._origins = {path: f"{where} [cached]" for path, where in origins.items()}
        return layer

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
