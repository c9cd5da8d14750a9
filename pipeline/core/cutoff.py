"""Await a stage under its cut-off, arming the timer only when the stage has to wait.

``asyncio.timeout_at`` costs a timer armed and cancelled (~4-8 µs on uvloop) whether or not
the work waits on anything, and most stages of a cache hit or a template answer finish in
their first step. An asyncio timer can only cut work at a wait (it cannot interrupt running
code), so running that first step before arming it changes no outcome: it is what Python
3.12's eager tasks do for a task's first step.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar, cast

T = TypeVar("T")


async def run_until(work: Awaitable[T], at: float) -> T:
    """``work``'s result, or TimeoutError once it has waited past ``at`` (loop time)."""
    if not isinstance(work, Coroutine):
        async with asyncio.timeout_at(at):
            return await work
    try:
        waiting_on = work.send(None)
    except StopIteration as done:  # finished without waiting: no timer was needed
        return cast(T, done.value)
    async with asyncio.timeout_at(at):  # a past ``at`` cuts it at once, as before
        return cast(T, await _resume(work, waiting_on))


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro``, started and now waiting on ``waiting_on``: what ``await``
    does from a coroutine's second step on (the event loop's results sent in, a
    cancellation thrown in)."""
    while True:
        thrown: BaseException | None = None
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation, thrown into the wait
            thrown = exc
        try:
            waiting_on = coro.send(sent) if thrown is None else coro.throw(thrown)
        except StopIteration as done:
            return done.value
