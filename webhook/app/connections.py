"""Client connections: a bound on how many stay open, and a deadline on each request's headers.

Every open connection costs memory whether or not it ever sends a request (about 54 KiB while
its TLS handshake is pending, 32 KiB once idle), so a replica keeps at most `limit` of them,
counted from accept() until the transport is gone. At the bound a new connection is still
served: those already closing go first, then the longest-idle, those that never sent a request
(their handshake finished or not) before those that did, so a flood of idle sockets cannot lock
the API server out. What the bound closes is aborted, not shut down: a TLS close waits for the
peer's close_notify, which a client that never reads never sends.

The site accepts by itself, so that a connection is in the pool (and can be closed) before
its handshake. aiohttp builds one `RequestHandler` a connection; ours is a subclass, and
overrides only its public protocol methods.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from webhook.app.answers import error, raw_error
from webhook.core.echo import clip

log = logging.getLogger("webhook.connections")
# How long a TLS close waits for the peer's close_notify (the loop's default is 30 s): a client
# that answers does so within a round trip, one that never reads holds memory meanwhile.
SHUTDOWN_SECONDS = 2.0


class Member(Protocol):
    aborted: bool

    def rank(self) -> tuple[int, float]: ...
    def force_close(self) -> None: ...
    def abort(self) -> None: ...


class Pool:
    """The open connections of one replica, and the bound on them."""

    def __init__(self, limit: int, on_evict: Callable[[int], None] = lambda n: None) -> None:
        self.limit = limit
        self.open: dict[Member, None] = {}  # an ordered set
        self.on_evict = on_evict
        self.peak = 0  # the most open at once since `memory` last looked

    def __len__(self) -> int:
        return len(self.open)

    def add(self, new: Member) -> None:
        self.open[new] = None
        self.peak = max(self.peak, len(self.open))
        excess = len(self.open) - self.limit
        if excess > 0:
            # Close a few more than needed, so a flood does not scan the pool on every accept.
            # An aborted one stays counted until its transport is gone (the loop's next turn)
            # but is not chosen again: closing it twice frees nothing.
            count = excess + max(1, self.limit // 64)
            victims = heapq.nsmallest(
                count,
                (c for c in self.open if c is not new and not c.aborted),
                key=lambda c: c.rank(),
            )
            for victim in victims:
                victim.abort()
            if victims:
                self.on_evict(len(victims))

    def discard(self, conn: Member) -> None:
        self.open.pop(conn, None)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.force_close()


class Connection(web.RequestHandler):
    """aiohttp's handler for one connection, which the pool can rank and close.

    `begin` and `end` come from the request guard (`handlers.guard`): between them a request
    is being served; otherwise the connection is idle, and bytes that arrive start the headers'
    deadline. One timer serves both deadlines: from `begin` to `end` it is the body's, unless
    the body came with the headers. It costs a request less than an `asyncio.timeout` around
    the read.
    """

    __slots__ = (
        "aborted",
        "busy",
        "headers_timeout",
        "headers_timer",
        "link",
        "loop",
        "pending",
        "pool",
        "reading",
        "since",
        "used",
    )

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
        self.used = self.busy = self.aborted = False
        self.since = loop.time()
        self.link: asyncio.Transport | None = None  # kept after aiohttp lets go of it
        self.headers_timer: asyncio.TimerHandle | None = None
        self.pending: Member | None = None  # what stood for it in the pool during the handshake
        self.reading: StreamReader | None = None  # a body still arriving, under the deadline

    def rank(self) -> tuple[int, float]:
        """Lowest first to close: closing already, then never used, then idle, then the oldest
        request in flight (at the bound with every connection busy, the oldest is the likeliest
        to be stalled)."""
        if self.transport is None:  # aiohttp lets go of it when it starts to close
            return (-1, self.since)
        return (2 if self.busy else int(self.used), self.since)

    def abort(self) -> None:
        """End it now, without waiting on the peer: its socket closes on the loop's next turn."""
        self.aborted = True
        self._stop_timer()
        if self.link is not None:
            self.link.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.link = cast(asyncio.Transport, transport)  # TLS, which can abort
        self.since = self.loop.time()
        if self.pending is not None:
            # Leave first, so that joining cannot close the handshake that made this connection.
            self.pool.discard(self.pending)
            self.pending = None
        self.pool.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        self.pool.discard(self)
        self.link = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self.busy and self.headers_timer is None:
            self.headers_timer = self.loop.call_later(self.headers_timeout, self._late)
        super().data_received(data)

    def begin(self, body: StreamReader) -> None:
        """A request's headers are in: its body has the same time again, unless it is in too."""
        self._stop_timer()
        self.used = self.busy = True
        self.since = self.loop.time()
        if not body.is_eof():
            self.reading = body
            self.headers_timer = self.loop.call_later(self.headers_timeout, self._late)

    def end(self) -> None:
        self._stop_timer()
        self.reading = None
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
        """After an answer to a body that could not be read (or came too late), aiohttp reads on
        to let the client finish sending, meets the same error and calls it unhandled: one line
        is enough."""
        error = kwargs.get("exc_info")
        if isinstance(error, web.RequestPayloadError | ConnectionError | BodyLate):
            log.debug("stopped reading an unreadable body: %s", error)
            return
        super().log_exception(*args, **kwargs)

    def _late(self) -> None:
        self.headers_timer = None
        if self.reading is not None:
            # The handler's read raises this, and it answers 408.
            self.reading.set_exception(BodyLate(self.headers_timeout))
            self.reading = None
            return
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


class BodyLate(Exception):
    """A request's body did not arrive within the deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"body did not arrive within {seconds:g} s")


class Pending:
    """A connection from accept() until its TLS handshake is done: in the pool already, so that
    sockets which never say hello meet the same limit. It ranks with the connections that never
    sent a request, by age: a handshake that is slow only because the server is busy is young."""

    __slots__ = ("aborted", "since", "task")

    def __init__(self, since: float) -> None:
        self.since = since
        self.aborted = False
        self.task: asyncio.Task[None] | None = None

    def rank(self) -> tuple[int, float]:
        return (0, self.since)

    def force_close(self) -> None:
        self.abort()

    def abort(self) -> None:
        self.aborted = True
        if self.task is not None:
            self.task.cancel()  # uvloop closes the socket when its handshake is cancelled


class Listener(asyncio.AbstractServer):
    """The listening socket and the loop that accepts from it, as a site's server."""

    def __init__(self, sock: socket.socket, accepting: asyncio.Task[None]) -> None:
        self.sock, self.accepting = sock, accepting

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,)

    def close(self) -> None:
        self.accepting.cancel()
        self.sock.close()

    def is_serving(self) -> bool:
        return not self.accepting.done()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.accepting.get_loop()

    async def wait_closed(self) -> None:
        await asyncio.gather(self.accepting, return_exceptions=True)

    async def start_serving(self) -> None:
        """It serves from the start."""

    async def serve_forever(self) -> None:
        await self.wait_closed()


class Site(web.BaseSite):
    """A TCP site that accepts itself, so that each connection joins the pool at accept(), and
    hands the socket to the loop for TLS (uvloop's own TLS, as with create_server)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        backlog: int,
        pool: Pool,
        connection: Callable[[], Connection],
        handshake_timeout: float,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.context, self.pool = host, port, context, pool
        self.connection = connection
        self.handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=self._backlog)
        sock.setblocking(False)
        self._server = Listener(sock, asyncio.ensure_future(self.accept(sock)))

    async def accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of files, most likely: the pool's bound frees some
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            pending = Pending(loop.time())
            pending.task = asyncio.ensure_future(self.handshake(sock, pending))
            self.pool.add(pending)

    async def handshake(self, sock: socket.socket, pending: Pending) -> None:
        """The handshake, under its deadline; `Connection.connection_made` follows it."""

        def connection() -> Connection:
            made = self.connection()
            made.pending = pending
            return made

        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                connection,
                sock,
                ssl=self.context,
                ssl_handshake_timeout=self.handshake_timeout,
                ssl_shutdown_timeout=SHUTDOWN_SECONDS,
            )
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - ends this one only
            log.debug("TLS handshake did not finish: %r", exc)
            sock.close()  # a no-op when the loop had taken the socket over
        finally:
            self.pool.discard(pending)
