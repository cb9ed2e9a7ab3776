"""The HTTPS server: aiohttp's low-level server on our own bounded connections, and its
graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from webhook.app import handlers
from webhook.app.connections import Connection, Site
from webhook.app.handlers import State
from webhook.tls.context import ReloadingContext

log = logging.getLogger("webhook.server")
# After the drain, what is left is closed; aiohttp then waits at most this long for handlers.
CLOSE_SECONDS = 2.0


class Listening:
    """The server, accepting on its port until `drain`."""

    def __init__(self, state: State, runner: web.ServerRunner, site: Site) -> None:
        self.state, self.runner, self.site = state, runner, site
        self.ports = sorted({address[1] for address in runner.addresses})
        self._drained = False

    async def drain(self) -> None:
        """Stop accepting, let every started request finish (bodies still arriving included),
        then close whatever is still open; once, whoever asks first."""
        if self._drained:
            return
        self._drained = True
        state = self.state
        log.info(
            "shutting down; finishing requests in flight", extra={"in_flight": state.in_flight}
        )
        # aiohttp's own cleanup would stop reading from connections at once.
        await self.site.stop()
        if state.in_flight:
            try:
                await asyncio.wait_for(state.idle.wait(), state.config.shutdown_timeout)
            except TimeoutError:
                log.warning(
                    "gave up waiting for requests in flight", extra={"in_flight": state.in_flight}
                )
        # Idle keep-alive connections, a client that stalled past every deadline: closed now,
        # so that aiohttp's cleanup has nothing left to wait for.
        state.pool.close_all()


@contextlib.asynccontextmanager
async def listening(state: State, tls: ReloadingContext) -> AsyncIterator[Listening]:
    """The server on its port for as long as the block lasts; drained and closed at its end."""
    config = state.config
    allow_files(config.max_connections + 256)
    runner = web.ServerRunner(_server(state), shutdown_timeout=CLOSE_SECONDS)
    await runner.setup()
    try:
        site = _site(runner, state, tls.context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = Listening(state, runner, site)
    # Without a cluster (--no-kube) it serves admission only; the next line says which.
    log.info(
        "listening",
        extra={
            "host": config.host,
            "ports": server.ports,
            "cert_dir": str(config.cert_dir),
            "cluster": state.cluster is not None,
        },
    )
    try:
        yield server
    finally:
        await server.drain()
        await runner.cleanup()
        log.info("stopped")


def allow_files(wanted: int) -> None:
    """Raise the soft limit on open files toward the hard one, so that the connection bound,
    not a failing accept(), is what limits a flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _server(state: State) -> web.Server:
    """aiohttp's low-level server: our handler, and a body limit on every request."""
    loop = asyncio.get_running_loop()
    limit = state.config.max_body_bytes

    def request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=limit
        )

    return web.Server(handlers.server_handler(state), request_factory=request)


def _site(runner: web.BaseRunner, state: State, context: ssl.SSLContext) -> Site:
    """Our connections, on the port: bounded, with deadlines and a keep-alive timeout."""
    config = state.config
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()

    def connection() -> Connection:
        return Connection(
            server,
            loop=loop,
            pool=state.pool,
            headers_timeout=config.read_timeout_seconds,
            keepalive_timeout=config.keepalive_seconds,
            access_log=None,
        )

    return Site(
        runner,
        config.host,
        config.port,
        context=context,
        backlog=1024,
        pool=state.pool,
        connection=connection,
        handshake_timeout=config.read_timeout_seconds,
    )
