"""HTTP only: read the body, hand the review to the core, write its answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from webhook.app.answers import JSON_HEADERS, error
from webhook.app.answers import json as _json
from webhook.app.cluster import Cluster
from webhook.app.config import ServeConfig
from webhook.app.connections import BodyLate, Connection, Pool
from webhook.app.logs import Events
from webhook.app.metrics import CONTENT_TYPE, Metrics
from webhook.core.echo import clip, shown, text
from webhook.core.namespaces import Annotations
from webhook.core.reviews import (
    NAMESPACE_ERROR,
    BadReview,
    admit,
    parse,
    respond,
    sets_service_account,
)
from webhook.core.settings import Settings

log = logging.getLogger("webhook.admission")
events = Events("webhook.admission")


@dataclass
class State:
    config: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    settings: Settings | None = None
    cluster: Cluster | None = None
    ready: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    pool: Pool = field(init=False)

    def __post_init__(self) -> None:
        if self.cluster is not None:
            self.cluster.metrics = self.metrics
        self.metrics.ready.set_function(lambda: 1 if self.ready else 0)
        self.pool = Pool(self.config.max_connections, on_evict=self.metrics.evictions.inc)
        self.metrics.connections.set_function(lambda: len(self.pool))


async def mutate(state: State, request: web.BaseRequest) -> web.Response:
    started = time.perf_counter()
    limit = state.config.max_body_bytes
    if (request.content_length or 0) > limit:
        # Refused on the header alone: no waiting for a body that may never come.
        return _invalid(state, 413, f"body is larger than {limit} bytes", close=True)
    try:
        # Under the connection's deadline (`Connection.begin`), which ends the read with BodyLate.
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _invalid(state, 413, f"body is larger than {limit} bytes", close=True)
    except BodyLate as exc:
        return _invalid(state, 408, str(exc), close=True)
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # A body aiohttp could not decode, such as gzip that is not gzip.
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
        reason = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
        return _invalid(state, 400, f"body could not be read: {clip(reason, 200)}", close=True)
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
        state.metrics.admitted("error", "not-ready")
        return _json(respond(req["uid"], [], [warning]))
    namespace = text(req.get("namespace"), 253)
    known = _known_settings(state, state.settings, namespace)
    if known is None:
        settings, problem, account = await _namespace_settings(state, state.settings, namespace)
    else:
        (settings, problem), account = known, None
    result = admit(req, settings, namespace_error=problem)
    if account is None and sets_service_account(result.patch):
        account = _known_account(state, result.namespace)
        if account is None:
            account = await _account_exists(state, result.namespace)
    if account is False and sets_service_account(result.patch):
        result = admit(req, settings, account_exists=False, namespace_error=problem)
    elapsed = time.perf_counter() - started
    state.metrics.admitted(result.outcome, result.reason)
    state.metrics.latency.observe(elapsed)
    # Fields from the request are clipped: a log line must not grow with what a client sends.
    fields: dict[str, Any] = {
        "uid": clip(result.uid),
        "namespace": result.namespace,
        "pod": result.pod,
        "operation": text(req.get("operation"), 20),
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
    elif result.reason == NAMESPACE_ERROR:
        state.metrics.namespace_errors.labels(result.namespace).inc()
        events.log(
            logging.ERROR,
            f"admission: the namespace's own MLflow settings are unusable, Pod admitted "
            f"unchanged: {problem}",
            fields,
        )
    elif result.reason == "malformed":
        events.log(logging.WARNING, "admission: a Pod it cannot read, admitted unchanged", fields)
    else:
        events.log(logging.INFO, "admission", fields)
    return web.Response(body=orjson.dumps(result.response), headers=JSON_HEADERS)


def _known_settings(
    state: State, settings: Settings, namespace: str
) -> tuple[Settings, str] | None:
    """The settings for a Pod in `namespace`, or the global ones and why its own are unusable,
    when no lookup is needed (None: the namespace is not in the watch's cache).

    Most requests end here, without a coroutine of their own.
    """
    cluster = state.cluster
    if cluster is None or not state.config.namespace_settings or not namespace:
        return settings, ""
    cache, resolve = cluster.namespaces, cluster.resolve
    if cache is None or resolve is None:
        # Never the global settings for a namespace that may name its own.
        return settings, "they are not known yet: the cluster side has not started"
    annotations = cache.known(namespace)
    if annotations is None:
        return None
    return _resolved(state, settings, annotations)


def _resolved(state: State, settings: Settings, annotations: Annotations) -> tuple[Settings, str]:
    """What a namespace's annotations resolve to: its settings, else the global ones and why."""
    resolve = state.cluster.resolve if state.cluster is not None else None
    if not annotations or resolve is None:
        return settings, ""
    resolved = resolve(annotations)
    return resolved.settings or settings, resolved.error


async def _namespace_settings(
    state: State, settings: Settings, namespace: str
) -> tuple[Settings, str, bool | None]:
    """`_known_settings` for a namespace the watch's cache does not hold (its first Pod, most
    often); and whether our ServiceAccount is there, which a lookup made here asked.

    The namespace's one bounded lookup runs beside the ServiceAccount's, so the two cost one
    wait.
    """
    cluster = state.cluster
    cache = cluster.namespaces if cluster is not None else None
    if cache is None:
        return settings, "they are not known yet: the cluster side has not started", None
    looked, account = await asyncio.gather(
        _lookup(asyncio.to_thread(cache.lookup, namespace), cache.timeout),
        _account_exists(state, namespace),
    )
    if isinstance(looked, BaseException):
        log.warning(
            "namespace lookup failed", extra={"namespace": namespace, "error": repr(looked)}
        )
        annotations = cache.last_known(namespace)
        if annotations is None:
            return settings, f"they could not be read ({type(looked).__name__})", account
    else:
        annotations = looked
    return (*_resolved(state, settings, annotations), account)


async def _lookup(call: Any, timeout: float) -> Any:
    """The lookup's result, or the exception it raised: one failure must not cancel the other."""
    try:
        return await asyncio.wait_for(call, timeout + 0.5)
    except Exception as error:  # noqa: BLE001 - the caller reports it
        return error


def _known_account(state: State, namespace: str) -> bool | None:
    """Whether the Pod may be given our ServiceAccount, when that is known without a lookup
    (None: the cache does not hold the namespace's). Most requests end here."""
    if state.cluster is None:
        return True  # no cluster access: nothing to check against
    accounts = state.cluster.accounts
    if accounts is None:
        return False  # the cluster side is still starting: unknown counts as missing
    return True if accounts.known(namespace) else None


async def _account_exists(state: State, namespace: str) -> bool:
    """`_known_account`, else one bounded lookup.

    That lookup on a cache miss is the only API-server call on the request path, for a
    namespace labelled a moment before its first Pod, before the reconciler has run.
    """
    known = _known_account(state, namespace)
    if known is not None:
        return known
    accounts = state.cluster.accounts if state.cluster is not None else None
    if accounts is None:
        return False
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(accounts.lookup, namespace), accounts.timeout + 0.5
        )
    except Exception as error:  # noqa: BLE001 - unknown counts as missing: never risk a rejection
        log.warning(
            "ServiceAccount lookup failed", extra={"namespace": namespace, "error": repr(error)}
        )
        return False


def _invalid(state: State, status: int, message: str, *, close: bool = False) -> web.Response:
    """`close`: the body was not read to its end, so the connection cannot carry another request."""
    state.metrics.admitted("invalid", str(status))
    log.warning("rejected request: %s", message, extra={"status": status})
    response = error(status, message)
    if close:
        response.force_close()
    return response


async def healthz(state: State, request: web.BaseRequest) -> web.Response:
    return _json({"status": "ok"})


async def readyz(state: State, request: web.BaseRequest) -> web.Response:
    if state.ready:
        return _json({"status": "ready"})
    return _json({"status": "not ready"}, 503)


async def metrics(state: State, request: web.BaseRequest) -> web.Response:
    body = state.metrics.render()
    return web.Response(body=body, headers={**JSON_HEADERS, "Content-Type": CONTENT_TYPE})


Handler = Callable[[State, web.BaseRequest], Awaitable[web.StreamResponse]]
# Four fixed paths: a dict is the whole router (aiohttp's, with its middleware chain, cost
# about 4% of a request). GET answers HEAD too, as aiohttp's add_get does.
ROUTES: dict[str, dict[str, Handler]] = {
    "/mutate": {"POST": mutate},
    "/healthz": {"GET": healthz, "HEAD": healthz},
    "/readyz": {"GET": readyz, "HEAD": readyz},
    "/metrics": {"GET": metrics, "HEAD": metrics},
}


def server_handler(state: State) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The one handler aiohttp's low-level server calls for every request."""
    return functools.partial(guard, state)


def _route(state: State, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
    methods = ROUTES.get(request.path)
    if methods is None:
        raise web.HTTPNotFound()
    handler = methods.get(request.method)
    if handler is None:
        raise web.HTTPMethodNotAllowed(request.method, sorted(methods))
    expect = request.headers.get("Expect")
    if expect is not None:
        return _expected(handler, state, request, expect)
    return handler(state, request)


async def _expected(
    handler: Handler, state: State, request: web.BaseRequest, expect: str
) -> web.StreamResponse:
    """`Expect: 100-continue`, as aiohttp's router answers it: the client sends its body once
    told to go on (curl, for one, with a large body)."""
    if expect.lower() != "100-continue" or request.version != HttpVersion11:
        return error(417, f"Expectation Failed: only 100-continue, not {shown(expect, 50)}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper has not started
    return await handler(state, request)


async def guard(state: State, request: web.BaseRequest) -> web.StreamResponse:
    """Count requests in flight, from their headers until their answer is written, so shutdown
    can wait for bodies still arriving and for answers still leaving; and give every answer a
    JSON body, unknown paths and methods too, never a bare 500.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        # Read before shutdown closed its connection: no answer could reach the client, so no
        # decision is made (or logged) for it; the API server sends it again.
        log.info("not served, its connection is closed: %s %s", request.method, clip(request.path))
        return error(503, "the connection is closed")
    state.in_flight += 1
    state.idle.clear()
    connection = request.protocol
    if isinstance(connection, Connection):
        connection.begin(request.content)
    try:
        try:
            response: web.StreamResponse = await _route(state, request)
        except (ConnectionError, web.HTTPException):
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = error(500, "internal error")
        # Written here rather than by aiohttp after us (it skips a response already sent), so
        # that shutdown, which closes what is left once nothing is in flight, cannot cut it off.
        await response.prepare(request)
        await response.write_eof()
        return response
    except ConnectionError as exc:
        # The client went away, mid-body most often: nothing of ours broke, and the answer
        # below has no one to go to (aiohttp drops it quietly).
        log.info("client disconnected: %s %s (%s)", request.method, clip(request.path), exc)
        return error(400, "client disconnected")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = error(exc.status, exc.reason)
        answer.headers.update({k: v for k, v in exc.headers.items() if k == "Allow"})
        return answer
    finally:
        if isinstance(connection, Connection):
            connection.end()
        state.in_flight -= 1
        if state.in_flight == 0:
            state.idle.set()
