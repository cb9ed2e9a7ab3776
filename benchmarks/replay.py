"""A floor that answers with our webhook's patch: what the API server's applying it costs.

    python -m benchmarks.replay CERT_DIR PORT

A bare aiohttp server over TLS, as benchmarks/floor.py, whose answer carries the patch
`mlflow-webhook serve` gives the benchmark's Pod. Our core makes it once, from the first request,
with `ours`'s settings (the run context on); every request after is answered with the same
bytes, so this server does no more work than the floor. In `benchmarks.apiserver`, this over the
floor is what the API server spends on our patch, and `ours` over this is our webhook's own work.
Every Pod it sees must be the same but for its name: the patch does not name the Pod.
"""

from __future__ import annotations

import json

from aiohttp import web

from benchmarks.floor import serve
from testing.support import settings
from webhook.core.decisions import admit
from webhook.core.reviews import parse

SETTINGS = settings(run_context=True)  # as `serve` runs with `ours`'s flags
_answer: dict[str, str] = {}


async def mutate(request: web.Request) -> web.Response:
    review = json.loads(await request.read())
    if not _answer:
        response = admit(parse(review), SETTINGS).response["response"]
        _answer.update(patchType=response["patchType"], patch=response["patch"])
    response = {"uid": review["request"]["uid"], "allowed": True, **_answer}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    return web.json_response(body)


if __name__ == "__main__":
    serve(mutate)
