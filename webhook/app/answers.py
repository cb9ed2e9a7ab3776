"""JSON answers: every response the server writes has a JSON body, errors included."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

# Name the product, not the framework and interpreter versions behind it.
JSON_HEADERS = {"Content-Type": "application/json", "Server": "mlflow-webhook"}


def json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=JSON_HEADERS)


def error(status: int, message: str) -> web.Response:
    return json({"error": message, "status": status}, status)


def raw_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for a connection that has
    no request object to answer through (its headers never finished arriving)."""
    body = orjson.dumps({"error": message, "status": status})
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in JSON_HEADERS.items()]
    head += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body
