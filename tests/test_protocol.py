"""The manager's message protocol, as a specification: every message is a small immutable
object, the module's table lists them all, and each one sent raw to a running manager does
what the table says."""

from __future__ import annotations

import asyncio
import logging
import re
import typing
from collections.abc import Callable
from typing import Any

import pytest
from otpylib import gen_server, process

from otpylib_config import (
    Config,
    DefaultsSource,
    ValidationError,
    manager,
    pipeline,
    protocol,
)
from otpylib_config.client import current_table
from otpylib_config.paths import parse_path, parse_pattern
from otpylib_config.protocol import (
    DOWN,
    Delete,
    Message,
    Put,
    PutMany,
    ReadDone,
    Reload,
    ReloadResult,
    Request,
    SourceChanged,
    SourceFailed,
    Subscribe,
    Tick,
    Unsubscribe,
    Wake,
)
from otpylib_config.subscriptions import Subscription, SubscriptionHandle
from otpylib_config.table import ConfigTable
from otpylib_config.values import freeze

from .conftest import FakeSource, Recorder, StartTree, eventually

REPLY_TIMEOUT_S = 5.0  # bounds a hang only


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _samples() -> list[Any]:
    """One instance of every message type of the protocol (and the notifier's ``Wake``)."""
    fut = _future()
    sub = Subscription(1, "a", ("a",), lambda *_: None)
    reading = pipeline.Reading("test", (), (), 1, 0.0)
    return [
        Put(fut, ("a",), "a", 1),
        PutMany(fut, ((("a",), "a", 1),)),
        Delete(fut, ("a",), "a"),
        Reload(fut),
        Subscribe(fut, sub),
        Unsubscribe(fut, 1),
        ReadDone(None, reading),
        SourceChanged("s"),
        SourceFailed("s", "boom"),
        Tick(),
        Wake(),
    ]


async def ask(table: ConfigTable, make: Callable[[asyncio.Future[Any]], Any]) -> Any:
    """Send ``make(reply)`` raw to the manager, by its registered name; await the reply."""
    reply = _future()
    await process.send(table.manager_name, make(reply))
    return await asyncio.wait_for(reply, REPLY_TIMEOUT_S)


def _table_rows() -> list[str]:
    """The first column of the message table in the protocol module's docstring."""
    doc = protocol.__doc__ or ""
    rules = [i for i, line in enumerate(doc.splitlines()) if line.startswith("=====")]
    assert len(rules) == 3, "the docstring has one table: header rule, header, rule, rows, rule"
    lines = doc.splitlines()[rules[1] + 1 : rules[2]]
    return [line.split("  ")[0] for line in lines if line and not line.startswith(" ")]


# -- the types ------------------------------------------------------------------------------


async def test_every_message_type_is_immutable() -> None:
    for message in _samples():
        for name in getattr(message, "_fields", ()):
            with pytest.raises(AttributeError):
                setattr(message, name, None)


async def test_a_message_without_fields_takes_no_attribute_either() -> None:
    for message in (Tick(), Wake(), protocol.TICK, protocol.WAKE):
        with pytest.raises(AttributeError):
            message.anything = 1  # type: ignore[attr-defined]
        assert not hasattr(message, "anything")


async def test_a_message_without_fields_is_true_and_equal_only_to_its_own_kind() -> None:
    assert Tick() and Wake()  # not empty tuples, which are false
    assert Tick() != Wake() and Tick() != ()
    assert repr(protocol.TICK) == "Tick()" and repr(protocol.WAKE) == "Wake()"


async def test_every_message_is_a_message_and_every_request_a_request() -> None:
    samples = _samples()
    for message in samples[:-1]:  # all but Wake, which is the notifier's
        assert isinstance(message, Message), type(message).__name__
    assert not isinstance(samples[-1], Message)
    requests = {Put, PutMany, Delete, Reload, Subscribe, Unsubscribe}
    assert set(typing.get_args(Request)) == requests
    for message in samples:
        assert isinstance(message, Request) == (type(message) in requests)


async def test_every_request_carries_a_reply_future() -> None:
    for kind in typing.get_args(Request):
        assert kind._fields[0] == "reply", kind.__name__
    assert ReadDone._fields[0] == "reply"  # optional: None for no reply


def test_the_message_union_holds_every_class_of_the_module_but_wake_and_result() -> None:
    defined = {
        obj
        for obj in vars(protocol).values()
        if isinstance(obj, type) and obj.__module__ == protocol.__name__
    }
    assert set(typing.get_args(Message)) == defined - {Wake, ReloadResult}


def test_the_docstring_table_lists_every_message_type_and_down() -> None:
    rows = _table_rows()
    named = [m.group(1) for row in rows if (m := re.fullmatch(r":class:`(\w+)`", row.strip()))]
    assert sorted(named) == sorted(t.__name__ for t in typing.get_args(Message))
    assert len(named) == len(set(named))
    assert any("DOWN" in row for row in rows)
    assert len(rows) == len(named) + 1  # nothing else: each row is a message or DOWN


def test_the_docstring_table_says_config_calls_send_exactly_the_requests() -> None:
    doc = protocol.__doc__ or ""
    senders = dict(re.findall(r"^:class:`(\w+)`\s+``(Config\.\w+)``", doc, re.MULTILINE))
    assert set(senders) == {t.__name__ for t in typing.get_args(Request)}
    assert "Wake" in doc  # the notifier's one message is documented too


# -- each request, sent raw ---------------------------------------------------------------


async def test_a_raw_put_replies_none_once_the_value_is_readable(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": {"b": 1}})])
    table = current_table()

    reply = await ask(table, lambda r: Put(r, parse_path("a.b"), "a.b", 2))

    assert reply is None
    assert Config.get_nowait("a.b") == 2
    assert (await Config.status()).counters["puts"] == 1


async def test_a_raw_put_many_replies_none_and_publishes_one_version(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1, "b": 1})])
    table = current_table()
    version = (await Config.status()).version
    entries = ((("a",), "a", 2), (("b",), "b", 3))

    reply = await ask(table, lambda r: PutMany(r, entries))

    assert reply is None
    assert (Config.get_nowait("a"), Config.get_nowait("b")) == (2, 3)
    assert (await Config.status()).version == version + 1


async def test_a_raw_delete_replies_whether_an_override_went(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    await Config.put("a", 2)

    assert await ask(table, lambda r: Delete(r, ("a",), "a")) is True
    assert Config.get_nowait("a") == 1
    assert await ask(table, lambda r: Delete(r, ("a",), "a")) is False


async def test_a_raw_reload_replies_a_reload_result(start_tree: StartTree) -> None:
    source = FakeSource("mutable", {"a": 1})
    await start_tree(sources=[source])
    table = current_table()
    source.set({"a": 2})

    result = await ask(table, lambda r: Reload(r, "test"))

    assert isinstance(result, ReloadResult)
    assert result.changed == ("a",) and result.errors == {}
    assert result.version == (await Config.status()).version == 2


async def test_a_raw_subscribe_replies_a_handle_and_unsubscribe_whether_it_existed(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    recorder = Recorder()
    sub = Subscription(next(table.sub_ids), "a", parse_pattern("a"), recorder)

    handle = await ask(table, lambda r: Subscribe(r, sub))

    assert handle == SubscriptionHandle(sub.id, "a")
    await Config.put("a", 2)
    await eventually(lambda: len(recorder.events) == 1)
    assert recorder.events == [("a", 1, 2)]
    assert await ask(table, lambda r: Unsubscribe(r, sub.id)) is True
    assert await ask(table, lambda r: Unsubscribe(r, sub.id)) is False
    assert len(table.subscriptions) == 0


async def test_a_raw_subscribe_sent_twice_adds_the_subscription_once(
    start_tree: StartTree,
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    sub = Subscription(next(table.sub_ids), "a", parse_pattern("a"), Recorder())

    first = await ask(table, lambda r: Subscribe(r, sub))
    second = await ask(table, lambda r: Subscribe(r, sub))

    assert first == second and len(table.subscriptions) == 1


# -- notices and readings -----------------------------------------------------------------


async def test_a_read_done_without_reply_is_applied(start_tree: StartTree) -> None:
    source = FakeSource("mutable", {"a": 1})
    await start_tree(sources=[source])
    table = current_table()
    source.set({"a": 2})
    reading = await pipeline.read(table, "test")

    await process.send(table.manager_name, ReadDone(None, reading))

    await eventually(lambda: Config.get_nowait("a") == 2)
    assert table.sources["mutable"].reading_seq == reading.seq
    assert (await Config.status()).counters["reloads"] == 1


async def test_a_read_done_with_a_reply_gets_its_reload_result(start_tree: StartTree) -> None:
    source = FakeSource("mutable", {"a": 1})
    await start_tree(sources=[source])
    table = current_table()
    source.set({"a": 2})
    reading = await pipeline.read(table, "test")

    result = await ask(table, lambda r: ReadDone(r, reading))

    assert result == ReloadResult(2, ("a",), {})


async def test_source_changed_with_a_layer_applies_it_and_heals_the_source(
    start_tree: StartTree,
) -> None:
    source = FakeSource("mutable", {"a": 1})
    await start_tree(sources=[source])
    table = current_table()
    recorder = Recorder()
    await Config.subscribe("a", recorder)
    await process.send(table.manager_name, SourceFailed("mutable", "mutable: watch broke"))
    await eventually(lambda: table.sources["mutable"].last_error is not None)

    await process.send(table.manager_name, SourceChanged("mutable", freeze({"a": 5})))

    await eventually(lambda: len(recorder.events) == 1)
    assert recorder.events == [("a", 1, 5)]
    status = (await Config.status()).sources[0]
    assert status.healthy and status.last_error is None
    assert table.sources["mutable"].layer == {"a": 5}


async def test_source_changed_for_an_unknown_source_is_ignored(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    pid = process.whereis(table.manager_name)
    version = (await Config.status()).version
    caplog.set_level(logging.WARNING, logger="otpylib_config")

    await process.send(table.manager_name, SourceChanged("nope", freeze({"a": 9, "b": 9})))
    await ask(table, lambda r: Put(r, ("c",), "c", 1))  # handled after the notice

    assert Config.get_nowait("a") == 1 and Config.get_nowait("b") is None
    assert (await Config.status()).version == version + 1  # the put's version only
    assert process.whereis(table.manager_name) == pid
    assert "nope" not in table.sources
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_source_failed_shows_in_status_as_the_last_error(start_tree: StartTree) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()

    await process.send(table.manager_name, SourceFailed("defaults", "defaults: gone"))

    await eventually(lambda: table.sources["defaults"].last_error is not None)
    status = await Config.status()
    assert status.sources[0].last_error == "defaults: gone"
    assert not status.sources[0].healthy
    assert status.counters["source_watch_errors"] == 1
    assert Config.get_nowait("a") == 1  # the source kept its last good layer


async def test_a_tick_reloads_every_source(start_tree: StartTree) -> None:
    source = FakeSource("mutable", {"a": 1})
    await start_tree(sources=[source])
    table = current_table()
    source.set({"a": 3})

    await process.send(table.manager_name, Tick())

    await eventually(lambda: Config.get_nowait("a") == 3)


# -- the catch-all and failed handlers ----------------------------------------------------


async def test_an_unexpected_message_is_logged_by_type_and_the_manager_keeps_serving(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    pid = process.whereis(table.manager_name)
    caplog.set_level(logging.WARNING, logger="otpylib_config")

    await process.send(table.manager_name, ("hello", "hunter2-not-for-logs"))
    await process.send(table.manager_name, Wake())  # the notifier's message, not the manager's
    await ask(table, lambda r: Put(r, ("a",), "a", 2))

    ignored = [r.getMessage() for r in caplog.records if "ignored an unexpected" in r.message]
    assert ignored == [
        "config manager ignored an unexpected tuple",
        "config manager ignored an unexpected Wake",
    ]
    assert "hunter2" not in caplog.text
    assert process.whereis(table.manager_name) == pid
    assert Config.get_nowait("a") == 2


async def test_a_gen_server_cast_is_logged_and_ignored(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    pid = process.whereis(table.manager_name)
    caplog.set_level(logging.WARNING, logger="otpylib_config")

    await gen_server.cast(table.manager_name, Put(_future(), ("a",), "a", 2))
    await ask(table, lambda r: Put(r, ("b",), "b", 1))

    await eventually(lambda: "ignored an unexpected Put cast" in caplog.text)
    assert Config.get_nowait("a") == 1  # a cast is not a way in
    assert process.whereis(table.manager_name) == pid


async def test_a_request_whose_handler_raises_gets_the_error_and_the_manager_serves_on(
    start_tree: StartTree, caplog: pytest.LogCaptureFixture
) -> None:
    await start_tree(sources=[DefaultsSource({"a": 1})])
    table = current_table()
    pid = process.whereis(table.manager_name)
    caplog.set_level(logging.ERROR, logger="otpylib_config")

    with pytest.raises(TypeError):
        await ask(table, lambda r: Delete(r, None, "broken"))  # type: ignore[arg-type]

    assert "config manager failed to handle a Delete" in caplog.text
    assert await ask(table, lambda r: Put(r, ("a",), "a", 2)) is None
    assert Config.get_nowait("a") == 2
    assert process.whereis(table.manager_name) == pid


async def test_a_rejected_put_gets_the_validation_error_and_nothing_changes(
    start_tree: StartTree,
) -> None:
    def positive(value: Any) -> None:
        if value <= 0:
            raise ValueError("must be positive")

    await start_tree(sources=[DefaultsSource({"a": 1})], validators={"a": positive})
    table = current_table()
    pid = process.whereis(table.manager_name)
    version = (await Config.status()).version

    with pytest.raises(ValidationError, match="must be positive"):
        await ask(table, lambda r: Put(r, ("a",), "a", -1))

    assert Config.get_nowait("a") == 1
    assert (await Config.status()).version == version
    assert await ask(table, lambda r: Put(r, ("a",), "a", 7)) is None
    assert process.whereis(table.manager_name) == pid


# -- _fail --------------------------------------------------------------------------------


async def test_fail_fails_the_reply_of_a_request() -> None:
    reply = _future()
    manager._fail(Put(reply, ("a",), "a", 1), RuntimeError("x"))
    assert isinstance(reply.exception(), RuntimeError)


async def test_fail_fails_the_reply_of_a_reading_that_has_one() -> None:
    reply = _future()
    manager._fail(ReadDone(reply, pipeline.Reading("t", (), (), 1, 0.0)), RuntimeError("x"))
    assert isinstance(reply.exception(), RuntimeError)


async def test_fail_never_touches_a_future_that_is_not_the_message_reply() -> None:
    other = _future()

    class LooksLikeARequest:
        reply = other

    sub = Subscription(1, "a", ("a",), lambda *_: None)
    messages = [
        LooksLikeARequest(),  # not a Message, though it has a reply
        ("reply", other),
        {"reply": other},
        (DOWN, object(), "process", other, "normal"),
        SourceChanged("s", None),
        SourceFailed("s", "e"),
        Tick(),
        ReadDone(None, pipeline.Reading("t", (), (), 1, 0.0)),
        Subscribe(_future(), sub),
    ]
    for message in messages[:-1]:
        manager._fail(message, RuntimeError("x"))
    assert not other.done()
    subscribe = messages[-1]
    manager._fail(subscribe, RuntimeError("x"))
    assert subscribe.reply.done() and not other.done()
    subscribe.reply.exception()


async def test_fail_leaves_a_reply_that_is_already_resolved_alone() -> None:
    reply = _future()
    reply.set_result(None)
    manager._fail(Put(reply, ("a",), "a", 1), RuntimeError("late"))
    assert reply.result() is None
