"""The public API: ``otpylib_config.__all__`` lists exactly what the package exports."""

from __future__ import annotations

import types

import pytest

import otpylib_config


def public_names() -> set[str]:
    """Public attributes of the package that are not submodules."""
    return {
        name
        for name, value in vars(otpylib_config).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_every_name_in_all_exists() -> None:
    missing = [name for name in otpylib_config.__all__ if not hasattr(otpylib_config, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(otpylib_config.__all__) == len(set(otpylib_config.__all__))


def test_every_public_non_module_attribute_is_in_all() -> None:
    assert public_names() - set(otpylib_config.__all__) == set()


def test_all_names_only_public_objects() -> None:
    assert all(not name.startswith("_") for name in otpylib_config.__all__)
    modules = {
        name
        for name in otpylib_config.__all__
        if isinstance(getattr(otpylib_config, name), types.ModuleType)
    }
    assert modules <= {"telemetry"}, "only telemetry is exported as a module namespace"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from otpylib_config import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(otpylib_config.__all__)


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in otpylib_config.__all__
        if not isinstance(getattr(otpylib_config, name, None), types.ModuleType)
        and hasattr(getattr(otpylib_config, name, None), "__module__")
    ),
)
def test_exported_objects_are_defined_in_this_package(name: str) -> None:
    assert getattr(otpylib_config, name).__module__.startswith("otpylib_config.")


@pytest.mark.parametrize(
    "name",
    [
        "Config",
        "ConfigSpec",
        "ConfigError",
        "InvalidPathError",
        "InvalidValueError",
        "SourceError",
        "ValidationError",
        "DefaultsSource",
        "FileSource",
        "EnvironmentSource",
        "RuntimeSource",
        "Section",
        "thaw",
        "child_spec",
        "start",
        "telemetry",
    ],
)
def test_the_documented_entry_points_are_exported(name: str) -> None:
    assert name in otpylib_config.__all__


def test_readme_documents_every_telemetry_event_and_status_field() -> None:
    import dataclasses
    import re
    from pathlib import Path

    from otpylib_config import ProcessStatus, SourceStatus, Status, telemetry

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    events = [v for k, v in vars(telemetry).items() if k.isupper() and isinstance(v, str)]
    assert [e for e in events if f"`{e}`" not in readme] == []
    fields = {
        f.name for cls in (Status, SourceStatus, ProcessStatus) for f in dataclasses.fields(cls)
    }
    documented = set(re.findall(r"`(\w+)`", readme))
    assert sorted(fields - documented) == []
