"""Validation of the merged configuration before it is published
(docs/architecture.md, Data flow).

Two kinds of check, both optional:

* a **schema** for the whole tree: a pydantic model class (its validated instance becomes
  ``Config.model()``), or any callable that raises on a bad tree;
* **validators per glob**: every node matching ``queuemizer.tc_rules.*`` is checked by its own
  callable, dataclass or pydantic model, so one bad interface is reported with its own path.
  The globs are those of subscriptions, matched by the same matcher (docs/matching.md).

Every problem is collected — not just the first — and reported as ``(path, message)`` pairs
in one :class:`ValidationError`. Messages are written by code that knows nothing of secrets
(a validator may quote the value it refused), and they reach logs, telemetry and
``status()``: every secret value of the tree is scrubbed out of them. Pydantic's errors
give only their ``msg``, never the ``input`` they carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from otpylib_config.errors import ValidationError
from otpylib_config.paths import Path, parse_pattern
from otpylib_config.patterns import PatternIndex
from otpylib_config.redact import Redactor
from otpylib_config.values import Section, thaw

Problem = tuple[str, str]
Match = tuple[Path, Any, AbstractSet[int]]  # a node, and the positions of the validators it is for


class Validator:
    """Runs a spec's schema and glob validators over a candidate tree."""

    def __init__(self, schema: Any = None, validators: Mapping[str, Any] | None = None) -> None:
        if schema is not None and not callable(schema):
            raise TypeError(f"schema must be a pydantic model or a callable, got {schema!r}")
        self.schema = schema
        self.validators = [(parse_pattern(p), p, check) for p, check in (validators or {}).items()]
        for _, pattern, check in self.validators:
            if not callable(check):
                raise TypeError(f"validator for {pattern!r} must be callable, got {check!r}")
        self._index: PatternIndex[int] = PatternIndex()  # item: the validator's position
        for position, (segments, _, _) in enumerate(self.validators):
            self._index.add(segments, position)

    @property
    def active(self) -> bool:
        return self.schema is not None or bool(self.validators)

    def check(self, tree: Section, redactor: Redactor | None = None) -> Any:
        """Return the schema's model (or ``None``); raise ``ValidationError`` with every problem.

        ``redactor`` decides which values of ``tree`` are secret, to scrub them out of the
        messages; the default patterns when ``None``.
        """
        problems: list[Problem] = []
        for (_, _, check), nodes in zip(self.validators, self._matches(tree), strict=True):
            for path, value, _ in nodes:
                problems.extend(_run(check, value, ".".join(path)))
        model = None
        if self.schema is not None:
            try:
                model = _construct(self.schema, tree)
            except Exception as exc:
                problems.extend(_problems(exc, ""))
        if problems:
            raise ValidationError(_scrubbed(problems, tree, redactor or Redactor()))
        return model

    def _matches(self, tree: Section) -> list[list[Match]]:
        """For each validator, the nodes its glob matches, in tree order: one walk of the
        tree for all of them, while each validator still runs (and reports) in its turn."""
        if len(self.validators) < 2:  # nothing to sort out
            return [self._index.nodes_in(tree)] if self.validators else []
        found: list[list[Match]] = [[] for _ in self.validators]
        for match in self._index.nodes_in(tree):
            for position in match[2]:
                found[position].append(match)
        return found


def _scrubbed(problems: list[Problem], tree: Section, redactor: Redactor) -> list[Problem]:
    """The problems with every secret value of ``tree`` cut out of their messages; paths are
    kept, so a problem at a secret path still says where it is."""
    messages = redactor.scrub_all((message for _, message in problems), tree)
    return [(path, message) for (path, _), message in zip(problems, messages, strict=True)]


def _run(check: Any, value: Any, path: str) -> list[Problem]:
    try:
        _construct(check, value)
    except Exception as exc:
        return _problems(exc, path)
    return []


def _construct(check: Any, value: Any) -> Any:
    """Pydantic models validate, dataclasses are built from the node, callables are called."""
    if hasattr(check, "model_validate"):
        return check.model_validate(thaw(value))
    if isinstance(check, type) and dataclasses.is_dataclass(check):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table for {check.__name__}, got {type(value).__name__}")
        return check(**thaw(value))
    callable_check: Callable[[Any], Any] = check
    return callable_check(value)


def _problems(exc: Exception, path: str) -> list[Problem]:
    if isinstance(exc, ValidationError):
        return [(_join(path, p), msg) for p, msg in exc.problems]
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":  # pydantic's
        return [(_join(path, _loc(e.get("loc", ()))), str(e.get("msg"))) for e in errors()]
    return [(path, f"{type(exc).__name__}: {exc}")]


def _loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"
