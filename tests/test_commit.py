"""``commit``, the one writer of the table, as a specification: what each function commits,
and that a failure at any step commits nothing. On a bare ``ConfigTable`` (no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from otpylib_config import (
    ConfigSpec,
    LoadError,
    Section,
    Source,
    SourceError,
    ValidationError,
    commit,
    pipeline,
)
from otpylib_config.redact import REDACTED
from otpylib_config.table import ConfigTable
from otpylib_config.values import EMPTY, freeze


class Mutable(Source):
    """A source whose layer the test sets; ``error`` makes its load fail."""

    def __init__(
        self, data: dict[str, Any], name: str = "mutable", *, secret: bool = False
    ) -> None:
        self.name = name
        self.secret = secret
        self.data = freeze(data)
        self.error: SourceError | None = None
        self.accepted_layers: list[Section] = []

    def set(self, data: dict[str, Any]) -> None:
        self.data = freeze(data)

    async def load(self) -> Section:
        if self.error is not None:
            raise self.error
        return self.data

    async def accepted(self, layer: Section) -> None:
        self.accepted_layers.append(layer)


def positive(value: Any) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive int, got {value!r}")


def quoting(value: Any) -> None:
    """A validator that quotes the value it refuses, as many do."""
    if value != "ok":
        raise ValueError(f"refused {value!r}")


async def loaded_table(*sources: Source, **options: Any) -> ConfigTable:
    table = ConfigTable(ConfigSpec(sources=sources, reload_interval=None, **options))
    await commit.initial(table)
    return table


async def reload(table: ConfigTable) -> Any:
    return await commit.reading(table, await pipeline.read(table, "test"))


# -- initial ------------------------------------------------------------------------------


async def test_initial_publishes_version_one_and_tells_the_sources(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = await loaded_table(source)

    assert table.snapshot is not None and table.snapshot.version == 1
    assert table.snapshot.tree == {"a": 1} and table.base == {"a": 1}
    assert table.sources["mutable"].layer == {"a": 1}
    assert table.sources["mutable"].last_success is not None
    assert source.accepted_layers == [{"a": 1}]


async def test_initial_without_accept_does_not_tell_the_sources(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = ConfigTable(ConfigSpec(sources=[source]))

    await commit.initial(table, accept=False)

    assert table.snapshot is not None and source.accepted_layers == []


async def test_initial_raises_every_failed_source_and_commits_nothing(otp_runtime: Any) -> None:
    one, two, fine = Mutable({}, "one"), Mutable({}, "two"), Mutable({"a": 1}, "fine")
    one.error = SourceError("one", "unreachable")
    two.error = SourceError("two", "garbled")
    table = ConfigTable(ConfigSpec(sources=[one, two, fine]))

    with pytest.raises(LoadError) as error:
        await commit.initial(table)

    assert [e.source for e in error.value.failed] == ["one", "two"]
    assert "one: unreachable" in str(error.value) and "two: garbled" in str(error.value)
    assert table.snapshot is None and table.base is EMPTY
    assert all(state.layer is EMPTY for state in table.sources.values())
    assert all(state.last_success is None for state in table.sources.values())
    assert fine.accepted_layers == []


async def test_initial_reports_source_problems_and_validation_problems_at_once(
    otp_runtime: Any,
) -> None:
    source = Mutable({})
    source.error = SourceError(
        "mutable", "bad key", problems=[("b", "not a number")], partial=freeze({"a": -1})
    )
    table = ConfigTable(ConfigSpec(sources=[source], validators={"a": positive}))

    with pytest.raises(LoadError) as error:
        await commit.initial(table)

    problems = dict(error.value.problems)
    assert problems["b"] == "not a number"
    assert "must be a positive int" in problems["a"]
    assert table.snapshot is None and table.base is EMPTY


async def test_initial_that_fails_validation_commits_nothing(otp_runtime: Any) -> None:
    source = Mutable({"a": -1, "b": 0})
    table = ConfigTable(ConfigSpec(sources=[source], validators={"a": positive, "b": positive}))

    with pytest.raises(LoadError) as error:
        await commit.initial(table)

    assert {path for path, _ in error.value.problems} == {"a", "b"}
    assert table.snapshot is None and table.base is EMPTY
    assert table.sources["mutable"].layer is EMPTY
    assert source.accepted_layers == []


async def test_an_optional_source_that_fails_at_start_does_not_stop_it(otp_runtime: Any) -> None:
    optional = Mutable({}, "optional")
    optional.required = False
    optional.error = SourceError("optional", "missing")
    table = await loaded_table(Mutable({"a": 1}), optional)

    assert table.snapshot is not None and table.snapshot.tree == {"a": 1}
    assert table.sources["optional"].last_error == "optional: missing"


# -- reading ------------------------------------------------------------------------------


async def test_a_reading_publishes_the_next_version_with_its_changes(otp_runtime: Any) -> None:
    source = Mutable({"a": 1, "b": 1})
    table = await loaded_table(source)
    source.set({"a": 2, "b": 1})

    result = await reload(table)

    assert result.version == 2 and result.changed == ("a",) and result.errors == {}
    assert table.snapshot is not None and table.snapshot.tree == {"a": 2, "b": 1}
    assert table.counters["reloads"] == 1 and table.counters["changes"] == 1
    assert source.accepted_layers[-1] == {"a": 2, "b": 1}


async def test_a_reading_that_fails_validation_commits_nothing(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = await loaded_table(source, validators={"a": positive})
    snapshot, base, layer = table.snapshot, table.base, table.sources["mutable"].layer
    source.set({"a": -5})

    result = await reload(table)

    assert "must be a positive int" in result.errors["validation"]
    assert result.version == 1 and result.changed == ()
    assert table.snapshot is snapshot and table.base is base
    assert table.sources["mutable"].layer is layer
    assert table.last_validation_error == result.errors["validation"]
    assert table.counters["validation_failures"] == 1
    assert table.counters["reload_errors"] == 1
    assert source.accepted_layers == [{"a": 1}]  # the rejected layer was never accepted


async def test_a_valid_reading_clears_the_last_validation_error(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = await loaded_table(source, validators={"a": positive})
    source.set({"a": -5})
    await reload(table)
    source.set({"a": 5})

    result = await reload(table)

    assert result.errors == {} and table.last_validation_error is None


async def test_a_failing_source_keeps_its_last_good_layer_and_is_recorded(
    otp_runtime: Any,
) -> None:
    failing, other = Mutable({"a": 1}, "failing"), Mutable({"b": 1}, "other")
    table = await loaded_table(failing, other)
    layer = table.sources["failing"].layer
    failing.error = SourceError("failing", "boom")
    other.set({"b": 2})

    result = await reload(table)

    assert result.errors == {"failing": "failing: boom"}
    assert result.changed == ("b",)  # the other source's change is still published
    state = table.sources["failing"]
    assert state.layer is layer and state.last_error == "failing: boom"
    assert state.last_success is not None
    assert table.snapshot is not None and table.snapshot.tree == {"a": 1, "b": 2}
    assert table.counters["source_load_errors"] == 1


async def test_an_older_reading_than_one_applied_is_dropped(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = await loaded_table(source)
    source.set({"a": 2})
    older = await pipeline.read(table, "older")
    source.set({"a": 3})
    newer = await pipeline.read(table, "newer")

    await commit.reading(table, newer)
    result = await commit.reading(table, older)

    assert table.snapshot is not None and table.snapshot.tree == {"a": 3}
    assert result.changed == () and result.version == 2
    assert table.sources["mutable"].reading_seq == newer.seq


async def test_a_reading_that_changes_nothing_publishes_no_new_version(otp_runtime: Any) -> None:
    source = Mutable({"a": 1})
    table = await loaded_table(source)
    snapshot = table.snapshot

    result = await reload(table)

    assert result.version == 1 and result.changed == ()
    assert table.snapshot is snapshot
    assert table.counters["reloads"] == 1 and table.counters["changes"] == 0


# -- overrides ----------------------------------------------------------------------------


async def test_overrides_publish_one_version_with_the_changes(otp_runtime: Any) -> None:
    table = await loaded_table(Mutable({"a": 1, "b": 1}))
    new, roots = table.overrides.put_many([(("a",), 2), (("b",), 3)])

    changed = await commit.overrides(table, new, roots)

    assert sorted(changed) == [("a",), ("b",)]
    assert table.overrides is new
    assert table.snapshot is not None and table.snapshot.version == 2
    assert table.snapshot.tree == {"a": 2, "b": 3}


async def test_overrides_that_fail_validation_leave_everything_unchanged(
    otp_runtime: Any,
) -> None:
    table = await loaded_table(Mutable({"a": 1}), validators={"a": positive})
    overrides, snapshot = table.overrides, table.snapshot
    new, root = overrides.put(("a",), -1)

    with pytest.raises(ValidationError, match="must be a positive int"):
        await commit.overrides(table, new, [root])

    assert table.overrides is overrides
    assert table.snapshot is snapshot
    assert table.counters["validation_failures"] == 1


async def test_an_override_equal_to_the_merged_value_publishes_no_new_version(
    otp_runtime: Any,
) -> None:
    table = await loaded_table(Mutable({"a": 1}))
    snapshot = table.snapshot
    new, root = table.overrides.put(("a",), 1)

    changed = await commit.overrides(table, new, [root])

    assert changed == []
    assert table.snapshot is snapshot and snapshot is not None and snapshot.version == 1
    assert table.overrides is new  # the override is kept: it pins the value from now on


async def test_publish_of_no_changes_keeps_the_version(otp_runtime: Any) -> None:
    table = await loaded_table(Mutable({"a": 1}))
    assert table.snapshot is not None
    raw = freeze({"a": 1, "hidden": 2})
    candidate = pipeline.Candidate(raw, table.snapshot.tree, None)

    await commit.publish(table, candidate, [])

    assert table.snapshot.version == 1 and table.snapshot.raw is raw
    assert table.counters["changes"] == 0


# -- failure ------------------------------------------------------------------------------


async def test_failure_records_the_error_and_keeps_the_layer(otp_runtime: Any) -> None:
    table = await loaded_table(Mutable({"a": 1}))
    layer = table.sources["mutable"].layer

    commit.failure(table, "mutable", "mutable: watch lost", "watch")
    commit.failure(table, "unknown", "unknown: ignored", "watch")

    state = table.sources["mutable"]
    assert state.last_error == "mutable: watch lost" and state.layer is layer
    assert table.counters["source_watch_errors"] == 1
    assert "unknown" not in table.sources


# -- secrets ------------------------------------------------------------------------------


async def test_a_validator_quoting_a_secret_source_value_is_masked_at_start(
    otp_runtime: Any,
) -> None:
    vault = Mutable({"conn": "s3kr1t-value-1"}, "vault", secret=True)
    table = ConfigTable(ConfigSpec(sources=[vault], validators={"conn": quoting}))

    with pytest.raises(LoadError) as error:
        await commit.initial(table)

    assert "s3kr1t-value-1" not in str(error.value)
    assert f"refused '{REDACTED}'" in str(error.value)


async def test_the_redactor_learns_new_secret_leaves_before_validation(otp_runtime: Any) -> None:
    vault = Mutable({"conn": "ok"}, "vault", secret=True)
    table = await loaded_table(vault, validators={"conn": quoting, "extra": quoting})
    vault.set({"conn": "ok", "extra": "n3w-s3kr1t-value"})  # a leaf the redactor never saw

    result = await reload(table)

    assert "n3w-s3kr1t-value" not in result.errors["validation"]
    assert REDACTED in result.errors["validation"]
    assert "n3w-s3kr1t-value" not in (table.last_validation_error or "")
    assert table.redactor.is_secret("extra")


async def test_a_source_error_quoting_a_secret_value_is_masked(otp_runtime: Any) -> None:
    vault = Mutable({"conn": "s3kr1t-value-2"}, "vault", secret=True)
    table = await loaded_table(vault)
    vault.error = SourceError("vault", "rejected s3kr1t-value-2")

    result = await reload(table)

    assert result.errors == {"vault": f"vault: rejected {REDACTED}"}
    assert table.sources["vault"].last_error == f"vault: rejected {REDACTED}"
