"""API errors in words a person can act on: a 403 names the verb, the resource and its name."""

from __future__ import annotations

import json
import re
from typing import Any

from kubernetes import client

# The API server's own wording: `User "..." cannot patch resource "serviceaccounts" in API group
# "" in the namespace "team-a"`.
_FORBIDDEN = re.compile(r'cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)"')


def _status(error: client.ApiException) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def permission(error: BaseException) -> dict[str, str] | None:
    """For a 403: the verb, resource and resource name denied, as the API server reported them."""
    if not isinstance(error, client.ApiException) or error.status != 403:
        return None
    status = _status(error)
    found = _FORBIDDEN.search(str(status.get("message") or ""))
    details = status.get("details") or {}
    return {
        "verb": found["verb"] if found else "",
        "resource": found["resource"] if found else str(details.get("kind") or ""),
        "resource_name": str(details.get("name") or ""),
    }


def describe(error: BaseException) -> str:
    """One line: for an API error, its status and the API server's message; else the repr."""
    if not isinstance(error, client.ApiException):
        return repr(error)
    message = str(_status(error).get("message") or "")
    head = f"{error.status} {error.reason}"
    return f"{head}: {message}" if message else head
