"""Work beside the requests, for as long as a block of `serve`'s lifetime lasts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from webhook.app.handlers import State

LAG_INTERVAL = 0.1


@contextlib.asynccontextmanager
async def running(*work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Each coroutine as a task while the block lasts; cancelled, and awaited, at its end."""
    tasks = [asyncio.create_task(each) for each in work]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def loop_lag(state: State) -> None:
    """Measure how late the loop runs a timer: the wait every request has behind other work.
    Only once ready: startup's own pauses (the collection before gc.freeze) hold no request."""
    loop = asyncio.get_running_loop()
    while True:
        ready = state.ready
        due = loop.time() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        if ready:
            state.metrics.loop_late(max(0.0, loop.time() - due))
