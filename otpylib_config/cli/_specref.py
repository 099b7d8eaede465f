"""``--spec package.module:attribute``: the application's own ConfigSpec, found like
uvicorn finds ``app:app``.

The attribute is a :class:`ConfigSpec` or a zero-argument callable returning one (a
factory that reads its own settings). The current directory goes first on ``sys.path``,
so ``otpylib-config validate --spec myapp.config:spec`` works from a checkout without an
install. Every way this can fail names the piece that was wrong.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from otpylib_config.cli._errors import UsageError
from otpylib_config.spec import ConfigSpec


def resolve(reference: str) -> ConfigSpec:
    """The ConfigSpec ``reference`` (``module:attribute``) names; a :class:`UsageError`
    naming the module or attribute otherwise."""
    module_name, attribute = _split(reference)
    module = _import(module_name, reference)
    target = _attribute(module, attribute, reference)
    return _as_spec(target, reference)


def _split(reference: str) -> tuple[str, str]:
    module_name, sep, attribute = reference.partition(":")
    names = [*module_name.split("."), *attribute.split(".")]
    if not sep or not all(name.isidentifier() for name in names):
        raise UsageError(
            f"--spec {reference!r} is not of the form package.module:attribute "
            "(for example myapp.config:spec)"
        )
    return module_name, attribute


def _import(module_name: str, reference: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_prefix(exc.name, module_name):
            raise UsageError(
                f"--spec {reference!r}: cannot import module {module_name!r}: "
                f"no module named {exc.name!r} (looked in the current directory and sys.path)"
            ) from None
        raise UsageError(f"--spec {reference!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the application's module raised while it was imported
        raise UsageError(
            f"--spec {reference!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def _is_prefix(missing: str, module_name: str) -> bool:
    """Whether the module that is missing is ``module_name`` or a package above it (not
    something the application's module imports)."""
    return module_name == missing or module_name.startswith(missing + ".")


def _attribute(module: Any, attribute: str, reference: str) -> Any:
    target = module
    for depth, name in enumerate(attribute.split(".")):
        try:
            target = getattr(target, name)
        except AttributeError:
            owner = ".".join([module.__name__, *attribute.split(".")[:depth]])
            raise UsageError(f"--spec {reference!r}: {owner!r} has no attribute {name!r}") from None
    return target


def _as_spec(target: Any, reference: str) -> ConfigSpec:
    if isinstance(target, ConfigSpec):
        return target
    if not callable(target):
        raise UsageError(
            f"--spec {reference!r} is a {type(target).__name__}, not a ConfigSpec "
            "or a callable that returns one"
        )
    try:
        made = target()
    except Exception as exc:
        raise UsageError(
            f"--spec {reference!r}: calling it failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(made, ConfigSpec):
        raise UsageError(f"--spec {reference!r} returned a {type(made).__name__}, not a ConfigSpec")
    return made
