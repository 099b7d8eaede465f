"""The registry of running trees, as a specification: which tree is the default, and who
hears when it changes. Each test starts from an empty registry and leaves it as it was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otpylib_config import Config, ConfigSpec, DefaultsSource, NotRunningError, client, registry
from otpylib_config.table import ConfigTable


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    """An empty registry for the test; whatever was registered before comes back after."""
    tables, default = dict(registry._tables), registry._default
    listeners = list(registry._listeners)
    registry._tables.clear()
    registry._set_default(None)
    yield
    registry._listeners[:] = listeners
    registry._tables.clear()
    registry._tables.update(tables)
    registry._set_default(default)


def table(spec_id: str) -> ConfigTable:
    return ConfigTable(ConfigSpec(id=spec_id, sources=[DefaultsSource({"id": spec_id})]))


def test_the_default_is_the_first_registered() -> None:
    a, b = table("a"), table("b")

    registry.register(a)
    registry.register(b)

    assert registry.default_table() is a
    assert registry.table_by_id("b") is b and registry.table_for("a") is a


def test_registering_the_same_table_again_does_not_move_it() -> None:
    a, b = table("a"), table("b")
    registry.register(a)
    registry.register(b)

    registry.register(a)  # the default tree's manager restarted
    registry.register(b)

    assert registry.default_table() is a
    assert list(registry._tables) == ["a", "b"]


def test_a_new_table_under_a_registered_id_replaces_the_old_one_and_goes_last() -> None:
    old, b, new = table("a"), table("b"), table("a")
    registry.register(old)
    registry.register(b)

    registry.register(new)  # tree "a" was stopped and started anew

    assert registry.table_by_id("a") is new
    assert registry.default_table() is b  # the first registered that is still registered


def test_unregistering_the_default_moves_it_to_the_next() -> None:
    a, b, c = table("a"), table("b"), table("c")
    for t in (a, b, c):
        registry.register(t)

    registry.unregister(a)

    assert registry.default_table() is b
    registry.unregister(c)
    assert registry.default_table() is b
    registry.unregister(b)
    with pytest.raises(NotRunningError):
        registry.default_table()


def test_unregistering_a_table_that_was_replaced_leaves_its_successor() -> None:
    old, new = table("a"), table("a")
    registry.register(old)
    registry.register(new)

    registry.unregister(old)

    assert registry.table_by_id("a") is new and registry.default_table() is new


def test_listeners_hear_the_default_now_and_on_each_change() -> None:
    a, b = table("a"), table("b")
    registry.register(a)
    heard: list[ConfigTable | None] = []

    registry.on_default_changed(heard.append)
    assert heard == [a]  # called at once with the current default

    registry.register(b)
    registry.unregister(a)
    registry.unregister(b)

    distinct = [t for i, t in enumerate(heard) if i == 0 or heard[i - 1] is not t]
    assert distinct == [a, b, None]
    assert heard[-1] is None


def test_a_listener_added_before_any_tree_hears_none() -> None:
    heard: list[ConfigTable | None] = []

    registry.on_default_changed(heard.append)

    assert heard == [None]


def test_config_follows_the_default_tree() -> None:
    a, b = table("a"), table("b")
    registry.register(a)
    registry.register(b)
    assert client._current is a

    registry.unregister(a)

    assert client._current is b
    with pytest.raises(NotRunningError, match="'a'"):
        Config.of("a").get_nowait("id")


def test_default_table_with_no_tree_says_how_to_start_one() -> None:
    with pytest.raises(NotRunningError) as error:
        registry.default_table()

    message = str(error.value)
    assert "no otpylib-config tree is running" in message
    assert "child_spec" in message and "start" in message


def test_table_by_id_of_an_unknown_id_names_it() -> None:
    registry.register(table("a"))

    with pytest.raises(NotRunningError, match=r"no otpylib-config tree 'nope' is running"):
        registry.table_by_id("nope")
    assert registry.table_for("nope") is None
