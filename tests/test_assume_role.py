"""--assume-role-arn: a tracking server or App in another account, reached through a role there
that the Pods' role may assume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from testing.servers import start
from testing.support import ROLE_ARN, review_for, settings
from tests.aws.moto import ACCOUNT, REGION, Moto
from tests.aws.policy import evaluate
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import config
from webhook.aws import bootstrap
from webhook.aws.clients import BootstrapError
from webhook.cli.main import main
from webhook.core import namespaces, policies
from webhook.core.decisions import admit
from webhook.core.reviews import parse
from webhook.core.settings import cross_account

CENTRAL_ROLE = "arn:aws:iam::444455556666:role/central-mlflow"
CENTRAL_SERVER = "arn:aws:sagemaker:us-west-2:444455556666:mlflow-tracking-server/central"
KEY = "mlflow-webhook.io/assume-role-arn"


def test_the_pods_may_assume_exactly_that_role_and_tag_nothing() -> None:
    doc = policies.pod_access(
        "aws", CENTRAL_SERVER, "central-mlflow", "mlflow/", assume_role_arn=CENTRAL_ROLE
    )
    assert evaluate([doc], "sts:AssumeRole", CENTRAL_ROLE, {}).allowed
    other = "arn:aws:iam::444455556666:role/admin"
    assert not evaluate([doc], "sts:AssumeRole", other, {}).allowed
    assert not evaluate([doc], "sts:TagSession", CENTRAL_ROLE, {}).allowed
    plain = policies.pod_access("aws", CENTRAL_SERVER, "central-mlflow", "mlflow/")
    assert not evaluate([plain], "sts:AssumeRole", CENTRAL_ROLE, {}).allowed


def test_a_cross_account_arn_without_a_role_to_assume_is_named() -> None:
    alone = settings(tracking_uri=CENTRAL_SERVER)
    assert cross_account(alone) == (
        "the tracking ARN is in account 444455556666 but the Pods' role in 210987654321, and no "
        "role to assume there is set (--assume-role-arn): every MLflow call will be AccessDenied"
    )
    assert cross_account(settings(tracking_uri=CENTRAL_SERVER, assume_role_arn=CENTRAL_ROLE)) == ""
    assert cross_account(settings()) == ""


def test_a_namespace_names_its_role_to_assume() -> None:
    base = settings(tracking_uri=CENTRAL_SERVER)
    chosen = namespaces.resolve(namespaces.pick({KEY: CENTRAL_ROLE}, base.prefix), base)
    assert chosen.settings is not None
    assert chosen.settings.assume_role_arn == CENTRAL_ROLE
    assert chosen.settings.role_arn == ROLE_ARN
    wrong = namespaces.resolve(namespaces.pick({KEY: "central-mlflow"}, base.prefix), base)
    assert wrong.error == f"{KEY} 'central-mlflow' is not an IAM role ARN"


def test_a_namespaces_own_server_never_borrows_the_global_role_to_assume() -> None:
    base = settings(assume_role_arn=CENTRAL_ROLE)
    own = {
        "mlflow-webhook.io/tracking-uri": "arn:aws:sagemaker:us-west-2:210987654321:mlflow-app/a",
        "mlflow-webhook.io/role-arn": "arn:aws:iam::210987654321:role/team-a",
    }
    resolved = namespaces.resolve(namespaces.pick(own, base.prefix), base)
    assert resolved.settings is not None and resolved.settings.assume_role_arn is None


def test_the_namespace_settings_warn_of_a_server_they_cannot_reach() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"mlflow-webhook.io/inject": "true"}},
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }
    own = dataclasses.replace(settings(tracking_uri=CENTRAL_SERVER), source="namespace")
    result = admit(parse(review_for(pod, namespace="team-a")), own)
    assert result.outcome == "injected"
    assert (
        "mlflow-webhook: namespace team-a's own MLflow settings: " + cross_account(own)
    ) in result.warnings
    fine = dataclasses.replace(own, assume_role_arn=CENTRAL_ROLE)
    assert not any("own MLflow settings" in w for w in admit(parse(review_for(pod)), fine).warnings)


def test_serve_says_so_in_one_line_at_startup(tmp_path: Path) -> None:
    flags = ("--self-signed", "--tracking-uri", CENTRAL_SERVER, "--role-arn", ROLE_ARN)
    server = start(tmp_path, *flags)
    try:
        entry = server.wait_for_entry(lambda e: "AccessDenied" in str(e.get("msg")))
        assert entry["msg"] == cross_account(settings(tracking_uri=CENTRAL_SERVER))
    finally:
        server.stop()


def test_the_bootstrap_makes_nothing_for_a_server_in_another_account(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, emulator = aws
    central = CENTRAL_SERVER.replace("us-west-2", REGION)
    plan = bootstrap.run(
        config(
            tracking_server_arn=central,
            artifact_store_uri="s3://central-mlflow/mlflow",
            assume_role_arn=CENTRAL_ROLE,
        )
    )
    assert plan.tracking_arn == central
    assert ("mlflow-tracking-server", "central", "ok") in [
        (s.resource, s.name, s.action) for s in plan.steps
    ]
    # No SageMaker call at all, and nothing on the server side: only the Pods' policy and role.
    assert emulator.calls == []
    assert [w for w in plan.writes if not w.startswith("iam:")] == []
    assert not {"iam:PutRolePolicy", "iam:PassRole"} & set(plan.writes)
    arn = f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
    iam = moto.client("iam")
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    assert evaluate([doc], "sts:AssumeRole", CENTRAL_ROLE, {}).allowed


def test_the_plans_annotations_carry_the_role_to_assume_and_the_upload_mode(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    central = CENTRAL_SERVER.replace("us-west-2", REGION)
    flags = {"artifact_store_uri": "s3://central-mlflow/mlflow", "assume_role_arn": CENTRAL_ROLE}
    plan = bootstrap.run(
        config(tracking_server_arn=central, artifact_uploads="presigned", dry_run=True, **flags)
    )
    pasted = json.loads(plan.as_json())["namespaceAnnotations"]
    pod_role = f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE"
    assert pasted == {
        "mlflow-webhook.io/tracking-uri": central,
        "mlflow-webhook.io/role-arn": pod_role,
        KEY: CENTRAL_ROLE,
        "mlflow-webhook.io/artifact-uploads": "presigned",
    }
    # Pasted on a namespace, they give its Pods exactly what the Pods' policy was made for.
    base = settings()
    resolved = namespaces.resolve(namespaces.pick(pasted, base.prefix), base).settings
    assert resolved is not None
    assert (resolved.tracking.uri, resolved.role_arn) == (central, pod_role)
    assert (resolved.assume_role_arn, resolved.artifact_uploads) == (CENTRAL_ROLE, "presigned")
    # Direct uploads, the default, and no role to assume: neither annotation.
    plain = bootstrap.run(config(tracking_server_arn=central, dry_run=True, **flags))
    assert "mlflow-webhook.io/artifact-uploads" not in plain.namespace_annotations()
    same = bootstrap.run(config(dry_run=True))
    assert set(same.namespace_annotations()) <= {
        "mlflow-webhook.io/tracking-uri",
        "mlflow-webhook.io/role-arn",
    }


def test_the_bootstrap_refuses_another_accounts_server_without_a_role_to_assume(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    with pytest.raises(BootstrapError, match="give --assume-role-arn"):
        bootstrap.run(config(tracking_server_arn=CENTRAL_SERVER.replace("us-west-2", REGION)))


def actions(doc: policies.Document) -> set[str]:
    found: set[str] = set()
    for statement in doc["Statement"]:
        action = statement["Action"]
        found.update([action] if isinstance(action, str) else action)
    return found


def test_iam_policy_prints_the_central_accounts_role(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "iam-policy",
            "--region",
            "us-west-2",
            "--account",
            "210987654321",
            "--central-role",
            "--tracking-server-arn",
            CENTRAL_SERVER,
            "--assume-role-arn",
            CENTRAL_ROLE,
            "--artifact-store-uri",
            "s3://central-mlflow/mlflow",
            "--artifact-uploads",
            "presigned",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    trust = printed["RoleTrustPolicy"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"AWS": ROLE_ARN}]
    assert actions(trust) == {"sts:AssumeRole"}
    # The role is for MLflow's API on the one server; S3 is the bucket's, for our Pods' role.
    permissions = printed["RolePermissionsPolicy"]
    assert actions(permissions) == {"sagemaker-mlflow:*"}
    assert {s["Resource"] for s in permissions["Statement"]} == {CENTRAL_SERVER}
    bucket = {"Statement": printed["BucketPolicyStatements"]}
    assert actions(bucket) == {"s3:GetObject", "s3:ListBucket"}
    assert {s["Principal"]["AWS"] for s in bucket["Statement"]} == {ROLE_ARN}
