"""The pipeline's start-up: a tree never starts on bad configuration, and says everything
that is wrong at once, each problem with where its value came from."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import otpylib_config
from otpylib_config import (
    ConfigSpec,
    DefaultsSource,
    EnvironmentSource,
    FileSource,
    LoadError,
    SourceError,
    ValidationError,
    pipeline,
)
from otpylib_config.table import ConfigTable
from otpylib_config.values import freeze


class Settings(pydantic.BaseModel):
    port: int
    workers: int
    name: str


async def test_every_validation_problem_is_reported_with_its_origin(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("port = 'eighty'\n")
    env = {"APP_WORKERS": "many"}
    spec = ConfigSpec(
        sources=[FileSource(config), EnvironmentSource("APP_", environ=env)], schema=Settings
    )

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    problems = dict(error.value.problems)
    assert set(problems) == {"port", "workers", "name"}
    assert f"(from {config}: port)" in problems["port"]
    assert "(from $APP_WORKERS)" in problems["workers"]
    assert "from" not in problems["name"]  # missing: no source has it
    assert isinstance(error.value, ValidationError) and isinstance(error.value, SourceError)


async def test_every_failed_source_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    spec = ConfigSpec(
        sources=[FileSource(tmp_path / "missing.toml"), FileSource(broken), DefaultsSource({})]
    )

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    text = str(error.value)
    assert "file not found" in text and str(broken) in text
    assert len(error.value.failed) == 2


async def test_a_missing_placeholder_and_a_validation_problem_come_in_one_error(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("name = '${APP_NAME}'\nport = ${APP_PORT:?set the port}\nworkers = 'x'\n")
    spec = ConfigSpec(sources=[FileSource(config, environ={})], schema=Settings)

    with pytest.raises(LoadError) as error:
        await otpylib_config.start(spec)

    problems = dict(error.value.problems)
    assert "APP_NAME" in problems["name"] and "set the port" in problems["port"]
    assert f"(from {config}: workers)" in problems["workers"]  # validation ran on the rest


# -- the pure functions, as a specification -------------------------------------------------


def _table(*names: str, secret: tuple[str, ...] = ()) -> ConfigTable:
    sources = []
    for name in names:
        source = DefaultsSource({}, name=name)
        source.secret = name in secret
        sources.append(source)
    return ConfigTable(ConfigSpec(sources=sources))


def _reading(seq: int, **results: pipeline.Result) -> pipeline.Reading:
    return pipeline.Reading("test", tuple(results), tuple(results.values()), seq, 0.0)


LAYER = freeze({"a": 1})
FALLBACK = freeze({"a": "saved"})


def test_sort_takes_fresh_layers_and_records_failures() -> None:
    table = _table("ok", "bad")
    error = SourceError("bad", "boom")

    sorting = pipeline.sort(table, _reading(1, ok=(LAYER, None, 0.1), bad=(None, error, 0.2)))

    assert sorting.loaded == {"ok": LAYER} and sorting.fresh == {"ok"}
    assert [(f.source, f.error, f.duration) for f in sorting.failures] == [("bad", error, 0.2)]
    assert sorting.applied == ("ok", "bad") and sorting.seq == 1
    assert sorting.durations == {"ok": 0.1, "bad": 0.2}


def test_sort_skips_a_source_that_was_not_ready() -> None:
    table = _table("busy", "ok")

    sorting = pipeline.sort(table, _reading(1, busy=(None, None, 0.1), ok=(LAYER, None, 0.0)))

    assert "busy" not in sorting.loaded and "busy" not in sorting.applied
    assert not sorting.failures and "busy" not in sorting.durations
    assert sorting.applied == ("ok",)


def test_sort_uses_a_fallback_layer_only_before_the_first_success() -> None:
    table = _table("cached")
    error = SourceError("cached", "unreachable", FALLBACK)
    reading = _reading(1, cached=(FALLBACK, error, 0.0))

    before = pipeline.sort(table, reading)
    table.sources["cached"].succeeded(LAYER)
    after = pipeline.sort(table, reading)

    assert before.loaded == {"cached": FALLBACK} and before.fresh == frozenset()
    assert [f.source for f in before.failures] == ["cached"]  # still failing
    assert after.loaded == {} and [f.source for f in after.failures] == ["cached"]


def test_sort_drops_a_reading_older_than_the_one_applied() -> None:
    table = _table("s", "t")
    table.sources["s"].reading_seq = 5

    sorting = pipeline.sort(
        table, _reading(3, s=(LAYER, None, 0.0), t=(None, SourceError("t", "x"), 0.0))
    )

    assert "s" not in sorting.loaded and "s" not in sorting.applied
    assert sorting.applied == ("t",)  # only the source that had seen nothing newer
    same = pipeline.sort(table, _reading(5, s=(LAYER, None, 0.0)))
    assert same.loaded == {"s": LAYER}  # the same reading again is not older


def test_sort_reads_nothing_into_the_table() -> None:
    table = _table("s")
    state = table.sources["s"]

    pipeline.sort(table, _reading(7, s=(None, SourceError("s", "x"), 0.0)))

    assert state.reading_seq == 0 and state.last_error is None and state.layer == {}


def test_outermost_keeps_the_roots_no_other_contains_in_order() -> None:
    roots = [("a", "b"), ("c",), ("a",), ("a", "b", "c"), ("c",), ("ab",), ("d", "e")]

    assert pipeline.outermost(roots) == [("c",), ("a",), ("ab",), ("d", "e")]
    assert pipeline.outermost([]) == []
    assert pipeline.outermost([("x", "y"), ("x", "z")]) == [("x", "y"), ("x", "z")]


def test_with_overrides_recomputes_only_under_the_roots() -> None:
    table = _table("s")
    table.base = freeze({"a": {"x": 1}, "b": 2})
    raw = freeze({"a": {"x": 1}, "b": "stale"})  # "b" is not under a root: left as it is
    overrides, root = table.overrides.put(("a", "x"), 5)

    new_raw, changed = pipeline.with_overrides(table, raw, overrides, [root])

    assert new_raw == {"a": {"x": 5}, "b": "stale"}
    assert changed == [("a", "x")]
    assert raw == {"a": {"x": 1}, "b": "stale"}  # a new tree; the old one is unchanged


def test_with_overrides_removes_what_neither_the_base_nor_an_override_has() -> None:
    table = _table("s")
    table.base = freeze({"b": 2})
    raw = freeze({"b": 2, "gone": 1})  # an override used to put "gone"

    new_raw, changed = pipeline.with_overrides(table, raw, table.overrides, [("gone",)])

    assert new_raw == {"b": 2} and changed == [("gone",)]


def test_with_overrides_of_a_nested_root_recomputes_its_outermost_once() -> None:
    table = _table("s")
    table.base = freeze({"a": {"x": 1, "y": 1}})
    overrides, roots = table.overrides.put_many([(("a",), freeze({"x": 2})), (("a", "y"), 3)])

    new_raw, changed = pipeline.with_overrides(table, table.base, overrides, roots)

    assert new_raw == {"a": {"x": 2, "y": 3}}
    assert sorted(changed) == [("a", "x"), ("a", "y")]


def test_propose_without_a_published_tree_reports_no_changes() -> None:
    table = _table("low", "high")

    proposal = pipeline.propose(table, {"low": freeze({"a": 1, "b": 1}), "high": LAYER}, None)

    assert proposal.base == {"a": 1, "b": 1} and proposal.raw == proposal.base
    assert proposal.changed == []


def test_propose_diffs_against_the_published_tree_and_lays_the_overrides_over() -> None:
    table = _table("s")
    table.overrides = table.overrides.put(("o",), 1)[0]

    proposal = pipeline.propose(table, {"s": freeze({"a": 2})}, freeze({"a": 1, "o": 1}))

    assert proposal.base == {"a": 2} and proposal.raw == {"a": 2, "o": 1}
    assert proposal.changed == [("a",)]


def test_layers_are_lowest_first_with_the_fresh_one_where_given() -> None:
    table = _table("low", "high")
    table.sources["low"].layer = freeze({"from": "low"})
    table.sources["high"].layer = freeze({"from": "high-old"})

    layers = pipeline.layers(table, {"high": freeze({"from": "high-new"})})

    assert layers == [{"from": "low"}, {"from": "high-new"}]


def test_secret_leaves_is_none_without_a_secret_source() -> None:
    table = _table("plain")

    assert pipeline.secret_leaves(table, {"plain": freeze({"password": "x"})}) is None
    assert pipeline.propose(table, {"plain": LAYER}, None).secret_leaves is None


def test_secret_leaves_are_every_leaf_of_the_secret_sources() -> None:
    table = _table("plain", "vault", "other_vault", secret=("vault", "other_vault"))
    table.sources["other_vault"].layer = freeze({"old": {"kept": 1}})
    loaded = {"plain": freeze({"p": 1}), "vault": freeze({"db": {"pw": "x", "user": "u"}})}

    leaves = pipeline.secret_leaves(table, loaded)

    assert leaves == {"db.pw", "db.user", "old.kept"}  # leaves only, not their sections


def test_secret_leaves_is_none_when_no_secret_source_is_in_the_reading() -> None:
    table = _table("plain", "vault", secret=("vault",))
    table.sources["vault"].layer = freeze({"pw": "x"})

    assert pipeline.secret_leaves(table, {"plain": LAYER}) is None  # the redactor keeps its own


def test_pushed_makes_a_fresh_reading_of_one_source() -> None:
    table = _table("s")
    earlier = next(table.reading_seq)

    reading = pipeline.pushed(table, "s", LAYER)

    assert reading.names == ("s",) and reading.results == ((LAYER, None, 0.0),)
    assert reading.seq > earlier and reading.reason == "changed:s"


def test_candidate_without_validation_publishes_the_merged_tree_itself() -> None:
    table = _table("s")

    candidate = pipeline.candidate(table, LAYER)

    assert candidate.raw is LAYER and candidate.tree is LAYER and candidate.model is None
    assert pipeline.published_changes(freeze({}), [("a",)], candidate) == [("a",)]


# -- unchanged readings and prepared merges -------------------------------------------------


def _published(table: ConfigTable, **layers: object) -> None:
    """Give each source of ``table`` a layer and publish their merge (as a first load)."""
    from otpylib_config.snapshot import Snapshot
    from otpylib_config.tree import merge

    for name, layer in layers.items():
        table.sources[name].layer = freeze(layer)
    merged = merge(pipeline.layers(table, {}))
    table.publish(Snapshot(merged, version=1))


def test_unchanged_holds_when_every_layer_is_the_very_one_in_use() -> None:
    table = _table("a", "b")
    _published(table, a={"x": 1}, b={"y": 1})
    same = table.sources["a"].layer

    assert pipeline.unchanged(table, pipeline.sort(table, _reading(1, a=(same, None, 0.0))))
    equal_copy = freeze({"x": 1})  # equal but another object: a source that parsed again
    assert not pipeline.unchanged(
        table, pipeline.sort(table, _reading(2, a=(equal_copy, None, 0.0)))
    )


async def test_prepare_leaves_a_reading_that_changes_no_layer_alone() -> None:
    table = _table("a")
    _published(table, a={"x": 1})
    reading = _reading(1, a=(table.sources["a"].layer, None, 0.0))

    assert await pipeline.prepare(table, reading) is reading


async def test_prepare_computes_the_merge_and_diff_propose_then_takes() -> None:
    table = _table("a", "b")
    _published(table, a={"x": 1, "z": 0}, b={"y": 1})
    fresh = freeze({"x": 2, "z": 0})
    reading = await pipeline.prepare(table, _reading(1, a=(fresh, None, 0.0)))

    prepared = reading.prepared
    assert prepared is not None
    assert prepared.raw == {"x": 2, "z": 0, "y": 1} and prepared.changed == [("x",)]
    proposal = pipeline.propose(table, {"a": fresh}, table.snapshot.raw, prepared)  # type: ignore[union-attr]
    assert proposal.raw is prepared.raw and proposal.changed is prepared.changed


async def test_propose_merges_again_when_the_basis_of_a_prepared_merge_moved() -> None:
    table = _table("a", "b")
    _published(table, a={"x": 1}, b={"y": 1})
    fresh = freeze({"x": 2})
    prepared = (await pipeline.prepare(table, _reading(1, a=(fresh, None, 0.0)))).prepared
    assert prepared is not None
    table.sources["b"].layer = freeze({"y": 5})  # another source changed meanwhile

    proposal = pipeline.propose(table, {"a": fresh}, table.snapshot.raw, prepared)  # type: ignore[union-attr]

    assert proposal.raw is not prepared.raw
    assert proposal.raw == {"x": 2, "y": 5} and sorted(proposal.changed) == [("x",), ("y",)]
