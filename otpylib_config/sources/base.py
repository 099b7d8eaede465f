"""The source contract: a source turns something outside the process into a layer.

A layer is a frozen nested :class:`Section`. ``load`` either returns the complete layer or
raises :class:`SourceError`; it never returns a partial one. What happens on failure is the
manager's policy, not the source's: at start-up a required source's error fails the start,
afterwards the source keeps its last good layer and the error shows in ``status()``.
"""

from __future__ import annotations

import abc

from otpylib_config.values import Section


class Source(abc.ABC):
    """Base class of every source. Subclasses set ``name`` and implement ``load``."""

    #: Shown in ``status()`` and errors; unique within one ConfigSpec.
    name: str
    #: A required source that fails at start-up fails the start.
    required: bool = True

    @abc.abstractmethod
    async def load(self) -> Section:
        """Read the source and return its whole layer, or raise ``SourceError``."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.kind}(name={self.name!r})"
