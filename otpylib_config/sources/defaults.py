"""Defaults given in code: the lowest-priority layer. It keeps nothing but the mapping it
was given, so it has no state for two tasks to share (docs/sources.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otpylib_config.sources.base import Source
from otpylib_config.values import Section, freeze


class DefaultsSource(Source):
    """A fixed mapping, validated and frozen when constructed (bad data fails early)."""

    def __init__(self, data: Mapping[str, Any], *, name: str = "defaults") -> None:
        frozen = freeze(data)
        if not isinstance(frozen, Section):
            raise TypeError(f"DefaultsSource needs a mapping, got {type(data).__name__}")
        self.data: Section = frozen
        self.name = name

    async def load(self) -> Section:
        return self.data
