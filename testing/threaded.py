"""An aiohttp app served on loopback from a background thread, for emulators the tests drive."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web


class ThreadedApp:
    def __init__(
        self,
        app: web.Application,
        on_stop: Callable[[], Awaitable[Any]] | None = None,
        ssl_dir: Path | None = None,
    ) -> None:
        """With `ssl_dir` (holding tls.crt and tls.key) it serves HTTPS."""
        self.app = app
        self.ssl_dir = ssl_dir
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
        context = None
        if self.ssl_dir is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ssl_dir / "tls.crt", self.ssl_dir / "tls.key")
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context).start()
        scheme = "https" if context else "http"
        return f"{scheme}://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        async def close() -> None:
            if self.on_stop:
                await self.on_stop()
            await self.runner.cleanup()

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Served:
    """An emulator whose app a ThreadedApp in `_http` serves: start() gives its URL."""

    _http: ThreadedApp
    url: str

    def start(self) -> str:
        self.url = self._http.start()
        return self.url

    def stop(self) -> None:
        self._http.stop()
