"""An emulator of the Kubernetes API server, kept only for a fault a real one will not produce on
demand: `410 Gone` at a chosen moment (`compact`, then `drop_watches`; tests/test_cluster_gone.py).

Every other cluster test runs on the real control plane (testing/kube/controlplane.py), because
this emulator decides nothing the way the API server does: it enforces no RBAC (any token
passes), runs no admission chain and no validation, treats strategic merge as merge, creates
objects in namespaces that do not exist, and sends a namespace that newly matches a selector as
MODIFIED. Faults the real server can be put through (a dropped watch, an API server that does
not answer) are made by the proxy in testing/kube/proxy.py instead.

It is served over real HTTPS on loopback and reached by the official `kubernetes` client through a
real kubeconfig. It keeps the semantics the code depends on: resourceVersions, label selectors,
namespace list and watch with bookmarks and `410 Gone` once history is compacted, ServiceAccount
create (409 AlreadyExists) and patch (merge and strategic-merge), MutatingWebhookConfiguration
get and patch, and Lease and Secret create and update (409 Conflict on a stale resourceVersion).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import secrets
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import jsonpointer
import orjson
import yaml
from aiohttp import web

from testing.threaded import ThreadedApp
from webhook.tls.certs import ensure_self_signed

Key = tuple[str, str, str]  # (resource, namespace, name)

ROUTES = {
    "namespaces": "/api/v1/namespaces",
    "serviceaccounts": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "secrets": "/api/v1/namespaces/{namespace}/secrets",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
    "mutatingwebhookconfigurations": (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    ),
}
KINDS = {
    "namespaces": ("v1", "Namespace"),
    "serviceaccounts": ("v1", "ServiceAccount"),
    "secrets": ("v1", "Secret"),
    "leases": ("coordination.k8s.io/v1", "Lease"),
    "mutatingwebhookconfigurations": (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386. For the maps we patch (labels, annotations, fields) strategic merge is the same."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(body=orjson.dumps(body), status=code, content_type="application/json")


class ApiServerEmulator:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.objects: dict[Key, dict[str, Any]] = {}
        self.rv = 100
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # namespace events only
        self.watchers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.requests: list[tuple[str, str]] = []
        self.bookmark_seconds = 1.0
        app = web.Application()
        for resource, base in ROUTES.items():
            app.router.add_get(base, self._collection(resource))
            app.router.add_post(base, self._create(resource))
            app.router.add_get(base + "/{name}", self._get(resource))
            app.router.add_put(base + "/{name}", self._update(resource))
            app.router.add_patch(base + "/{name}", self._patch(resource))
        app.middlewares.append(self._auth)
        self._http = ThreadedApp(app, ssl_dir=workdir / "pki")
        self.url = ""

    # Lifetime and test controls ---------------------------------------------------------------
    def start(self) -> str:
        ensure_self_signed(self.workdir / "pki", ["localhost"], ["127.0.0.1"])
        self.url = self._http.start()
        return self.url

    def stop(self) -> None:
        self._http.call(self._close_watches())
        self._http.stop()

    def kubeconfig(self) -> Path:
        ca = base64.b64encode((self.workdir / "pki" / "ca.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [
                {
                    "name": "emulator",
                    "cluster": {"server": self.url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "webhook", "user": {"token": self.token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "webhook"}}
            ],
        }
        path = self.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as a user would, outside the webhook."""
        return self._http.call(self._store(resource, obj))  # type: ignore[no-any-return]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((resource, namespace, name))
        return copy.deepcopy(found) if found else None

    def drop_watches(self) -> None:
        """Cut every open watch, as a load balancer or an API server restart does."""
        self._http.call(self._close_watches())

    def compact(self) -> None:
        """Forget event history, so a watch from an older resourceVersion gets 410 Gone."""
        self.history.clear()

    async def _close_watches(self) -> None:
        for queue in self.watchers:
            queue.put_nowait(None)

    # HTTP -------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        self.requests.append((request.method, request.path_qs))
        return await handler(request)  # type: ignore[no-any-return]

    def _key(self, resource: str, request: web.Request, name: str | None = None) -> Key:
        return resource, request.match_info.get("namespace", ""), name or request.match_info["name"]

    async def _store(
        self, resource: str, obj: dict[str, Any], event: str | None = None
    ) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(obj)
        api_version, kind = KINDS[resource]
        obj.update(apiVersion=api_version, kind=kind)
        metadata = obj.setdefault("metadata", {})
        key = (
            resource,
            metadata.get("namespace", "") if resource != "namespaces" else "",
            metadata["name"],
        )
        existed = key in self.objects
        if not existed:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault(
                "creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        if resource == "namespaces":
            metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
        metadata["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        if resource == "namespaces":
            change = event or ("MODIFIED" if existed else "ADDED")
            self.history.append((self.rv, change, copy.deepcopy(obj)))
            for queue in self.watchers:
                queue.put_nowait({"type": change, "object": copy.deepcopy(obj)})
        return copy.deepcopy(obj)

    def _collection(self, resource: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            selector = request.query.get("labelSelector", "")
            namespace = request.match_info.get("namespace")
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, selector)
            items = [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self.objects.items())
                if r == resource
                and (namespace is None or ns == namespace)
                and matches((o["metadata"].get("labels") or {}), selector)
            ]
            body = {
                "kind": KINDS[resource][1] + "List",
                "apiVersion": KINDS[resource][0],
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        return handler

    async def _watch(self, request: web.Request, selector: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self.rv)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(orjson.dumps(event) + b"\n")

        oldest = self.history[0][0] if self.history else self.rv + 1
        if since < self.rv and since < oldest - 1:
            await send(
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"too old resource version: {since} ({oldest - 1})",
                        "reason": "Expired",
                        "code": 410,
                    },
                }
            )
            return response
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        for rv, change, obj in self.history:
            if rv > since:
                queue.put_nowait({"type": change, "object": copy.deepcopy(obj)})
        self.watchers.append(queue)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), min(left, self.bookmark_seconds))
                except TimeoutError:
                    if bookmarks:
                        await send(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": "Namespace",
                                    "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(self.rv)},
                                },
                            }
                        )
                    continue
                if event is None:
                    break
                if matches(event["object"]["metadata"].get("labels") or {}, selector):
                    await send(event)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(queue)
        return response

    def _get(self, resource: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            found = self.objects.get(self._key(resource, request))
            if found is None:
                return status(
                    404, "NotFound", f'{resource} "{request.match_info["name"]}" not found'
                )
            return web.Response(body=orjson.dumps(found), content_type="application/json")

        return handler

    def _create(self, resource: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = orjson.loads(await request.read())
            if request.match_info.get("namespace"):
                obj.setdefault("metadata", {})["namespace"] = request.match_info["namespace"]
            key = self._key(resource, request, obj["metadata"]["name"])
            if key in self.objects:
                return status(409, "AlreadyExists", f'{resource} "{key[2]}" already exists')
            obj["metadata"].pop("resourceVersion", None)
            return web.Response(
                body=orjson.dumps(await self._store(resource, obj)),
                status=201,
                content_type="application/json",
            )

        return handler

    def _update(self, resource: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            key = self._key(resource, request)
            current = self.objects.get(key)
            if current is None:
                return status(404, "NotFound", f'{resource} "{key[2]}" not found')
            obj = orjson.loads(await request.read())
            if (
                obj.get("metadata", {}).get("resourceVersion")
                != current["metadata"]["resourceVersion"]
            ):
                return status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{key[2]}": '
                    "the object has been modified; please apply your changes to the latest version",
                )
            obj["metadata"]["namespace"] = key[1] or obj["metadata"].get("namespace", "")
            return web.Response(
                body=orjson.dumps(await self._store(resource, obj)), content_type="application/json"
            )

        return handler

    def _patch(self, resource: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            kind = request.content_type
            if kind not in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/json-patch+json",
            ):
                return status(
                    415, "UnsupportedMediaType", f"unsupported patch type {request.content_type}"
                )
            key = self._key(resource, request)
            current = self.objects.get(key)
            if current is None:
                return status(404, "NotFound", f'{resource} "{key[2]}" not found')
            body = orjson.loads(await request.read())
            if kind == "application/json-patch+json":
                try:
                    patched = jsonpatch.apply_patch(current, body)
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
                    return status(422, "Invalid", f"the patch does not apply: {error}")
            else:
                patched = merge_patch(current, body)
            return web.Response(
                body=orjson.dumps(await self._store(resource, patched)),
                content_type="application/json",
            )

        return handler
