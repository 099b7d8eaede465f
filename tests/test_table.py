"""The table, the one state record of a tree, as a specification: each field documents its
writer, the counters are named in one place (and in README), failures are recorded without
their secrets, stopping for good happens once, and nothing prints a value."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from otpylib_config import (
    ConfigSpec,
    DefaultsSource,
    commit,
    counters,
    pipeline,
    telemetry,
)
from otpylib_config.redact import REDACTED
from otpylib_config.supervisor import in_process
from otpylib_config.table import ConfigTable, ProcessHealth, SourceState
from otpylib_config.values import freeze

from .conftest import FakeSource

ROOT = Path(__file__).resolve().parent.parent
TABLE_PY = ROOT / "otpylib_config" / "table.py"
COUNTERS_PY = ROOT / "otpylib_config" / "counters.py"
README = ROOT / "README.md"

WRITER_WORDS = ("Writer", "Never written", "Used by", "Read by")


def _class_fields(path: Path, name: str) -> list[tuple[str, str | None]]:
    """Each annotated field of class ``name`` and the string expression after it, if any."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    fields: list[tuple[str, str | None]] = []
    for i, node in enumerate(cls.body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            after = cls.body[i + 1] if i + 1 < len(cls.body) else None
            doc = None
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = after.value.value if isinstance(after.value.value, str) else None
            fields.append((node.target.id, doc))
    return fields


TABLE_FIELDS = _class_fields(TABLE_PY, "ConfigTable")


def _field_case(name: str, doc: str | None) -> Any:
    return pytest.param(name, doc, id=name)


VAULT = {"token_value": "s3kr1t-value-9", "db": {"dsn": "pg://u:pw12345@h/db"}}
"""What the secret source ``vault`` serves (``FakeSource("vault", VAULT, secret=True)``)."""


def _table(**options: Any) -> ConfigTable:
    return ConfigTable(ConfigSpec(sources=[DefaultsSource({"a": 1})], **options))


# -- the fields document their writer -----------------------------------------------------


def test_the_table_fields_are_found() -> None:
    names = [name for name, _ in TABLE_FIELDS]
    assert {"spec", "sources", "snapshot", "overrides", "counters", "stopped"} <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("name", "doc"), [_field_case(n, d) for n, d in TABLE_FIELDS])
def test_every_table_field_has_a_docstring_naming_its_writer(name: str, doc: str | None) -> None:
    assert doc is not None, f"ConfigTable.{name} has no attribute docstring"
    assert any(word in doc for word in WRITER_WORDS), f"ConfigTable.{name}: {doc!r}"


def test_every_delivery_field_says_which_end_writes_it() -> None:
    fields = _class_fields(ROOT / "otpylib_config" / "delivery.py", "Delivery")
    assert [name for name, _ in fields] == ["changes", "ready", "wake_sent", "tasks", "counters"]
    for name, doc in fields:
        assert doc is not None and re.search(r"Manager|Notifier|both ends", doc), name


# -- counters -----------------------------------------------------------------------------


def _counter_constants() -> dict[str, str]:
    """Every module-level ``NAME: Final = "value"`` of counters.py but ``ALL``."""
    tree = ast.parse(COUNTERS_PY.read_text())
    return {
        node.target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _readme_counters() -> list[str]:
    row = next(
        line for line in README.read_text().splitlines() if line.startswith("| `counters` |")
    )
    return re.findall(r"`(\w+)`", row.split("|")[2])


def test_counters_all_lists_every_constant_once() -> None:
    constants = _counter_constants()
    assert constants, "no counter constant found"
    assert sorted(counters.ALL) == sorted(constants.values())
    assert len(counters.ALL) == len(set(counters.ALL))
    for name, value in constants.items():
        assert getattr(counters, name) == value


def test_every_counter_constant_has_a_docstring() -> None:
    tree = ast.parse(COUNTERS_PY.read_text())
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            after = body[i + 1]
            assert isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant), (
                node.target.id
            )


def test_readme_counters_row_names_every_counter() -> None:
    assert sorted(_readme_counters()) == sorted(counters.ALL)


def test_counters_all_is_in_the_order_readme_lists_them() -> None:
    assert list(counters.ALL) == _readme_counters()


async def test_a_counter_that_never_happened_is_absent_from_status(otp_runtime: Any) -> None:
    table = _table()
    await commit.initial(table)
    await commit.reading(table, await pipeline.read(table, "test"))

    shown = table.status(False).counters
    assert shown.get("reloads") == 1
    assert all(count > 0 for count in shown.values()), shown


def test_source_errors_maps_each_stage_to_its_counter() -> None:
    assert counters.source_errors("load") == counters.SOURCE_LOAD_ERRORS
    assert counters.source_errors("watch") == counters.SOURCE_WATCH_ERRORS
    assert counters.source_errors("restore") == counters.SOURCE_RESTORE_ERRORS
    with pytest.raises(KeyError):
        counters.source_errors("elsewhere")


# -- record_failure -----------------------------------------------------------------------


def test_record_failure_masks_a_url_password_before_the_first_load() -> None:
    table = _table()
    state = table.sources["defaults"]
    assert table.snapshot is None

    text = table.record_failure(
        state, "cannot reach postgresql://app:hunter22@db/app", stage="load"
    )

    assert text == "cannot reach postgresql://app:****@db/app"
    assert state.last_error == text and "hunter22" not in text
    assert table.counters["source_load_errors"] == 1


async def test_record_failure_scrubs_secret_values_after_the_first_load(otp_runtime: Any) -> None:
    table = ConfigTable(ConfigSpec(sources=[FakeSource("vault", VAULT, secret=True)]))
    await commit.initial(table)
    state = table.sources["vault"]

    text = table.record_failure(
        state, "vault: token s3kr1t-value-9 refused by pg://u:pw12345@h/db", stage="watch"
    )

    assert "s3kr1t-value-9" not in text and "pw12345" not in text
    assert text.startswith(f"vault: token {REDACTED} refused by ")
    assert state.last_error == text
    assert table.counters["source_watch_errors"] == 1


def test_record_failure_warns_once_per_distinct_error(caplog: pytest.LogCaptureFixture) -> None:
    table = _table()
    state = table.sources["defaults"]
    caplog.set_level(logging.DEBUG, logger="otpylib_config")

    for error in ("defaults: a", "defaults: a", "defaults: b", "defaults: b"):
        table.record_failure(state, error, stage="load")

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in warnings] == ["a", "b"]
    assert table.counters["source_load_errors"] == 4  # every failure counts


def test_record_failure_emits_telemetry_with_the_masked_error() -> None:
    table = _table()
    with telemetry.capture_events(telemetry.SOURCE_ERROR) as events:
        table.record_failure(
            table.sources["defaults"], "x://u:secretpw@h", stage="restore", duration=0.5
        )

    assert [e.metadata for e in events] == [
        {"id": "default", "source": "defaults", "error": "x://u:****@h", "stage": "restore"}
    ]
    assert events[0].measurements == {"duration_s": 0.5}


# -- stop_for_good ------------------------------------------------------------------------


def test_stop_for_good_says_why_and_names_the_deaths(caplog: pytest.LogCaptureFixture) -> None:
    table = _table(id="t1")
    table.health["manager"] = ProcessHealth(
        "manager", table.name_of("manager"), starts=3, last_exit="killed"
    )
    table.health["notifier"] = ProcessHealth("notifier", table.name_of("notifier"), starts=1)
    caplog.set_level(logging.INFO, logger="otpylib_config")

    table.stop_for_good("its root gave up")

    assert table.stopped == (
        "config tree 't1' is stopped for good: its root gave up; deaths: manager 3x (last: killed)"
    )
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_stop_for_good_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    table = _table()
    caplog.set_level(logging.INFO, logger="otpylib_config")
    with telemetry.capture_events(telemetry.TREE_STOPPED) as events:
        table.stop_for_good("first")
        table.stop_for_good("second")
        table.stop_for_good("third", expected=True)

    assert table.stopped is not None and table.stopped.endswith(": first")
    assert len(events) == 1 and events[0].metadata == {"id": "default", "reason": "first"}
    assert len(caplog.records) == 1


def test_an_expected_stop_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    table = _table()
    caplog.set_level(logging.INFO, logger="otpylib_config")

    table.stop_for_good("stopped by shutdown()", expected=True)

    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert table.stopped == "config tree 'default' is stopped for good: stopped by shutdown()"


async def test_stop_for_good_names_a_death_tracked_by_a_real_process(otp_runtime: Any) -> None:
    table = _table()

    async def body() -> None:
        table.track("notifier")

    await in_process(body)
    health = table.health["notifier"]
    assert health.pid is None and health.deaths == 1 and health.last_exit is not None

    table.stop_for_good("gone")

    assert table.stopped is not None
    assert f"deaths: notifier 1x (last: {health.last_exit})" in table.stopped


# -- repr ---------------------------------------------------------------------------------


async def test_the_table_repr_hides_every_value(otp_runtime: Any) -> None:
    table = ConfigTable(ConfigSpec(id="vaulted", sources=[FakeSource("vault", VAULT, secret=True)]))
    await commit.initial(table)

    assert repr(table) == "ConfigTable(id='vaulted')"
    assert "s3kr1t" not in repr(table) and "s3kr1t" not in str(table)


async def test_a_source_state_repr_hides_its_layer(otp_runtime: Any) -> None:
    table = ConfigTable(ConfigSpec(sources=[FakeSource("vault", VAULT, secret=True)]))
    await commit.initial(table)

    assert "s3kr1t" not in repr(table.sources["vault"])


def test_status_shows_no_values() -> None:
    state = SourceState(DefaultsSource({"password": "s3kr1t-value-0"}))
    state.succeeded(freeze({"password": "s3kr1t-value-0"}))
    table = _table()
    table.sources["defaults"] = state

    assert "s3kr1t" not in repr(table.status(False))


def test_each_source_counts_its_failures_by_stage_in_status() -> None:
    table = _table()
    state = table.sources["defaults"]
    for stage in ("load", "load", "watch"):
        table.record_failure(state, "down", stage=stage)

    (source,) = table.status(manager_running=False).sources
    assert source.errors == {"load": 2, "watch": 1}
    assert source.required
