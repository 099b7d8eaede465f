"""An etcd v3 prefix (or one key holding a whole document) as a layer, pushed by one watch
stream (docs/etcd.md; the HTTP side is :mod:`otpylib_config.sources.etcd_kv`).

Prefix mode: ``/myapp/config/database/url`` under ``prefix="/myapp/config/"`` is the path
``database.url``; values decode as UTF-8 and are coerced as the Consul source's are (kept as
text where the schema wants text). Document mode (``key=...``): one key holds a TOML, JSON
or YAML document.

``load`` is one range read bounded by ``timeout`` across all endpoints; the source is not
required by default, so an etcd that is down at start-up delays the start by at most that
long and ``status()`` shows the source failing until etcd answers. ``watch`` follows etcd's
revisions: it starts from the layer the tree accepted last (its entries and the revision
of the read they came from) and watches from that revision + 1, so nothing written since
is missed, and it keeps the entries current from the watch events. A dropped stream resumes
from the last revision seen, on the next endpoint; a compacted revision makes it read the
whole prefix again and watch from there; every ``resync_interval`` it reads the prefix
again anyway, in case a push was lost, and opens the stream again when that read found
changes the stream never delivered (it went silent). Layers go to the manager as
``changed(layer)``.

``cache_path``: every accepted layer is saved there atomically (owner-only); a process that
starts while etcd is down serves the saved values, still reported as failing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
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
from otpylib_config.sources.etcd_kv import (
    DEFAULT_ENDPOINT,
    KV,
    Credentials,
    EtcdClient,
    EtcdError,
    Event,
    RangeRead,
    TokenRejected,
    Unreachable,
    WatchMessage,
    WatchStream,
    check_endpoints,
    decode_kv,
    prefix_range,
    show_key,
    ssl_context,
)
from otpylib_config.tree import PathClash, build
from otpylib_config.values import Section, check_key, freeze, same

logger = logging.getLogger("otpylib_config")

DEFAULT_ENDPOINTS = (DEFAULT_ENDPOINT,)

KeyPath = tuple[str, ...]
Entries = Mapping[bytes, KV]

UNACCEPTED = 8
"""Reads handed out and not accepted yet that the source remembers (as ConsulSource does:
docs/sources.md)."""

SETTLED = 1.0
"""Seconds a created stream must stay open, if it delivers nothing, before a drop counts as
the end of a working stream (tried again on the same member, with no backoff) rather than
as one more failure (the next member, after a growing pause)."""


@dataclass(frozen=True, slots=True, eq=False)
class _Decoded:
    """One read, decoded: the layer, each path's origin, and what a watch resumes from."""

    layer: Section
    origins: Mapping[KeyPath, str]
    revision: int
    """The store revision the entries are at; 0: not known (a forgotten or cached read)."""
    entries: Entries | None
    """The raw entries by key, for the cache and as a watch's starting point; ``None``: not
    known (a layer whose read was forgotten)."""


class EtcdSource(Source):
    """Keys under ``prefix`` (or the document in ``key``) on the etcd cluster at
    ``endpoints`` (tried in order; the one that answered last first).

    ``username``/``password``: etcd authentication (a token, obtained again when etcd says
    it expired). ``ca_file``/``cert_file``/``key_file``: TLS for ``https`` endpoints (read
    now: a file that is missing or wrong is a ``ValueError`` naming the option and path).
    ``timeout``: the bound on one read (keep it below ``ConfigSpec.write_timeout``).
    ``resync_interval``: how often a running watch reads everything again as a safety net
    (``None``: never).
    """

    def __init__(
        self,
        prefix: str | None = None,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        username: str | None = None,
        password: str | None = None,
        *,
        key: str | None = None,
        format: str | None = None,
        name: str | None = None,
        required: bool = False,
        secret: bool = False,
        timeout: float = 2.0,
        cache_path: str | os.PathLike[str] | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        resync_interval: float | None = 300.0,
        min_interval: float = 0.1,
        retry_first: float = 0.25,
        retry_max: float = 60.0,
    ) -> None:
        if (prefix is None) == (key is None):
            raise ValueError("EtcdSource takes either a prefix or a key=, not both")
        if (username is None) != (password is None):
            raise ValueError("EtcdSource takes username= and password= together")
        self.key = _key_or_prefix(prefix, key)
        self.recurse = prefix is not None
        self.format = None if self.recurse else format_of(self.key, format)
        self.endpoints = check_endpoints(endpoints, "EtcdSource")
        self.name = name or f"etcd:{self.key}"
        self.required = required
        self.secret = secret
        self.timeout = timeout
        self.resync_interval = resync_interval
        self.min_interval = min_interval
        self.watch_retry_first = retry_first
        self.watch_retry_max = retry_max
        self.cache_path = None if cache_path is None else Path(cache_path)
        self._credentials = None if username is None else Credentials(username, password or "")
        try:
            self._tls = ssl_context(ca_file, cert_file, key_file)
        except ValueError as exc:
            raise ValueError(f"EtcdSource {exc}") from None
        # Who writes and reads each field: as ConsulSource's (docs/sources.md, docs/etcd.md).
        self._unaccepted: deque[_Decoded] = deque(maxlen=UNACCEPTED)
        self._serving: _Decoded | None = None
        """The layer the tree serves, as last ``accepted``; only ``accepted`` writes it."""
        self._cached_document: list[Any] | None = None
        self._cached_origins: Mapping[KeyPath, str] = {}
        self._shape: SchemaShape | None = None

    @property
    def range(self) -> tuple[bytes, bytes | None]:
        """What is read and watched: ``[key, range_end)`` for a prefix (``(b"\\0", b"\\0")``,
        every key, for the empty one), one key else."""
        key = self.key.encode("utf-8")
        return prefix_range(key) if self.recurse else (key, None)

    def configure(self, context: SourceContext) -> None:
        self._shape = context.shape

    # -- loading ---------------------------------------------------------------------------

    async def load(self) -> Section:
        try:
            async with self._client() as client:
                decoded = await self._read(client)
        except EtcdError as exc:
            raise SourceError(self.name, str(exc), fallback=await self._fallback()) from None
        return self._hand_out(decoded)

    async def _read(self, client: EtcdClient) -> _Decoded:
        read = await client.range(*self.range, timeout=self.timeout)
        return self._decode(read.revision, read.kvs)

    def _hand_out(self, decoded: _Decoded) -> Section:
        self._unaccepted.append(decoded)
        return decoded.layer

    async def accepted(self, layer: Section) -> None:
        """Only now is ``layer`` what the tree serves: remember it (a new watch starts from
        its entries and revision), and cache it on disk."""
        decoded = self._take(layer)
        self._serving = decoded
        if decoded.entries is not None:
            await self._save(decoded)

    def _take(self, layer: Section) -> _Decoded:
        if self._serving is not None and self._serving.layer is layer:
            return self._serving
        decoded = self._find(layer)
        if decoded is not None:
            self._unaccepted.remove(decoded)
            return decoded
        logger.debug("%s: accepted a layer whose read was forgotten", self.name)
        return _Decoded(layer, {}, 0, None)

    def _find(self, layer: Section) -> _Decoded | None:
        return next((decoded for decoded in self._unaccepted if decoded.layer is layer), None)

    def origin(self, path: KeyPath, layer: Section | None = None) -> str:
        """The etcd key (and its ``mod_revision``) behind ``path``."""
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
        """One watch stream until cancelled; raises :class:`EtcdError` once no endpoint
        can keep it open (the watcher process backs off and calls ``watch`` again)."""
        async with self._client() as client:
            await _Watch(self, client, changed).run()

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, revision: int, kvs: Iterable[KV]) -> _Decoded:
        entries = {kv.key: kv for kv in kvs}
        if self.recurse:
            layer, origins = self._prefix_layer(entries)
        else:
            layer, origins = self._document_layer(entries)
        return _Decoded(layer, origins, revision, entries)

    def _prefix_layer(self, entries: Entries) -> tuple[Section, dict[KeyPath, str]]:
        found = [(kv, key, self._path_of(key)) for kv, key in _texts(entries)]
        try:
            layer = build(
                (repr(key), path, _value(key, kv, path, self._shape)) for kv, key, path in found
            )
        except PathClash as exc:
            raise EtcdError(f"etcd keys {exc}") from None
        origins = {path: _origin(key, kv) for kv, key, path in found}
        return layer, origins

    def _path_of(self, key: str) -> KeyPath:
        relative = key[len(self.key) :]
        segments = tuple(relative.split("/"))
        try:
            for segment in segments:
                check_key(segment, relative)
        except InvalidValueError as exc:
            raise EtcdError(f"etcd key {key!r} cannot be a config path: {exc}") from None
        return segments

    def _document_layer(self, entries: Entries) -> tuple[Section, dict[KeyPath, str]]:
        kv = entries.get(self.key.encode("utf-8"))
        if kv is None or not kv.value:
            return Section(), {}
        assert self.format is not None
        try:
            layer = parse(kv.value, self.format)
        except ParseError as exc:
            raise EtcdError(f"etcd key {self.key!r}: {exc}") from None
        return layer, {(): _origin(self.key, kv)}

    # -- plumbing --------------------------------------------------------------------------

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[EtcdClient]:
        async with aiohttp.ClientSession() as session:
            yield EtcdClient(
                session,
                self.endpoints,
                self._credentials,
                self._tls,
                slow_retry=self.watch_retry_max,
            )

    async def _save(self, decoded: _Decoded) -> None:
        assert decoded.entries is not None
        document = [_kv_json(kv) for kv in decoded.entries.values()]
        if self.cache_path is None or document == self._cached_document:
            return
        saved = {
            "endpoints": list(self.endpoints),
            "key": self.key,
            "revision": decoded.revision,
            "saved_at": time.time(),
            "kvs": document,
        }
        try:
            await threads.run_sync(write_json_atomically, self.cache_path, saved)
        except OSError as exc:
            logger.warning("%s: cannot save the cache %s: %s", self.name, self.cache_path, exc)
            return
        self._cached_document = document

    async def _fallback(self) -> Section | None:
        """The cached layer, while nothing was accepted from etcd in this process."""
        if self.cache_path is None or self._serving is not None:
            return None
        try:
            cached = await threads.run_sync(self._read_cache)
        except (OSError, ValueError, EtcdError) as exc:
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
            raise ValueError("it was saved for another etcd key or is not a cache file")
        kvs = saved.get("kvs")
        if not isinstance(kvs, list):
            raise ValueError("it holds no list of entries")
        where = str(self.cache_path)
        return self._decode(0, (decode_kv(item, where) for item in kvs))

    def __repr__(self) -> str:
        auth = ""
        if self._credentials is not None:
            auth = f", username={self._credentials.username!r}, password=***"
        return f"EtcdSource({self.key!r}, endpoints={list(self.endpoints)!r}{auth})"


class _Watch:
    """One ``watch`` call: the entries it keeps current, the revision they are at, and
    whether it handed over its first layer yet. Local to the call, never fields of the
    source: a new watch starts again from what the tree accepted."""

    def __init__(self, source: EtcdSource, client: EtcdClient, changed: Changed) -> None:
        self.source, self.client, self.changed = source, client, changed
        self.entries: dict[bytes, KV] = {}
        self.revision = 0
        self.handed_first = False
        self.loop = asyncio.get_running_loop()
        self.next_resync = self._resync_at()
        self.created_at: float | None = None
        """When the current stream was created (loop time); ``None``: not (yet)."""
        self.delivered = False
        """Whether the current stream sent anything after ``created``."""
        self.failures = 0
        """Streams that failed since one last worked (:meth:`_worked`)."""
        self.reauthenticated = False
        """Whether the token was renewed since a stream last worked."""

    async def run(self) -> None:
        serving = self.source._serving
        if serving is not None and serving.revision > 0 and serving.entries is not None:
            self.entries, self.revision = dict(serving.entries), serving.revision
        else:
            await self._reread("first read")
        while True:
            try:
                await self._stream()
                continue
            except (TokenRejected, Unreachable) as exc:
                failure: EtcdError = exc
            await self._failed(failure)  # outside the except: what it raises has no context

    def _worked(self) -> bool:
        """Whether the stream that just ended worked: it was created and then delivered a
        message or stayed open :data:`SETTLED` seconds. One that etcd creates and drops at
        once (a broken proxy, a member in trouble) counts as a failure, so that it is not
        reopened ten times a second for ever."""
        if self.created_at is None:
            return False
        return self.delivered or self.loop.time() - self.created_at >= SETTLED

    async def _failed(self, failure: EtcdError) -> None:
        worked = self._worked()
        if worked:
            self.failures, self.reauthenticated = 0, False
        if isinstance(failure, TokenRejected):
            if self.reauthenticated:
                raise EtcdError("etcd rejected a fresh auth token for the watch")
            self.client.forget_token()
            self.reauthenticated = True
        else:
            await self._unreachable(failure, worked)

    async def _unreachable(self, exc: EtcdError, worked: bool) -> None:
        """Try every endpoint once, and the one that dropped a working stream once more
        first (a member that closed one stream may take the next); then give up. Between
        failed streams the pause doubles from ``min_interval``."""
        if worked:
            self.failures = 1
            pause = self.source.min_interval
        else:
            self.failures += 1
            self.client.rotate()
            pause = self.source.min_interval * 2 ** (self.failures - 1)
        if self.failures > len(self.client.endpoints):
            raise EtcdError(f"the watch of {self.source.key!r} failed: {exc}")
        logger.info("%s: %s; watching on %s", self.source.name, exc, self.client.endpoint)
        await asyncio.sleep(pause)

    async def _stream(self) -> None:
        """One stream from ``revision + 1`` on the current endpoint, until it ends (raises)
        or must be opened again (returns): etcd reported our revision compacted, or the
        resync found changes the stream never delivered."""
        self.created_at, self.delivered = None, False
        key, end = self.source.range
        async with self.client.watch(
            key, end, self.revision + 1, connect=self.source.timeout
        ) as stream:
            while True:
                message = await self._next(stream)
                if message is None:
                    if await self._resync():
                        return
                elif await self._handle(message):
                    return

    async def _next(self, stream: WatchStream) -> WatchMessage | None:
        """The next message, or ``None`` once it is time for the safety-net re-read."""
        if self.next_resync is None:
            return await stream.next()
        try:
            async with asyncio.timeout_at(self.next_resync):
                return await stream.next()
        except TimeoutError:
            if self.loop.time() < self.next_resync:
                raise
            self.next_resync = self._resync_at()
            return None

    async def _handle(self, message: WatchMessage) -> bool:
        """Apply one message; ``True`` when the stream must be opened again."""
        if message.canceled:
            return await self._canceled(message)
        if message.created:
            self.created_at = self.loop.time()
            if not self.handed_first:
                await self._offer()
            return False
        self.delivered = True  # the stream worked: _failed resets the failure counts
        if message.progress:
            self.revision = max(self.revision, message.revision)
        elif message.events and await self._apply(message.events):
            await self._offer()
        return False

    async def _canceled(self, message: WatchMessage) -> bool:
        if message.compact_revision > 0:
            logger.info(
                "%s: revision %d was compacted (etcd keeps %d on); reading everything again",
                self.source.name,
                self.revision + 1,
                message.compact_revision,
            )
            await self._reread("compaction")
            return True
        reason = message.cancel_reason.rsplit("desc = ", 1)[-1] or "no reason given"
        slow = "permission" in reason.lower()
        raise EtcdError(
            f"etcd canceled the watch of {self.source.key!r}: {reason}",
            retry_after=self.source.watch_retry_max if slow else None,
        )

    async def _apply(self, events: tuple[Event, ...]) -> bool:
        """Apply, in order, the events of one message that the entries do not hold yet;
        ``True`` if any was new. Each is checked against the entries as the events before
        it left them (a message catching up may hold two writes of one key, or a delete and
        a re-create): one whose ``prev_kv`` disagrees means a change was missed, and the
        watch stops applying and reads everything again."""
        base = self.revision  # the events of one revision (a transaction) share it
        applied = False
        for event in events:
            if event.kv.mod_revision <= base:
                continue
            if not _consistent(self.entries, event):
                logger.warning(
                    "%s: a watch event (%s at revision %d) contradicts what was read; "
                    "reading everything again",
                    self.source.name,
                    show_key(event.kv.key),
                    event.kv.mod_revision,
                )
                await self._reread("inconsistent event")
                return False
            if event.deleted:
                self.entries.pop(event.kv.key, None)
            else:
                self.entries[event.kv.key] = event.kv
            self.revision = max(self.revision, event.kv.mod_revision)
            applied = True
        return applied

    async def _resync(self) -> bool:
        """The safety-net read of everything. ``True`` when it found changes the stream
        never delivered: the stream went silent (a half-dead connection) and is opened
        again. A read that fails is logged and the watch goes on: the stream may be fine,
        and the next resync reads again."""
        try:
            read = await self.client.range(*self.source.range, timeout=self.source.timeout)
        except EtcdError as exc:
            logger.warning(
                "%s: the resync read failed: %s; the watch goes on", self.source.name, exc
            )
            return False
        missed = await self._take(read, "resync")
        if missed:
            logger.warning(
                "%s: the resync found changes the watch stream on %s did not deliver; "
                "opening the stream again",
                self.source.name,
                self.client.endpoint,
            )
        return missed

    async def _reread(self, why: str) -> None:
        """Read everything again and take it, unless it is older than what the watch has."""
        read = await self.client.range(*self.source.range, timeout=self.source.timeout)
        await self._take(read, why)

    async def _take(self, read: RangeRead, why: str) -> bool:
        """Take a full read as the entries, unless it is older than what the watch has;
        ``True`` if it held changes the entries did not (only then, or before the first
        hand-over, is a layer offered: the same entries make the same layer)."""
        if read.revision < self.revision:
            logger.debug(
                "%s: %s read revision %d < %d",
                self.source.name,
                why,
                read.revision,
                self.revision,
            )
            return False
        entries = {kv.key: kv for kv in read.kvs}
        changed = _revisions(entries) != _revisions(self.entries)
        self.entries, self.revision = entries, read.revision
        if changed or not self.handed_first:
            await self._offer()
        return changed

    async def _offer(self) -> None:
        """Hand over the layer of the entries: the first of this watch always; later ones
        if they differ from what the tree serves and are not older than it."""
        decoded = self.source._decode(self.revision, self.entries.values())
        serving = self.source._serving
        if (
            self.handed_first
            and serving is not None
            and (self.revision < serving.revision or same(decoded.layer, serving.layer))
        ):
            return
        self.handed_first = True
        await self.changed(self.source._hand_out(decoded))

    def _resync_at(self) -> float | None:
        interval = self.source.resync_interval
        return None if interval is None else self.loop.time() + interval


def _revisions(entries: Entries) -> dict[bytes, int]:
    return {key: kv.mod_revision for key, kv in entries.items()}


def _consistent(entries: Mapping[bytes, KV], event: Event) -> bool:
    held = entries.get(event.kv.key)
    if event.prev_kv is not None:
        return held is not None and held.mod_revision == event.prev_kv.mod_revision
    if not event.deleted and event.kv.version == 1:  # created: we must not hold it
        return held is None
    return True  # no prev_kv (compacted away): nothing to check against


def _texts(entries: Entries) -> Iterable[tuple[KV, str]]:
    for raw in sorted(entries):
        try:
            yield entries[raw], raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EtcdError(f"etcd key {raw!r} is not valid UTF-8") from None


def _origin(key: str, kv: KV) -> str:
    return f"etcd:{key} (mod_revision {kv.mod_revision})"


def _value(key: str, kv: KV, path: KeyPath, shape: SchemaShape | None) -> Any:
    try:
        text = kv.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EtcdError(f"etcd key {key!r}: value is not valid UTF-8 (byte {exc.start})") from None
    try:
        return freeze(coerce_at(text, path, shape), ".".join(path))
    except ValueError as exc:  # InvalidValueError too: too long, JSON with NaN, a dotted key
        raise EtcdError(f"etcd key {key!r}: {exc}") from None


def _kv_json(kv: KV) -> dict[str, Any]:
    return {
        "key": base64.b64encode(kv.key).decode("ascii"),
        "value": base64.b64encode(kv.value).decode("ascii"),
        "mod_revision": str(kv.mod_revision),
        "version": str(kv.version),
    }


def _key_or_prefix(prefix: str | None, key: str | None) -> str:
    text = prefix if prefix is not None else key
    if not isinstance(text, str):
        raise ValueError(f"an etcd key or prefix is a str, got {text!r}")
    if prefix is not None and prefix and not prefix.endswith("/"):
        return prefix + "/"  # "/app/config" would also match "/app/configx"
    if key is not None and (not key or key.endswith("/")):
        raise ValueError(f"EtcdSource(key=...) names one key, got {key!r}")
    return text
