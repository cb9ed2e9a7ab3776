"""What the emulators read off a signed AWS request."""

from __future__ import annotations

import re

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")


def credential_scope(authorization: str) -> tuple[str, str] | None:
    """(region, service) from a SigV4 Authorization header, or None when it is not one."""
    match = _SCOPE.search(authorization)
    return (match["region"], match["service"]) if match else None
