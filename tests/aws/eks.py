"""An emulator of EKS Pod Identity associations, which moto lacks, in front of moto's EKS.

It speaks EKS's REST-JSON protocol for Create, List, Describe and Delete PodIdentityAssociation,
checks requests and responses against botocore's EKS model, and
forwards every other EKS call (DescribeCluster, ...) to moto's server unchanged.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import aiohttp
import botocore.session
import orjson
from aiohttp import web

from testing.threaded import Served, ThreadedApp
from tests.aws.shapes import problems
from tests.aws.wire import credential_scope

MODEL = botocore.session.get_session().get_service_model("eks")
PATH = "/clusters/{name}/pod-identity-associations"


class EksPodIdentityEmulator(Served):
    def __init__(self, moto_url: str, account: str = "123456789012") -> None:
        self.moto_url = moto_url.rstrip("/")
        self.account = account
        self.associations: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_post(PATH, self._create)
        app.router.add_get(PATH, self._list)
        app.router.add_get(PATH + "/{id}", self._describe)
        app.router.add_delete(PATH + "/{id}", self._delete)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._http = ThreadedApp(app, on_stop=self._close)
        self.url = ""

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _error(code: str, message: str, status: int) -> web.Response:
        return web.json_response(
            {"message": message}, status=status, headers={"x-amzn-ErrorType": code}
        )

    async def _cluster_exists(self, request: web.Request, name: str) -> bool:
        response = await self._send(request, "GET", f"/clusters/{name}", b"")
        return response.status == 200

    async def _create(self, request: web.Request) -> web.Response:
        self.calls.append("CreatePodIdentityAssociation")
        cluster = request.match_info["name"]
        body = orjson.loads(await request.read() or b"{}")
        shape = MODEL.operation_model("CreatePodIdentityAssociation").input_shape
        found = problems(shape, {**body, "clusterName": cluster})
        if found:
            return self._error("InvalidParameterException", "; ".join(found), 400)
        if not await self._cluster_exists(request, cluster):
            return self._error(
                "ResourceNotFoundException", f"No cluster found for name: {cluster}.", 404
            )
        for existing in self.associations:
            if (existing["clusterName"], existing["namespace"], existing["serviceAccount"]) == (
                cluster,
                body["namespace"],
                body["serviceAccount"],
            ):
                return self._error("ResourceInUseException", "Association already exists", 409)
        association_id = "a-" + secrets.token_hex(8)
        scope = credential_scope(request.headers.get("Authorization", ""))
        if scope is None:
            return self._error("MissingAuthenticationTokenException", "Missing token", 403)
        resource = f"podidentityassociation/{cluster}/{association_id}"
        arn = f"arn:aws:eks:{scope[0]}:{self.account}:{resource}"
        now = time.time()
        association = {
            "clusterName": cluster,
            "namespace": body["namespace"],
            "serviceAccount": body["serviceAccount"],
            "roleArn": body["roleArn"],
            "associationId": association_id,
            "associationArn": arn,
            "tags": body.get("tags", {}),
            "createdAt": now,
            "modifiedAt": now,
        }
        self.associations.append(association)
        return self._respond("CreatePodIdentityAssociation", {"association": association})

    async def _list(self, request: web.Request) -> web.Response:
        self.calls.append("ListPodIdentityAssociations")
        cluster = request.match_info["name"]
        if not await self._cluster_exists(request, cluster):
            return self._error(
                "ResourceNotFoundException", f"No cluster found for name: {cluster}.", 404
            )
        wanted = {
            k: request.query[k] for k in ("namespace", "serviceAccount") if k in request.query
        }
        keys = ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")
        summaries = [
            {k: a[k] for k in keys}
            for a in self.associations
            if a["clusterName"] == cluster and all(a[k] == v for k, v in wanted.items())
        ]
        return self._respond("ListPodIdentityAssociations", {"associations": summaries})

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        cluster, wanted = request.match_info["name"], request.match_info["id"]
        for association in self.associations:
            if (association["clusterName"], association["associationId"]) == (cluster, wanted):
                return association
        return None

    async def _describe(self, request: web.Request) -> web.Response:
        self.calls.append("DescribePodIdentityAssociation")
        association = self._find(request)
        if association is None:
            return self._error("ResourceNotFoundException", "Association not found", 404)
        return self._respond("DescribePodIdentityAssociation", {"association": association})

    async def _delete(self, request: web.Request) -> web.Response:
        self.calls.append("DeletePodIdentityAssociation")
        association = self._find(request)
        if association is None:
            return self._error("ResourceNotFoundException", "Association not found", 404)
        self.associations.remove(association)
        return self._respond("DeletePodIdentityAssociation", {"association": association})

    def _respond(self, operation: str, result: dict[str, Any]) -> web.Response:
        wrong = problems(MODEL.operation_model(operation).output_shape, result)
        if wrong:
            return self._error(
                "InternalFailure", "emulator response breaks the model: " + "; ".join(wrong), 500
            )
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    async def _send(
        self, request: web.Request, method: str, path: str, body: bytes
    ) -> aiohttp.ClientResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        response = await self._session.request(
            method, self.moto_url + path, data=body, headers=headers
        )
        await response.read()
        return response

    async def _forward(self, request: web.Request) -> web.Response:
        upstream = await self._send(request, request.method, request.raw_path, await request.read())
        headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        return web.Response(body=await upstream.read(), status=upstream.status, headers=headers)
