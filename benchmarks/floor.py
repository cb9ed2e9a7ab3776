"""The floor: a bare aiohttp TLS server that parses with `json` and allows with the uid."""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web


async def mutate(request: web.Request) -> web.Response:
    review = json.loads(await request.read())
    response = {"uid": review["request"]["uid"], "allowed": True}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    return web.json_response(body)


def serve(handler: Callable[[web.Request], Awaitable[web.Response]]) -> None:
    """Serve `handler` at /mutate over TLS, on the port and with the certificate the command
    line names (CERT_DIR PORT)."""
    cert_dir, port = sys.argv[1], int(sys.argv[2])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(f"{cert_dir}/tls.crt", f"{cert_dir}/tls.key")
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/mutate", handler)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    serve(mutate)
