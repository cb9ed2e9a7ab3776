"""Our admission handler against the floor's, called in-process: no TLS, no sockets, no loop.

    .venv/bin/python -m benchmarks.handlers

Separates the handler's own work (parse, decide, patch, metrics, decision log, response) from
what HTTP and TLS cost, which `benchmarks.load` measures together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks import bodies
from tests.support import settings
from webhook.app import handlers
from webhook.app.config import ServeConfig
from webhook.app.logs import JsonHandler, configure

sys.path.insert(0, str(Path(__file__).parent))
import floor  # a script beside this one, not a package module


class Request:
    """What both handlers use of a request: its app, its body and the body's length."""

    def __init__(self, app: web.Application, raw: bytes) -> None:
        self.app, self.raw = app, raw
        self.content_length = len(raw)

    async def read(self) -> bytes:
        return self.raw


async def per_call(
    handler: Callable[[Any], Awaitable[Any]], request: Request, n: int = 300
) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await handler(request)
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    configure("info")
    [log] = logging.getLogger().handlers
    assert isinstance(log, JsonHandler)
    log.fd = os.open(os.devnull, os.O_WRONLY)  # the decision log is written, to nowhere
    app = web.Application()
    app[handlers.STATE] = handlers.State(ServeConfig(settings=settings()), settings=settings())
    for name, build in bodies.MIX.items():
        request = Request(app, json.dumps(build()).encode())
        times = {}
        for label, handler in (("floor", floor.mutate), ("ours", handlers.mutate)):
            times[label] = min([await per_call(handler, request) for _ in range(7)])
        print(
            f"{name:16} floor {times['floor']:7.1f} us  ours {times['ours']:7.1f} us  "
            f"ours - floor {times['ours'] - times['floor']:+7.1f} us"
        )


if __name__ == "__main__":
    asyncio.run(main())
