"""What a schema says about paths: which exist, and which want their value as text.

Environment variables and Consul values arrive as text. Without a schema they are coerced
(:func:`otpylib_config.values.coerce`): ``true`` becomes ``True``, ``8001`` an int, ``[1]`` a
list. That guess is wrong for a string field: ``SECRET_KEY=12345678901234567890`` or
``SECRET_KEY=True`` would reach a ``str`` field as a number or a bool and fail validation.
With a pydantic model as ``ConfigSpec.schema`` the schema decides instead, as in
pydantic-settings: where its field is a string type the text is handed over unchanged, and
pydantic parses it.

A field **wants text** unless its type is bool, int or float (or a subclass, ``IntEnum``
too), a list, tuple, set or other collection, a dict or mapping, or a model (a pydantic model
or dataclass, a stdlib dataclass, a ``TypedDict``): so ``str``, ``SecretStr``, constrained
strings, URLs, datetimes, ``Decimal``, ``UUID``, paths, a ``Literal`` of strings, an enum of
strings and ``Any`` all get text; when in doubt, text. ``Optional[X]`` is ``X``; any other
union wants text only if each of its types does (``int | str`` is coerced, so ``8001`` is an
int; pydantic then keeps it). ``Json[...]`` fields parse text themselves, so they get text.

The shape also says which paths exist, so a variable that maps to no field can be reported:
a model's fields (under their validation aliases), any key of a ``dict[str, X]`` section
(then ``X``'s fields), anything below ``Any``, a plain ``dict`` or a model with
``extra="allow"``. Segments match exactly, else case-insensitively (``spelling`` gives the
schema's own). :meth:`SchemaShape.flat_names` indexes the leaves by their path joined with
``_``, for flat environment names (``REDIS_URL`` → ``redis.url``).

Only the annotations are read: pydantic is never imported here. A callable schema that is
not a model class has no shape (``shape_of`` gives ``None``), and values are coerced as
without a schema.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from otpylib_config.paths import MAX_SEGMENTS
from otpylib_config.values import coerce

Path = tuple[str, ...]


@dataclass(eq=False)
class Node:
    """What the schema expects at one path."""

    text: bool = True
    """A value here is handed over as text."""
    fields: dict[str, Node] | None = None
    """A model: its input keys (the alias if there is one) and what each holds."""
    extra_keys: dict[str, str] = field(default_factory=dict)
    """Other keys the model accepts (field names beside aliases): key -> the input key."""
    items: Node | None = None
    """A dict section: what every key of it holds."""
    open: bool = False
    """Anything below exists (``Any``, a plain ``dict``, ``extra="allow"``)."""

    def child(self, segment: str) -> tuple[str, Node] | None:
        """The key and node ``segment`` names, matched exactly, else case-insensitively."""
        if self.fields is not None:
            key = self._key(segment)
            if key is not None:
                return key, self.fields[key]
        if self.items is not None:
            return segment, self.items
        if self.open:
            return segment, _ANYTHING
        return None

    def _key(self, segment: str) -> str | None:
        assert self.fields is not None
        if segment in self.fields:
            return segment
        if segment in self.extra_keys:
            return self.extra_keys[segment]
        lowered = segment.lower()
        for key in (*self.fields, *self.extra_keys):
            if key.lower() == lowered:
                return self.extra_keys.get(key, key)
        return None


_ANYTHING = Node(text=True, open=True)


class SchemaShape:
    """Paths of a schema: whether they exist, how the schema spells them, and which want
    text. Built once per tree (``shape_of``) and handed to sources in their context."""

    def __init__(self, root: Node) -> None:
        self.root = root

    def locate(self, path: Path) -> tuple[Path, Node] | None:
        """The schema's spelling of ``path`` and its node; ``None`` if no such path."""
        node, spelled = self.root, []
        for segment in path:
            found = node.child(segment)
            if found is None:
                return None
            spelled.append(found[0])
            node = found[1]
        return tuple(spelled), node

    def exists(self, path: Path) -> bool:
        return self.locate(path) is not None

    def spelling(self, path: Path) -> Path | None:
        """``path`` as the schema spells it (``("Server", "HOST")`` → ``("server",
        "host")``), or ``None`` if the schema has no such path."""
        found = self.locate(path)
        return None if found is None else found[0]

    def wants_text(self, path: Path) -> bool:
        """Whether a value at ``path`` is handed to the schema as text; ``False`` (coerce)
        where the schema has no such path."""
        found = self.locate(path)
        return found is not None and found[1].text

    @cached_property
    def flat_names(self) -> Mapping[str, tuple[Path, ...]]:
        """Every leaf by its lower-cased path joined with ``_`` (``redis_url`` for
        ``redis.url``); more than one path under a name is an ambiguity. The leaves are the
        fields that are not models: scalars, lists, and dicts (a dict section is one leaf:
        its keys cannot be listed)."""
        index: dict[str, list[Path]] = {}
        for path in _leaves(self.root, (), ()):
            index.setdefault("_".join(path).lower(), []).append(path)
        return {name: tuple(paths) for name, paths in index.items()}

    def leaf_paths(self) -> list[str]:
        """Every leaf as a dotted path, for suggestions in messages."""
        return sorted(".".join(p) for paths in self.flat_names.values() for p in paths)


def _leaves(node: Node, path: Path, stack: tuple[int, ...]) -> Iterator[Path]:
    if node.fields is None:
        if path:
            yield path
        return
    if id(node) in stack or len(path) >= MAX_SEGMENTS:  # a model that holds itself
        return
    for key, child in node.fields.items():
        yield from _leaves(child, (*path, key), (*stack, id(node)))


def coerce_at(text: str, path: Path, shape: SchemaShape | None) -> Any:
    """Text from the environment or Consul as the value to give the schema at ``path``:
    the text itself where the schema wants text there, else :func:`coerce`'s guess."""
    if shape is not None and shape.wants_text(path):
        return text
    return coerce(text)


def shape_of(schema: Any) -> SchemaShape | None:
    """The shape of ``ConfigSpec.schema``: a pydantic model class has one; ``None`` for no
    schema or a plain callable."""
    if not isinstance(schema, type) or not hasattr(schema, "model_validate"):
        return None
    if _fields_of(schema) is None:
        return None
    return SchemaShape(_Builder().node(schema))


# -- from annotations to nodes ----------------------------------------------------------------

_NONE = type(None)
_NUMBERS = (bool, int, float)
_COLLECTIONS = (list, tuple, set, frozenset, Collection)


@dataclass(frozen=True)
class _Field:
    keys: tuple[str, ...]
    """The input key first (the alias if any), then other accepted keys."""
    annotation: Any
    metadata: tuple[Any, ...] = ()


class _Builder:
    """Turns annotations into nodes; one node per model class, so that a model that
    refers to itself (directly or not) is a cycle of nodes, not an endless descent."""

    def __init__(self) -> None:
        self.models: dict[type, Node] = {}

    def node(self, annotation: Any, metadata: tuple[Any, ...] = ()) -> Node:
        annotation, metadata = _unwrap(annotation, metadata)
        if any(_is_json(m) for m in metadata):
            return Node(text=True)  # pydantic's Json[...] parses the text itself
        origin = typing.get_origin(annotation)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(annotation) if a is not _NONE]
            return _union([self.node(a) for a in args])
        if origin is typing.Literal:
            return Node(text=all(isinstance(v, str) for v in typing.get_args(annotation)))
        if isinstance(annotation, type) and _fields_of(annotation) is not None:
            return self._model(annotation)
        return self._plain(annotation, origin)

    def _model(self, model: type) -> Node:
        if model in self.models:
            return self.models[model]
        node = self.models[model] = Node(text=False, fields={})
        assert node.fields is not None
        node.open = _allows_extra(model)
        for entry in _fields_of(model) or ():
            key = entry.keys[0]
            node.fields[key] = self.node(entry.annotation, entry.metadata)
            for other in entry.keys[1:]:
                node.extra_keys.setdefault(other, key)
        return node

    def _plain(self, annotation: Any, origin: Any) -> Node:
        base = origin if isinstance(origin, type) else annotation
        if base is Any or base is object or not isinstance(base, type):
            return Node(text=True, open=True)  # Any, a TypeVar, an unresolved name: doubt
        if issubclass(base, str | bytes):
            return Node(text=True)
        if issubclass(base, _NUMBERS):
            return Node(text=False)
        if issubclass(base, enum.Enum):
            return Node(text=not all(isinstance(m.value, _NUMBERS) for m in base))
        if issubclass(base, Mapping):
            args = typing.get_args(annotation)
            return Node(text=False, items=self.node(args[1]) if len(args) == 2 else _ANYTHING)
        if issubclass(base, _COLLECTIONS):
            return Node(text=False)
        return Node(text=True)


def _unwrap(annotation: Any, metadata: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[X, ...]`` as ``X`` and its metadata."""
    while typing.get_origin(annotation) is typing.Annotated:
        metadata = (*metadata, *annotation.__metadata__)
        annotation = annotation.__origin__
    return annotation, metadata


def _is_json(meta: Any) -> bool:
    kind = meta if isinstance(meta, type) else type(meta)
    return kind.__name__ == "Json" and kind.__module__.startswith("pydantic")


def _union(nodes: list[Node]) -> Node:
    """What a union expects: text only if every member wants it; the paths of all."""
    if not nodes:
        return Node(text=True)  # only None
    if len(nodes) == 1:
        return nodes[0]
    return _merge(nodes, {})


def _merge(nodes: list[Node], memo: dict[tuple[int, ...], Node]) -> Node:
    ids = tuple(id(n) for n in nodes)
    if ids in memo:
        return memo[ids]
    merged = memo[ids] = Node(text=all(n.text for n in nodes), open=any(n.open for n in nodes))
    models = [n for n in nodes if n.fields is not None]
    if models:
        merged.fields = {}
        for key in dict.fromkeys(k for n in models for k in (n.fields or {})):
            same = [(n.fields or {})[key] for n in models if key in (n.fields or {})]
            merged.fields[key] = same[0] if len(same) == 1 else _merge(same, memo)
        for n in models:
            for other, key in n.extra_keys.items():
                merged.extra_keys.setdefault(other, key)
    sections = [n.items for n in nodes if n.items is not None]
    if sections:
        merged.items = sections[0] if len(sections) == 1 else _merge(sections, memo)
    return merged


def _fields_of(model: type) -> list[_Field] | None:
    """The fields of a pydantic model or dataclass, a stdlib dataclass or a ``TypedDict``;
    ``None`` for any other type."""
    pydantic_fields = getattr(model, "__pydantic_fields__", None)
    if isinstance(pydantic_fields, Mapping):
        by_name = _by_name(model)
        return [_pydantic_field(name, info, by_name) for name, info in pydantic_fields.items()]
    if dataclasses.is_dataclass(model) or _is_typeddict(model):
        try:
            hints = typing.get_type_hints(model, include_extras=True)
        except Exception:  # an unresolvable name: every field is in doubt
            hints = {}
        names = (
            [f.name for f in dataclasses.fields(model)]
            if dataclasses.is_dataclass(model)
            else list(getattr(model, "__annotations__", {}))
        )
        return [_Field((name,), hints.get(name, Any)) for name in names]
    return None


def _is_typeddict(model: type) -> bool:
    """``typing``'s or ``typing_extensions``' (which pydantic asks for before 3.12)."""
    return issubclass(model, dict) and hasattr(model, "__total__")


def _pydantic_field(name: str, info: Any, by_name: bool) -> _Field:
    aliases = [a for a in _aliases(info) if a != name]
    keys = (*aliases, name) if not aliases or by_name else tuple(aliases)
    return _Field(keys, info.annotation, tuple(info.metadata))


def _aliases(info: Any) -> list[str]:
    """The keys pydantic takes a field's input under, other than its name."""
    found: list[str] = []
    alias = getattr(info, "validation_alias", None)
    if isinstance(alias, str):
        found.append(alias)
    for choice in getattr(alias, "choices", ()) or ():
        if isinstance(choice, str):
            found.append(choice)
    if isinstance(info.alias, str):
        found.append(info.alias)
    return list(dict.fromkeys(found))


def _config(model: type) -> Mapping[str, Any]:
    config = getattr(model, "model_config", None) or getattr(model, "__pydantic_config__", {})
    return config if isinstance(config, Mapping) else {}


def _by_name(model: type) -> bool:
    config = _config(model)
    return bool(config.get("populate_by_name") or config.get("validate_by_name"))


def _allows_extra(model: type) -> bool:
    if _is_typeddict(model):
        return False
    return _config(model).get("extra") == "allow"
