"""What the emulators read off a signed AWS request, and the SigV4 check they share."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<headers>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def credential_scope(authorization: str) -> tuple[str, str] | None:
    """(region, service) from a SigV4 Authorization header, or None when it is not one."""
    match = _SCOPE.search(authorization)
    return (match["region"], match["service"]) if match else None


@dataclass(frozen=True)
class Signed:
    """A parsed SigV4 Authorization header."""

    access_key: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str

    @classmethod
    def parse(cls, authorization: str) -> Signed | None:
        match = _AUTH.fullmatch(authorization)
        if match is None:
            return None
        return cls(
            match["key"],
            match["region"],
            match["service"],
            match["headers"].split(";"),
            match["sig"],
        )

    def verifies(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        secret: str,
        token: str | None,
    ) -> bool:
        """Recompute the signature with `secret`, as AWS does, and compare."""
        lower = {k.lower(): v for k, v in headers.items()}
        request = AWSRequest(
            method=method,
            url=url,
            data=body,
            headers={name: lower.get(name, "") for name in self.signed_headers},
        )
        request.context["timestamp"] = lower.get("x-amz-date", "")
        # S3 signs its path as sent and its payload hash from the header; the others normalize.
        kind = S3SigV4Auth if self.service == "s3" else SigV4Auth
        auth = kind(Credentials(self.access_key, secret, token), self.service, self.region)
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        return hmac.compare_digest(str(expected), self.signature)


_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class Upstream:
    """Forwards requests unchanged to the server behind an emulator, over one session."""

    def __init__(self, url: str, drop: frozenset[str] = frozenset()) -> None:
        self.url = url.rstrip("/")
        self._drop = _HOP | drop
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._drop}
        async with self._session.request(
            request.method, self.url + request.raw_path, data=body, headers=headers
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in self._drop}
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # The size of what a GET would return (S3's HeadObject), not of this empty body.
                out["Content-Length"] = upstream.headers["Content-Length"]
            return web.Response(body=data, status=upstream.status, headers=out)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
