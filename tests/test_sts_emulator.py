"""The STS web-identity emulator refuses what AWS refuses: each check on its own, with tokens
from a local issuer (the end-to-end tests use the real control plane's)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws.moto import ACCOUNT, REGION, Moto
from tests.aws.sts import LocalIssuer, StsEmulator
from tests.e2e import chain

SUBJECT = "system:serviceaccount:team-a:sagemaker-mlflow-sa"
AUDIENCE = "sts.amazonaws.com"


@pytest.fixture
def sts(moto: Moto) -> Iterator[tuple[StsEmulator, LocalIssuer, list[float]]]:
    moto.reset()
    chain.provision(moto)
    issuer = LocalIssuer(chain.ISSUER)
    skew = [0.0]  # how far the emulator's clock runs ahead
    emulator = StsEmulator(moto.url, ACCOUNT, clock=lambda: time.time() + skew[0])
    emulator.trust_keys(issuer.jwks())
    emulator.start()
    yield emulator, issuer, skew
    emulator.stop()


def client(emulator: StsEmulator) -> Any:
    """STS at the emulator; AssumeRoleWithWebIdentity is unsigned, the rest as moto's admin."""
    return boto3.client(
        "sts",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def assume(emulator: StsEmulator, token: str) -> dict[str, Any]:
    found: dict[str, Any] = client(emulator).assume_role_with_web_identity(
        RoleArn=chain.ROLE_ARN, RoleSessionName="trainer", WebIdentityToken=token
    )
    return found


def refused(emulator: StsEmulator, token: str) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        assume(emulator, token)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def test_a_trusted_token_gets_moto_credentials(
    sts: tuple[StsEmulator, LocalIssuer, list[float]],
) -> None:
    emulator, issuer, _ = sts
    issued = assume(emulator, issuer.token(SUBJECT, AUDIENCE))
    assert issued["Credentials"]["AccessKeyId"]
    assert issued["AssumedRoleUser"]["Arn"].startswith(
        f"arn:aws:sts::{ACCOUNT}:assumed-role/SM_MLFLOW_ACCESS_ROLE/"
    )
    assert [(v.subject, v.allowed) for v in emulator.verdicts] == [(SUBJECT, True)]


def test_each_check_refuses_on_its_own(
    sts: tuple[StsEmulator, LocalIssuer, list[float]], moto: Moto
) -> None:
    emulator, issuer, skew = sts
    good = issuer.token(SUBJECT, AUDIENCE)
    head, _, signature = good.split(".")
    impostor = LocalIssuer(chain.ISSUER, kid=issuer.kid)
    cases = {
        "forged signature": (impostor.token(SUBJECT, AUDIENCE), "InvalidIdentityToken"),
        "tampered claims": (
            f"{head}.{LocalIssuer(chain.ISSUER).token('x', AUDIENCE).split('.')[1]}.{signature}",
            "InvalidIdentityToken",
        ),
        "unknown key": (LocalIssuer(chain.ISSUER, kid="other").token(SUBJECT, AUDIENCE), ""),
        "another issuer": (
            LocalIssuer("https://oidc.example.com", kid=issuer.kid).token(SUBJECT, AUDIENCE),
            "InvalidIdentityToken",
        ),
        "another audience": (issuer.token(SUBJECT, "mlflow"), "InvalidIdentityToken"),
        "another subject": (
            issuer.token("system:serviceaccount:team-a:other-sa", AUDIENCE),
            "AccessDenied",
        ),
        "another namespace": (
            issuer.token("system:serviceaccount:team-b:sagemaker-mlflow-sa", AUDIENCE),
            "AccessDenied",
        ),
        "not a JWT": ("not-a-token", "InvalidIdentityToken"),
    }
    for name, (token, code) in cases.items():
        got, message = refused(emulator, token)
        assert got == (code or "InvalidIdentityToken"), (name, message)
    # The clock passes the token's exp.
    skew[0] = 7200
    assert refused(emulator, good)[0] == "ExpiredTokenException"
    skew[0] = -60
    assert refused(emulator, issuer.token(SUBJECT, AUDIENCE))[1] == "Token is not valid yet"
    skew[0] = 0
    # A provider for the issuer but a role that trusts another one.
    iam = moto.client("iam")
    trust = iam.get_role(RoleName="SM_MLFLOW_ACCESS_ROLE")["Role"]["AssumeRolePolicyDocument"]
    trust["Statement"][0]["Principal"]["Federated"] += "-other"
    iam.update_assume_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyDocument=json.dumps(trust)
    )
    assert refused(emulator, good)[0] == "AccessDenied"
    assert not [v for v in emulator.verdicts if v.allowed]


def test_other_calls_reach_moto(sts: tuple[StsEmulator, LocalIssuer, list[float]]) -> None:
    emulator, _, _ = sts
    assert client(emulator).get_caller_identity()["Account"] == ACCOUNT
    assert emulator.verdicts == []
