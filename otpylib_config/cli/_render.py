"""Answers as text for a person: explanations, status, and the tree walks behind them.

Offline and online commands get the same data in the same shape (the admin API's JSON is
what the library's objects serialise to), so one renderer serves both and an operator
reads the same output whichever way the CLI got it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from otpylib_config.cli._formats import compact
from otpylib_config.cli._output import Output
from otpylib_config.provenance import Explanation

ABSENT: Any = object()
"""What :func:`walk` gives for a path with no value (``None`` is a value)."""


def walk(data: Any, segments: Sequence[str]) -> Any:
    """The value at ``segments`` inside plain nested dicts, or :data:`ABSENT`."""
    for segment in segments:
        if not isinstance(data, Mapping) or segment not in data:
            return ABSENT
        data = data[segment]
    return data


def shown_at(data: Any, segments: Sequence[str]) -> Any:
    """The redacted value shown for ``segments``: a secret section is one redacted string
    in a dump, which then stands for everything below it."""
    for segment in segments:
        if not isinstance(data, Mapping):
            return data
        if segment not in data:
            return ABSENT
        data = data[segment]
    return data


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, value)`` for every leaf; a list and an empty section are leaves."""
    if isinstance(data, Mapping) and (data or not prefix):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


def explanation_data(explanation: Explanation) -> dict[str, Any]:
    """An :class:`Explanation` in the admin API's ``GET /explain`` shape."""
    return {
        "path": explanation.path,
        "value": explanation.value,
        "source": explanation.source,
        "origin": explanation.origin,
        "contributions": [
            {"source": c.source, "origin": c.origin, "value": c.value}
            for c in explanation.contributions
        ],
    }


def explanation_lines(data: Mapping[str, Any], out: Output) -> list[str]:
    """``path = value``, where it came from, and what it overrides (a leaf) or which
    layers were merged into it (a section)."""
    contributions = list(data.get("contributions") or ())
    path = str(data.get("path"))
    if not contributions:
        return [f"{out.style(path, 'bold')}: not set"]
    section = isinstance(data.get("value"), Mapping)
    lines = [f"{out.style(path, 'bold')} = {compact(data.get('value'))}"]
    for index, item in enumerate(contributions):
        label = "merged from" if section else ("from" if index == 0 else "overrides")
        lines.append("  " + _contribution(label, item, out, show_value=index > 0 or section))
    return lines


def _contribution(label: str, item: Mapping[str, Any], out: Output, *, show_value: bool) -> str:
    where = f"{item.get('origin')} [{item.get('source')}]"
    text = f"{out.style(label, 'cyan')} {where}"
    value = item.get("value")
    if show_value and not (value is None and item.get("source") == "runtime"):
        text += f": {compact(value)}"
    return text


def status_lines(status: Mapping[str, Any], out: Output) -> list[str]:
    """The summary an operator reads first: health, version, each source and process."""
    healthy = bool(status.get("healthy"))
    verdict = out.style("healthy", "green") if healthy else out.style("UNHEALTHY", "red", "bold")
    lines = [f"{out.style(str(status.get('id')), 'bold')}: {verdict}"]
    lines.append(f"  version {status.get('version')}, hash {status.get('config_hash')}")
    if status.get("profile"):
        lines.append(f"  profile {status['profile']}")
    if status.get("stopped"):
        lines.append(f"  stopped: {status['stopped']}")
    if status.get("last_validation_error"):
        lines.append(f"  last validation error: {status['last_validation_error']}")
    lines += [_source_line(source, out) for source in status.get("sources") or ()]
    lines += [_process_line(proc, out) for proc in status.get("processes") or ()]
    return lines


def _source_line(source: Mapping[str, Any], out: Output) -> str:
    ok = out.style("ok", "green") if source.get("healthy") else out.style("failing", "red")
    age = source.get("age_s")
    text = f"  source {source.get('name')}: {ok}"
    if isinstance(age, int | float):
        text += f", loaded {age:.1f} s ago"
    if source.get("last_error"):
        text += f", last error: {source['last_error']}"
    return text


def _process_line(proc: Mapping[str, Any], out: Output) -> str:
    alive = out.style("alive", "green") if proc.get("alive") else out.style("down", "red")
    text = f"  process {proc.get('role')}: {alive}, {proc.get('restarts', 0)} restarts"
    if proc.get("last_exit"):
        text += f", last exit: {proc['last_exit']}"
    return text
