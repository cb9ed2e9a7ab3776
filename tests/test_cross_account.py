"""End to end with a tracking server in another account: the Pod's web identity gives it our
Pods' role, the plugin assumes the central account's role with it, and the front door takes the
MLflow calls only from that assumed session.

STS (tests/aws/sts.py, given the IAM gate) lets the Pods' role assume the central role only as
the Pods' policy and the central role's trust allow; the front door (tests/e2e/front.py) refuses
a caller from another account than the server's. The central role and its trust are what
`iam-policy --central-role` prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.e2e import chain
from tests.e2e.front import Front
from tests.servers import WebhookProcess
from tests.test_end_to_end import cluster, webhook_for  # noqa: F401 - a fixture
from webhook.core import policies

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("cluster")]
CENTRAL = "444455556666"
CENTRAL_ROLE = f"arn:aws:iam::{CENTRAL}:role/central-mlflow-pods"
CENTRAL_SERVER = f"arn:aws:sagemaker:{chain.REGION}:{CENTRAL}:mlflow-tracking-server/central"
VAR = "SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN"


def central_iam(stack: chain.Aws) -> Any:
    """IAM of the central account, as its administrator (moto keys accounts by credentials)."""
    admin = stack.moto.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{CENTRAL}:role/admin", RoleSessionName="central-admin"
    )["Credentials"]
    return boto3.client(
        "iam",
        endpoint_url=stack.moto.url,
        region_name="us-east-1",
        aws_access_key_id=admin["AccessKeyId"],
        aws_secret_access_key=admin["SecretAccessKey"],
        aws_session_token=admin["SessionToken"],
    )


@pytest.fixture(scope="module", autouse=True)
def central_role(stack: chain.Aws) -> None:
    """The central role as `iam-policy --central-role` prints it, and our Pods' policy as
    `bootstrap --assume-role-arn` makes it."""
    printed = policies.central_role(
        "aws", chain.ROLE_ARN, CENTRAL_SERVER, chain.BUCKET, chain.ARTIFACTS, "direct"
    )
    iam = central_iam(stack)
    name = CENTRAL_ROLE.rsplit("/", 1)[1]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(printed["RoleTrustPolicy"]))
    iam.put_role_policy(
        RoleName=name,
        PolicyName="mlflow",
        PolicyDocument=json.dumps(printed["RolePermissionsPolicy"]),
    )
    pods = policies.pod_access(
        "aws", CENTRAL_SERVER, chain.BUCKET, chain.ARTIFACTS, assume_role_arn=CENTRAL_ROLE
    )
    stack.moto.client("iam").put_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="pod", PolicyDocument=json.dumps(pods)
    )


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = webhook_for(
        tmp_path_factory.mktemp("certs"),
        CENTRAL_SERVER,
        "--credentials",
        "irsa",
        "--role-arn",
        chain.ROLE_ARN,
        "--assume-role-arn",
        CENTRAL_ROLE,
    )
    yield server
    server.stop()


def test_the_run_reaches_the_central_server_as_the_assumed_role(
    webhook: WebhookProcess, pods: chain.Pods, stack: chain.Aws, mlflow: chain.MlflowServer
) -> None:
    verdicts = len(stack.sts.verdicts)
    ran = pods.train(webhook, "central")
    assert ran.env[VAR] == CENTRAL_ROLE
    assert ran.result.returncode == 0, ran.result.stderr[-3000:]
    # STS let our Pods' role assume the central role, as its trust allows.
    assumed = [v for v in stack.sts.verdicts[verdicts:] if v.role_arn == CENTRAL_ROLE]
    assert assumed and all(v.allowed and v.subject == chain.ROLE_ARN for v in assumed)
    # Every MLflow call came signed by the central role's session, for the central server.
    assert ran.seen
    assert {(s.arn, s.role_arn) for s in ran.seen} == {(CENTRAL_SERVER, CENTRAL_ROLE)}
    assert mlflow.run_in("central")["data"]["metrics"][0]["key"] == "foo"


def test_without_the_role_to_assume_the_run_fails(
    webhook: WebhookProcess, pods: chain.Pods, front: Front
) -> None:
    rejected = len(front.rejected)
    ran = pods.train(webhook, "alone", without=VAR)
    assert ran.result.returncode != 0
    assert ran.seen == []
    assert front.rejected[rejected:] and all(
        r == f"{chain.ROLE_ARN} is not authorized to call {CENTRAL_SERVER}"
        for r in front.rejected[rejected:]
    )


def test_a_central_role_that_trusts_another_role_is_not_assumed(
    webhook: WebhookProcess, pods: chain.Pods, stack: chain.Aws
) -> None:
    iam = central_iam(stack)
    name = CENTRAL_ROLE.rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    other = json.loads(json.dumps(trust).replace(chain.ROLE_ARN, chain.ROLE_ARN + "-other"))
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(other))
    try:
        verdicts = len(stack.sts.verdicts)
        ran = pods.train(webhook, "untrusted")
    finally:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    assert ran.result.returncode != 0
    assert "AccessDenied" in ran.result.stderr
    refused = [v for v in stack.sts.verdicts[verdicts:] if v.role_arn == CENTRAL_ROLE]
    assert refused and not any(v.allowed for v in refused)
    assert ran.seen == []
