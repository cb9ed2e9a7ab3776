"""HTTP only: read the body, hand the review to the core, write its answer."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from webhook.app.cluster import Cluster
from webhook.app.config import ServeConfig
from webhook.app.logs import Events
from webhook.app.metrics import CONTENT_TYPE, Metrics
from webhook.core.reviews import BadReview, admit, parse, respond, sets_service_account
from webhook.core.settings import Settings

log = logging.getLogger("webhook.admission")
events = Events("webhook.admission")
# Name the product, not the framework and interpreter versions behind it.
JSON_HEADERS = {"Content-Type": "application/json", "Server": "mlflow-webhook"}


@dataclass
class State:
    config: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    settings: Settings | None = None
    cluster: Cluster | None = None
    ready: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.cluster is not None:
            self.cluster.metrics = self.metrics
        self.metrics.ready.set_function(lambda: 1 if self.ready else 0)


STATE = web.AppKey("state", State)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=JSON_HEADERS)


def error(status: int, message: str) -> web.Response:
    return _json({"error": message, "status": status}, status)


async def mutate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    started = time.perf_counter()
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _invalid(state, 413, f"body is larger than {state.config.max_body_bytes} bytes")
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _invalid(state, 400, f"body is not JSON: {exc}")
    try:
        req = parse(review)
    except BadReview as exc:
        return _invalid(state, 400, str(exc))
    if state.settings is None:
        # Readiness keeps the API server away until startup is done; answer safely regardless.
        warning = "mlflow-webhook: not ready yet (still starting); the Pod was admitted unchanged"
        state.metrics.admissions.labels("error", "not-ready").inc()
        return _json(respond(req["uid"], [], [warning]))
    result = admit(req, state.settings)
    if sets_service_account(result.patch) and not await _account_exists(state, result.namespace):
        result = admit(req, state.settings, account_exists=False)
    elapsed = time.perf_counter() - started
    state.metrics.admissions.labels(result.outcome, result.reason).inc()
    state.metrics.latency.observe(elapsed)
    fields: dict[str, Any] = {
        "uid": result.uid,
        "namespace": result.namespace,
        "pod": result.pod,
        "operation": req.get("operation"),
        "outcome": result.outcome,
        "reason": result.reason,
        "dry_run": result.dry_run,
        "patch_ops": len(result.patch),
        "duration_ms": round(elapsed * 1000, 3),
    }
    if result.warnings:
        fields["warnings"] = result.warnings
    if result.outcome == "error":
        events.log(
            logging.ERROR, f"admission failed; Pod admitted unchanged: {result.error}", fields
        )
    else:
        events.log(logging.INFO, "admission", fields)
    return web.Response(body=orjson.dumps(result.response), headers=JSON_HEADERS)


async def _account_exists(state: State, namespace: str) -> bool:
    """Whether the Pod may be given our ServiceAccount: the cache, else one bounded lookup.

    That lookup on a cache miss is the only API-server call on the request path, for a
    namespace labelled a moment before its first Pod, before the reconciler has run.
    """
    if state.cluster is None:
        return True  # no cluster access: nothing to check against
    accounts = state.cluster.accounts
    if accounts is None:
        return False  # the cluster side is still starting: unknown counts as missing
    if accounts.known(namespace):
        return True
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(accounts.lookup, namespace), accounts.timeout + 0.5
        )
    except Exception as error:  # noqa: BLE001 - unknown counts as missing: never risk a rejection
        log.warning(
            "ServiceAccount lookup failed", extra={"namespace": namespace, "error": repr(error)}
        )
        return False


def _invalid(state: State, status: int, message: str) -> web.Response:
    state.metrics.admissions.labels("invalid", str(status)).inc()
    log.warning("rejected request: %s", message, extra={"status": status})
    return error(status, message)


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].ready:
        return _json({"status": "ready"})
    return _json({"status": "not ready"}, 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={**JSON_HEADERS, "Content-Type": CONTENT_TYPE})


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count requests in flight, from their headers on, so shutdown can wait for bodies still
    arriving; and give every answer a JSON body, unknown paths and methods too, never a bare 500.
    """
    state = request.app[STATE]
    state.in_flight += 1
    state.idle.clear()
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
        response = error(exc.status, exc.reason)
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error(500, "internal error")
    finally:
        state.in_flight -= 1
        if state.in_flight == 0:
            state.idle.set()
