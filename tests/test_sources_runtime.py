"""Specification of otpylib_config.sources.runtime: the runtime source that stands for the
overrides (their tree is specified in tests/test_overrides.py) and where they persist."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest

from otpylib_config.errors import SourceError
from otpylib_config.sources.runtime import RuntimeSource

# -- RuntimeSource --------------------------------------------------------------------------


async def test_runtime_source_is_optional_and_not_loaded_itself() -> None:
    source = RuntimeSource()
    assert source.name == "runtime"
    assert source.required is False
    with pytest.raises(NotImplementedError):
        await source.load()


def test_runtime_source_refuses_a_directory_when_it_is_made(tmp_path: FilePath) -> None:
    with pytest.raises(SourceError, match="it is a directory") as refused:
        RuntimeSource(path=tmp_path)
    assert str(tmp_path) in str(refused.value)


def test_runtime_source_takes_a_file_that_does_not_exist_yet(tmp_path: FilePath) -> None:
    assert RuntimeSource(path=tmp_path / "overrides.json").path == tmp_path / "overrides.json"
