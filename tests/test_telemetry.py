"""Specification of otpylib_config.telemetry: attach/execute/detach, span, capture_events."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from otpylib_config import telemetry

Call = tuple[str, dict[str, Any], dict[str, Any], Any]


@pytest.fixture
def calls() -> list[Call]:
    """The events received by handlers made with ``recorder(calls)``."""
    return []


@pytest.fixture(autouse=True)
def detach_test_handlers() -> Iterator[None]:
    """Telemetry is global: detach every handler id these tests use."""
    yield
    for handler_id in ("t1", "t2", "t3", "boom", "many"):
        telemetry.detach(handler_id)


def recorder(calls: list[Call]):  # type: ignore[no-untyped-def]
    def handler(event: str, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append((event, dict(measurements), dict(metadata), config))

    return handler


def test_attached_handler_receives_event_measurements_metadata_and_config(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls), config={"cfg": 1})
    telemetry.execute("test.event", {"n": 1}, {"path": "a.b"})
    assert calls == [("test.event", {"n": 1}, {"path": "a.b"}, {"cfg": 1})]


def test_config_defaults_to_none(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    telemetry.execute("test.event", {}, {})
    assert calls[0][3] is None


def test_handlers_only_get_their_own_event(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    telemetry.execute("test.other", {}, {})
    assert calls == []


class Untouchable(Mapping[str, Any]):
    """Measurements or metadata that fail the test if anything reads them."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError("read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("read")

    def __len__(self) -> int:
        raise AssertionError("read")


def test_execute_with_no_handlers_reads_nothing_and_attaches_nothing(calls) -> None:
    telemetry.attach("t1", "test.other", recorder(calls))

    result = telemetry.execute("test.nobody.listens", Untouchable(), Untouchable())

    assert result is None
    assert not telemetry.has_handlers("test.nobody.listens")
    assert calls == []  # a handler of another event is not called either


def test_several_handlers_are_called_in_attach_order(calls) -> None:
    order: list[str] = []
    telemetry.attach("t1", "test.event", lambda *_: order.append("t1"))
    telemetry.attach("t2", "test.event", lambda *_: order.append("t2"))
    telemetry.execute("test.event", {}, {})
    assert order == ["t1", "t2"]


def test_detach_stops_delivery_and_reports_whether_it_was_attached(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    assert telemetry.detach("t1") is True
    telemetry.execute("test.event", {}, {})
    assert calls == []
    assert telemetry.detach("t1") is False
    assert telemetry.detach("never-attached") is False


def test_detach_leaves_other_handlers_attached(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    telemetry.attach("t2", "test.event", lambda *_: None)
    telemetry.detach("t2")
    telemetry.execute("test.event", {}, {})
    assert len(calls) == 1


def test_attach_many_attaches_one_handler_to_several_events(calls) -> None:
    telemetry.attach_many("many", ["test.a", "test.b"], recorder(calls))
    telemetry.execute("test.a", {}, {})
    telemetry.execute("test.b", {}, {})
    telemetry.execute("test.c", {}, {})
    assert [call[0] for call in calls] == ["test.a", "test.b"]


def test_detach_of_attach_many_removes_it_from_every_event(calls) -> None:
    telemetry.attach_many("many", ["test.a", "test.b"], recorder(calls))
    assert telemetry.detach("many") is True
    telemetry.execute("test.a", {}, {})
    telemetry.execute("test.b", {}, {})
    assert calls == []
    assert not telemetry.has_handlers("test.a")
    assert not telemetry.has_handlers("test.b")


def test_duplicate_handler_id_is_rejected_even_for_another_event(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    with pytest.raises(ValueError, match="'t1'"):
        telemetry.attach("t1", "test.other", recorder(calls))
    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach_many("t1", ["test.x"], recorder(calls))
    telemetry.execute("test.other", {}, {})
    assert calls == []


def test_a_detached_id_can_be_attached_again(calls) -> None:
    telemetry.attach("t1", "test.event", recorder(calls))
    telemetry.detach("t1")
    telemetry.attach("t1", "test.event", recorder(calls))
    telemetry.execute("test.event", {}, {})
    assert len(calls) == 1


def test_has_handlers_follows_attach_and_detach() -> None:
    assert not telemetry.has_handlers("test.event")
    telemetry.attach("t1", "test.event", lambda *_: None)
    assert telemetry.has_handlers("test.event")
    assert not telemetry.has_handlers("test.other")
    telemetry.detach("t1")
    assert not telemetry.has_handlers("test.event")


def test_a_raising_handler_is_detached_and_logged_and_execute_does_not_raise(
    calls, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("boom", "test.event", boom)
    telemetry.attach("t1", "test.event", recorder(calls))

    with caplog.at_level(logging.ERROR, logger="otpylib_config.telemetry"):
        telemetry.execute("test.event", {}, {"n": 1})

    assert len(calls) == 1, "the other handler still got the event"
    assert telemetry.detach("boom") is False, "the raising handler was detached"
    [record] = [r for r in caplog.records if r.name == "otpylib_config.telemetry"]
    assert "'boom'" in record.getMessage()
    assert "test.event" in record.getMessage()
    assert record.exc_info is not None
    assert "handler bug" in caplog.text

    telemetry.execute("test.event", {}, {"n": 2})
    assert len(calls) == 2


def test_a_raising_attach_many_handler_is_detached_from_all_its_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach_many("boom", ["test.a", "test.b"], boom)
    with caplog.at_level(logging.ERROR, logger="otpylib_config.telemetry"):
        telemetry.execute("test.a", {}, {})
    assert not telemetry.has_handlers("test.b")


# -- span -----------------------------------------------------------------------------------


def test_span_emits_start_and_stop_with_a_duration(calls) -> None:
    telemetry.attach_many("many", ["test.op.start", "test.op.stop"], recorder(calls))
    with telemetry.span("test.op", {"reason": "manual"}):
        pass
    (start, start_m, start_md, _), (stop, stop_m, stop_md, _) = calls
    assert (start, stop) == ("test.op.start", "test.op.stop")
    assert start_md == {"reason": "manual"}
    assert isinstance(start_m["system_time"], float)
    assert stop_md == {"reason": "manual"}
    assert stop_m["duration_s"] >= 0


def test_span_merges_the_yielded_dict_into_stop_metadata_and_measurements(calls) -> None:
    telemetry.attach("t1", "test.op.stop", recorder(calls))
    with telemetry.span("test.op", {"reason": "timer"}) as stop:
        stop.update(version=3, errors={}, measurements={"keys": 10, "changes": 2})
    [(_, measurements, metadata, _)] = calls
    assert metadata == {"reason": "timer", "version": 3, "errors": {}}
    assert measurements["keys"] == 10
    assert measurements["changes"] == 2
    assert "duration_s" in measurements


def test_span_emits_exception_and_reraises(calls) -> None:
    telemetry.attach_many(
        "many", ["test.op.start", "test.op.stop", "test.op.exception"], recorder(calls)
    )
    with pytest.raises(KeyError, match="lost"), telemetry.span("test.op", {"reason": "x"}):
        raise KeyError("lost")
    assert [call[0] for call in calls] == ["test.op.start", "test.op.exception"]
    _, measurements, metadata, _ = calls[1]
    assert measurements["duration_s"] >= 0
    assert metadata["reason"] == "x"
    assert metadata["kind"] == "KeyError"
    assert "lost" in metadata["error"]


def test_span_works_without_handlers() -> None:
    bodies: list[dict[str, Any]] = []
    with telemetry.span("test.unobserved", {"reason": "x"}) as stop:
        stop["x"] = 1
        bodies.append(stop)
    with pytest.raises(KeyError, match="lost"), telemetry.span("test.unobserved", {}):
        raise KeyError("lost")  # reraised unchanged, with nobody to tell

    assert bodies == [{"x": 1}]  # the body ran with a dict of its own
    for suffix in ("start", "stop", "exception"):
        assert not telemetry.has_handlers(f"test.unobserved.{suffix}")


def test_span_survives_a_raising_handler(calls, caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("boom", "test.op.start", boom)
    telemetry.attach("t1", "test.op.stop", recorder(calls))
    with (
        caplog.at_level(logging.ERROR, logger="otpylib_config.telemetry"),
        telemetry.span("test.op", {}) as stop,
    ):
        stop["ok"] = True
    assert not telemetry.has_handlers("test.op.start")
    assert calls[0][2] == {"ok": True}


# -- capture_events -------------------------------------------------------------------------


def test_capture_events_collects_the_named_events_while_the_block_runs() -> None:
    with telemetry.capture_events("test.a", "test.b") as events:
        telemetry.execute("test.a", {"n": 1}, {"p": "x"})
        telemetry.execute("test.c", {}, {})
        telemetry.execute("test.b", {"n": 2}, {})
    assert events == [
        telemetry.Event("test.a", {"n": 1}, {"p": "x"}),
        telemetry.Event("test.b", {"n": 2}, {}),
    ]
    telemetry.execute("test.a", {}, {})
    assert len(events) == 2
    assert not telemetry.has_handlers("test.a")


def test_capture_events_copies_measurements_and_metadata() -> None:
    metadata = {"p": 1}
    with telemetry.capture_events("test.a") as events:
        telemetry.execute("test.a", {}, metadata)
    metadata["p"] = 2
    assert events[0].metadata == {"p": 1}


def test_capture_events_blocks_can_nest() -> None:
    with telemetry.capture_events("test.a") as outer, telemetry.capture_events("test.a") as inner:
        telemetry.execute("test.a", {}, {})
    assert len(outer) == len(inner) == 1


def test_capture_events_detaches_even_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), telemetry.capture_events("test.a"):
        raise RuntimeError
    assert not telemetry.has_handlers("test.a")


def test_event_names_of_the_original_design_are_kept() -> None:
    assert telemetry.CHANGED == "config.changed"
    assert telemetry.SUBSCRIBER_ERROR == "config.subscriber_error"
