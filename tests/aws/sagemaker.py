"""An emulator of the SageMaker MLflow tracking-server and MLflow App APIs, which moto lacks.

It speaks the real wire protocol (AWS JSON 1.1, `X-Amz-Target: SageMaker.<Operation>`, SigV4
Authorization required), checks every request and every response against botocore's own
service model, simulates the lifecycle (Creating -> Created, Stopping -> Stopped, Starting ->
Started, Updating -> Updated; an App's Deleting -> Deleted) on a clock the test controls, and
injects faults: throttling, ResourceLimitExceeded, access denied, a role IAM has not propagated
yet, CreateFailed or UpdateFailed, and slow creation. Its own assumptions, where AWS documents
none: an App's name is unique among the Apps not being deleted (a second CreateMlflowApp of it
is ResourceInUse), and ListMlflowApps pages ten at a time unless MaxResults says otherwise.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import orjson
from aiohttp import web

from testing.threaded import Served, ThreadedApp
from tests.aws.gate import Denied, IamGate, sagemaker_needs
from tests.aws.shapes import problems
from tests.aws.wire import credential_scope

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
    """A tracking server or an App, and where its status is going."""

    record: dict[str, Any]
    settles_at: float = 0.0
    settles_to: str = ""
    status_key: str = "TrackingServerStatus"


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
    update_outcome: str = "Updated"
    servers: dict[str, Server] = field(default_factory=dict)
    apps: dict[str, Server] = field(default_factory=dict)  # by ARN
    calls: list[str] = field(default_factory=list)
    # Each call's operation and request body, as the emulator received them.
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tags: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    faults: dict[str, list[Injected]] = field(default_factory=dict)
    # With a gate, every call is authorized as AWS would, against the caller's IAM policies.
    gate: IamGate | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._created = ""  # the ARN a CreateMlflowApp being served gives its App
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
        """Move a server, or the App of that name, to `status` at once, as if time had passed."""
        server = self.servers.get(name) or self.app_named(name)
        server.record[server.status_key], server.settles_to = status, ""

    def app_named(self, name: str) -> Server:
        [app] = [a for a in self.apps.values() if a.record["Name"] == name]
        return app

    def put_app(
        self, name: str, status: str, tags: dict[str, str] | None = None, **fields: Any
    ) -> str:
        """An App as if made earlier, in `status`; its ARN."""
        record = self._app_record(name, "us-west-2", f"app-{secrets.token_hex(6)}", fields)
        record.update(fields, Status=status)
        self.apps[record["Arn"]] = Server(record, status_key="Status")
        self.tags[record["Arn"]] = [{"Key": k, "Value": v} for k, v in (tags or {}).items()]
        return str(record["Arn"])

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
            # The ARN a new App gets, known before the call is authorized, as AWS authorizes
            # CreateMlflowApp on the App it would create.
            created = f"arn:aws:sagemaker:{scope[0]}:{self.account}:mlflow-app/"
            created += f"app-{secrets.token_hex(6)}"
            if self.gate is not None:
                self._authorize(request, raw, operation, body, scope[0], created)
            with self.lock:
                self.calls.append(operation)
                self.requests.append((operation, body))
                self._fault(operation)
                self._created = created
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
        self,
        request: web.Request,
        raw: bytes,
        operation: str,
        body: dict[str, Any],
        region: str,
        created: str,
    ) -> None:
        assert self.gate is not None
        target = body.get("Arn") or body.get("ResourceArn")
        with self.lock:
            tags = {t["Key"]: t["Value"] for t in self.tags.get(target or "", [])}
        new = created if operation == "CreateMlflowApp" else None
        needed = sagemaker_needs(self.account, region, operation, body, created=new, tags=tags)
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
        return self._settled(server)

    def _settled(self, server: Server) -> Server:
        if server.settles_to and time.monotonic() >= server.settles_at:
            server.record[server.status_key], server.settles_to = server.settles_to, ""
        return server

    def _move(self, server: Server, through: str, to: str | None = None) -> None:
        server.record[server.status_key] = through
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
        self._move(server, "Updating", self.update_outcome)
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

    def _tagged(self, arn: str) -> str:
        known = {s.record["TrackingServerArn"] for s in self.servers.values()} | set(self.apps)
        if arn not in known:
            raise Fault("ResourceNotFound", f"{arn} does not exist.")
        return arn

    def _list_tags(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        return {"Tags": self.tags.get(self._tagged(body["ResourceArn"]), [])}

    def _add_tags(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        arn = self._tagged(body["ResourceArn"])
        merged = {t["Key"]: t["Value"] for t in self.tags.get(arn, [])}
        merged |= {t["Key"]: t["Value"] for t in body["Tags"]}
        self.tags[arn] = [{"Key": k, "Value": v} for k, v in merged.items()]
        return {"Tags": self.tags[arn]}

    # MLflow Apps -------------------------------------------------------------------------------
    def _app_record(
        self, name: str, region: str, app_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        now = time.time()
        return {
            "Arn": f"arn:aws:sagemaker:{region}:{self.account}:mlflow-app/{app_id}",
            "Name": name,
            "ArtifactStoreUri": body.get("ArtifactStoreUri", f"s3://{name}-artifacts/"),
            "MlflowVersion": "3.4.0",
            "RoleArn": body.get("RoleArn", f"arn:aws:iam::{self.account}:role/server"),
            "Status": "Creating",
            "ModelRegistrationMode": body.get(
                "ModelRegistrationMode", "AutoModelRegistrationDisabled"
            ),
            "AccountDefaultStatus": body.get("AccountDefaultStatus", "DISABLED"),
            "CreationTime": now,
            "LastModifiedTime": now,
        }

    def _app(self, arn: str) -> Server:
        app = self.apps.get(arn)
        if app is not None and self._settled(app).record["Status"] == "Deleted":
            del self.apps[arn]
            app = None
        if app is None:
            raise Fault("ResourceNotFound", f"MLflow App {arn} does not exist.")
        return app

    def _live_apps(self) -> list[Server]:
        for arn in list(self.apps):
            with contextlib.suppress(Fault):  # a deleted one leaves
                self._app(arn)
        return sorted(self.apps.values(), key=lambda a: a.record["CreationTime"])

    def _create_mlflow_app(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        name = body["Name"]
        if any(
            a.record["Name"] == name and a.record["Status"] not in ("Deleting", "Deleted")
            for a in self._live_apps()
        ):
            raise Fault("ResourceInUse", f"MLflow App with name {name} already exists.")
        app_id = self._created.rsplit("/", 1)[-1]
        app = Server(self._app_record(name, region, app_id, body), status_key="Status")
        arn = app.record["Arn"]
        self.apps[arn] = app
        self.tags[arn] = list(body.get("Tags", []))
        self._default(app, body.get("AccountDefaultStatus"))
        self._move(app, "Creating", self.create_outcome)
        return {"Arn": arn}

    def _default(self, app: Server, status: str | None) -> None:
        """One App is the account's default at most: enabling one disables the others."""
        if status == "ENABLED":
            for other in self.apps.values():
                other.record["AccountDefaultStatus"] = "DISABLED"
        if status:
            app.record["AccountDefaultStatus"] = status

    def _describe_mlflow_app(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        return dict(self._app(body["Arn"]).record)

    def _list_mlflow_apps(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        keys = ("Arn", "Name", "Status", "CreationTime", "LastModifiedTime", "MlflowVersion")
        apps = [a.record for a in self._live_apps()]
        if "Status" in body:
            apps = [a for a in apps if a["Status"] == body["Status"]]
        start = int(body.get("NextToken", "0"))
        end = start + body.get("MaxResults", 10)
        result: dict[str, Any] = {"Summaries": [{k: a[k] for k in keys} for a in apps[start:end]]}
        if end < len(apps):
            result["NextToken"] = str(end)
        return result

    def _update_mlflow_app(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        app = self._app(body["Arn"])
        status = app.record["Status"]
        if status not in ("Created", "Updated"):
            raise Fault("ConflictException", f"Cannot update an MLflow App in status {status}")
        changed = {k: v for k, v in body.items() if k not in ("Arn", "AccountDefaultStatus")}
        app.record.update(changed)
        self._default(app, body.get("AccountDefaultStatus"))
        self._move(app, "Updating", self.update_outcome)
        return {"Arn": app.record["Arn"]}

    def _delete_mlflow_app(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        app = self._app(body["Arn"])
        self._move(app, "Deleting", "Deleted")
        return {"Arn": app.record["Arn"]}

    def _create_presigned_mlflow_app_url(self, body: dict[str, Any], region: str) -> dict[str, Any]:
        app_id = self._app(body["Arn"]).record["Arn"].rsplit("/", 1)[-1]
        token = secrets.token_urlsafe(24)
        url = f"https://{app_id}.mlflow.sagemaker.{region}.app.aws/auth?authToken={token}"
        return {"AuthorizedUrl": url}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
