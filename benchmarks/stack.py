"""`mlflow-webhook serve` whose /mutate answers as the floor does: our HTTP stack on its own.

    python -m benchmarks.stack serve [serve's flags]

The real server (uvloop, TLS, the connection pool and its deadlines, the guard), but each
review is only read (`read_review`: the body, orjson, the AdmissionReview's checks) and allowed
with its uid and no patch: the floor's work, on our stack. `benchmarks.load --compare stack`
runs it against the floor; what `ours` costs beyond it is the decision, its log and its metrics.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

from webhook.app import handlers
from webhook.app.answers import JSON_HEADERS
from webhook.cli.main import main
from webhook.core.reviews import respond


async def allow(state: handlers.State, request: web.BaseRequest) -> web.Response:
    req = await handlers.read_review(state, request)
    if isinstance(req, web.Response):
        return req
    return web.Response(body=orjson.dumps(respond(req["uid"], None, [])), headers=JSON_HEADERS)


if __name__ == "__main__":
    handlers.ROUTES["/mutate"]["POST"] = allow
    sys.exit(main())
