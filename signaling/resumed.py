"""A coroutine started outside any task, handed to a task once it waits for something.

The signalling hot path runs a request's coroutine from the caller's own step (a socket
callback, another handler) with ``coro.send(None)``: most requests end there, with no task
and no wake-up. The few that wait (a relay request) must go on in a task, from where they
stopped: ``await resumed(coro, awaited)`` in that task does it. Used by the plugin runner and
by ``GuardedConnection``.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["resumed"]


@types.coroutine
def resumed(coro: Coroutine[Any, Any, None], awaited: Any) -> Generator[Any, None, None]:
    """The rest of ``coro``, which was started outside any task and is waiting for
    ``awaited``, as part of the task that awaits this: what it waits for is the task's to
    wait for, what the task is sent or thrown (a cancellation) goes on to it."""
    while True:
        try:
            yield awaited
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as a task would
            try:
                awaited = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaited = coro.send(None)
            except StopIteration:
                return
