"""Waiting in a test for something to become true: one polling loop for every suite.

A condition may be a plain function or a coroutine function (a Redis lookup, a request); a
wait that runs out fails with what was awaited and for how long, never hangs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool] | Callable[[], Awaitable[bool]]


async def until(condition: Condition, what: str = "the condition", timeout: float = 5.0,
                every: float = 0.02) -> float:
    """Poll ``condition`` every ``every`` s until it is true; the seconds it took. An
    AssertionError names ``what`` if ``timeout`` s pass first."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(every)
