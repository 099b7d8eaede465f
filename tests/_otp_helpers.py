"""otpylib processes that tests start around a config tree, shared instead of copied.

* :class:`AppSupervisor`: an application's own supervisor with the config tree as a child
  (``otpylib_config.child_spec(spec)``), optionally beside a :class:`Sibling` that crashes
  on any message.
* :class:`Outer`: a supervisor whose only child is another supervisor, to nest trees.
* :func:`start_unlinked`: start a supervisor from a short-lived process without dying with it.
"""

from __future__ import annotations

from typing import Any

from otpylib import process, supervisor
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, SUPERVISOR, OTPModule

import otpylib_config
from otpylib_config import ConfigSpec


class AppSupervisor(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
    """An application's tree. ``init_arg``: a ``ConfigSpec``, or ``(spec, strategy,
    with_sibling)`` to choose the restart strategy and add a :class:`Sibling` named
    ``"sibling"`` after the config tree."""

    async def init(self, arg: ConfigSpec | tuple[ConfigSpec, Any, bool]) -> Any:
        spec, strategy, with_sibling = (
            (arg, supervisor.ONE_FOR_ONE, False) if isinstance(arg, ConfigSpec) else arg
        )
        children = [otpylib_config.child_spec(spec)]
        if with_sibling:
            children.append(supervisor.child_spec(id="sibling", module=Sibling, name="sibling"))
        return (children, supervisor.options(strategy=strategy, max_restarts=5, max_seconds=5))

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


class Outer(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
    """``init_arg``: ``(module, child_arg, child_name)``: one supervisor child, restarted
    by this one (one_for_one, 5 restarts in 5 s)."""

    async def init(self, arg: tuple[Any, Any, str]) -> Any:
        module, child_arg, name = arg
        child = supervisor.child_spec(id=name, module=module, args=child_arg, name=name)
        return ([child], supervisor.options(max_restarts=5, max_seconds=5))

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


class Sibling(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):
    """A worker beside the config tree that crashes on any message."""

    async def init(self, arg: Any) -> Any:
        return None

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return (Reply(None), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return (NoReply(), state)

    async def handle_info(self, message: Any, state: Any) -> Any:
        raise RuntimeError("sibling crashed")

    async def terminate(self, reason: Any, state: Any) -> None:
        pass


async def start_unlinked(module: Any, arg: Any, name: str) -> Any:
    """Start a supervisor from the calling process, then unlink it: the starting process
    (often a short-lived ``in_process`` body) must not take the tree down with it, nor die
    with a supervisor that the test kills or that gives up."""
    pid = await supervisor.start_link(module, init_arg=arg, name=name)
    await process.unlink(pid)
    return pid
