"""A recording reverse proxy between the webhook and the real API server, with faults on demand.

Every outcome still comes from the real API server: the proxy only forwards, writes down what it
forwarded (method, path, query, status, and the events of each watch), and on demand
- drops the open watch connections, or cuts a watch right after its first bookmark, as a
  network or load balancer does;
- holds requests that match a predicate, so the API server is unreachable for them (a black
  hole: the client's own timeout decides) until `release`;
- refuses requests that match a predicate with a Status of its own (a 403 or a 500 for one
  replica alone, where RBAC would refuse every replica of the ServiceAccount), until `accept`.

It speaks TLS with its own certificate; the webhook's kubeconfig trusts that and carries the
webhook's own ServiceAccount token, which the proxy passes on untouched, so RBAC still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from testing.threaded import Served, ThreadedApp
from webhook.tls.certs import ensure_self_signed

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    events: list[tuple[str, str]] = field(default_factory=list)  # (type, resourceVersion)

    @property
    def watch(self) -> bool:
        return self.query.get("watch", "").lower() in ("true", "1")

    @property
    def resource_version(self) -> str:
        return self.query.get("resourceVersion", "")


class ApiProxy(Served):
    def __init__(self, upstream: str, upstream_ca: Path, cert_dir: Path) -> None:
        ensure_self_signed(cert_dir, ["localhost"], ["127.0.0.1"])
        self.ca = cert_dir / "ca.crt"
        self.upstream = upstream.rstrip("/")
        self.upstream_ca = upstream_ca
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._hold: Callable[[Call], bool] | None = None
        self._refuse: tuple[Callable[[Call], bool], int] | None = None
        self._cut_after: str | None = None
        self._watch_seconds: int | None = None
        self._watches: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.cleanup_ctx.append(self._session)
        self._http = ThreadedApp(app, on_stop=self._close, ssl_dir=cert_dir)

    async def _session(self, app: web.Application) -> Any:
        context = ssl.create_default_context(cafile=str(self.upstream_ca))
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        yield
        await self.client.close()

    async def _close(self) -> None:
        """Let nothing keep the proxy open: held requests, open watches, upstream streams."""
        self._hold = None
        for transport in list(self._watches):
            transport.close()
        for task in list(self._tasks):
            task.cancel()
        await self.client.close()

    # What the tests ask for.

    def hold(self, predicate: Callable[[Call], bool] = lambda call: True) -> None:
        """From now on, requests that match wait here (all of them by default)."""
        self._hold = predicate

    def release(self) -> None:
        """Held requests go on to the API server; the clients that gave up have gone."""
        self._hold = None

    def refuse(self, predicate: Callable[[Call], bool], status: int) -> None:
        """From now on, requests that match get `status` and never reach the API server."""
        self._refuse = (predicate, status)

    def accept(self) -> None:
        """Stop refusing."""
        self._refuse = None

    def drop_watches(self) -> None:
        """Close every open watch connection, as a network failure would."""

        async def drop() -> None:
            for transport in list(self._watches):
                transport.close()

        self._http.call(drop())

    def cut_after(self, event_type: str) -> None:
        """Close the next watch right after it delivers an event of this type (once)."""
        self._cut_after = event_type

    def shorten_watches(self, seconds: int) -> None:
        """Ask the API server to end every watch after `seconds` (it may end one whenever it
        likes; it sends a bookmark 2 s before the end it was asked for)."""
        self._watch_seconds = seconds

    def recorded(self, match: Callable[[Call], bool] = lambda call: True) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if match(call)]

    # The proxy itself.

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await self._pass_on(request)
        finally:
            self._tasks.discard(task)

    async def _pass_on(self, request: web.Request) -> web.StreamResponse:
        call = Call(request.method, request.path, dict(request.query))
        with self._lock:
            self.calls.append(call)
        while (hold := self._hold) is not None and hold(call):
            await asyncio.sleep(0.05)
        if (refuse := self._refuse) is not None and refuse[0](call):
            call.status = refuse[1]
            return refusal(refuse[1])
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        target = request.rel_url
        if call.watch and self._watch_seconds is not None:
            target = target.update_query(timeoutSeconds=str(self._watch_seconds))
        async with self.client.request(
            request.method,
            self.upstream + str(target),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            call.status = upstream.status
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            if not (call.watch and upstream.status == 200):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            transport = request.transport
            assert transport is not None
            self._watches.add(transport)
            try:
                async for line in upstream.content:
                    kind = self._note(call, line)
                    await response.write(line)
                    if kind is not None and kind == self._cut_after:
                        self._cut_after = None
                        transport.close()
                        break
                else:
                    await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # the client went away, or we dropped it on purpose
            finally:
                self._watches.discard(transport)
            return response

    @staticmethod
    def _note(call: Call, line: bytes) -> str | None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            kind = str(event["type"])
            metadata = (event.get("object") or {}).get("metadata") or {}
            version = str(metadata.get("resourceVersion"))
            call.events.append((kind, version))
            return kind
        return None


def refusal(status: int) -> web.Response:
    """A Status as the API server writes one, for a refusal the proxy makes itself."""
    reason = {403: "Forbidden", 409: "Conflict", 500: "InternalError"}.get(status, "Unknown")
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"refused by the test proxy ({status} {reason})",
        "reason": reason,
        "code": status,
    }
    return web.json_response(body, status=status)
