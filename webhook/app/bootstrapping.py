"""`serve`'s AWS bootstrap at startup: the leader carries it out, a follower waits until it is
done, and what AWS or a person may yet fix is tried again while /healthz answers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable

from webhook.app.config import Bootstrap
from webhook.app.metrics import Metrics
from webhook.aws import bootstrap
from webhook.aws.clients import BootstrapError
from webhook.aws.config import BootstrapConfig
from webhook.core.plans import Plan
from webhook.core.settings import Settings

log = logging.getLogger("webhook.bootstrap")
FOLLOWER_POLL_SECONDS = 5.0
RETRY_SECONDS = 10.0
RETRY_CAP_SECONDS = 300.0


async def settings(wanted: Bootstrap, leading: Callable[[], bool], metrics: Metrics) -> Settings:
    """The settings the flags make with what the bootstrap found. A setup problem (a
    BootstrapError with exit code 2, or settings that do not validate) is raised."""
    plan = await _retrying(wanted.config, leading, metrics)
    log.info(
        "bootstrap done",
        extra={"steps": [vars(s) for s in plan.steps], "tracking_server_arn": plan.tracking_arn},
    )
    return wanted.settings(plan)


async def _retrying(config: BootstrapConfig, leading: Callable[[], bool], metrics: Metrics) -> Plan:
    """What AWS or a person may yet fix is tried again, and the metrics say so."""
    delay = RETRY_SECONDS
    while True:
        try:
            plan = await _as(config, leading)
        except BootstrapError as exc:
            if exc.exit_code == 2:
                raise
            metrics.bootstrap_failed()
            log.error("bootstrap failed; retrying", extra={"error": str(exc), "delay": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_SECONDS)
            continue
        metrics.bootstrap_done()
        return plan


async def _as(config: BootstrapConfig, leading: Callable[[], bool]) -> Plan:
    """The leader carries the bootstrap out; a follower reads (a dry run) until it is done."""
    looking = dataclasses.replace(config, dry_run=True, wait=False)
    while True:
        if leading():
            return await _run(config, progress=log.info)
        plan = await _run(looking, progress=lambda _: None)
        if done(config, plan):
            return plan
        pending = [f"{s.resource}/{s.name}: {s.action}" for s in plan.steps if s.action != "ok"]
        log.info("waiting for the leader to finish the bootstrap", extra={"pending": pending})
        await asyncio.sleep(FOLLOWER_POLL_SECONDS)


def done(config: BootstrapConfig, plan: Plan) -> bool:
    """Whether a follower's dry run finds the leader's bootstrap done. As the leader does, a
    server named by its ARN is used as it is and never waited for: one in another account
    cannot even be described, so its status is unknown."""
    given = bool(config.tracking_server_arn)
    usable = not config.wait or given or plan.tracking_status in plan.kind.ready
    return usable and all(s.action in ("ok", "wait") for s in plan.steps)


class Stopped(Exception):
    """`serve` is stopping: ends a bootstrap's thread at its next pause."""


async def _run(config: BootstrapConfig, progress: Callable[[str], None]) -> Plan:
    """One bootstrap, in a thread since boto3 blocks. Cancelled (SIGTERM), its thread ends at
    its next pause, so that an hour's wait for a tracking server does not hold the process."""
    stopping = threading.Event()

    def pause(seconds: float) -> None:
        if stopping.wait(seconds):
            raise Stopped

    try:
        return await asyncio.to_thread(bootstrap.run, config, progress, pause)
    except asyncio.CancelledError:
        stopping.set()
        raise
