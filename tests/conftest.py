"""Shared fixtures: a fresh otpylib runtime per test, and helpers to start trees.

See reference/otpylib-0.5.18.md §1: one backend per test on the test's own loop. Test bodies
that must run inside a process go through ``otpylib_config.supervisor.in_process``, so that a
failed assert fails the test instead of silently ending the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend

import otpylib_config
from otpylib_config import ConfigSpec, ConfigTree, _otp_compat, registry


@pytest_asyncio.fixture
async def otp_runtime() -> AsyncIterator[AsyncIOBackend]:
    backend = await _otp_compat.open_runtime()
    yield backend
    await _otp_compat.shutdown_runtime(backend)
    for table in list(registry._tables.values()):  # trees a parent stopped stay readable
        registry.unregister(table)


StartTree = Callable[..., Awaitable[ConfigTree]]


@pytest_asyncio.fixture
async def start_tree(otp_runtime: AsyncIOBackend) -> AsyncIterator[StartTree]:
    """``await start_tree(sources=[...], **spec_options)``; every tree is stopped after."""
    trees: list[ConfigTree] = []

    async def start(**options: Any) -> ConfigTree:
        options.setdefault("reload_interval", None)
        tree = await otpylib_config.start(ConfigSpec(**options))
        trees.append(tree)
        return tree

    yield start
    for tree in reversed(trees):
        await tree.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail with a clear message if it never does.

    The timeout only bounds a hang: no test asserts on how fast anything happens.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition never became true: {predicate}")
        await asyncio.sleep(0.005)


class Recorder:
    """A subscriber callback that records ``(path, old, new)`` events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    def __call__(self, path: str, old: Any, new: Any) -> None:
        self.events.append((path, old, new))

    async def settled(self, count: int, timeout: float = 5.0) -> list[tuple[str, Any, Any]]:
        await eventually(lambda: len(self.events) >= count, timeout)
        await asyncio.sleep(0.02)  # let any unexpected extra event arrive before asserting
        return self.events
