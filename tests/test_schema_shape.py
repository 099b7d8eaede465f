"""What a schema says about paths: which exist, how it spells them, which want text."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Annotated, Any, Literal, Optional

import pydantic
import pytest
from pydantic import AnyUrl, ConfigDict, Field, Json, SecretStr, constr
from typing_extensions import TypedDict

from otpylib_config.schema_shape import coerce_at, shape_of


class Color(str, enum.Enum):  # noqa: UP042 (the mixin spelling is what is tested)
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


class Plain(enum.Enum):
    A = "a"


class Numbered(enum.Enum):
    ONE = 1


class Redis(pydantic.BaseModel):
    url: str
    db: int = 0


class Tree(pydantic.BaseModel):
    name: str = ""
    left: Optional[Tree] = None  # noqa: UP045 (the old spelling is what is tested)
    right: Tree | None = None


@dataclasses.dataclass
class Point:
    x: int
    label: str


class Limits(TypedDict):
    rate: str
    burst: int


class Settings(pydantic.BaseModel):
    secret_key: SecretStr
    name: constr(min_length=1) = "x"  # type: ignore[valid-type]
    annotated: Annotated[str, Field(min_length=1)] = "x"
    maybe: Optional[str] = None  # noqa: UP045
    mode: Literal["a", "b"] = "a"
    url: AnyUrl | None = None
    when: datetime.datetime | None = None
    dec: decimal.Decimal = decimal.Decimal(1)
    uid: uuid.UUID | None = None
    color: Color = Color.RED
    plain: Plain = Plain.A
    anything: Any = None
    js: Json[list[int]] = "[1]"  # type: ignore[assignment]
    port: int = 0
    debug: bool = False
    ratio: float = 1.0
    positive: Annotated[int, Field(gt=0)] = 1
    nums: Literal[1, 2] = 1
    level: Level = Level.LOW
    numbered: Numbered = Numbered.ONE
    hosts: list[str] = []
    pair: tuple[int, int] = (0, 0)
    tags: set[str] = set()
    opts: dict[str, int] = {}
    loose: dict = {}  # type: ignore[type-arg]
    mixed: int | str = 0
    redis: Redis
    pools: dict[str, Redis] = {}
    tree: Tree = Tree()
    point: Point | None = None
    limits: Limits | None = None


SHAPE = shape_of(Settings)

TEXT = [
    "secret_key", "name", "annotated", "maybe", "mode", "url", "when", "dec", "uid", "color",
    "plain", "anything", "js", "redis.url", "pools.any.url", "tree.left.right.left.name",
    "point.label", "limits.rate", "anything.a.b",
]  # fmt: skip
NOT_TEXT = [
    "port", "debug", "ratio", "positive", "nums", "level", "numbered", "hosts", "pair", "tags",
    "opts", "loose", "mixed", "redis", "redis.db", "pools", "pools.any", "pools.any.db", "tree",
    "point", "point.x", "limits.burst",
]  # fmt: skip


@pytest.mark.parametrize("path", TEXT)
def test_string_types_want_text(path: str) -> None:
    assert SHAPE is not None
    assert SHAPE.wants_text(tuple(path.split(".")))


@pytest.mark.parametrize("path", NOT_TEXT)
def test_numbers_collections_and_models_are_coerced(path: str) -> None:
    assert SHAPE is not None
    assert not SHAPE.wants_text(tuple(path.split(".")))


@pytest.mark.parametrize(
    "path", ["nope", "redis.nope", "pools.x.nope", "port.below", "tree.left.nope", "point.z"]
)
def test_paths_the_schema_does_not_have(path: str) -> None:
    assert SHAPE is not None
    assert not SHAPE.exists(tuple(path.split(".")))
    assert not SHAPE.wants_text(tuple(path.split(".")))  # unknown: coerced


@pytest.mark.parametrize(
    "path", ["opts.any_key", "loose.a.b.c", "anything.x", "pools.main.url", "tree.left.left"]
)
def test_open_sections_and_dict_keys_exist(path: str) -> None:
    assert SHAPE is not None
    assert SHAPE.exists(tuple(path.split(".")))


def test_segments_match_whatever_their_case_and_take_the_schemas_spelling() -> None:
    class Camel(pydantic.BaseModel):
        apiKey: str = ""
        Server: Redis | None = None

    shape = shape_of(Camel)
    assert shape is not None
    assert shape.spelling(("apikey",)) == ("apiKey",)
    assert shape.spelling(("server", "URL")) == ("Server", "url")
    assert shape.spelling(("nope",)) is None


def test_aliases_are_the_input_keys() -> None:
    class Aliased(pydantic.BaseModel):
        api_key: str = Field("", alias="apiKey")
        other: int = Field(0, validation_alias=pydantic.AliasChoices("o", "oth"))

    class ByName(Aliased):
        model_config = ConfigDict(populate_by_name=True)

    shape, by_name = shape_of(Aliased), shape_of(ByName)
    assert shape is not None and by_name is not None
    assert shape.spelling(("apiKey",)) == ("apiKey",)
    assert not shape.exists(("api_key",))  # pydantic would not take it
    assert shape.spelling(("oth",)) == ("o",)
    assert by_name.spelling(("api_key",)) == ("apiKey",)
    assert shape.wants_text(("apiKey",)) and not shape.wants_text(("oth",))


def test_extra_allow_opens_a_model() -> None:
    class Open(pydantic.BaseModel):
        model_config = ConfigDict(extra="allow")
        port: int = 0

    shape = shape_of(Open)
    assert shape is not None
    assert shape.exists(("anything", "below"))
    assert not shape.wants_text(("port",))


def test_a_union_of_models_has_the_paths_of_both() -> None:
    class A(pydantic.BaseModel):
        a: str = ""
        both: int = 0

    class B(pydantic.BaseModel):
        b: int = 0
        both: str = ""

    class Root(pydantic.BaseModel):
        either: A | B

    shape = shape_of(Root)
    assert shape is not None
    assert shape.wants_text(("either", "a"))
    assert not shape.wants_text(("either", "b"))
    assert not shape.wants_text(("either", "both"))  # int or str: coerced


def test_flat_names_index_the_leaves() -> None:
    assert SHAPE is not None
    names = SHAPE.flat_names
    assert names["redis_url"] == (("redis", "url"),)
    assert names["tree_name"] == (("tree", "name"),)
    assert names["pools"] == (("pools",),)  # a dict section is one leaf
    assert names["point_x"] == (("point", "x"),)
    assert "redis" not in names  # a model is no leaf
    assert "tree_left_name" not in names  # a model that holds itself ends the walk


def test_flat_names_that_collide_are_kept_for_the_caller_to_refuse() -> None:
    class Both(pydantic.BaseModel):
        redis_url: str = ""
        redis: Redis | None = None

    shape = shape_of(Both)
    assert shape is not None
    assert set(shape.flat_names["redis_url"]) == {("redis_url",), ("redis", "url")}


def test_callables_and_no_schema_have_no_shape() -> None:
    assert shape_of(None) is None
    assert shape_of(lambda tree: tree) is None
    assert shape_of(dict) is None
    assert shape_of(Point) is None  # a dataclass is no schema (only a validator)


def test_coerce_at_keeps_text_only_where_wanted() -> None:
    assert coerce_at("123", ("secret_key",), SHAPE) == "123"
    assert coerce_at("123", ("port",), SHAPE) == 123
    assert coerce_at("true", ("nope",), SHAPE) is True
    assert coerce_at("123", ("secret_key",), None) == 123


def test_pydantic_is_not_imported_to_build_a_shape() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dataclasses\n"
        "from otpylib_config.schema_shape import shape_of\n"
        "class M:\n"
        "    model_validate = None\n"
        "    __pydantic_fields__ = {}\n"
        "assert shape_of(M) is not None\n"
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # the asserts above ran in a fresh interpreter
