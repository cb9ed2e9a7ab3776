"""--artifact-uploads: what Pods are told, what their policy allows, and how a namespace and a
second bootstrap run change it. The end-to-end proof is tests/test_presigned_uploads.py."""

from __future__ import annotations

import json

import pytest

from testing.support import settings
from tests.aws.moto import ACCOUNT, Moto
from tests.aws.policy import evaluate
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import SERVER_ARN, config
from webhook.aws import bootstrap
from webhook.core import namespaces, policies
from webhook.core.mutation import wanted_env

KEY = "mlflow-webhook.io/artifact-uploads"
OBJECT = "arn:aws:s3:::team-mlflow/artifacts/1/run/artifacts/model.pkl"


def allowed(doc: policies.Document, action: str, resource: str = OBJECT) -> bool:
    return evaluate([doc], action, resource, {}).allowed


@pytest.mark.parametrize("uploads", ["direct", "presigned"])
def test_the_pods_policy_writes_to_s3_only_with_direct_uploads(uploads: str) -> None:
    doc = policies.pod_access("aws", SERVER_ARN, "team-mlflow", "artifacts", uploads)
    assert allowed(doc, "s3:PutObject") is (uploads == "direct")
    # What MLflow's S3 repository still does with the Pod's own credentials: downloads.
    assert allowed(doc, "s3:GetObject")
    listing = {"s3:prefix": ["artifacts/1/"]}
    assert evaluate([doc], "s3:ListBucket", "arn:aws:s3:::team-mlflow", listing).allowed
    assert not allowed(doc, "s3:DeleteObject")
    # MLflow never asks where the bucket is: the end-to-end runs pass without it.
    assert not allowed(doc, "s3:GetBucketLocation", "arn:aws:s3:::team-mlflow")
    assert allowed(doc, "sagemaker-mlflow:CreateRun", SERVER_ARN)


def test_presigned_uploads_are_announced_to_every_container() -> None:
    presigned = wanted_env(settings(artifact_uploads="presigned"), None)
    assert presigned["SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED"] == "true"
    assert "SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED" not in wanted_env(settings(), None)


def test_a_namespace_chooses_its_upload_mode() -> None:
    base = settings()
    chosen = namespaces.resolve(namespaces.pick({KEY: "presigned"}, base.prefix), base)
    assert chosen.settings is not None
    assert chosen.settings.artifact_uploads == "presigned"
    # Only the mode changed: the server and role stay the global ones.
    assert chosen.settings.tracking == base.tracking
    assert chosen.settings.role_arn == base.role_arn
    back = namespaces.resolve(namespaces.pick({KEY: "direct"}, base.prefix), chosen.settings)
    assert back.settings is not None and back.settings.artifact_uploads == "direct"


def test_a_wrong_upload_mode_gives_the_namespace_no_settings() -> None:
    base = settings()
    wrong = namespaces.resolve(namespaces.pick({KEY: "signed"}, base.prefix), base)
    assert wrong.settings is None
    assert wrong.error == f"{KEY} must be one of direct, presigned, not 'signed'"


def pod_policy(moto: Moto) -> tuple[str, policies.Document]:
    iam = moto.client("iam")
    arn = f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return version, json.loads(doc) if isinstance(doc, str) else doc


def test_switching_modes_changes_only_the_pod_policy_version(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, _ = aws
    first = bootstrap.run(config(artifact_uploads="presigned"))
    assert first.tracking_arn == SERVER_ARN
    versions = [pod_policy(moto)[0]]
    for uploads in ("direct", "presigned"):
        plan = bootstrap.run(config(artifact_uploads=uploads))
        assert plan.writes == ["iam:CreatePolicyVersion"], plan.writes
        changed = [(s.resource, s.name) for s in plan.steps if s.action != "ok"]
        assert changed == [("iam-policy", "SageMakerMlFlowAccessPolicy")]
        version, doc = pod_policy(moto)
        versions.append(version)
        assert allowed(doc, "s3:PutObject") is (uploads == "direct")
    assert versions == ["v1", "v2", "v3"]
    assert bootstrap.run(config(artifact_uploads="presigned")).writes == []
