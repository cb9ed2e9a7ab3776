"""An aiohttp app served on loopback from a background thread, for emulators the tests drive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class ThreadedApp:
    def __init__(
        self, app: web.Application, on_stop: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        self.app = app
        self.on_stop = on_stop
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> str:
        self.thread.start()
        self.url = self.call(self._start())
        return self.url

    def call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    async def _start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        async def close() -> None:
            if self.on_stop:
                await self.on_stop()
            await self.runner.cleanup()

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
