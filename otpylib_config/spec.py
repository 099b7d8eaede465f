"""``ConfigSpec``: what one configuration tree is made of, fixed when it starts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from otpylib_config.environment import Environment
from otpylib_config.redact import DEFAULT_SECRET_PATTERNS
from otpylib_config.sources.base import DEFAULT_DEBOUNCE, Source
from otpylib_config.sources.runtime import RuntimeSource

if TYPE_CHECKING:
    from otpylib_config.admin import AdminSpec
    from otpylib_config.fleet import FleetSpec

DEFAULT_RELOAD_INTERVAL = 30.0
DEFAULT_WRITE_TIMEOUT = 5.0
DEFAULT_CALLBACK_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 2.0


@dataclass(frozen=True, kw_only=True)
class ConfigSpec:
    """Sources in priority order (lowest first) and the tree's settings.

    ``reload_interval``: seconds between timer reloads (``None`` turns the timer off).
    ``write_timeout``: how long put/delete/reload/subscribe wait for the manager, retries
    across manager restarts included. ``callback_timeout``: how long an async subscriber
    callback may run before it is cancelled and reported. ``max_restarts`` in
    ``max_seconds``: the restart intensity of the tree's supervisor (and of a standalone
    tree's root). ``stop_timeout``: how long stopping waits for a process or a callback
    task before it gives up on it and says so.

    ``profile`` fills ``{profile}`` in file paths; if ``None`` it is read from the variable
    named ``profile_env``, in the tree's environment (below). ``schema`` (a pydantic model
    or a callable that raises) and ``validators`` (glob pattern -> callable, dataclass or
    pydantic model) check the merged configuration before anything is published.
    ``watch_debounce``: seconds a file must be quiet after an event that does not finish it
    (a write without a close, a burst) before it is reloaded; a close or a rename over the
    file on Linux reports it at once.

    ``env_file`` (e.g. ``".env"``; ``None`` by default): a dotenv file under the process's
    variables (which win), read on every load. The environment that gives is what every
    ``EnvironmentSource``, every file's ``${VAR}`` placeholders and ``profile_env`` see; a
    source's own ``env_file=`` or ``environ=`` replaces a part of it for that source. A
    missing file is an error unless ``env_file_optional``. ``strict_env``: with a pydantic
    ``schema``, a variable that maps to no field fails the load instead of being reported
    as a warning.

    ``secret_patterns``: which paths are redacted in every output (``get`` is not). A word
    (``"token"``, ``"private_key"``) makes secret every name that ends in it once split at
    ``_``, ``-`` and case changes (``jwt_secret``, ``apiKey``, not ``token_ttl``); a glob
    (``"*dsn*"``) is matched against the lower-cased name. A secret section hides all it
    holds. The default, ``DEFAULT_SECRET_PATTERNS``, is the built-in word list.

    ``admin``: an :class:`~otpylib_config.admin.AdminSpec` runs the admin HTTP API as a
    child of the tree (docs/admin.md); ``None``, the default, runs none. ``fleet``: a
    :class:`~otpylib_config.fleet.FleetSpec` announces the tree in etcd (docs/fleet.md).
    """

    id: str = "default"
    sources: Sequence[Source] = ()
    reload_interval: float | None = DEFAULT_RELOAD_INTERVAL
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    callback_timeout: float | None = DEFAULT_CALLBACK_TIMEOUT
    secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS
    max_restarts: int = 10
    max_seconds: float = 5.0
    profile: str | None = None
    profile_env: str | None = "CONFIG_PROFILE"
    schema: Any = None
    validators: Mapping[str, Any] = field(default_factory=dict)
    watch_debounce: float = DEFAULT_DEBOUNCE
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    env_file: str | os.PathLike[str] | None = None
    env_file_optional: bool = False
    strict_env: bool = False
    admin: AdminSpec | None = None
    fleet: FleetSpec | None = None
    runtime: RuntimeSource = field(init=False)

    def resolved_profile(self, variables: Mapping[str, str] | None = None) -> str | None:
        """``profile``, else the value of ``profile_env`` in ``variables``: the tree's
        environment, which by default is read here (the process's variables over
        ``env_file``), so a ``.env`` can pick the profile. ``None`` if neither gives one.
        Raises :class:`~otpylib_config.environment.EnvFileError` for a bad ``env_file``."""
        if self.profile is not None or self.profile_env is None:
            return self.profile
        if variables is None:
            variables = Environment(self.env_file, optional=self.env_file_optional).variables()
        return variables.get(self.profile_env) or None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or "." in self.id:
            raise ValueError(f"ConfigSpec.id must be a non-empty str without '.', got {self.id!r}")
        for source in self.sources:
            if not isinstance(source, Source):
                raise TypeError(f"ConfigSpec.sources: {source!r} is not a Source")
        runtimes = [s for s in self.sources if isinstance(s, RuntimeSource)]
        if len(runtimes) > 1:
            raise ValueError("ConfigSpec.sources lists more than one RuntimeSource")
        loaded = tuple(s for s in self.sources if not isinstance(s, RuntimeSource))
        names = [s.name for s in loaded]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"ConfigSpec.sources: duplicate source names {duplicates}")
        if self.reload_interval is not None and self.reload_interval <= 0:
            raise ValueError("ConfigSpec.reload_interval must be positive or None")
        if self.write_timeout <= 0:
            raise ValueError("ConfigSpec.write_timeout must be positive")
        if self.stop_timeout <= 0:
            raise ValueError("ConfigSpec.stop_timeout must be positive")
        if self.admin is not None:
            from otpylib_config.admin import AdminSpec

            if not isinstance(self.admin, AdminSpec):
                raise TypeError(f"ConfigSpec.admin must be an AdminSpec, got {self.admin!r}")
        if self.fleet is not None:
            from otpylib_config.fleet import FleetSpec

            if not isinstance(self.fleet, FleetSpec):
                raise TypeError(f"ConfigSpec.fleet must be a FleetSpec, got {self.fleet!r}")
        object.__setattr__(self, "sources", loaded)
        object.__setattr__(self, "runtime", runtimes[0] if runtimes else RuntimeSource())
