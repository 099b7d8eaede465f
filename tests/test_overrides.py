"""Specification of otpylib_config.overrides: the runtime layer that put, put_many and delete
write, a persistent tree of sections whose leaves are override markers, and the one walk of it
(``covering`` and ``items``) that provenance and persistence read it through."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import pytest

from otpylib_config.overrides import Override, Overrides
from otpylib_config.paths import parse_path
from otpylib_config.tree import MISSING, get_in
from otpylib_config.values import EMPTY, Section, freeze

BASE = freeze(
    {
        "database": {"url": "pg://file", "pool_size": 5, "options": {"timeout": 2}},
        "server": {"port": 80},
        "debug": False,
    }
)


def p(path: str) -> tuple[str, ...]:
    return parse_path(path)


def put(overrides: Overrides, path: str, value: Any) -> Overrides:
    new, _ = overrides.put(p(path), freeze(value))
    return new


def effective(overrides: Overrides, base: Section = BASE) -> Any:
    return overrides.apply(base)


def overrides_with(*puts: tuple[str, Any]) -> Overrides:
    overrides = Overrides()
    for path, value in puts:
        overrides = put(overrides, path, value)
    return overrides


def override_paths(overrides: Overrides) -> list[str]:
    """Where the override markers sit in the structure."""
    return sorted(".".join(path) for path, _ in overrides.items())


# -- changes: what the journal records ------------------------------------------------------


def test_a_put_records_the_change_that_made_it() -> None:
    first = Overrides()
    second, _ = first.put(p("a.b"), 1, at=5.0)
    assert second.change is not None
    assert (second.change.path, second.change.value, second.change.at) == (("a", "b"), 1, 5.0)
    assert second.change.deleted is False
    assert second.change.parent() is first
    assert first.change is None


def test_a_delete_records_the_change_that_made_it() -> None:
    first = overrides_with(("a", {"b": 1, "c": 2}))
    outcome = first.delete(p("a.b"), at=7.0)
    assert outcome is not None
    change = outcome[0].change
    assert change is not None and change.deleted and change.path == ("a", "b")
    assert change.parent() is first


def test_a_change_does_not_keep_its_predecessor_alive() -> None:
    second, _ = Overrides().put(p("a"), 1)
    assert second.change is not None
    gc.collect()
    assert second.change.parent() is None


def test_replaying_a_change_on_its_predecessor_gives_the_same_overrides() -> None:
    """What restoring a journal relies on: put(path, value, at) and delete(path, at)."""
    steps: list[Callable[[Overrides], Overrides]] = [
        lambda o: o.put(p("db.pool"), 6, at=9.0)[0],  # inside an override
        lambda o: _deleted(o, p("db.url"), at=9.0),  # inside an override
        lambda o: o.put(p("x"), 2, at=9.0)[0],  # above an override
        lambda o: _deleted(o, p("x"), at=9.0),
    ]
    state = overrides_with(("db", {"url": "u", "pool": 5}), ("x.y", 1))
    for step in steps:
        made = step(state)
        change = made.change
        assert change is not None and change.parent() is state
        if change.deleted:
            replayed = _deleted(state, change.path, at=change.at)
        else:
            replayed = state.put(change.path, change.value, change.at)[0]
        assert replayed.root == made.root
        state = made


def _deleted(overrides: Overrides, path: tuple[str, ...], at: float) -> Overrides:
    outcome = overrides.delete(path, at=at)
    assert outcome is not None
    return outcome[0]


def test_a_delete_inside_an_override_stamps_the_edited_override_with_its_time() -> None:
    overrides = overrides_with(("db", {"url": "u", "pool": 5}))
    outcome = overrides.delete(p("db.url"), at=42.0)
    assert outcome is not None
    marker = get_in(outcome[0].root, ("db",))
    assert isinstance(marker, Override) and marker.at == 42.0


def test_overrides_compare_by_content_not_by_how_they_were_made() -> None:
    made, _ = Overrides().put(p("a"), 1, at=1.0)
    assert made == Overrides(made.root)


# -- put ------------------------------------------------------------------------------------


def test_no_overrides_leave_the_base_unchanged() -> None:
    assert Overrides().apply(BASE) is BASE


def test_put_of_a_leaf_overrides_it_and_keeps_its_siblings() -> None:
    result = effective(overrides_with(("database.pool_size", 20)))
    assert result["database"] == {
        "url": "pg://file",
        "pool_size": 20,
        "options": {"timeout": 2},
    }
    assert result["server"] is BASE["server"]


def test_put_replaces_the_whole_node_with_exactly_what_was_put() -> None:
    result = effective(overrides_with(("database", {"url": "pg://runtime"})))
    assert result["database"] == {"url": "pg://runtime"}


@pytest.mark.parametrize("value", [None, 0, "", False, {}, [], {"a": {"b": 1}}, [1, {"x": 2}]])
def test_get_after_put_is_exactly_the_value_put(value: Any) -> None:
    result = effective(overrides_with(("database.options", value)))
    assert result["database"]["options"] == freeze(value)
    assert type(result["database"]["options"]) is type(freeze(value))


def test_put_of_none_is_a_value_not_a_delete() -> None:
    result = effective(overrides_with(("database.url", None)))
    assert "url" in result["database"]
    assert result["database"]["url"] is None


def test_put_of_a_new_path_creates_it() -> None:
    result = effective(overrides_with(("feature_flags.new_ui", True)))
    assert result["feature_flags"] == {"new_ui": True}


def test_put_returns_the_path_to_recompute() -> None:
    _, root = Overrides().put(p("database.pool_size"), 20)
    assert root == ("database", "pool_size")


def test_put_below_an_existing_override_edits_it() -> None:
    overrides = overrides_with(("database", {"url": "pg://runtime"}))
    new, root = overrides.put(p("database.pool_size"), 30)
    assert root == ("database",)
    assert override_paths(new) == ["database"]
    assert effective(new)["database"] == {"url": "pg://runtime", "pool_size": 30}


def test_put_deep_below_an_existing_override_creates_sections_inside_it() -> None:
    overrides = overrides_with(("database", {"url": "x"}), ("database.a.b.c", 1))
    assert override_paths(overrides) == ["database"]
    assert effective(overrides)["database"] == {"url": "x", "a": {"b": {"c": 1}}}


def test_put_below_a_scalar_override_turns_it_into_a_section() -> None:
    overrides = overrides_with(("database", "disabled"), ("database.url", "y"))
    assert effective(overrides)["database"] == {"url": "y"}


def test_put_above_existing_overrides_absorbs_them() -> None:
    overrides = overrides_with(
        ("database.pool_size", 20), ("database.options.timeout", 9), ("server.port", 81)
    )
    new, root = overrides.put(p("database"), freeze({"url": "z"}))
    assert root == ("database",)
    assert override_paths(new) == ["database", "server.port"]
    assert effective(new)["database"] == {"url": "z"}


def test_put_at_the_same_path_replaces_the_previous_override() -> None:
    overrides = overrides_with(("debug", True), ("debug", "verbose"))
    assert override_paths(overrides) == ["debug"]
    assert effective(overrides)["debug"] == "verbose"


def test_put_is_persistent_the_old_overrides_are_unchanged() -> None:
    first = overrides_with(("database.pool_size", 20))
    second = put(first, "database.pool_size", 30)
    third = put(second, "database", {"url": "q"})
    assert effective(first)["database"]["pool_size"] == 20
    assert effective(second)["database"]["pool_size"] == 30
    assert effective(third)["database"] == {"url": "q"}
    assert override_paths(first) == ["database.pool_size"]


def test_overrides_are_immutable() -> None:
    overrides = Overrides()
    with pytest.raises(AttributeError):
        overrides.root = EMPTY  # type: ignore[misc]


def test_put_records_when_it_was_made() -> None:
    before = time.time()
    overrides = overrides_with(("debug", True))
    marker = get_in(overrides.root, ("debug",))
    assert isinstance(marker, Override)
    assert before <= marker.at <= time.time()


# -- delete ---------------------------------------------------------------------------------


def test_delete_of_an_exact_override_lets_the_lower_layers_show_through() -> None:
    overrides = overrides_with(("database.pool_size", 20), ("debug", True))
    outcome = overrides.delete(p("database.pool_size"))
    assert outcome is not None
    new, root = outcome
    assert root == ("database",)
    assert effective(new)["database"]["pool_size"] == 5
    assert effective(new)["debug"] is True


def test_delete_of_a_runtime_only_path_removes_it() -> None:
    outcome = overrides_with(("feature_flags.new_ui", True)).delete(p("feature_flags.new_ui"))
    assert outcome is not None
    assert "feature_flags" not in effective(outcome[0])


def test_delete_of_the_last_override_gives_back_the_base() -> None:
    outcome = overrides_with(("debug", True)).delete(p("debug"))
    assert outcome is not None
    assert effective(outcome[0]) == BASE


def test_delete_returns_the_highest_pruned_path_to_recompute() -> None:
    overrides = overrides_with(("a.b.c.d", 1))
    outcome = overrides.delete(p("a.b.c.d"))
    assert outcome is not None
    assert outcome[1] == ("a",)
    assert outcome[0].root == {}


def test_delete_recompute_path_stops_below_a_surviving_sibling() -> None:
    overrides = overrides_with(("a.b.c.d", 1), ("a.x", 2))
    outcome = overrides.delete(p("a.b.c.d"))
    assert outcome is not None
    new, root = outcome
    assert root == ("a", "b")
    assert override_paths(new) == ["a.x"]


def test_delete_of_a_section_removes_every_override_inside_it() -> None:
    overrides = overrides_with(("database.pool_size", 20), ("database.url", "u"), ("debug", 1))
    outcome = overrides.delete(p("database"))
    assert outcome is not None
    new, root = outcome
    assert root == ("database",)
    assert override_paths(new) == ["debug"]
    assert effective(new)["database"] == BASE["database"]


def test_delete_inside_an_override_edits_its_value() -> None:
    overrides = overrides_with(("database", {"url": "r", "pool_size": 9}))
    outcome = overrides.delete(p("database.url"))
    assert outcome is not None
    new, root = outcome
    assert root == ("database",)
    assert override_paths(new) == ["database"]
    assert effective(new)["database"] == {"pool_size": 9}


@pytest.mark.parametrize(
    "path",
    [
        "nothing",
        "database.url",
        "database.pool_size.deeper",
        "server",
        "debug.x",
        "database.options.nope",
    ],
)
def test_delete_of_an_absent_override_returns_none(path: str) -> None:
    overrides = overrides_with(("database.pool_size", 20), ("debug", True))
    assert overrides.delete(p(path)) is None


def test_delete_inside_an_override_at_an_absent_key_returns_none() -> None:
    overrides = overrides_with(("database", {"url": "r"}))
    assert overrides.delete(p("database.pool_size")) is None
    assert overrides.delete(p("database.url.x")) is None


def test_delete_inside_a_scalar_override_returns_none() -> None:
    assert overrides_with(("debug", True)).delete(p("debug.level")) is None


def test_delete_on_empty_overrides_returns_none() -> None:
    assert Overrides().delete(p("database")) is None


def test_delete_is_persistent_the_old_overrides_are_unchanged() -> None:
    overrides = overrides_with(("debug", True))
    overrides.delete(p("debug"))
    assert effective(overrides)["debug"] is True


# -- apply ----------------------------------------------------------------------------------


def test_apply_lays_every_override_over_the_base() -> None:
    overrides = overrides_with(
        ("database.pool_size", 20), ("server", {"port": 443, "tls": True}), ("new.key", "v")
    )
    assert overrides.apply(BASE) == {
        "database": {"url": "pg://file", "pool_size": 20, "options": {"timeout": 2}},
        "server": {"port": 443, "tls": True},
        "debug": False,
        "new": {"key": "v"},
    }


def test_apply_replaces_a_scalar_in_the_base_by_a_section_when_an_override_goes_below_it() -> None:
    overrides = overrides_with(("debug.level", "info"))
    assert effective(overrides)["debug"] == {"level": "info"}


def test_apply_result_is_frozen_and_shares_untouched_subtrees() -> None:
    result = effective(overrides_with(("database.pool_size", 20)))
    assert type(result) is Section
    assert type(result["database"]) is Section
    assert result["database"]["options"] is BASE["database"]["options"]
    assert result["server"] is BASE["server"]


def test_apply_at_a_path_gives_the_effective_value_there() -> None:
    overrides = overrides_with(("database.pool_size", 20))
    path = p("database")
    assert overrides.apply(get_in(BASE, path), path) == {
        "url": "pg://file",
        "pool_size": 20,
        "options": {"timeout": 2},
    }
    assert overrides.apply(get_in(BASE, p("server")), p("server")) is BASE["server"]


def test_apply_at_a_path_absent_everywhere_is_missing() -> None:
    assert Overrides().apply(MISSING, p("nowhere")) is MISSING


def test_apply_at_a_path_only_the_overrides_have() -> None:
    overrides = overrides_with(("feature_flags.new_ui", True))
    assert overrides.apply(MISSING, p("feature_flags")) == {"new_ui": True}


# -- the one walk: covering and items ---------------------------------------------------------


def test_covering_is_the_override_put_at_the_path_itself() -> None:
    overrides = overrides_with(("database.url", "u"))
    covering = overrides.covering(p("database.url"))
    assert covering is not None
    holder, override = covering
    assert holder == ("database", "url") and override.value == "u"


def test_covering_is_the_override_put_above_the_path() -> None:
    overrides = overrides_with(("database", {"url": "u"}))
    covering = overrides.covering(p("database.url.deeper"))
    assert covering is not None
    assert covering[0] == ("database",) and covering[1].value == {"url": "u"}


@pytest.mark.parametrize("path", ["database", "server", "database.pool_size", "debug"])
def test_covering_is_none_where_no_put_gives_the_value(path: str) -> None:
    """Puts only below a path (``database``) do not cover it: lower layers still show."""
    overrides = overrides_with(("database.url", "u"))
    assert overrides.covering(p(path)) is None


def test_items_are_every_override_in_tree_order_with_its_path() -> None:
    overrides = overrides_with(
        ("b.y", 1), ("a", {"k": 2}), ("b.x.deep", 3), ("c", None), ("b.z", 4)
    )
    assert [(path, o.value) for path, o in overrides.items()] == [
        (("b", "y"), 1),
        (("b", "x", "deep"), 3),
        (("b", "z"), 4),
        (("a",), {"k": 2}),
        (("c",), None),
    ]


def test_items_below_a_path_are_the_overrides_at_or_inside_it() -> None:
    overrides = overrides_with(("db.url", "u"), ("db.pool.size", 5), ("debug", True))
    assert [path for path, _ in overrides.items(p("db"))] == [("db", "url"), ("db", "pool", "size")]
    assert [path for path, _ in overrides.items(p("db.url"))] == [("db", "url")]


@pytest.mark.parametrize("path", ["nothing", "db.url.inside", "debug.level"])
def test_items_below_a_path_without_overrides_are_none(path: str) -> None:
    """Not even the override *above* the path: that one is what ``covering`` answers."""
    overrides = overrides_with(("db.url", "u"), ("debug", True))
    assert list(overrides.items(p(path))) == []


def test_items_of_no_overrides_are_none() -> None:
    assert list(Overrides().items()) == []


def test_items_give_the_markers_themselves_with_their_times() -> None:
    overrides, _ = Overrides().put(p("a.b"), 1, at=5.0)
    ((path, override),) = overrides.items()
    assert path == ("a", "b") and override == Override(1, 5.0)
    assert override is get_in(overrides.root, path)
