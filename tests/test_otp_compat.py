"""The otpylib 0.5.18 defects, each shown on the upstream code and fixed by ``_otp_compat``.

Every test drives otpylib's own primitives (``process.exit``, links, monitors, supervisors);
the ``upstream`` fixture puts otpylib's original code back for the duration of one test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from otpylib import atom, process, supervisor
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, SUPERVISOR, OTPModule
from otpylib.runtime import get_runtime
from otpylib.supervisor import ONE_FOR_ALL, SHUTDOWN, TEMPORARY, TRANSIENT

from otpylib_config import _otp_compat
from otpylib_config.supervisor import in_process

from ._otp_helpers import Outer, start_unlinked
from .conftest import eventually

DOWN, EXIT = atom.ensure("DOWN"), atom.ensure("EXIT")
KILL, KILLED, NORMAL = atom.ensure("kill"), atom.ensure("killed"), atom.ensure("normal")
STARTS: dict[str, int] = {}
FAIL_INIT: set[str] = set()


class Worker(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):
    async def init(self, name: Any) -> Any:
        STARTS[name] = STARTS.get(name, 0) + 1
        if name in FAIL_INIT:
            raise RuntimeError(f"{name} cannot start")
        return name

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return (Reply(state), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash on request")
        if message == "stop":
            raise _otp_compat.ProcessExit(NORMAL)
        return (NoReply(), state)

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


class Sup(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
    """``init_arg``: (children as (name, restart) pairs, strategy, max_restarts)."""

    async def init(self, arg: Any) -> Any:
        children, strategy, max_restarts = arg
        specs = [
            supervisor.child_spec(id=name, module=Worker, args=name, name=name, restart=restart)
            for name, restart in children
        ]
        options = supervisor.options(strategy=strategy, max_restarts=max_restarts, max_seconds=5)
        return (specs, options)

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


def workers(*names: str, restart: Any = supervisor.PERMANENT) -> Any:
    return ([(n, restart) for n in names], supervisor.ONE_FOR_ONE, 10)


def nested(arg: Any) -> Any:
    """The ``init_arg`` of an ``Outer`` whose only child is a ``Sup`` named ``inner``."""
    return (Sup, arg, "inner")


async def crashed_and_restarted(name: str) -> bool:
    """Crash the worker ``name`` (an exception, which even upstream restarts) and say
    whether its supervisor restarted it: proof that the supervisor runs and has handled
    every message it got before."""
    old = process.whereis(name)
    await process.send(name, "crash")
    return await restarted(name, old)


async def a_later_process_ran() -> None:
    """Spawn a process and wait for its first step: every process spawned before it has
    had its first step too (the event loop runs ready tasks in order)."""
    ran = asyncio.Event()

    async def mark() -> None:
        ran.set()

    await process.spawn(mark)
    await asyncio.wait_for(ran.wait(), 5)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    STARTS.clear()
    FAIL_INIT.clear()
    yield
    FAIL_INIT.clear()


@pytest.fixture
def upstream() -> Iterator[None]:
    _otp_compat.uninstall()
    try:
        yield
    finally:
        assert _otp_compat.install()


async def restarted(name: str, old: Any, timeout: float = 5.0) -> bool:
    """Wait until ``name`` is registered again, to a process other than ``old``; ``False``
    if that never happens. The timeout only bounds a hang: that something is *not*
    restarted is shown by a later restart instead (:func:`crashed_and_restarted`)."""
    try:
        await eventually(lambda: process.whereis(name) not in (None, old), timeout=timeout)
    except BaseException:
        return False
    return True


async def exit_child_with(reason: Any) -> Any:
    """Start ``sup`` with ``w`` and ``x``, end ``w`` with ``exit(w, reason)``; ``w``'s pid."""
    await supervisor.start_link(Sup, init_arg=workers("w", "x"), name="sup")
    old = process.whereis("w")
    await process.exit(old, reason)
    return old


REASONS = [KILL, KILLED, atom.ensure("custom"), "a string", ValueError("an exception"), SHUTDOWN]


@pytest.mark.parametrize("reason", REASONS, ids=str)
async def test_upstream_never_restarts_a_child_ended_by_exit(
    otp_runtime: Any, upstream: None, reason: Any
) -> None:
    async def body() -> tuple[bool, bool]:
        old = await exit_child_with(reason)
        supervising = await crashed_and_restarted("x")  # so w's death was handled before
        return supervising, process.whereis("w") not in (None, old)

    assert await in_process(body) == (True, False)


@pytest.mark.parametrize("reason", REASONS, ids=str)
async def test_a_child_ended_by_exit_is_restarted_whatever_the_reason(
    otp_runtime: Any, reason: Any
) -> None:
    async def body() -> bool:
        return await restarted("w", await exit_child_with(reason))

    assert await in_process(body) is True


async def monitor_sees(reason: Any) -> tuple[Any, ...]:
    async def body() -> tuple[Any, ...]:
        pid = await process.spawn(lambda: asyncio.sleep(60))
        await asyncio.sleep(0)
        ref = await process.monitor(pid)
        await process.exit(pid, reason)
        down: tuple[Any, ...] = await process.receive(timeout=1)
        assert down[1] == ref
        return down

    return await in_process(body)


async def test_upstream_announces_an_exit_with_a_different_down(
    otp_runtime: Any, upstream: None
) -> None:
    down = await monitor_sees("gone")
    assert len(down) == 4  # (DOWN, ref, pid, reason): supervisors only match five


async def test_every_death_is_announced_with_one_down_shape_and_its_reason(
    otp_runtime: Any,
) -> None:
    for reason, seen in [("gone", "gone"), (KILL, KILLED), (KILLED, KILLED)]:
        down = await monitor_sees(reason)
        assert down[0] == DOWN and down[2] == atom.ensure("process") and down[-1] == seen


async def exit_a_supervisor_from_a_stranger() -> Any:
    """``exit(sup, custom)`` from another process, on a supervisor (which traps exits)."""
    pid = await start_unlinked(Sup, workers("w"), "sup")
    stranger = await process.spawn(lambda: process.exit(pid, atom.ensure("custom")))
    await eventually(lambda: not process.is_alive(stranger))
    return pid


async def test_upstream_leaves_an_unnamed_zombie_of_a_process_that_traps_exits(
    otp_runtime: Any, upstream: None
) -> None:
    async def body() -> tuple[Any, bool, bool]:
        ref = await process.monitor(await start_unlinked(Sup, workers("w"), "watched"))
        pid = process.whereis("watched")
        await process.spawn(lambda: process.exit(pid, atom.ensure("custom")))
        down = await process.receive(timeout=5)  # its death is announced...
        assert down[1] == ref
        return down[0], process.is_alive(pid), process.whereis("watched") == pid

    assert await in_process(body) == (DOWN, True, False)  # ...yet it runs on, unnamed


async def test_a_process_that_traps_exits_gets_a_message_and_keeps_its_name(
    otp_runtime: Any,
) -> None:
    async def body() -> tuple[bool, bool, bool]:
        pid = await exit_a_supervisor_from_a_stranger()
        handled = await crashed_and_restarted("w")  # it took the exit message, then this
        return handled, process.is_alive(pid), process.whereis("sup") == pid

    assert await in_process(body) == (True, True, True)


async def test_kill_cannot_be_trapped(otp_runtime: Any) -> None:
    async def body() -> bool:
        pid = await start_unlinked(Sup, workers("w"), "sup")
        worker = process.whereis("w")
        await process.exit(pid, KILL)
        await eventually(lambda: not process.is_alive(pid) and not process.is_alive(worker))
        return True

    assert await in_process(body)


async def killed_before_it_ran() -> bool:
    """Whether a process killed before its first step still counts as alive."""

    async def body() -> bool:
        pid = await process.spawn(lambda: asyncio.sleep(60))
        await process.exit(pid, atom.ensure("custom"))
        await a_later_process_ran()  # so this one had its first step, or its exit
        return process.is_alive(pid)

    return await in_process(body)


async def test_upstream_keeps_a_process_killed_before_it_ran_forever(
    otp_runtime: Any, upstream: None
) -> None:
    assert await killed_before_it_ran() is True


async def test_a_process_killed_before_it_ran_is_gone(otp_runtime: Any) -> None:
    assert await killed_before_it_ran() is False


async def shut_the_outer_supervisor_down() -> tuple[Any, Any]:
    """Start ``outer`` > ``inner`` > ``w``, shut ``outer`` down; ``(inner, w)`` as they were."""
    outer = await supervisor.start_link(Outer, init_arg=nested(workers("w")), name="outer")
    inner, worker = process.whereis("inner"), process.whereis("w")
    await process.send(outer, SHUTDOWN)
    await eventually(lambda: not process.is_alive(outer))
    return inner, worker


async def test_upstream_nested_supervisors_outlive_their_parent(
    otp_runtime: Any, upstream: None
) -> None:
    async def body() -> tuple[bool, bool]:
        inner, _ = await shut_the_outer_supervisor_down()
        supervising = await crashed_and_restarted("w")  # inner handled all it got before
        return supervising, process.is_alive(inner)

    assert await in_process(body) == (True, True)


async def test_a_nested_supervisor_stops_with_its_parent(otp_runtime: Any) -> None:
    async def body() -> None:
        inner, worker = await shut_the_outer_supervisor_down()
        await eventually(lambda: not process.is_alive(inner) and not process.is_alive(worker))
        assert process.whereis("inner") is None and process.whereis("w") is None

    await in_process(body)


async def test_a_nested_supervisor_stops_when_its_parent_is_killed(otp_runtime: Any) -> None:
    async def body() -> None:
        outer = await start_unlinked(Outer, nested(workers("w")), "outer")
        inner, worker = process.whereis("inner"), process.whereis("w")
        await process.exit(outer, KILL)
        await eventually(lambda: not process.is_alive(inner) and not process.is_alive(worker))
        assert process.whereis("inner") is None and process.whereis("w") is None

    await in_process(body)


async def test_restart_types_are_honoured(otp_runtime: Any) -> None:
    async def body() -> None:
        children = [("temp", TEMPORARY), ("trans", TRANSIENT), ("perm", supervisor.PERMANENT)]
        await supervisor.start_link(Sup, init_arg=(children, supervisor.ONE_FOR_ONE, 10))
        temp, trans = process.whereis("temp"), process.whereis("trans")
        await process.send("temp", "crash")
        await process.send("trans", "stop")  # a normal exit
        await eventually(lambda: not process.is_alive(temp) and not process.is_alive(trans))
        perm = process.whereis("perm")
        await process.send("perm", "stop")  # permanent: restarted even after a normal exit
        assert await restarted("perm", perm)
        # The supervisor handled the two earlier deaths before this one: no restart came.
        assert process.whereis("temp") is None and process.whereis("trans") is None

    await in_process(body)


async def test_past_the_intensity_a_supervisor_escalates_and_its_parent_restarts_it(
    otp_runtime: Any,
) -> None:
    async def body() -> None:
        arg = ([("w", supervisor.PERMANENT)], supervisor.ONE_FOR_ONE, 2)
        await supervisor.start_link(Outer, init_arg=nested(arg), name="outer")
        inner = process.whereis("inner")
        for _ in range(3):  # the third death in 5 s is one too many for max_restarts=2
            old = process.whereis("w")
            await process.exit(old, KILL)
            await eventually(lambda old=old: process.whereis("w") not in (None, old))
        assert await restarted("inner", inner)
        assert STARTS["w"] == 4  # three restarts by the old inner, one by the new

    await in_process(body)


async def crash_w_whose_init_then_fails() -> Any:
    """Start ``sup`` with ``w`` and ``x``, then crash ``w``, whose init now fails."""
    sup = await start_unlinked(Sup, workers("w", "x"), "sup")
    FAIL_INIT.add("w")
    old = process.whereis("w")
    await process.send("w", "crash")
    await eventually(lambda: not process.is_alive(old))
    return sup


async def test_upstream_gives_up_on_a_child_whose_init_fails_and_stays_up(
    otp_runtime: Any, upstream: None
) -> None:
    async def body() -> tuple[bool, bool, bool]:
        sup = await crash_w_whose_init_then_fails()
        supervising = await crashed_and_restarted("x")  # w's failed restart came before
        return supervising, process.whereis("w") is not None, process.is_alive(sup)

    assert await in_process(body) == (True, False, True)
    assert STARTS["w"] == 2  # one failed restart, never retried


async def test_a_failing_restart_is_retried_within_the_intensity_then_escalates(
    otp_runtime: Any,
) -> None:
    async def body() -> None:
        sup = await crash_w_whose_init_then_fails()
        await eventually(lambda: not process.is_alive(sup))
        assert process.whereis("w") is None and process.whereis("x") is None

    await in_process(body)
    assert STARTS["w"] == 1 + 10  # max_restarts attempts, then the supervisor gave up


async def test_a_failing_child_at_start_stops_the_children_started_before_it(
    otp_runtime: Any,
) -> None:
    FAIL_INIT.add("b")

    async def body() -> None:
        with pytest.raises(RuntimeError, match="init failed"):
            await supervisor.start_link(Sup, init_arg=workers("a", "b"), name="sup")
        await eventually(lambda: process.whereis("a") is None)

    await in_process(body)


async def test_one_for_all_stops_the_old_siblings_before_starting_new_ones(
    otp_runtime: Any,
) -> None:
    async def body() -> None:
        arg = ([("a", supervisor.PERMANENT), ("b", supervisor.PERMANENT)], ONE_FOR_ALL, 10)
        await supervisor.start_link(Sup, init_arg=arg, name="sup")
        a, b = process.whereis("a"), process.whereis("b")
        await process.exit(a, atom.ensure("custom"))
        await eventually(lambda: process.whereis("a") not in (None, a))
        await eventually(lambda: process.whereis("b") not in (None, b))
        assert not process.is_alive(b)
        assert STARTS == {"a": 2, "b": 2}

    await in_process(body)


async def start_with_a_queued_message() -> Any:
    async def body() -> Any:
        await process.send(process.self(), "queued before start")
        await supervisor.start_link(Sup, init_arg=workers("w"), name="sup")
        return await process.receive(timeout=1)

    return await in_process(body)


async def test_upstream_takes_a_queued_message_for_the_handshake(
    otp_runtime: Any, upstream: None
) -> None:
    with pytest.raises(RuntimeError, match="Unexpected init reply"):
        await start_with_a_queued_message()


async def test_the_handshake_keeps_queued_messages(otp_runtime: Any) -> None:
    assert await start_with_a_queued_message() == "queued before start"


async def test_a_linked_crash_ends_a_process_and_reaches_one_that_traps(
    otp_runtime: Any,
) -> None:
    async def body() -> None:
        me = process.self()
        linked = asyncio.Event()

        async def doomed() -> None:
            await linked.wait()  # crash only once both links are made
            raise RuntimeError("linked crash")

        victim = await process.spawn(lambda: asyncio.sleep(60))
        trapper = await process.spawn(lambda: _forward_one(me), trap_exits=True, mailbox=True)
        crasher = await process.spawn(doomed)
        for pid in (victim, trapper):
            await in_linked(pid, crasher)
        linked.set()
        message = await process.receive(timeout=5)
        assert message[0] == EXIT and message[1] == crasher
        await eventually(lambda: not process.is_alive(victim))

    await in_process(body)


async def _forward_one(to: Any) -> None:
    await process.send(to, await process.receive(timeout=5))


async def in_linked(a: Any, b: Any) -> None:
    """Link ``a`` and ``b`` (``process.link`` links the calling process)."""
    await get_runtime()._link_local(a, b)


async def crash_alpha_then_beta() -> Any:
    """Crash each of two children once; beta's pid. Upstream reuses a monitor ref once a
    monitored process died, so the second DOWN matches the wrong child."""
    await supervisor.start_link(Sup, init_arg=workers("alpha", "beta"), name="sup")
    assert await crashed_and_restarted("alpha")
    beta = process.whereis("beta")
    await process.send("beta", "crash")
    return beta


async def test_upstream_restarts_the_wrong_child(otp_runtime: Any, upstream: None) -> None:
    async def body() -> None:
        await crash_alpha_then_beta()
        await eventually(lambda: STARTS["alpha"] == 3)  # beta's death restarted alpha...
        assert process.whereis("beta") is None  # ...and beta stays dead

    await in_process(body)
    assert STARTS["beta"] == 1


async def test_unique_monitor_refs_keep_the_right_child(otp_runtime: Any) -> None:
    async def body() -> bool:
        return await restarted("beta", await crash_alpha_then_beta())

    assert await in_process(body) is True
    assert STARTS == {"alpha": 2, "beta": 2}


async def test_tasks_and_hooks_end_with_their_process(otp_runtime: Any) -> None:
    reasons: list[Any] = []

    async def body() -> asyncio.Task[None]:
        pid = await process.spawn(lambda: asyncio.sleep(60))
        await asyncio.sleep(0)
        task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        _otp_compat.bind_task(pid, task)
        _otp_compat.on_exit(pid, reasons.append)
        await process.exit(pid, "bye")
        await eventually(task.done)
        return task

    task = await in_process(body)
    assert task.cancelled() and reasons == ["bye"]


def test_only_the_affected_series_is_patched() -> None:
    assert _otp_compat.affected("0.5.18")
    assert _otp_compat.affected("0.5.3")
    assert not _otp_compat.affected("0.6.0")
    assert not _otp_compat.affected("1.0.0")


def test_the_installed_version_is_read_from_the_dist_info_folder_as_packaging_says() -> None:
    from importlib.metadata import version

    assert _otp_compat.installed_version() == version("otpylib")
