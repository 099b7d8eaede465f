"""otpylib-config: a runtime configuration server for otpylib applications.

Add ``child_spec(spec)`` to a supervision tree (or ``await start(spec)`` in a script), then
``await Config.get(path)``, ``Config.get_nowait(path)``, ``await Config.put(path, value)`` and
``await Config.subscribe(pattern, callback)`` from anywhere. See README.md.

The data flow, module by module (README's module table; docs/architecture.md)::

    sources/ → layers (values) → merge (tree, overrides) → diff → validate (validation)
      [pipeline: computes]  → commit → snapshot  [the manager: the one writer]
      → delivery → subscriptions (patterns) → notifier → callbacks
"""

import typing as _typing

from otpylib_config import _otp_compat, telemetry
from otpylib_config.client import Config, ConfigClient
from otpylib_config.errors import (
    ConfigError,
    ConfigTimeoutError,
    InvalidPathError,
    InvalidValueError,
    LoadError,
    NotRunningError,
    SourceError,
    ValidationError,
)
from otpylib_config.oneshot import LoadedConfig, load
from otpylib_config.protocol import ReloadResult
from otpylib_config.provenance import Contribution, Explanation
from otpylib_config.redact import DEFAULT_SECRET_PATTERNS
from otpylib_config.sources.args import ArgsSource
from otpylib_config.sources.base import Source
from otpylib_config.sources.defaults import DefaultsSource
from otpylib_config.sources.env import EnvironmentSource
from otpylib_config.sources.file import FileSource
from otpylib_config.sources.runtime import RuntimeSource
from otpylib_config.spec import ConfigSpec
from otpylib_config.subscriptions import SubscriptionHandle
from otpylib_config.supervisor import ConfigTree, child_spec, running, shutdown, start
from otpylib_config.table import ProcessStatus, SourceStatus, Status
from otpylib_config.values import Section, thaw

if _typing.TYPE_CHECKING:
    from otpylib_config.sources.consul import ConsulSource
    from otpylib_config.sources.etcd import EtcdSource

_otp_compat.install()  # Erlang's exit and supervision semantics for every otpylib process

__all__ = [
    "DEFAULT_SECRET_PATTERNS",
    "ArgsSource",
    "Config",
    "ConfigClient",
    "ConfigError",
    "ConfigSpec",
    "ConfigTimeoutError",
    "ConfigTree",
    "ConsulSource",
    "Contribution",
    "DefaultsSource",
    "EnvironmentSource",
    "EtcdSource",
    "Explanation",
    "FileSource",
    "InvalidPathError",
    "InvalidValueError",
    "LoadError",
    "LoadedConfig",
    "NotRunningError",
    "ProcessStatus",
    "ReloadResult",
    "RuntimeSource",
    "Section",
    "Source",
    "SourceError",
    "SourceStatus",
    "Status",
    "SubscriptionHandle",
    "ValidationError",
    "child_spec",
    "load",
    "running",
    "shutdown",
    "start",
    "telemetry",
    "thaw",
]


_LAZY = {
    "ConsulSource": "otpylib_config.sources.consul",
    "EtcdSource": "otpylib_config.sources.etcd",
}
"""Names imported on first use: their modules pull in aiohttp, which a tree without a
Consul or etcd source never needs (most of ``import otpylib_config``'s time otherwise)."""


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otpylib_config' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
