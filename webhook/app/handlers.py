"""HTTP only: read the body, hand the review to the core, write its answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from webhook.app.answers import JSON_HEADERS, error
from webhook.app.answers import json as _json
from webhook.app.cluster import Cluster
from webhook.app.config import ServeConfig
from webhook.app.connections import BodyLate, Connection, Pool
from webhook.app.facts import ClusterFacts, FactSource
from webhook.app.logs import Events
from webhook.app.metrics import CONTENT_TYPE, Metrics
from webhook.core.decisions import MALFORMED, Facts, decide, screen
from webhook.core.echo import clip, shown, text
from webhook.core.reviews import NAMESPACE_ERROR, Admission, BadReview, parse, respond
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
    # What the decision needs to know of the cluster: its caches, unless `facts_from` (a test's
    # table) says otherwise.
    facts: FactSource = field(init=False)
    facts_from: InitVar[FactSource | None] = None

    def __post_init__(self, facts_from: FactSource | None) -> None:
        self.facts = facts_from or ClusterFacts(
            lambda: self.cluster, self.config.namespace_settings
        )
        if self.cluster is not None:
            self.cluster.metrics = self.metrics
        self.metrics.ready.set_function(lambda: 1 if self.ready else 0)
        self.pool = Pool(self.config.max_connections, on_evict=self.metrics.evictions.inc)
        self.metrics.connections.set_function(lambda: len(self.pool))


async def mutate(state: State, request: web.BaseRequest) -> web.Response:
    """Parse; the opt-in verdict; for an opted-in Pod, the facts; the decision; the answer."""
    started = time.perf_counter()
    req = await read_review(state, request)
    if isinstance(req, web.Response):
        return req
    if state.settings is None:
        # Readiness keeps the API server away until startup is done; answer safely regardless.
        warning = "mlflow-webhook: not ready yet (still starting); the Pod was admitted unchanged"
        state.metrics.admitted("error", "not-ready")
        return _json(respond(req["uid"], None, [warning]))
    screened = screen(req, state.settings)
    facts = Facts(state.settings)
    if screened.opted_in:
        asked = (state.settings, screened.namespace, screened.needs_account)
        facts = state.facts.known(*asked) or await state.facts.gather(*asked)
    result = decide(screened, facts)
    elapsed = time.perf_counter() - started
    state.metrics.admitted(result.outcome, result.reason)
    state.metrics.latency.observe(elapsed)
    _log(state, req, result, facts, elapsed)
    return web.Response(body=orjson.dumps(result.response), headers=JSON_HEADERS)


async def read_review(state: State, request: web.BaseRequest) -> dict[str, Any] | web.Response:
    """The AdmissionReview's request, or the error answer for a body that holds none."""
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
    return req


def _log(
    state: State, req: dict[str, Any], result: Admission, facts: Facts, elapsed: float
) -> None:
    """The decision log: one line a request, at a level that says whether anything is wrong."""
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
        # To the microsecond; round() with digits formats the float to round it: far dearer.
        "duration_ms": round(elapsed * 1e6) / 1000,
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
            f"unchanged: {facts.namespace_error}",
            fields,
        )
    elif result.reason == MALFORMED:
        events.log(logging.WARNING, "admission: a Pod it cannot read, admitted unchanged", fields)
    else:
        events.log(logging.INFO, "admission", fields)


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
