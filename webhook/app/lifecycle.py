"""`serve` from start to stop, in one place: each piece starts in the order read here, and
stops in the reverse order, only if it started.

This is the shape of aiohttp's `cleanup_ctx`, as an AsyncExitStack: the server is aiohttp's
low-level one (no Application, no router on the request path), so there is no cleanup_ctx to
hang the pieces on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable
from typing import TypeVar

from webhook.app import bootstrapping
from webhook.app.background import loop_lag, running
from webhook.app.certificates import serving_pair
from webhook.app.cluster import NO_CLUSTER, Cluster
from webhook.app.config import ServeConfig
from webhook.app.handlers import State
from webhook.app.memory import trim_after_floods
from webhook.app.server import Listening, listening
from webhook.core.settings import Settings, cross_account

log = logging.getLogger("webhook.server")
T = TypeVar("T")


class StartupFailed(Exception):
    """The settings could not be made (the bootstrap met a setup problem): one line."""


async def serve(config: ServeConfig) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return."""
    async with contextlib.AsyncExitStack() as lifetime:
        # The API server, reached once, or none (--no-kube).
        cluster = await asyncio.to_thread(Cluster.connect, config)
        state = State(config, settings=config.settings, cluster=cluster)
        # The serving pair, from the cluster's Secret or the folder; reloaded while it lasts.
        tls = await lifetime.enter_async_context(serving_pair(state))
        # /healthz and /metrics answer from here on; at the end: drained, then closed.
        server = await lifetime.enter_async_context(listening(state, tls))
        log.info(cluster.line if cluster is not None else NO_CLUSTER)
        await lifetime.enter_async_context(running(loop_lag(state), trim_after_floods(state.pool)))
        stop = _stop_on_signals()
        if cluster is not None:
            # A follower must know it follows before it bootstraps; at the end the leader
            # gives the Lease up, so that another replica takes over at once.
            await asyncio.to_thread(cluster.campaign)
            lifetime.push_async_callback(asyncio.to_thread, cluster.resign)
        settings = await _settings(state, stop)
        if settings is None:
            return  # SIGTERM or SIGINT came first
        if cluster is not None:
            await _watch(cluster, settings)
            lifetime.push_async_callback(asyncio.to_thread, cluster.unwatch)
        _ready(state, server, settings)
        lifetime.push_async_callback(_unready, state, server)
        await stop.wait()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _settings(state: State, stop: asyncio.Event) -> Settings | None:
    """The settings given, or those the bootstrap makes while /healthz answers; None when a
    signal came first. A setup problem ends serve with StartupFailed."""
    config, cluster = state.config, state.cluster
    settings = config.settings
    if settings is None and config.bootstrap is not None:

        def leading() -> bool:
            return cluster is None or cluster.leading

        made = bootstrapping.settings(config.bootstrap, leading, state.metrics)
        try:
            settings = await _unless_stopped(made, stop)
        except Exception as exc:
            log.error("startup failed: %s", exc)
            raise StartupFailed(str(exc)) from exc
    if settings is not None and cross_account(settings):
        # The Pods' calls to the tracking server cannot succeed: one line at startup.
        log.warning(cross_account(settings))
    state.settings = settings
    return settings


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` is set first (and `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _watch(cluster: Cluster, settings: Settings) -> None:
    """The leader's watches, and the drift check; admission works without them."""
    try:
        await asyncio.to_thread(cluster.watch, settings)
    except Exception as exc:  # noqa: BLE001 - admission still works without the cluster side
        log.error("could not start the cluster work: %s", exc)


def _ready(state: State, server: Listening, settings: Settings) -> None:
    # Everything loaded so far lives as long as the process: keep the collector from walking
    # it again on every full collection.
    gc.collect()
    gc.freeze()
    state.ready = True
    config = state.config
    log.info(
        "serving",
        extra={
            "host": config.host,
            "ports": server.ports,
            "cert_dir": str(config.cert_dir),
            "tracking_uri": settings.tracking.uri,
            "credentials": settings.credentials,
        },
    )


async def _unready(state: State, server: Listening) -> None:
    """Not ready, then no more requests: the first thing on the way out."""
    state.ready = False
    await server.drain()
