"""The serving certificate: loaded before the server listens, and looked at again every few
seconds for a rotated pair."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from webhook.app.background import running
from webhook.app.config import ServeConfig
from webhook.app.handlers import State
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, ensure_self_signed, service_names
from webhook.tls.context import ReloadingContext

log = logging.getLogger("webhook.server")


@contextlib.asynccontextmanager
async def serving_pair(state: State) -> AsyncIterator[ReloadingContext]:
    """The pair in the cluster's Secret (every replica serves the same one), or written here
    with --self-signed, or as given; reloaded when it changes, for as long as the block lasts."""
    cluster = state.cluster
    if cluster is not None and cluster.certificates is not None:
        await asyncio.to_thread(cluster.certificates.bootstrap)
    else:
        _ensure_self_signed(state.config)
    tls = ReloadingContext(state.config.cert_dir)
    async with running(_reloads(state, tls)):
        yield tls


def _ensure_self_signed(config: ServeConfig) -> None:
    if not config.self_signed:
        return
    names = service_names(config.service, config.namespace) + list(LOCAL_NAMES)
    written = ensure_self_signed(config.cert_dir, names, list(LOCAL_IPS))
    if written:
        log.info(
            "wrote self-signed certificates", extra={"files": written, "dir": str(config.cert_dir)}
        )


async def _reloads(state: State, tls: ReloadingContext) -> None:
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
                _ensure_self_signed(config)
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
