"""An emulator of STS's AssumeRoleWithWebIdentity as AWS checks it, in front of moto's server.

moto's own AssumeRoleWithWebIdentity ignores the token and the role's trust policy. This
emulator checks both before it lets moto issue the credentials, in AWS's order:

- the JWT is RS256 and its signature verifies against the issuer's keys (the control plane's
  `/openid/v1/jwks`, where AWS would fetch the provider's `jwks_uri`);
- `exp` has not passed (and `nbf`, when present, has);
- `iss` names an IAM OIDC provider that exists in moto's account, and the token's audience is
  one of that provider's client IDs;
- the role's trust policy allows `sts:AssumeRoleWithWebIdentity` to that provider as a
  Federated principal, with the `<issuer>:sub` and `<issuer>:aud` conditions holding.

Given the IAM gate, AssumeRole is checked too, as AWS checks a role assumed from another
account: the caller's signature and identity policies (sts:AssumeRole on that role, by the
gate), then the role's trust policy naming the caller's role as an AWS principal, read from
moto's IAM of the role's own account.

Only then is the request forwarded to moto, which issues the session; every other request is
forwarded unchanged. Refusals use AWS's codes and words, and both are recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import boto3
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from testing.threaded import Served, ThreadedApp
from tests.aws.gate import Denied, IamGate, error_response
from tests.aws.policy import as_list, role_of, trusts
from tests.aws.wire import Upstream

ACTION = "sts:AssumeRoleWithWebIdentity"


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_keys(jwks: dict[str, Any]) -> dict[str, rsa.RSAPublicKey]:
    """The RSA keys of a JWKS document, by `kid`."""
    keys = {}
    for key in jwks["keys"]:
        if key.get("kty") == "RSA":
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(b64url(key["e"]), "big"), int.from_bytes(b64url(key["n"]), "big")
            )
            keys[key.get("kid", "")] = numbers.public_key()
    return keys


def verified_claims(token: str, keys: dict[str, rsa.RSAPublicKey], now: float) -> dict[str, Any]:
    """The claims of an RS256 JWT whose signature and times check out, else Denied."""
    try:
        head, body, signature = token.split(".")
        header, claims = json.loads(b64url(head)), json.loads(b64url(body))
    except ValueError:
        raise Denied("InvalidIdentityToken", "The ID token is not a well-formed JWT", 400) from None
    if header.get("alg") != "RS256":
        raise Denied(
            "InvalidIdentityToken", f"Unsupported token algorithm {header.get('alg')}", 400
        )
    key = keys.get(header.get("kid", ""))
    if key is None:
        raise Denied("InvalidIdentityToken", "No matching key found for the token's kid", 400)
    try:
        key.verify(
            b64url(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        raise Denied("InvalidIdentityToken", "Couldn't verify the token's signature", 400) from None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise Denied(
            "ExpiredTokenException",
            "Token expired: current date/time must be before the expiration date/time",
            400,
        )
    if isinstance(claims.get("nbf"), int) and claims["nbf"] > now:
        raise Denied("InvalidIdentityToken", "Token is not valid yet", 400)
    return dict(claims)


@dataclass(frozen=True)
class Verdict:
    """One AssumeRoleWithWebIdentity as the emulator decided it."""

    role_arn: str
    subject: str
    audience: list[str]
    allowed: bool
    code: str = ""
    message: str = ""


class StsEmulator(Served):
    def __init__(
        self,
        upstream: str,
        account: str,
        clock: Callable[[], float] = time.time,
        gate: IamGate | None = None,
    ) -> None:
        self._upstream = Upstream(upstream)
        self.gate = gate
        self.account = account
        # The issuers' signing keys, as AWS fetches them from each provider's jwks_uri.
        self.keys: dict[str, rsa.RSAPublicKey] = {}
        self.clock = clock
        self.verdicts: list[Verdict] = []
        # moto's IAM, read as its administrator: the providers and roles AWS would consult.
        self._iam = boto3.client(
            "iam",
            endpoint_url=upstream,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._http = ThreadedApp(app, on_stop=self._upstream.close)
        self.url = ""

    def trust_keys(self, jwks: dict[str, Any]) -> None:
        self.keys |= public_keys(jwks)

    def refusals(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.allowed]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        params |= {k: v[0] for k, v in parse_qs(request.query_string).items()}
        if params.get("Action") == "AssumeRole" and self.gate is not None:
            return await self._assume_role(request, body, params.get("RoleArn", ""))
        if params.get("Action") != "AssumeRoleWithWebIdentity":
            return await self._upstream.forward(request, body)
        role_arn = params.get("RoleArn", "")
        try:
            claims = await asyncio.to_thread(
                self.check, params.get("WebIdentityToken", ""), role_arn
            )
        except Denied as denied:
            self.verdicts.append(Verdict(role_arn, "", [], False, denied.code, denied.message))
            return error_response("sts", denied)
        self.verdicts.append(
            Verdict(role_arn, str(claims.get("sub")), as_list(claims.get("aud")), True)
        )
        return await self._upstream.forward(request, body)

    async def _assume_role(
        self, request: web.Request, body: bytes, role_arn: str
    ) -> web.StreamResponse:
        url = f"http://{request.host}{request.raw_path}"
        headers = dict(request.headers)
        try:
            caller = await asyncio.to_thread(self.check_assume, request.method, url, headers, body)
        except Denied as denied:
            self.verdicts.append(Verdict(role_arn, "", [], False, denied.code, denied.message))
            return error_response("sts", denied)
        self.verdicts.append(Verdict(role_arn, caller, [], True))
        return await self._upstream.forward(request, body)

    def check_assume(self, method: str, url: str, headers: dict[str, str], body: bytes) -> str:
        """The caller's role ARN when AWS would let it assume the role asked for, else Denied."""
        assert self.gate is not None
        operation, needed = self.gate.needs("sts", "", method, url, body)
        caller = self.gate.authorize(method, url, headers, body, operation, needed)
        assert caller is not None
        principal = role_of(caller.arn)
        role_arn = needed[0].resource
        trust = _trust_of(role_arn)
        if not trusts(trust, "sts:AssumeRole", {"AWS": principal}, {}):
            raise Denied(
                "AccessDenied",
                f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on resource: "
                f"{role_arn}",
            )
        return principal

    def check(self, token: str, role_arn: str) -> dict[str, Any]:
        """The token's claims when AWS would let it assume `role_arn`, else Denied."""
        claims = verified_claims(token, self.keys, self.clock())
        issuer = str(claims.get("iss", ""))
        host = issuer.removeprefix("https://")
        provider = f"arn:aws:iam::{self.account}:oidc-provider/{host}"
        try:
            found = self._iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider)
        except self._iam.exceptions.NoSuchEntityException:
            raise Denied(
                "InvalidIdentityToken",
                f"No OpenIDConnect provider found in your account for {issuer}",
                400,
            ) from None
        audiences = as_list(claims.get("aud"))
        if not set(audiences) & set(found.get("ClientIDList", [])):
            raise Denied("InvalidIdentityToken", "Incorrect token audience", 400)
        role_name = role_arn.rsplit("/", 1)[-1]
        try:
            trust = self._iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        except self._iam.exceptions.NoSuchEntityException:
            trust = {"Statement": []}
        context = {f"{host}:sub": [str(claims.get("sub"))], f"{host}:aud": audiences}
        if not trusts(trust, ACTION, {"Federated": provider}, context):
            raise Denied("AccessDenied", f"Not authorized to perform {ACTION}", 403)
        return claims


def _trust_of(role_arn: str) -> dict[str, Any] | str:
    """The role's trust policy in moto's IAM of the role's own account; none for no role."""
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[role_arn.split(":")[4]]["global"].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - moto's NoSuchEntity: a role that is not there trusts no one
        return {"Statement": []}
    return str(role.assume_role_policy_document)


class LocalIssuer:
    """A service-account issuer of our own, for where no control plane runs (the demo) and for
    tokens no API server would issue (expired, forged)."""

    def __init__(self, issuer: str, kid: str = "local") -> None:
        self.issuer, self.kid = issuer, kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": _b64(numbers.e.to_bytes(3, "big")),
                }
            ]
        }

    def token(self, subject: str, audience: str, lifetime: float = 3600, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": subject, "aud": [audience], "iat": now}
        body |= {"nbf": now, "exp": int(now + lifetime), **claims}
        head = _b64(json.dumps({"alg": "RS256", "kid": self.kid}).encode())
        payload = _b64(json.dumps(body).encode())
        signature = self._key.sign(
            f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{head}.{payload}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
