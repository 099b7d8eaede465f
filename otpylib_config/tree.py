"""Pure operations on frozen configuration trees: look up, set, remove, merge and diff.

No I/O and no asyncio here. Updates copy only the spine from the root to the changed node
and share every other subtree with the old tree, so a put costs O(depth), not O(size) (when
no validation runs over the whole tree), and
``diff`` skips shared subtrees by identity.

A *leaf* is any value that is not a non-empty :class:`Section` (an empty section is a leaf:
it can appear and disappear like a scalar).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from otpylib_config.paths import Path
from otpylib_config.values import EMPTY, Section, same


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Marks "no value here"; distinct from ``None``, which is a value.
MISSING: Final[Any] = _Missing()


def get_in(tree: Section, path: Path) -> Any:
    """The value at ``path``, or ``MISSING``."""
    node: Any = tree
    for segment in path:
        if not isinstance(node, Section):
            return MISSING
        node = node.get(segment, MISSING)
        if node is MISSING:
            return MISSING
    return node


def set_in(tree: Section, path: Path, value: Any) -> Section:
    """A new tree with ``value`` at ``path``; scalars in the way become sections."""
    head, rest = path[0], path[1:]
    if rest:
        child = tree.get(head)
        value = set_in(child if isinstance(child, Section) else EMPTY, rest, value)
    return _with(tree, head, value)


def remove_in(tree: Section, path: Path) -> Section:
    """A new tree without ``path``; sections left empty by the removal disappear too."""
    head, rest = path[0], path[1:]
    if head not in tree:
        return tree
    if not rest:
        return _without(tree, head)
    child = tree[head]
    if not isinstance(child, Section):
        return tree
    new_child = remove_in(child, rest)
    if new_child is child:
        return tree
    return _with(tree, head, new_child) if new_child else _without(tree, head)


def merge(layers: Sequence[Section]) -> Section:
    """Deep-merge layers, lowest priority first: sections merge, anything else replaces."""
    result: Section = EMPTY
    for layer in layers:
        result = _merge_two(result, layer)
    return result


def _merge_two(low: Section, high: Section) -> Section:
    if not low:
        return high
    if not high:
        return low
    merged = dict(low)
    for key, value in high.items():
        below = merged.get(key, MISSING)
        if isinstance(value, Section) and isinstance(below, Section):
            merged[key] = _merge_two(below, value)
        else:
            merged[key] = value
    return Section(merged)


def diff(old: Section, new: Section, prefix: Path = ()) -> list[Path]:
    """Paths of the leaves that changed between two trees, from both sides, in tree order."""
    changed: list[Path] = []
    _diff(old, new, prefix, changed)
    return changed if prefix else [path for path in changed if path]  # the root is no leaf


def _diff(a: Any, b: Any, prefix: Path, out: list[Path]) -> None:
    if a is b:
        return
    a_branch = isinstance(a, Section) and bool(a)
    b_branch = isinstance(b, Section) and bool(b)
    if a_branch and b_branch:
        for key in a:
            _diff(a[key], b.get(key, MISSING), (*prefix, key), out)
        for key in b:
            if key not in a:
                out.extend(leaves(b[key], (*prefix, key)))
        return
    if a is not MISSING and b is not MISSING and not a_branch and not b_branch:
        if not same(a, b):
            out.append(prefix)
        return
    if a is not MISSING:
        out.extend(leaves(a, prefix))
    if b is not MISSING:
        out.extend(leaves(b, prefix))


def leaf_items(value: Any, prefix: Path) -> Iterator[tuple[Path, Any]]:
    """``(path, leaf)`` for every leaf in ``value`` (an empty section counts as a leaf)."""
    if isinstance(value, Section) and value:
        for key, child in value.items():
            yield from leaf_items(child, (*prefix, key))
    else:
        yield prefix, value


def leaves(value: Any, prefix: Path) -> Iterator[Path]:
    """Paths of every leaf in ``value`` (``prefix`` itself if it is a leaf)."""
    return (path for path, _ in leaf_items(value, prefix))


def flatten(tree: Section) -> dict[str, Any]:
    """``{"a.b": leaf}`` for every leaf."""
    return {".".join(path): leaf for path, leaf in leaf_items(tree, ()) if path}


def value_at(tree: Section, path: Path) -> Any:
    """The value at ``path``, or ``None`` where there is none (how events report absence)."""
    value = get_in(tree, path)
    return None if value is MISSING else value


class PathClash(ValueError):
    """Two entries of a flat source set the same path, or one sets a value where the
    other needs a section: ``first`` and ``second`` are the entries' labels."""

    def __init__(self, first: str, second: str, path: Path) -> None:
        super().__init__(f"{first} and {second} both set {'.'.join(path)}")
        self.first, self.second, self.path = first, second, path


def build(entries: Iterable[tuple[str, Path, Any]]) -> Section:
    """A layer from flat ``(label, path, frozen value)`` entries (environment variables,
    Consul keys). Raises :class:`PathClash` naming both entries when paths collide."""
    root: dict[str, Any] = {}
    owners: dict[Path, str] = {}
    sections: dict[Path, str] = {}  # every proper prefix, with the first label below it
    for label, path, value in entries:
        at = next((path[:d] for d in range(1, len(path)) if path[:d] in owners), None)
        if at is not None:
            raise PathClash(owners[at], label, at)
        if path in owners or path in sections:
            raise PathClash(owners.get(path) or sections[path], label, path)
        owners[path] = label
        node = root
        for depth, segment in enumerate(path[:-1], 1):
            sections.setdefault(path[:depth], label)
            node = node.setdefault(segment, {})
        node[path[-1]] = value
    return _sectioned(root)


def _sectioned(node: dict[str, Any]) -> Section:
    return Section({k: _sectioned(v) if type(v) is dict else v for k, v in node.items()})


def _with(section: Section, key: str, value: Any) -> Section:
    copy = Section(section)
    dict.__setitem__(copy, key, value)
    return copy


def _without(section: Section, key: str) -> Section:
    copy = Section(section)
    dict.__delitem__(copy, key)
    return copy
