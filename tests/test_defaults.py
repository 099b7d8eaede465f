"""Specification of DefaultsSource: values given in code, the lowest layer when listed first.

README.md (Sources): "values in code; validated when constructed". The mapping is checked
and frozen once, in the constructor, so bad defaults fail where they are written, not at
the first load; the layer is the same object at every load, so a reload of unchanged
defaults costs no diff.
"""

from __future__ import annotations

import datetime
import types

import pytest

from otpylib_config import Config, ConfigSpec, DefaultsSource, Section
from otpylib_config.errors import InvalidValueError
from otpylib_config.values import MAX_DEPTH

from .conftest import StartTree, nested


async def test_load_gives_the_frozen_mapping() -> None:
    source = DefaultsSource({"db": {"url": "pg://d", "hosts": ["a", "b"]}, "debug": False})

    layer = await source.load()

    assert layer == {"db": {"url": "pg://d", "hosts": ("a", "b")}, "debug": False}
    assert type(layer) is Section and type(layer["db"]) is Section
    with pytest.raises(TypeError, match="read-only"):
        layer["debug"] = True


async def test_every_load_gives_the_same_layer_object() -> None:
    source = DefaultsSource({"a": {"b": 1}})
    assert await source.load() is await source.load()


async def test_later_changes_to_the_callers_mapping_are_not_seen() -> None:
    data = {"a": {"b": 1}, "hosts": ["x"]}
    source = DefaultsSource(data)
    data["a"]["b"] = 2
    data["hosts"].append("y")
    data["new"] = 1
    assert await source.load() == {"a": {"b": 1}, "hosts": ("x",)}


async def test_any_mapping_will_do() -> None:
    source = DefaultsSource(types.MappingProxyType({"a": 1}))
    assert await source.load() == {"a": 1}


@pytest.mark.parametrize(
    ("data", "kind"), [([("a", 1)], "list"), ("a=1", "str"), (None, "NoneType")]
)
def test_something_that_is_not_a_mapping_is_refused_naming_its_type(
    data: object, kind: str
) -> None:
    with pytest.raises(TypeError, match=f"DefaultsSource needs a mapping, got {kind}"):
        DefaultsSource(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        ({"db": {"port": {8080}}}, "db.port", "set"),
        ({"db": {"raw": b"x"}}, "db.raw", "bytes"),
        ({"ratio": float("nan")}, "ratio", "NaN"),
        ({"db": {"a.b": 1}}, "db", "cannot be a path segment"),
        ({"db": {1: "x"}}, "db", "mapping key of type int"),
        ({"hosts": [1, object()]}, "hosts[1]", "object"),
    ],
)
def test_a_value_that_is_not_json_like_fails_the_constructor_naming_its_path(
    data: dict[str, object], where: str, what: str
) -> None:
    with pytest.raises(InvalidValueError, match=what) as info:
        DefaultsSource(data)
    assert str(info.value).startswith(f"{where}: ")


def test_dates_are_refused_in_code_though_files_may_hold_them() -> None:
    with pytest.raises(InvalidValueError, match="date") as info:
        DefaultsSource({"since": datetime.date(2024, 1, 1)})
    assert str(info.value).startswith("since: ")


def test_nesting_is_bounded_as_everywhere() -> None:
    assert DefaultsSource(nested(MAX_DEPTH)) is not None  # the deepest allowed
    with pytest.raises(InvalidValueError, match=f"deeper than {MAX_DEPTH} levels"):
        DefaultsSource(nested(MAX_DEPTH + 1))


def test_its_name_and_contract_attributes() -> None:
    source = DefaultsSource({})
    assert source.name == "defaults"
    assert DefaultsSource({}, name="more defaults").name == "more defaults"
    assert source.required is True and source.secret is False and source.pushes is False
    assert source.origin(("a", "b")) == "defaults"
    assert repr(source) == "DefaultsSource(name='defaults')"


async def test_it_does_not_push() -> None:
    async def changed() -> None:
        raise AssertionError("never called")

    with pytest.raises(NotImplementedError, match="DefaultsSource does not push"):
        await DefaultsSource({}).watch(changed)


def test_two_defaults_in_one_spec_need_names_of_their_own() -> None:
    with pytest.raises(ValueError, match=r"duplicate source names \['defaults'\]"):
        ConfigSpec(sources=[DefaultsSource({"a": 1}), DefaultsSource({"b": 1})])
    spec = ConfigSpec(sources=[DefaultsSource({"a": 1}), DefaultsSource({"b": 1}, name="more")])
    assert [s.name for s in spec.sources] == ["defaults", "more"]


async def test_in_a_tree_it_is_served_and_explained_as_the_defaults(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"db": {"pool": 5}})])

    assert await Config.get("db.pool") == 5
    explained = await Config.explain("db.pool")
    assert (explained.source, explained.origin, explained.overridden) == (
        "defaults",
        "defaults",
        (),
    )


async def test_a_reload_of_unchanged_defaults_changes_nothing(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    version = (await Config.status()).version

    result = await Config.reload()

    assert (result.changed, result.errors, result.version) == ((), {}, version)
