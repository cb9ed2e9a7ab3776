"""IAM enforced: the bootstrap as an IAM user whose only policy is what `mlflow-webhook
iam-policy` prints, and a training Pod's calls as the pod role, through an IAM gate in front of
moto's server and the SageMaker emulator (`tests/aws/gate.py`, which says why not moto's own
enforcement)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws.gate import IamGate
from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto
from tests.aws.sagemaker import SageMakerEmulator
from webhook.aws import bootstrap
from webhook.aws.clients import BootstrapError
from webhook.aws.config import BootstrapConfig

BUCKET = "team-mlflow"
URI = f"s3://{BUCKET}/artifacts"
SERVER_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/mlflow-tracking"
POD_ROLE = "SM_MLFLOW_ACCESS_ROLE"
SERVER_ROLE = "mlflow-webhook-tracking-server"
# What a bootstrap with everything in place may call: reads only, named here by hand so the
# count does not lean on the code's own read/write classifier.
READS = {
    "sts:GetCallerIdentity",
    "eks:DescribeCluster",
    "iam:ListOpenIDConnectProviders",
    "iam:GetOpenIDConnectProvider",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:ListAttachedRolePolicies",
    "s3:ListBucket",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetEncryptionConfiguration",
    "sagemaker:DescribeMlflowTrackingServer",
}


@dataclass
class Enforced:
    moto: Moto
    gate: IamGate
    emulator: SageMakerEmulator
    policy: dict[str, Any]

    def endpoints(self) -> dict[str, str]:
        return {
            **{f"AWS_ENDPOINT_URL_{s}": self.gate.url for s in ("IAM", "STS", "S3", "EKS")},
            "AWS_ENDPOINT_URL_SAGEMAKER": self.emulator.url,
        }

    def run_as(
        self, policy: dict[str, Any], monkeypatch: pytest.MonkeyPatch, user: str = "bootstrap"
    ) -> None:
        """From now on the SDK is the IAM user `user`, whose only policy is `policy`."""
        iam = self.moto.client("iam")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        for name, value in self.endpoints().items():
            monkeypatch.setenv(name, value)


def printed_policy(moto: Moto, *serve: str) -> dict[str, Any]:
    """Exactly what `mlflow-webhook iam-policy` prints for this bootstrap, read as an admin
    (`--serve`: the read-only policy for `serve`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {**moto.endpoints(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    flags = ["--artifact-store-uri", URI, "--region", REGION, "--account", ACCOUNT]
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "iam-policy", *flags, "--cluster-name", CLUSTER, *serve],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    policy: dict[str, Any] = json.loads(done.stdout)
    return policy


@pytest.fixture
def enforced(
    aws: tuple[Moto, SageMakerEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Enforced]:
    """A fresh account (the `aws` fixture's) with the gate in front of moto and SageMaker."""
    moto, _ = aws
    gate = IamGate(moto.url, ACCOUNT)
    gate.start()
    emulator = SageMakerEmulator(account=ACCOUNT, gate=gate)
    emulator.start()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield Enforced(moto, gate, emulator, printed_policy(moto))
    emulator.stop()
    gate.stop()


def config(**overrides: Any) -> BootstrapConfig:
    base: dict[str, Any] = {
        "cluster_name": CLUSTER,
        "artifact_store_uri": URI,
        "trust_namespaces": ("*",),
        "role_propagation_seconds": 20,
    }
    return BootstrapConfig(**{**base, **overrides})


def test_bootstrap_under_exactly_the_printed_policy(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    enforced.run_as(enforced.policy, monkeypatch)
    plan = bootstrap.run(config(), sleep=lambda _: None)
    assert plan.tracking_arn == SERVER_ARN
    assert {s.action for s in plan.steps} == {"create"}
    assert enforced.gate.denials() == []
    assert list(enforced.emulator.servers) == ["mlflow-tracking"]
    # Every call was the bootstrap user's, checked by the gate, not let through unsigned.
    assert {c.caller for c in enforced.gate.calls} == {f"arn:aws:iam::{ACCOUNT}:user/bootstrap"}
    first = len(enforced.gate.calls)
    again = bootstrap.run(config(), sleep=lambda _: None)
    assert {s.action for s in again.steps} == {"ok"}
    # Counted from the servers' side: the second run made read calls only.
    assert {c.action for c in enforced.gate.calls[first:]} <= READS
    assert enforced.emulator.calls.count("CreateMlflowTrackingServer") == 1


def test_serve_needs_only_the_printed_read_only_policy(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve`'s startup bootstrap, with everything in place, under `iam-policy --serve`."""
    enforced.run_as(enforced.policy, monkeypatch)
    bootstrap.run(config(), sleep=lambda _: None)
    enforced.run_as(printed_policy(enforced.moto, "--serve"), monkeypatch, user="serve")
    first = len(enforced.gate.calls)
    plan = bootstrap.run(config(), sleep=lambda _: None)
    assert {s.action for s in plan.steps} == {"ok"}
    assert plan.tracking_arn == SERVER_ARN
    calls = enforced.gate.calls[first:]
    assert {c.caller for c in calls} == {f"arn:aws:iam::{ACCOUNT}:user/serve"}
    assert [c for c in calls if not c.allowed] == []
    assert {c.action for c in calls} <= READS


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    statements = []
    for statement in policy["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        kept = [a for a in actions if a != action]
        if kept:
            statements.append({**statement, "Action": kept})
    assert statements != policy["Statement"], f"{action} is not in the printed policy"
    return {**policy, "Statement": statements}


# One action of each kind the fresh bootstrap needs; each missing one must be named.
NEEDED = [
    "iam:CreateRole",
    "iam:TagRole",
    "iam:PutRolePolicy",
    "iam:CreateOpenIDConnectProvider",
    "iam:CreatePolicy",
    "iam:AttachRolePolicy",
    "iam:PassRole",
    "s3:CreateBucket",
    "s3:PutEncryptionConfiguration",
    "eks:DescribeCluster",
    "sagemaker:CreateMlflowTrackingServer",
]


@pytest.mark.parametrize("action", NEEDED)
def test_a_policy_missing_one_action_is_denied_naming_it(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    enforced.run_as(without(enforced.policy, action), monkeypatch)
    with pytest.raises(BootstrapError) as caught:
        bootstrap.run(config(), sleep=lambda _: None)
    assert action in str(caught.value)
    assert [c.action for c in enforced.gate.denials()] in ([action], [])
    if action.startswith("sagemaker:") or action == "iam:PassRole":
        assert "AccessDeniedException" in str(caught.value) or "not authorized" in str(caught.value)


def pod_credentials(moto: Moto) -> dict[str, str]:
    """The pod role's session, as STS issues it for a web identity token (moto's STS ignores
    the token; `tests/test_end_to_end.py` has the chain where a real one is verified)."""
    sts = moto.client("sts")
    issued = sts.assume_role_with_web_identity(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{POD_ROLE}",
        RoleSessionName="trainer",
        WebIdentityToken="unchecked-here",
    )["Credentials"]
    return {
        "aws_access_key_id": issued["AccessKeyId"],
        "aws_secret_access_key": issued["SecretAccessKey"],
        "aws_session_token": issued["SessionToken"],
    }


def test_pod_role_writes_its_prefix_and_is_denied_elsewhere(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    enforced.run_as(enforced.policy, monkeypatch)
    plan = bootstrap.run(config(), sleep=lambda _: None)
    assert plan.pod_role_arn == f"arn:aws:iam::{ACCOUNT}:role/{POD_ROLE}"
    enforced.moto.client("s3").create_bucket(
        Bucket="other-bucket", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    s3 = boto3.client(
        "s3", endpoint_url=enforced.gate.url, region_name=REGION, **pod_credentials(enforced.moto)
    )
    key = "artifacts/1/run/artifacts/notes.txt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"trained")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"trained"
    for bucket, elsewhere in [
        (BUCKET, "outside/notes.txt"),
        (BUCKET, "artifactsX/notes.txt"),
        ("other-bucket", "artifacts/notes.txt"),
    ]:
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket=bucket, Key=elsewhere, Body=b"x")
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
        assert "s3:PutObject" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        s3.delete_object(Bucket=BUCKET, Key=key)
    assert "s3:DeleteObject" in caught.value.response["Error"]["Message"]
    # moto holds only what was allowed.
    keys = enforced.moto.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert [o["Key"] for o in keys] == [key]
    assert_lists_only_the_prefix(s3)


def test_server_role_lists_only_the_prefix(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The execution role SageMaker runs the tracking server as: the same bound on listing."""
    enforced.run_as(enforced.policy, monkeypatch)
    bootstrap.run(config(), sleep=lambda _: None)
    issued = enforced.moto.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{SERVER_ROLE}", RoleSessionName="SageMaker"
    )["Credentials"]
    s3 = boto3.client(
        "s3",
        endpoint_url=enforced.gate.url,
        region_name=REGION,
        aws_access_key_id=issued["AccessKeyId"],
        aws_secret_access_key=issued["SecretAccessKey"],
        aws_session_token=issued["SessionToken"],
    )
    s3.put_object(Bucket=BUCKET, Key="artifacts/1/run/artifacts/notes.txt", Body=b"logged")
    assert_lists_only_the_prefix(s3)


def assert_lists_only_the_prefix(s3: Any) -> None:
    """Listing is bound to the artifact prefix by `s3:prefix`: the rest of the bucket, its
    keys and names, stays unseen."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/1/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["artifacts/1/run/artifacts/notes.txt"]
    for outside in ({}, {"Prefix": ""}, {"Prefix": "outside/"}, {"Prefix": "artifactsX"}):
        with pytest.raises(ClientError) as caught:
            s3.list_objects_v2(Bucket=BUCKET, **outside)
        assert caught.value.response["Error"]["Code"] == "AccessDenied", outside
        assert "s3:ListBucket" in caught.value.response["Error"]["Message"]
