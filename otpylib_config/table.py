"""The state of a config tree (:class:`ConfigTable`), and what ``status()`` reports of it.

:class:`ConfigTable` documents each field's shape, its one writer and its readers; see
docs/architecture.md, The one state object.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otpylib import process

from otpylib_config import _otp_compat, counters, telemetry
from otpylib_config.delivery import Delivery
from otpylib_config.environment import EnvFileError, Environment
from otpylib_config.errors import SourceError
from otpylib_config.overrides import Overrides
from otpylib_config.persistence import Persistence
from otpylib_config.redact import Redactor, mask_url_passwords
from otpylib_config.schema_shape import shape_of
from otpylib_config.snapshot import Snapshot
from otpylib_config.sources.base import Source, SourceContext
from otpylib_config.spec import ConfigSpec
from otpylib_config.subscriptions import Subscriptions
from otpylib_config.validation import Validator
from otpylib_config.values import EMPTY, Section

logger = logging.getLogger("otpylib_config")


def supervisor_name(spec_id: str) -> str:
    """The registered name of tree ``spec_id``; its processes' names start with it."""
    return f"otpylib_config.{spec_id}"


@dataclass(eq=False)
class SourceState:
    """A source's last good layer and its health."""

    source: Source
    tree: str = "default"  # the tree's id, for the telemetry it emits
    layer: Section = field(default_factory=lambda: EMPTY, repr=False)  # may hold secrets
    last_success: float | None = None  # wall-clock time
    last_error: str | None = None
    last_error_at: float | None = None
    reading_seq: int = 0  # the newest reading applied to this source
    warnings: tuple[str, ...] = ()
    """What the source reported with its layer in use (unknown variables); not errors."""
    errors: Counter[str] = field(default_factory=Counter)
    """How often it failed, by stage (``load``, ``watch``, ``restore``), since the tree
    started: the per-source view of the ``source_*_errors`` counters."""

    def succeeded(self, layer: Section) -> None:
        self.layer = layer
        self.last_success = time.time()
        self.last_error = None
        self._take_warnings()

    def _take_warnings(self) -> None:
        """Adopt the warnings the source reports with the layer just committed
        (``Source.warnings_of``); each new one is logged and emitted once, and again only
        after it went away and came back: a timer reload does not repeat it."""
        try:
            fresh = tuple(str(w) for w in self.source.warnings_of(self.layer))
        except Exception as exc:  # a source bug must not fail the commit
            fresh = (f"warnings_of failed: {type(exc).__name__}",)
        for warning in fresh:
            if warning not in self.warnings:
                logger.warning("config source %s: %s", self.source.name, warning)
                telemetry.execute(
                    telemetry.SOURCE_WARNING,
                    {"count": 1},
                    {"id": self.tree, "source": self.source.name, "warning": warning},
                )
        self.warnings = fresh

    def failed(self, error: str, stage: str) -> None:
        self.errors[stage] += 1
        self.last_error = error
        self.last_error_at = time.time()


@dataclass(frozen=True)
class SourceStatus:
    name: str
    kind: str
    healthy: bool
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    age_s: float | None  # seconds since the last successful load
    warnings: tuple[str, ...] = ()
    """What the source reports with the layer in use, such as variables that map to no
    field of the schema; a source with warnings is still healthy."""
    errors: Mapping[str, int] = field(default_factory=dict)
    """How often it failed since the tree started, by stage (``load``, ``watch``,
    ``restore``; a stage it never failed at is absent)."""
    required: bool = True
    """Whether the tree needs it: a failing optional source does not fail ``/health``."""


@dataclass(eq=False)
class ProcessHealth:
    """One process of the tree (by role: ``manager``, ``notifier``, ``watch:<source>``,
    ``supervisor``, ``root``), across its restarts."""

    role: str
    name: str
    pid: Any = None
    starts: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None

    @property
    def deaths(self) -> int:
        return self.starts - (self.pid is not None)


@dataclass(frozen=True)
class ProcessStatus:
    """What ``status()`` says of one process: is it alive, how often did it die, of what."""

    role: str
    name: str
    alive: bool
    restarts: int
    last_exit: str | None
    last_exit_at: float | None


@dataclass(frozen=True)
class Status:
    """What ``Config.status()`` returns: enough to tell whether the config can be trusted."""

    id: str
    version: int
    config_hash: str
    manager_running: bool
    manager_restarts: int
    subscriptions: int
    sources: tuple[SourceStatus, ...]
    counters: Mapping[str, int]
    """How often each thing happened, by the names in :mod:`otpylib_config.counters`
    (one that never happened is absent)."""
    profile: str | None = None
    last_validation_error: str | None = None
    processes: tuple[ProcessStatus, ...] = ()
    stopped: str | None = None
    """Why the tree is stopped for good (writes fail at once), or ``None`` while it runs."""
    admin_url: str | None = None
    """The admin API's base URL (``ConfigSpec.admin``) once it is bound, else ``None``."""

    @property
    def healthy(self) -> bool:
        """The tree serves writes and events, and every required source loaded: the one
        health rule, which ``/health`` and the CLI's ``status`` apply too."""
        return not self.reasons()

    def reasons(self) -> list[str]:
        """Why the tree is not healthy, one line per reason (empty when it is): stopped,
        a process of the tree not running, a required source failing. A failing optional
        source (one the tree is meant to start without, such as a Consul prefix) is not a
        reason; its ``SourceStatus.healthy`` says it fails."""
        reasons = [self.stopped] if self.stopped else []
        if not self.manager_running:
            reasons.append("the manager is not running")
        reasons += [
            f"the {p.role} process is not running (last exit: {p.last_exit})"
            for p in self.processes
            if not p.alive and p.role != "manager"
        ]
        reasons += [
            f"source {s.name} is failing: {s.last_error or 'never loaded'}"
            for s in self.sources
            if s.required and not s.healthy
        ]
        return reasons


@dataclass(eq=False, repr=False)
class ConfigTable:
    """The one state record of a config tree, like ``application_controller``'s state: what
    outlives a crash of any of its processes (an ETS table with an heir).

    The supervisor's child specs pass the same table to every restart of the manager, the
    notifier and the watchers, so the runtime layer, the subscriptions, each source's last
    good layer and the published snapshot survive any crash. Everything runs on one event
    loop. Each field says its shape, its one writer, and who reads it; *manager* means the
    manager process, through :mod:`otpylib_config.commit`, and the first load, which runs
    before the tree's processes exist (in ``start``, the manager's ``init`` or ``load``);
    *readers* are the ``Config`` calls of any task.
    """

    spec: ConfigSpec
    """The tree's options, as given. Never written."""
    sources: dict[str, SourceState] = field(init=False)
    """By name, in priority order (lowest first): each source's last good layer, health,
    newest applied reading. Writer: manager. Readers: pipeline, ``status``, ``explain``."""
    runtime_state: SourceState = field(init=False)
    """The persisted runtime layer's health. Writer: manager. Reader: ``status``."""
    redactor: Redactor = field(init=False)
    """Which paths are secret; it learns the leaves of secret sources and the schema's
    secret fields. Writer: manager. Readers: everything that shows a value."""
    validator: Validator = field(init=False)
    """The schema and validators. Never written after construction."""
    persistence: Persistence = field(init=False)
    """The runtime layer's journal on disk. Used by the manager (restore, save), closed by
    ``shutdown``."""
    last_validation_error: str | None = None
    """Why the last configuration was rejected, until one passes. Writer: manager."""
    profile: str | None = field(init=False)
    """The active profile, resolved once before the first load. Writer: manager (init)."""
    environment: Environment = field(init=False)
    """The tree's one environment (process variables over ``env_file``). Read by sources."""
    overrides: Overrides = field(default_factory=Overrides)
    """The runtime layer (persistent tree of puts). Writer: manager. Readers: pipeline,
    ``explain``."""
    base: Section = field(default_factory=lambda: EMPTY)
    """Every source's layer merged, without the runtime layer, so a put recomputes only
    its path. Writer: manager. Reader: pipeline."""
    snapshot: Snapshot | None = None
    """The published configuration (``None`` until the first load), replaced whole by one
    assignment per version (:meth:`publish`). Writer: manager. Readers: every read,
    lock-free."""
    cached: dict[str, Any] = field(default_factory=dict)
    """The published snapshot's read cache, one attribute away: ``Config.get_nowait`` of a
    path read before is this one dict lookup. Writer: :meth:`publish`."""
    subscriptions: Subscriptions = field(default_factory=Subscriptions)
    """Every subscription, with its pattern trie and pending events. Writer: manager (add,
    remove); the pending queues are filled and drained through ``delivery``."""
    delivery: Delivery = field(default_factory=Delivery)
    """The queue from the manager to the notifier. Writer: the manager appends changes, the
    notifier consumes them (:mod:`otpylib_config.delivery` says which end writes what)."""
    reading_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Reload readings in flight, each bound to the manager that started it. Writer: the
    manager (a task removes itself when done). Reader: ``shutdown``."""
    watch_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """Each push source's watch loop, by source name. Writer: that source's watcher
    process (and ``shutdown``, which cancels them all)."""
    counters: Counter[str] = field(default_factory=Counter)
    """The manager's counters (:mod:`otpylib_config.counters`). Writer: manager. Reader:
    ``status``, with the notifier's from ``delivery``."""
    health: dict[str, ProcessHealth] = field(default_factory=dict)
    """Every process of the tree by role, across restarts. Writer: each process for its
    own role, when it starts and (by its exit hook) when it ends. Reader: ``status``."""
    stopped: str | None = None
    """Why the tree is stopped for good (writes then fail at once). Writer: the tree's
    owner process, or ``shutdown``. Readers: the transport, ``status``."""
    admin_url: str | None = None
    """The admin API's bound base URL while it listens. Writer: the admin server's task."""
    admin_port: int | None = None
    """The port the admin API got first, which a restarted server binds again. Writer: the
    admin server's task."""
    admin_task: asyncio.Task[None] | None = None
    """The admin server's task (:mod:`otpylib_config.admin.server`). Writer: the admin
    process; ``shutdown`` waits for it."""
    fleet_task: asyncio.Task[None] | None = None
    """The fleet announcer's task (:mod:`otpylib_config.fleet.announcer`). Writer: the
    announcer process; ``shutdown`` waits for it (it withdraws the announcement)."""
    sub_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    """Subscription ids. Writer: the subscribing client draws one, so a retried request is
    the same subscription."""
    loop: asyncio.AbstractEventLoop | None = None
    """The event loop the tree's processes run on, once one started; what another thread
    must hand its reads of the table to (the Prometheus collector). Writer: ``track``."""
    reading_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    """Reading numbers. Writer: whoever starts a reading (``pipeline.read``/``pushed``) draws
    one, so an older reading is never applied over a newer one."""

    def __post_init__(self) -> None:
        tree = self.spec.id
        self.sources = {s.name: SourceState(s, tree) for s in self.spec.sources}
        self.runtime_state = SourceState(self.spec.runtime, tree)
        self.redactor = Redactor(self.spec.secret_patterns)
        self.validator = Validator(self.spec.schema, self.spec.validators)
        self.persistence = Persistence(self.spec.runtime.path)
        self.environment = Environment(self.spec.env_file, optional=self.spec.env_file_optional)
        self.profile = self.spec.profile  # resolved from the environment in configure_sources

    def record_failure(
        self, state: SourceState, error: str, *, stage: str, duration: float = 0.0
    ) -> str:
        """A source failed to load, watch or restore: it keeps its last good layer, and the
        error goes to ``status()``, the log (one warning per distinct error) and telemetry,
        with any secret value it quotes masked; returns the text as reported."""
        if self.snapshot is not None:
            error = self.redactor.scrub(error, self.snapshot.tree)
        else:  # the first load: no values known yet, but a URL's password is plain to see
            error = mask_url_passwords(error)
        repeated = state.last_error == error
        state.failed(error, stage)
        self.counters[counters.source_errors(stage)] += 1
        log = logger.debug if repeated else logger.warning
        log(
            "config source %s failed (%s), keeping its last good layer: %s",
            state.source.name,
            stage,
            error,
        )
        telemetry.execute(
            telemetry.SOURCE_ERROR,
            {"duration_s": duration},
            {"id": self.spec.id, "source": state.source.name, "error": error, "stage": stage},
        )
        return error

    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the published configuration (the manager's one way to)."""
        self.snapshot = snapshot
        self.cached = snapshot.cache

    def track(self, role: str) -> int:
        """Record that the calling process started as ``role`` and, when it ends, how;
        returns how many times that role has started."""
        pid = process.self()
        self.loop = asyncio.get_running_loop()
        health = self.health.setdefault(role, ProcessHealth(role, self.name_of(role)))
        health.pid = pid
        health.starts += 1
        _otp_compat.on_exit(pid, lambda reason: self._exited(health, pid, reason))
        return health.starts

    def _exited(self, health: ProcessHealth, pid: Any, reason: Any) -> None:
        health.last_exit = _otp_compat.describe(reason)
        health.last_exit_at = time.time()
        if health.pid == pid:
            health.pid = None
        telemetry.execute(
            telemetry.PROCESS_EXITED,
            {"count": 1},
            {"id": self.spec.id, "role": health.role, "reason": health.last_exit},
        )

    def stop_for_good(self, why: str, *, expected: bool = False) -> None:
        """Nothing will restart the tree: say so once, and make writes fail at once.
        ``expected``: asked for (``shutdown``), so no error is logged."""
        if self.stopped is not None:
            return
        deaths = ", ".join(
            f"{h.role} {h.deaths}x (last: {h.last_exit})"
            for h in self.health.values()
            if h.last_exit is not None
        )
        self.stopped = f"config tree {self.spec.id!r} is stopped for good: {why}" + (
            f"; deaths: {deaths}" if deaths else ""
        )
        (logger.info if expected else logger.error)("%s", self.stopped)
        telemetry.execute(telemetry.TREE_STOPPED, {"count": 1}, {"id": self.spec.id, "reason": why})

    def name_of(self, role: str) -> str:
        """The registered name of the process that plays ``role``."""
        if role == "supervisor":
            return self.supervisor_name
        if role.startswith("watch:"):
            return self.watcher_name(role[len("watch:") :])
        return f"{self.supervisor_name}.{role}"

    def configure_sources(self) -> None:
        """Tell the sources what the tree gives them all, before the first load: the one
        environment, the profile read from it, and the schema's shape."""
        self.profile = self._resolve_profile()
        spec = self.spec
        if spec.profile_env is not None:
            profile_env = spec.profile_env
            self.environment.claim(self, lambda name: name == profile_env)
        context = SourceContext(
            profile=self.profile,
            watch_debounce=spec.watch_debounce,
            environment=self.environment,
            shape=shape_of(spec.schema),
            profile_env=spec.profile_env,
            strict_env=spec.strict_env,
        )
        for state in self.sources.values():
            state.source.configure(context)

    def _resolve_profile(self) -> str | None:
        """The profile, from the tree's environment (so ``.env`` can choose it); a bad
        ``env_file`` fails the start here, before any source loads."""
        spec = self.spec
        if spec.profile is not None or spec.profile_env is None:
            return spec.profile
        try:
            return spec.resolved_profile(self.environment.variables())
        except EnvFileError as exc:
            raise SourceError("environment", f"cannot read {spec.profile_env}: {exc}") from None

    @property
    def manager_name(self) -> str:
        return f"{self.supervisor_name}.manager"

    @property
    def notifier_name(self) -> str:
        return f"{self.supervisor_name}.notifier"

    def watcher_name(self, source: str) -> str:
        return f"{self.supervisor_name}.watch.{source}"

    @property
    def supervisor_name(self) -> str:
        return supervisor_name(self.spec.id)

    def status(self, manager_running: bool) -> Status:
        snapshot = self.snapshot or Snapshot()
        now = time.time()
        return Status(
            id=self.spec.id,
            version=snapshot.version,
            config_hash=snapshot.config_hash,
            manager_running=manager_running,
            manager_restarts=self.restarts("manager"),
            subscriptions=len(self.subscriptions),
            sources=tuple(_source_status(state, now) for state in self._all_states()),
            counters={**self.counters, **self.delivery.counters},
            profile=self.profile,
            last_validation_error=self.last_validation_error,
            processes=tuple(_process_status(h) for h in self.health.values()),
            stopped=self.stopped,
            admin_url=self.admin_url,
        )

    def restarts(self, role: str) -> int:
        health = self.health.get(role)
        return 0 if health is None else max(health.starts - 1, 0)

    def __repr__(self) -> str:  # the default would show every value, secrets included
        return f"ConfigTable(id={self.spec.id!r})"

    def _all_states(self) -> list[SourceState]:
        persisted = [self.runtime_state] if self.persistence.path is not None else []
        return [*self.sources.values(), *persisted]


def _process_status(health: ProcessHealth) -> ProcessStatus:
    alive = health.pid is not None and process.is_alive(health.pid)
    return ProcessStatus(
        health.role,
        health.name,
        alive,
        max(health.starts - 1, 0),
        health.last_exit,
        health.last_exit_at,
    )


def _source_status(state: SourceState, now: float) -> SourceStatus:
    return SourceStatus(
        name=state.source.name,
        kind=state.source.kind,
        healthy=state.last_error is None and state.last_success is not None,
        last_success=state.last_success,
        last_error=state.last_error,
        last_error_at=state.last_error_at,
        age_s=None if state.last_success is None else now - state.last_success,
        warnings=state.warnings,
        errors=dict(state.errors),
        required=state.source.required,
    )
