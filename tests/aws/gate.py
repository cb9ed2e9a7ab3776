"""An IAM gate in front of moto's server: every request is authenticated and authorized as AWS
would, then forwarded to moto unchanged, or refused with AWS's own AccessDenied.

The caller is found from the SigV4 access key among moto's IAM users and the sessions its STS
issued, the signature is recomputed with that key's secret, the operation is read off the wire
with botocore's service model, and the IAM action and resource it needs (with what AWS checks
besides: iam:Tag* for tags on create, iam:PassRole for a role handed to SageMaker) are
evaluated against the caller's identity policies by `tests.aws.policy`. The SageMaker emulator
asks the same gate. Every request the gate saw is recorded, so a test counts calls from the
server's side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import botocore.session
from aiohttp import web
from botocore.model import OperationModel

from testing.threaded import Served, ThreadedApp
from tests.aws.policy import Context, allows, evaluate, role_of
from tests.aws.wire import Signed, Upstream

_MODELS = {
    name: botocore.session.get_session().get_service_model(name)
    for name in ("iam", "sts", "s3", "eks")
}
# S3 operations whose IAM action has another name.
S3_ACTIONS = {
    "HeadBucket": "ListBucket",
    "ListObjects": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "HeadObject": "GetObject",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "CopyObject": "PutObject",
    "DeleteObjects": "DeleteObject",
    "ListBuckets": "ListAllMyBuckets",
}
# Always allowed, as in AWS, whatever the policies say.
UNCHECKED = {"sts:GetCallerIdentity"}
# Unsigned by design: the web identity token is the credential.
UNSIGNED = {"AssumeRoleWithWebIdentity"}


@dataclass(frozen=True)
class Call:
    """One request as the gate saw it."""

    caller: str
    operation: str
    action: str
    resource: str
    allowed: bool


@dataclass(frozen=True)
class Needed:
    action: str
    resource: str
    context: Context


class Denied(Exception):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Caller:
    arn: str
    secret: str
    token: str | None
    policies: list[Any]


def find_caller(account: str, access_key: str, headers: dict[str, str]) -> Caller | None:
    """The IAM user or STS session moto knows by this access key, with its policies."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key

    try:
        key = create_access_key(account, "aws", access_key, headers)
    except CreateAccessKeyFailure:
        return None
    credentials = key.create_credentials()
    return Caller(key.arn, credentials.secret_key, credentials.token, key.collect_policies())


def documents(policies: list[Any]) -> list[dict[str, Any] | str]:
    """moto's three shapes of a policy (managed, inline, role inline) as documents."""
    found: list[dict[str, Any] | str] = []
    for policy in policies:
        if hasattr(policy, "versions"):
            found += [v.document for v in policy.versions if v.is_default]
        elif isinstance(policy, str):
            found.append(policy)
        else:
            found.append(policy["policy_document"])
    return found


def _template(uri: str) -> tuple[re.Pattern[str], set[str]]:
    path, _, query = uri.partition("?")
    pattern = re.sub(
        r"\\\{([A-Za-z]+)(\\\+)?\\\}",
        lambda m: f"(?P<{m[1]}>.+)" if m[2] else f"(?P<{m[1]}>[^/]+)",
        re.escape(path),
    )
    return re.compile(pattern + "/?"), {q.split("=")[0] for q in query.split("&") if q}


def rest_operation(
    service: str, method: str, path: str, query: set[str]
) -> tuple[str, dict[str, str]]:
    """The REST operation a request is, by method, path template and query keys."""
    best: tuple[int, str, dict[str, str]] | None = None
    model = _MODELS[service]
    for name in model.operation_names:
        op: OperationModel = model.operation_model(name)
        if op.http.get("method") != method:
            continue
        pattern, literal = _template(op.http["requestUri"])
        match = pattern.fullmatch(path)
        if match is None or not literal <= query:
            continue
        members = op.input_shape.members if op.input_shape else {}
        required = {
            m.serialization.get("name", n)
            for n, m in members.items()
            if m.serialization.get("location") == "querystring"
            and op.input_shape is not None
            and n in op.input_shape.required_members
        }
        if not required <= query:
            continue
        score = len(literal) + len(required)
        if best is None or score > best[0]:
            best = (score, name, match.groupdict())
    if best is None:
        raise Denied("UnknownOperation", f"no {service} operation is {method} {path}", 400)
    return best[1], best[2]


def _iam_resource(iam: str, params: dict[str, str]) -> str:
    """The resource IAM authorizes an action on: a role's or user's actions (attaching a
    policy included) are on the role or user; the rest on what they name."""
    if "RoleName" in params:
        return f"{iam}:role{params.get('Path', '/')}{params['RoleName']}"
    if "UserName" in params:
        return f"{iam}:user/{params['UserName']}"
    if "OpenIDConnectProviderArn" in params:
        return params["OpenIDConnectProviderArn"]
    if "Url" in params:
        return f"{iam}:oidc-provider/{params['Url'].removeprefix('https://')}"
    if "PolicyArn" in params:
        return params["PolicyArn"]
    if "PolicyName" in params:
        return f"{iam}:policy{params.get('Path', '/')}{params['PolicyName']}"
    return "*"


class IamGate(Served):
    def __init__(self, upstream: str, account: str) -> None:
        self._upstream = Upstream(upstream)
        self.account = account
        self.calls: list[Call] = []
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._http = ThreadedApp(app, on_stop=self._upstream.close)
        self.url = ""

    # What a request needs -----------------------------------------------------------------
    def needs(
        self, service: str, region: str, method: str, url: str, body: bytes
    ) -> tuple[str, list[Needed]]:
        split = urlsplit(url)
        query = parse_qs(split.query, keep_blank_values=True)
        iam = f"arn:aws:iam::{self.account}"
        if service in ("iam", "sts"):
            params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            params |= {k: v[0] for k, v in query.items()}
            operation = params.get("Action", "")
            resource = (
                _iam_resource(iam, params) if service == "iam" else params.get("RoleArn", "*")
            )
            # AWS's condition key for the policy an Attach*/Detach* call names.
            context = {"iam:PolicyARN": [params["PolicyArn"]]} if "PolicyArn" in params else {}
            needed = [Needed(f"{service}:{operation}", resource, context)]
            tag = re.fullmatch(r"Create(Role|OpenIDConnectProvider|Policy|User)", operation)
            if tag and any(k.startswith("Tags.member.") for k in params):
                # AWS authorizes tags on create as a separate action on the same resource.
                needed.append(Needed(f"iam:Tag{tag[1]}", resource, {}))
            return operation, needed
        if service == "s3":
            operation, _ = rest_operation("s3", method, split.path, set(query))
            bucket, _, key = split.path.lstrip("/").partition("/")
            resource = f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"
            if not bucket:
                resource = "*"
            context = {"s3:prefix": query["prefix"]} if "prefix" in query else {}
            return operation, [
                Needed(f"s3:{S3_ACTIONS.get(operation, operation)}", resource, context)
            ]
        if service == "eks":
            operation, found = rest_operation("eks", method, split.path, set(query))
            name = found.get("name") or found.get("clusterName")
            resource = f"arn:aws:eks:{region}:{self.account}:cluster/{name}" if name else "*"
            return operation, [Needed(f"eks:{operation}", resource, {})]
        raise Denied("UnknownService", f"the gate does not front {service}", 400)

    def authorize(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        operation: str,
        needed: list[Needed],
    ) -> Caller | None:
        """Raise Denied as AWS would answer; the caller when it may go on (None: unsigned)."""
        if operation in UNSIGNED:
            return None
        signed = Signed.parse(headers.get("Authorization", ""))
        if signed is None:
            raise Denied("MissingAuthenticationToken", "Request is missing Authentication Token")
        caller = find_caller(self.account, signed.access_key, headers)
        if caller is None:
            raise Denied(
                "InvalidClientTokenId", "The security token included in the request is invalid."
            )
        if not signed.verifies(method, url, headers, body, caller.secret, caller.token):
            raise Denied(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        policies = documents(caller.policies)
        for need in needed:
            allowed = (
                need.action in UNCHECKED
                or evaluate(policies, need.action, need.resource, need.context).allowed
            )
            owner = allowed and owner_allows(caller.arn, need)
            self.calls.append(Call(caller.arn, operation, need.action, need.resource, owner))
            if not owner:
                kind = "identity" if not allowed else "resource"
                raise Denied(
                    "AccessDenied",
                    f"User: {caller.arn} is not authorized to perform: {need.action} on "
                    f"resource: {need.resource} because no {kind}-based policy allows the "
                    f"{need.action} action",
                )
        return caller

    # The wire ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        url = f"http://{request.host}{request.raw_path}"
        signed = Signed.parse(headers.get("Authorization", ""))
        service = signed.service if signed else "sts"
        region = signed.region if signed else ""
        try:
            operation, needed = self.needs(service, region, request.method, url, body)
            self.authorize(request.method, url, headers, body, operation, needed)
        except Denied as denied:
            return error_response(service, denied)
        return await self._upstream.forward(request, body)

    def denials(self) -> list[Call]:
        return [c for c in self.calls if not c.allowed]

    def operations(self, service: str) -> list[str]:
        return [c.action.split(":", 1)[1] for c in self.calls if c.action.startswith(service + ":")]


def owner_allows(caller_arn: str, need: Needed) -> bool:
    """A bucket of another account than the caller's must allow the request too, by its bucket
    policy: across accounts AWS needs both the caller's identity policy and the resource's
    policy. moto keeps each bucket's account and policy but enforces neither (its own check
    reads only Principal "*"), so the gate does. Within one account the identity policy is
    enough, as here; an account-root principal in a bucket policy is not emulated."""
    if not need.action.startswith("s3:") or need.resource == "*":
        return True
    from moto.s3.models import s3_backends

    bucket = need.resource.split(":::", 1)[1].split("/", 1)[0]
    found = s3_backends.bucket_accounts.get(bucket)
    if found is None or found[1] == caller_arn.split(":")[4]:
        return True
    partition, account = found
    policy = s3_backends[account][partition].get_bucket(bucket).policy
    if not policy:
        return False
    principal = {"AWS": role_of(caller_arn)}
    return allows(policy.decode(), need.action, need.resource, principal, need.context).allowed


def error_response(service: str, denied: Denied) -> web.Response:
    """AccessDenied and friends in the service's own protocol."""
    if service == "eks":
        return web.json_response(
            {"message": denied.message},
            status=denied.status,
            headers={"x-amzn-ErrorType": f"{denied.code}Exception"},
        )
    message = escape(denied.message)
    if service == "s3":
        xml = f"<Error><Code>{denied.code}</Code><Message>{message}</Message></Error>"
    else:
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{denied.code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>gate</RequestId></ErrorResponse>"
        )
    return web.Response(text=xml, status=denied.status, content_type="text/xml")


def sagemaker_needs(
    account: str,
    region: str,
    operation: str,
    body: dict[str, Any],
    created: str | None = None,
    tags: dict[str, str] | None = None,
) -> list[Needed]:
    """The IAM actions a SageMaker MLflow call needs, as AWS documents them.

    `created`: the ARN CreateMlflowApp would give the App (an App's ARN holds an ID SageMaker
    assigns, not its name); `tags`: the resource's own tags, for aws:ResourceTag conditions.
    """
    name = body.get("TrackingServerName")
    resource = (
        f"arn:aws:sagemaker:{region}:{account}:mlflow-tracking-server/{name}"
        if name
        else created or body.get("Arn") or body.get("ResourceArn") or "*"
    )
    context: Context = {f"aws:ResourceTag/{k}": [v] for k, v in (tags or {}).items()}
    requested = {t["Key"]: t["Value"] for t in body.get("Tags", [])}
    context |= {f"aws:RequestTag/{k}": [v] for k, v in requested.items()}
    if requested:
        context["aws:TagKeys"] = list(requested)
    needed = [Needed(f"sagemaker:{operation}", resource, context)]
    if operation in ("CreateMlflowTrackingServer", "CreateMlflowApp"):
        if body.get("Tags"):
            # SageMaker names the creating call in sagemaker:TaggingAction.
            tagging = {**context, "sagemaker:TaggingAction": [operation]}
            needed.append(Needed("sagemaker:AddTags", resource, tagging))
        needed.append(
            Needed(
                "iam:PassRole",
                body["RoleArn"],
                {"iam:PassedToService": ["sagemaker.amazonaws.com"]},
            )
        )
    return needed
