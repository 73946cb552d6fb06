"""Unit tests: no root, no cluster; every event loop they run must leave no task behind.

``asyncio.run`` cancels whatever tasks are still pending when its coroutine
returns, which hides a task a component forgot (a status write left behind, a
watcher never stopped). Here every ``asyncio.run`` of a unit test checks,
before that happens, that only the main task is left, and fails the test
naming the leaked ones, as kopf's own test suite does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
_real_run = asyncio.run


async def _checked(main: Coroutine[Any, Any, T]) -> T:
    result = await main
    await asyncio.sleep(0)  # let tasks that are finishing finish
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"the event loop was left with running tasks: {names}")
    return result


def _run(main: Coroutine[Any, Any, T], **kwargs: Any) -> T:
    return _real_run(_checked(main), **kwargs)


@pytest.fixture(autouse=True)
def no_leaked_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "run", _run)
