"""Client connections: a bound on how many stay open, and a deadline on each request's headers.

Every open TLS connection costs memory whether or not it ever sends a request, so a replica
keeps at most `limit` of them. At the bound a new connection is still served: the longest-idle
ones are closed first, those that never sent a request before those that did, so a flood of
idle sockets cannot lock the API server out. aiohttp builds one `RequestHandler` a connection;
ours is a subclass made by our own site, and overrides only its public protocol methods.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from webhook.app.answers import error, raw_error
from webhook.core.echo import clip

log = logging.getLogger("webhook.connections")


class Pool:
    """The open connections of one replica, and the bound on them."""

    def __init__(self, limit: int, on_evict: Callable[[int], None] = lambda n: None) -> None:
        self.limit = limit
        self.open: dict[Connection, None] = {}  # an ordered set
        self.on_evict = on_evict

    def __len__(self) -> int:
        return len(self.open)

    def add(self, new: Connection) -> None:
        self.open[new] = None
        excess = len(self.open) - self.limit
        if excess > 0:
            # Close a few more than needed, so a flood does not scan the pool on every accept.
            count = excess + max(1, self.limit // 64)
            victims = heapq.nsmallest(
                count, (c for c in self.open if c is not new), key=lambda c: c.rank()
            )
            for victim in victims:
                victim.force_close()
            self.on_evict(len(victims))

    def discard(self, conn: Connection) -> None:
        self.open.pop(conn, None)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.force_close()


class Connection(web.RequestHandler):
    """aiohttp's handler for one connection, which the pool can rank and close.

    `begin` and `end` come from the app's middleware: between them a request is being served;
    otherwise the connection is idle, and bytes that arrive start the headers' deadline.
    """

    __slots__ = ("busy", "headers_timeout", "headers_timer", "loop", "pool", "since", "used")

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        pool: Pool,
        headers_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.loop, self.pool, self.headers_timeout = loop, pool, headers_timeout
        self.used = self.busy = False
        self.since = loop.time()
        self.headers_timer: asyncio.TimerHandle | None = None

    def rank(self) -> tuple[int, float]:
        """Lowest first to close: never used, then idle, then the oldest request in flight
        (at the bound with every connection busy, the oldest is the likeliest to be stalled)."""
        return (2 if self.busy else int(self.used), self.since)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.since = self.loop.time()
        self.pool.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        self.pool.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self.busy and self.headers_timer is None:
            self.headers_timer = self.loop.call_later(self.headers_timeout, self._headers_late)
        super().data_received(data)

    def begin(self) -> None:
        self._stop_timer()
        self.used = self.busy = True
        self.since = self.loop.time()

    def end(self) -> None:
        self.busy = False
        self.since = self.loop.time()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or a handler's uncaught error),
        in JSON instead of text/plain, and one log line instead of a traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; no error answer can follow it")
        text = clip(message or (str(exc) if exc else "") or "bad request", 200)
        if status >= 500:
            log.error("error serving a request: %s", text, exc_info=exc)
            text = "internal error"
        else:
            log.warning("rejected a request aiohttp could not parse: %s", text)
        response = error(status, text)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """After an answer to a body that could not be read, aiohttp reads on to let the client
        finish sending, meets the same error and calls it unhandled: one line is enough."""
        error = kwargs.get("exc_info")
        if isinstance(error, web.RequestPayloadError | ConnectionError):
            log.debug("stopped reading an unreadable body: %s", error)
            return
        super().log_exception(*args, **kwargs)

    def _headers_late(self) -> None:
        self.headers_timer = None
        if self.busy or self.transport is None:
            return
        log.info("closed a connection whose request headers did not arrive in time")
        message = f"request headers did not arrive within {self.headers_timeout:g} s"
        self.transport.write(raw_error(408, message))
        self.force_close()

    def _stop_timer(self) -> None:
        if self.headers_timer is not None:
            self.headers_timer.cancel()
            self.headers_timer = None


class Site(web.BaseSite):
    """A TCP site whose connections are ours; TLS handshakes have their own deadline."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        backlog: int,
        connection: Callable[[], Connection],
        handshake_timeout: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self.host, self.port = host, port
        self.connection = connection
        self.handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self.connection,
            self.host,
            self.port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout,
        )
