"""The server and its lifetime: TLS, certificate reloads, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from webhook.app import handlers
from webhook.app.cluster import NO_CLUSTER, Cluster
from webhook.app.config import ServeConfig
from webhook.app.connections import Connection, Site
from webhook.app.handlers import State
from webhook.app.memory import trim_after_floods
from webhook.core.settings import Settings
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, ensure_self_signed, service_names
from webhook.tls.context import ReloadingContext

log = logging.getLogger("webhook.server")
# After the drain, what is left is closed; aiohttp then waits at most this long for handlers.
CLOSE_SECONDS = 2.0
LAG_INTERVAL = 0.1


@dataclass
class Service:
    """What `serve` runs: the state requests share, the TLS pair, aiohttp's low-level server."""

    state: State
    tls: ReloadingContext
    server: web.Server


def create_service(config: ServeConfig) -> Service:
    cluster = Cluster.connect(config)
    state = State(config, settings=config.settings, cluster=cluster)
    if cluster is not None and cluster.certificates is not None:
        cluster.certificates.bootstrap()  # every replica serves the Secret's certificate
    else:
        _ensure_certs(config)
    tls = ReloadingContext(config.cert_dir)
    loop = asyncio.get_running_loop()
    limit = config.max_body_bytes

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

    server = web.Server(handlers.server_handler(state), request_factory=request)
    return Service(state, tls, server)


async def _loop_lag(state: State) -> None:
    """Measure how late the loop runs a timer: the wait every request has behind other work.
    Only once ready: startup's own pauses (the collection before gc.freeze) hold no request."""
    loop = asyncio.get_running_loop()
    while True:
        ready = state.ready
        due = loop.time() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        if ready:
            state.metrics.loop_late(max(0.0, loop.time() - due))


def _ensure_certs(config: ServeConfig) -> None:
    if not config.self_signed:
        return
    names = service_names(config.service, config.namespace) + list(LOCAL_NAMES)
    written = ensure_self_signed(config.cert_dir, names, list(LOCAL_IPS))
    if written:
        log.info(
            "wrote self-signed certificates", extra={"files": written, "dir": str(config.cert_dir)}
        )


async def _certificates(state: State, tls: ReloadingContext) -> None:
    """Look for a rotated pair every few seconds (the first is loaded already)."""
    config = state.config

    def export() -> None:
        if tls.expiry is not None:
            state.metrics.cert_expiry.set(tls.expiry.timestamp())

    export()
    while True:
        await asyncio.sleep(config.cert_reload_seconds)
        try:
            if state.cluster is not None and state.cluster.certificates is not None:
                await asyncio.to_thread(state.cluster.certificates.sync)
            else:
                _ensure_certs(config)
            before = tls.generation
            if not tls.reload():
                log.warning(
                    "certificate files are missing or do not load; still serving the old pair"
                )
            elif tls.generation != before:
                state.metrics.cert_reloads.inc()
                log.info("loaded a rotated certificate", extra={"not_after": str(tls.expiry)})
            export()
        except Exception:
            log.exception("certificate check failed")


async def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return."""
    _allow_files(config.max_connections + 256)
    service = create_service(config)
    tls, state = service.tls, service.state
    runner = web.ServerRunner(service.server, shutdown_timeout=CLOSE_SECONDS)
    await runner.setup()
    site = _site(runner, state, tls.context)
    await site.start()
    background = [
        asyncio.create_task(_certificates(state, tls)),
        asyncio.create_task(_loop_lag(state)),
        asyncio.create_task(trim_after_floods(state.pool)),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ports = sorted({address[1] for address in runner.addresses})
    where = {"host": config.host, "ports": ports, "cert_dir": str(config.cert_dir)}
    # Without a cluster (--no-kube) it serves admission only; the next line says which.
    log.info("listening", extra={**where, "cluster": state.cluster is not None})
    log.info(state.cluster.line if state.cluster is not None else NO_CLUSTER)
    failed = False
    if state.cluster is not None:
        await asyncio.to_thread(state.cluster.begin)
    if state.settings is None and config.prepare is not None:
        cluster = state.cluster
        leading: Callable[[], bool] = (lambda: cluster.leading) if cluster else (lambda: True)
        try:
            state.settings = await _prepare(config.prepare, leading, stop)
        except Exception as exc:  # noqa: BLE001 - reported in one line, then a clean exit
            log.error("startup failed: %s", exc)
            failed = True
    if state.settings is not None and state.cluster is not None:
        try:
            await asyncio.to_thread(state.cluster.start, state.settings)
        except Exception as exc:  # noqa: BLE001 - admission still works without the cluster side
            log.error("could not start the cluster work: %s", exc)
    if state.settings is not None:
        # Everything loaded so far lives as long as the process: keep the collector from
        # walking it again on every full collection.
        gc.collect()
        gc.freeze()
        state.ready = True
        log.info(
            "serving",
            extra={
                "host": config.host,
                "ports": ports,
                "cert_dir": str(config.cert_dir),
                "tracking_uri": state.settings.tracking.uri,
                "credentials": state.settings.credentials,
            },
        )
        await stop.wait()
    state.ready = False
    log.info("shutting down; finishing requests in flight", extra={"in_flight": state.in_flight})
    # Stop accepting first, then let every started request finish, bodies still arriving
    # included: aiohttp's own cleanup stops reading from connections at once.
    await site.stop()
    if state.in_flight:
        try:
            await asyncio.wait_for(state.idle.wait(), config.shutdown_timeout)
        except TimeoutError:
            log.warning(
                "gave up waiting for requests in flight", extra={"in_flight": state.in_flight}
            )
    # Whatever is still open (idle keep-alive connections, a client that stalled past every
    # deadline) is closed now, so aiohttp's cleanup has nothing left to wait for.
    state.pool.close_all()
    await runner.cleanup()
    for task in background:
        task.cancel()
    if state.cluster is not None:
        await asyncio.to_thread(state.cluster.stop)
    log.info("stopped")
    return 1 if failed else 0


def _allow_files(wanted: int) -> None:
    """Raise the soft limit on open files toward the hard one, so that the connection bound,
    not a failing accept(), is what limits a flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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


async def _prepare(
    prepare: Callable[[Callable[[], bool]], Settings],
    leading: Callable[[], bool],
    stop: asyncio.Event,
) -> Settings | None:
    """Run startup work in a thread while /healthz answers; SIGTERM ends the wait.

    A daemon thread, not the loop's executor: an hour-long wait for a tracking server must not
    hold the process open after SIGTERM.
    """
    loop = asyncio.get_running_loop()
    work: asyncio.Future[Settings] = loop.create_future()

    def run() -> None:
        try:
            result = prepare(leading)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            loop.call_soon_threadsafe(_settle, work, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, work, result, None)

    threading.Thread(target=run, name="prepare", daemon=True).start()
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if work in done:
        return work.result()
    return None


def _settle(
    future: asyncio.Future[Settings], result: Settings | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
