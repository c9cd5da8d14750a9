"""run_until: a stage's cut-off, with the timer armed only once the stage waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ragpacer.pipeline.core.cutoff import run_until


def _timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The times of the timers the running loop arms from now on."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def spy(when: float, *args: Any, **kwargs: Any) -> Any:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", spy)
    return armed


async def test_work_that_never_waits_returns_with_no_timer_armed(monkeypatch) -> None:
    async def at_once() -> str:
        return "done"

    armed = _timers(monkeypatch)
    loop = asyncio.get_running_loop()
    assert await run_until(at_once(), loop.time() + 5) == "done"
    assert armed == []


async def test_work_that_waits_past_its_cutoff_is_cut(monkeypatch) -> None:
    cleaned = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)  # the cut reaches the work as a cancellation
        return "late"

    loop = asyncio.get_running_loop()
    armed = _timers(monkeypatch)
    at = loop.time() + 0.05
    with pytest.raises(TimeoutError):
        await run_until(slow(), at)
    assert cleaned == [True]
    assert at in armed


async def test_work_that_waits_gets_every_result_it_waits_for() -> None:
    async def steps() -> list[int]:
        got = []
        for i in range(3):
            got.append(await asyncio.sleep(0, result=i))
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, 9)
        got.append(await fut)
        return got

    loop = asyncio.get_running_loop()
    assert await run_until(steps(), loop.time() + 30) == [0, 1, 2, 9]


async def test_an_error_after_a_wait_is_the_works_own() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad row")

    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError, match="bad row"):
        await run_until(fails(), loop.time() + 30)


async def test_work_that_catches_its_cut_and_waits_again_is_resumed() -> None:
    """A stage may tidy up after the cut (await a close); that wait runs to its end."""
    tidied = []

    async def tidy() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            tidied.append(True)
            raise
        return "late"

    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await run_until(tidy(), loop.time() + 0.05)
    assert tidied == [True]


async def test_cancelling_the_caller_cancels_the_waiting_work() -> None:
    started, cancelled = asyncio.Event(), []

    async def waits() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run_until(waits(), loop.time() + 30))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]
