"""An emulator of SageMaker managed MLflow's front door, for the end-to-end tests.

The real service authenticates every MLflow REST call with SigV4 (service `sagemaker-mlflow` for
a tracking server, `sagemaker` for an MLflow App), routes it by the ARN header that the
`sagemaker-mlflow` plugin adds, and hands it to the MLflow server behind it. This emulator does
the same in front of a real `mlflow server`: it recomputes each signature with the secret that
moto's STS issued for the access key, rejects what does not verify with 403 as the service does,
and records what it saw so a test can show which credentials were used. A caller from another
account than the server's or App's is refused too: MLflow servers and Apps take no
resource-based policy, so another account reaches one only by assuming a role in its account.

Then it authorizes the call as IAM does, against the caller's identity policies in moto's IAM
of the caller's own account: on a tracking server the action is sagemaker-mlflow:<the MLflow
RPC> (tests/e2e/routes.py), on an App sagemaker:CallMlflowAppApi, each on the ARN the header
names. What it decided is recorded like the IAM gate's calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from testing.threaded import ThreadedApp
from tests.aws.gate import Call, Caller, documents, find_caller
from tests.aws.policy import evaluate, role_of
from tests.aws.wire import Signed, Upstream
from tests.e2e.routes import rpc, table

ROUTES = {  # ARN header -> the signing service the real front expects with it
    "x-mlflow-sm-tracking-server-arn": "sagemaker-mlflow",
    "x-sm-mlflow-app-arn": "sagemaker",
}
# An App's every MLflow call is this one action on the App (see webhook.core.policies).
APP_ACTION = "sagemaker:CallMlflowAppApi"

Lookup = Callable[[str, dict[str, str]], Caller | None]  # access key, headers -> the caller


@dataclass
class Seen:
    method: str
    path: str
    access_key: str
    service: str
    region: str
    arn: str
    role_arn: str


def moto_sts_lookup(access_key: str, headers: dict[str, str]) -> Caller | None:
    """A session moto's in-process STS issued (AssumeRole / AssumeRoleWithWebIdentity), with
    its role's policies, from the account of that role: moto keeps each session there."""
    from moto.sts.models import sts_backends

    for account in list(sts_backends):
        for backend in sts_backends[account].values():
            if backend.get_assumed_role_from_access_key(access_key) is not None:
                return find_caller(account, access_key, headers)
    return None


class Front:
    def __init__(self, upstream: str, lookup: Lookup = moto_sts_lookup) -> None:
        # The credentials stop here, as at the real front door.
        self._upstream = Upstream(upstream, drop=frozenset({"authorization"}))
        self.lookup = lookup
        self.seen: list[Seen] = []
        self.rejected: list[str] = []
        self.calls: list[Call] = []  # each authorization, allowed or not
        self.url = ""

    def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedApp(app, on_stop=self._upstream.close)
        table()  # read once here, not on the event loop at the first call
        self.url = self._server.start()
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def _deny(self, reason: str) -> web.Response:
        self.rejected.append(reason)
        return web.json_response({"message": reason}, status=403)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        route = [(h, s) for h, s in ROUTES.items() if h in request.headers]
        if len(route) != 1:
            return self._deny("exactly one MLflow ARN header is required")
        arn_header, expected_service = route[0]
        arn = request.headers[arn_header]
        signed = Signed.parse(request.headers.get("Authorization", ""))
        if signed is None:
            return self._deny("missing or malformed SigV4 Authorization header")
        region = arn.split(":")[3]
        if (signed.service, signed.region) != (expected_service, region):
            return self._deny(
                f"signed for {signed.service}/{signed.region}, not {expected_service}/{region}"
            )
        caller = self.lookup(signed.access_key, dict(request.headers))
        if caller is None:
            return self._deny("The security token included in the request is invalid")
        role_arn = role_of(caller.arn)
        # A tracking server or App takes calls from its own account only: another account's
        # caller reaches it by assuming a role there (SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN).
        if role_arn.split(":")[4] != arn.split(":")[4]:
            return self._deny(f"{role_arn} is not authorized to call {arn}")
        if request.headers.get("X-Amz-Content-SHA256") != hashlib.sha256(body).hexdigest():
            return self._deny("payload hash does not match the body")
        url = f"http://{request.host}{request.raw_path}"
        if not signed.verifies(
            request.method, url, request.headers, body, caller.secret, caller.token
        ):
            return self._deny(
                "The request signature we calculated does not match the signature you provided"
            )
        denied = self._authorize(caller, request.method, request.path, arn_header, arn)
        if denied is not None:
            return denied
        self.seen.append(
            Seen(
                request.method,
                request.path,
                signed.access_key,
                signed.service,
                region,
                arn,
                role_arn,
            )
        )
        return await self._upstream.forward(request, body)

    def _authorize(
        self, caller: Caller, method: str, path: str, header: str, arn: str
    ) -> web.Response | None:
        """None when the caller's identity policies allow the call's action on `arn`."""
        operation = rpc(method, path)
        # A route that is no RPC (MLflow's OTLP span intake, POST /v1/traces; server-info) has no
        # action in the Reference: only a grant of every sagemaker-mlflow action covers it.
        action = f"sagemaker-mlflow:{operation or '*'}"
        if header == "x-sm-mlflow-app-arn":
            action = APP_ACTION
        operation = operation or f"{method} {path}"
        allowed = evaluate(documents(caller.policies), action, arn).allowed
        self.calls.append(Call(caller.arn, operation, action, arn, allowed))
        if allowed:
            return None
        reason = (
            f"User: {caller.arn} is not authorized to perform: {action} on resource: {arn} "
            f"because no identity-based policy allows the {action} action"
        )
        self.rejected.append(reason)
        return web.json_response(
            {"message": reason},
            status=403,
            headers={"x-amzn-ErrorType": "AccessDeniedException"},
        )
