"""The change log behind ``/events`` (otpylib_config/admin/events.py): complete above its
floor, so a reconnect either gets exactly what it missed or is told to take a snapshot;
a stream that falls behind ends instead of holding anything up."""

from __future__ import annotations

import json

import pytest

from otpylib_config import telemetry
from otpylib_config.admin import events
from otpylib_config.admin.events import EventLog, Stream, parse_last_id


def change(log: EventLog, version: int, path: str = "a.b", tree: str = "t") -> None:
    metadata = {"id": tree, "version": version, "path": path, "old_value": 1, "new_value": 2}
    telemetry.execute(telemetry.CHANGED, {"changes": 1}, metadata)


@pytest.fixture
def log() -> EventLog:
    log = EventLog("t", kept=3, version=10)
    log.attach()
    yield log
    log.close()


def test_a_reconnect_gets_exactly_the_changes_after_its_id(log: EventLog) -> None:
    for version in (11, 12, 12):
        change(log, version)
    kept = log.since(11, current=12, stream=Stream(("**",)))
    assert kept is not None and [ids(frame) for frame in kept] == [[], ["12"]]
    assert log.since(12, current=12, stream=Stream(("**",))) == []


def test_an_id_older_than_what_is_kept_or_from_the_future_gets_none(log: EventLog) -> None:
    for version in (11, 12, 13, 14):  # kept=3: 11 is gone, so 10 and 11 cannot resume
        change(log, version)
    everything = Stream(("**",))
    assert log.since(10, current=14, stream=everything) is None
    assert log.since(11, current=14, stream=everything) is not None
    assert log.since(15, current=14, stream=everything) is None


def test_a_replay_gives_only_what_the_streams_pattern_matches(log: EventLog) -> None:
    change(log, 11, path="a.b")
    change(log, 11, path="c")
    kept = log.since(10, current=11, stream=Stream(("a", "**")))
    assert kept is not None and len(kept) == 1 and ids(kept[0]) == ["11"]


def ids(frame: bytes) -> list[str]:
    return [line[4:] for line in frame.decode().split("\n") if line.startswith("id: ")]


def test_a_log_only_takes_its_own_trees_changes(log: EventLog) -> None:
    change(log, 11, tree="other")
    assert list(log.entries) == []


def test_a_change_event_is_one_sse_record_and_the_last_of_its_version_has_the_id(
    log: EventLog,
) -> None:
    change(log, 11, path="db.port")
    text = log.entries[0].frame(last_of_version=True).decode()
    lines = text.split("\n")
    assert lines[:2] == ["event: change", "id: 11"] and text.endswith("\n\n")
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "path": "db.port",
        "old": 1,
        "new": 2,
        "version": 11,
    }
    assert "id:" not in log.entries[0].frame(last_of_version=False).decode()


async def test_a_writer_takes_whole_versions_and_ids_only_their_last_change(
    log: EventLog,
) -> None:
    stream = log.open(("**",))
    for version, path in ((11, "a"), (11, "b"), (12, "c")):
        change(log, version, path=path)
    sent = await stream.take()
    assert sent is not None and [ids(e) for e in sent] == [[], ["11"], ["12"]]


async def test_an_overflowed_stream_sends_nothing_more_and_ends(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_QUEUE", 4)
    stream = log.open(("**",))
    for version, path in ((11, "a"), (12, "b"), (12, "c"), (12, "d"), (12, "e")):
        change(log, version, path=path)
    assert await stream.take() is None  # nothing queued was sent: the client resumes by id


def test_a_stream_gets_what_its_pattern_matches_including_below_a_section(log: EventLog) -> None:
    stream = log.open(("a",))
    change(log, 11, path="a.b")
    change(log, 12, path="c")
    assert stream.queue.qsize() == 1 and stream.queue.get_nowait().path == "a.b"  # type: ignore[union-attr]


def test_a_stream_that_falls_behind_ends_without_blocking_the_writer(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_QUEUE", 4)
    stream = log.open(("**",))
    for version in range(11, 31):
        change(log, version)
    assert stream.overflowed
    items = [stream.queue.get_nowait() for _ in range(stream.queue.qsize())]
    assert items == [None]  # the writer sees the end next, and the client resumes by id


def test_closing_the_log_detaches_it_and_ends_every_stream(log: EventLog) -> None:
    stream = log.open(("**",))
    log.close()
    change(log, 11)
    assert list(log.entries) == [] and stream.queue.get_nowait() is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("7", 7), (" 7 ", 7), ("-1", None), ("x", None), ("1.5", None), ("true", None)],
)
def test_last_event_id_is_a_version_or_nothing(header: str | None, expected: int | None) -> None:
    assert parse_last_id(header) == expected
