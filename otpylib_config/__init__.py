"""otpylib-config: a runtime configuration server for otpylib applications.

Add ``child_spec(spec)`` to a supervision tree (or ``await start(spec)`` in a script), then
``await Config.get(path)``, ``Config.get_nowait(path)``, ``await Config.put(path, value)`` and
``await Config.subscribe(pattern, callback)`` from anywhere. See README.md.

The data flow, module by module::

    sources/ → (layers) → tree.merge → tree.diff → validate → manager publishes a snapshot
    → subscriptions → notifier
"""

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
from otpylib_config.sources.base import Source
from otpylib_config.sources.consul import ConsulSource
from otpylib_config.sources.defaults import DefaultsSource
from otpylib_config.sources.env import EnvironmentSource
from otpylib_config.sources.file import FileSource
from otpylib_config.sources.runtime import RuntimeSource
from otpylib_config.spec import ConfigSpec
from otpylib_config.subscriptions import SubscriptionHandle
from otpylib_config.supervisor import ConfigTree, child_spec, running, shutdown, start
from otpylib_config.table import ProcessStatus, SourceStatus, Status
from otpylib_config.values import Section, thaw

_otp_compat.install()  # Erlang's exit and supervision semantics for every otpylib process

__all__ = [
    "DEFAULT_SECRET_PATTERNS",
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
