"""An emulator of the SageMaker MLflow tracking-server API, which moto lacks.

It speaks the real wire protocol (AWS JSON 1.1, `X-Amz-Target: SageMaker.<Operation>`, SigV4
Authorization required), checks every request and every response against botocore's own
service model, simulates the lifecycle (Creating -> Created, Stopping -> Stopped, Starting ->
Started, Updating -> Updated) on a clock the test controls, and injects faults: throttling,
ResourceLimitExceeded, access denied, a role IAM has not propagated yet, CreateFailed, and
slow creation.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import orjson
from aiohttp import web

from tests.aws.gate import Denied, IamGate, sagemaker_needs
from tests.aws.shapes import problems
from tests.aws.wire import credential_scope
from tests.threaded import Served, ThreadedApp

MODEL = botocore.session.get_session().get_service_model("sagemaker")
SETTLED = {
    "Creating": "Created",
    "Updating": "Updated",
    "Stopping": "Stopped",
    "Starting": "Started",
}


class Fault(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Server:
    record: dict[str, Any]
    settles_at: float = 0.0
    settles_to: str = ""


@dataclass
class Injected:
    code: str
    message: str
    times: int


@dataclass
class SageMakerEmulator(Served):
    account: str = "123456789012"
    transition_seconds: float = 0.0
    create_outcome: str = "Created"
    servers: dict[str, Server] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    # Each call's operation and request body, as the emulator received them.
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tags: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    faults: dict[str, list[Injected]] = field(default_factory=dict)
    # With a gate, every call is authorized as AWS would, against the caller's IAM policies.
    gate: IamGate | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._http = ThreadedApp(app)
        self.url = ""

    # Fault injection ---------------------------------------------------------------------------
    def inject(self, operation: str, code: str, message: str, times: int = 1) -> None:
        self.faults.setdefault(operation, []).append(Injected(code, message, times))

    def throttle(self, operation: str, times: int) -> None:
        self.inject(operation, "ThrottlingException", "Rate exceeded", times)

    def deny(self, operation: str, resource: str) -> None:
        caller = f"arn:aws:sts::{self.account}:assumed-role/ci/bootstrap"
        self.inject(
            operation,
            "AccessDeniedException",
            f"User: {caller} is not authorized to perform: sagemaker:{operation} on resource: "
            f"{resource} because no identity-based policy allows the sagemaker:{operation} action",
            times=1_000_000,
        )

    def set_status(self, name: str, status: str) -> None:
        """Move a server to `status` at once, as if time had passed."""
        server = self.servers[name]
        server.record["TrackingServerStatus"], server.settles_to = status, ""

    def put_server(self, name: str, status: str, **fields: Any) -> None:
        """A server as if made earlier, in `status`."""
        record = self._record(name, "us-west-2", {"TrackingServerName": name, **fields})
        record["TrackingServerStatus"] = status
        self.servers[name] = Server(record)

    # Wire protocol -----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        operation = target.removeprefix("SageMaker.")
        try:
            if not target.startswith("SageMaker.") or operation not in MODEL.operation_names:
                raise Fault("UnknownOperationException", f"unknown operation {target!r}")
            if request.content_type != "application/x-amz-json-1.1":
                raise Fault(
                    "SerializationException", "Content-Type must be application/x-amz-json-1.1"
                )
            scope = credential_scope(request.headers.get("Authorization", ""))
            if scope is None or scope[1] != "sagemaker":
                raise Fault(
                    "MissingAuthenticationTokenException", "Missing SigV4 Authentication Token"
                )
            raw = await request.read()
            body = orjson.loads(raw or b"{}")
            shape = MODEL.operation_model(operation).input_shape
            found = problems(shape, body) if shape else []
            if found:
                raise Fault(
                    "ValidationException",
                    f"{len(found)} validation error(s) detected: " + "; ".join(found),
                )
            if self.gate is not None:
                self._authorize(request, raw, operation, body, scope[0])
            with self.lock:
                self.calls.append(operation)
                self.requests.append((operation, body))
                self._fault(operation)
                result = getattr(self, f"_{_snake(operation)}")(body, scope[0])
            output = MODEL.operation_model(operation).output_shape
            wrong = problems(output, result) if output else []
            if wrong:  # the emulator itself is wrong: fail loudly so the test does
                raise Fault(
                    "InternalFailure",
                    "emulator response breaks the model: " + "; ".join(wrong),
                    500,
                )
            return web.Response(
                body=orjson.dumps(result), content_type="application/x-amz-json-1.1"
            )
        except Fault as fault:
            return web.Response(
                body=orjson.dumps({"__type": fault.code, "message": fault.message}),
                status=fault.status,
                content_type="application/x-amz-json-1.1",
                headers={"x-amzn-ErrorType": fault.code},
            )

    def _authorize(
        self, request: web.Request, raw: bytes, operation: str, body: dict[str, Any], region: str
    ) -> None:
        assert self.gate is not None
        needed = sagemaker_needs(self.account, region, operation, body)
        url = f"http://{request.host}{request.raw_path}"
        try:
            self.gate.authorize(request.method, url, dict(request.headers), raw, operation, needed)
        except Denied as denied:
            code = "AccessDeniedException" if denied.code == "AccessDenied" else denied.code
            raise Fault(code, denied.message, denied.status) from None

    def _fault(self, operation: str) -> None:
        for injected in self.faults.get(operation, []):
            if injected.times > 0:
                injected.times -= 1
                raise Fault(injected.code, injected.message)

    # Operations --------------------------------------------------------------------------------
    def _record(self, name: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        arn = f"arn:aws:sagemaker:{region}:{self.account}:mlflow-tracking-server/{name}"
        return {
            "TrackingServerArn": arn,
            "TrackingServerName": name,
            "ArtifactStoreUri": body.get("ArtifactStoreUri", f"s3://{name}-artifacts/"),
            "TrackingServerSize": body.get("TrackingServerSize", "Small"),
            "MlflowVersion": body.get("MlflowVersion", "3.0"),
            "RoleArn": body.get("RoleArn", f"arn:aws:iam::{self.account}:role/server"),
            "TrackingServerStatus": "Creating",
            "IsActive": "Active",
            "TrackingServerUrl": f"https://t-{secrets.token_hex(6)}.{region}.experiments.sagemaker.aws",
            "AutomaticModelRegistration": body.get("AutomaticModelRegistration", False),
            "CreationTime": now,
            "LastModifiedTime": now,
        }

    def _server(self, name: str) -> Server:
        server = self.servers.get(name)
        if server is None:
            raise Fault("ResourceNotFound", f"Tracking server {name} does not exist.")
        if server.settles_to and time.monotonic() >= server.settles_at:
            server.record["TrackingServerStatus"], server.settles_to = server.settles_to, ""
        return server

    def _move(self, server: Server, through: str, to: str | None = None) -> None:
        server.record["TrackingServerStatus"] = through
        server.record["LastModifiedTime"] = time.time()
        server.settles_to = to or SETTLED[through]
        server.settles_at = time.monotonic() + self.transition_seconds

    def _create_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        name = body["TrackingServerName"]
        if name in self.servers:
            raise Fault("ResourceInUse", f"Tracking server {name} already exists.")
        server = self.servers[name] = Server(self._record(name, region, body))
        self.tags[server.record["TrackingServerArn"]] = list(body.get("Tags", []))
        self._move(server, "Creating", self.create_outcome)
        return {"TrackingServerArn": server.record["TrackingServerArn"]}

    def _describe_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        return dict(self._server(body["TrackingServerName"]).record)

    def _start_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        server = self._server(body["TrackingServerName"])
        if server.record["TrackingServerStatus"] != "Stopped":
            raise Fault(
                "ValidationException",
                f"Cannot start a tracking server in status {server.record['TrackingServerStatus']}",
            )
        self._move(server, "Starting")
        return {"TrackingServerArn": server.record["TrackingServerArn"]}

    def _stop_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        server = self._server(body["TrackingServerName"])
        if server.record["TrackingServerStatus"] not in ("Created", "Started", "Updated"):
            raise Fault("ValidationException", "Cannot stop a tracking server that is not running")
        self._move(server, "Stopping")
        return {"TrackingServerArn": server.record["TrackingServerArn"]}

    def _update_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        server = self._server(body["TrackingServerName"])
        server.record.update({k: v for k, v in body.items() if k != "TrackingServerName"})
        self._move(server, "Updating")
        return {"TrackingServerArn": server.record["TrackingServerArn"]}

    def _delete_mlflow_tracking_server(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        server = self.servers.pop(body["TrackingServerName"], None)
        if server is None:
            raise Fault(
                "ResourceNotFound", f"Tracking server {body['TrackingServerName']} does not exist."
            )
        return {"TrackingServerArn": server.record["TrackingServerArn"]}

    def _list_mlflow_tracking_servers(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        keys = (
            "TrackingServerArn",
            "TrackingServerName",
            "CreationTime",
            "LastModifiedTime",
            "TrackingServerStatus",
            "IsActive",
            "MlflowVersion",
        )
        summaries = [{k: self._server(n).record[k] for k in keys} for n in list(self.servers)]
        return {"TrackingServerSummaries": summaries}

    def _create_presigned_mlflow_tracking_server_url(
        self, body: dict[str, Any], region: str
    ) -> dict[str, Any]:
        server = self._server(body["TrackingServerName"])
        token = secrets.token_urlsafe(24)
        return {"AuthorizedUrl": f"{server.record['TrackingServerUrl']}/auth?authToken={token}"}

    def _list_tags(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        arn = body["ResourceArn"]
        if not any(s.record["TrackingServerArn"] == arn for s in self.servers.values()):
            raise Fault("ResourceNotFound", f"{arn} does not exist.")
        return {"Tags": self.tags.get(arn, [])}

    def _describe_mlflow_app(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        app = self.apps.get(body["Arn"])
        if app is None:
            raise Fault("ResourceNotFound", f"MLflow App {body['Arn']} does not exist.")
        return dict(app)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
