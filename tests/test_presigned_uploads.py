"""End to end with --artifact-uploads presigned: the Pods' role may not write to S3 at all, and
`mlflow.log_artifact` still lands the object, through a URL the tracking server presigned. The
same call with direct uploads under the same policy fails, so the check can fail.

The chain is tests/test_end_to_end.py's: a real control plane's token, STS verifying it, the
IAM gate enforcing the pod role's policy in front of moto's S3, the front-door emulator before a
real `mlflow server`, and the real sagemaker-mlflow plugin in the "container".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.servers import WebhookProcess
from tests.e2e import chain
from tests.test_end_to_end import cluster, webhook_for  # noqa: F401 - a fixture
from webhook.core import policies

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("cluster")]
UPLOAD_URL = "/api/2.0/mlflow/artifacts/presigned-upload-url"
POD_ROLE = ":assumed-role/SM_MLFLOW_ACCESS_ROLE/"


@pytest.fixture(scope="module", autouse=True)
def read_only_pod_policy(stack: chain.Aws) -> None:
    """The pod role's policy as `bootstrap --artifact-uploads presigned` makes it."""
    doc = policies.pod_access("aws", chain.SERVER_ARN, chain.BUCKET, chain.ARTIFACTS, "presigned")
    stack.moto.client("iam").put_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="pod", PolicyDocument=json.dumps(doc)
    )


def irsa_webhook(tmp: Path, *flags: str) -> WebhookProcess:
    return webhook_for(
        tmp, chain.SERVER_ARN, "--credentials", "irsa", "--role-arn", chain.ROLE_ARN, *flags
    )


@pytest.fixture(scope="module")
def presigned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = irsa_webhook(tmp_path_factory.mktemp("certs"), "--artifact-uploads", "presigned")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = irsa_webhook(tmp_path_factory.mktemp("certs"))
    yield server
    server.stop()


def test_presigned_uploads_land_without_s3_write(
    presigned: WebhookProcess, pods: chain.Pods, stack: chain.Aws, mlflow: chain.MlflowServer
) -> None:
    ran = pods.train(presigned, "presigned")
    assert ran.env["SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED"] == "true"
    assert ran.result.returncode == 0, ran.result.stderr[-3000:]

    artifact_uri = mlflow.run_in("presigned")["info"]["artifact_uri"]
    keys = chain.s3_keys(stack.moto, artifact_uri)
    assert [k.rsplit("/", 1)[-1] for k in keys] == ["notes.txt"]
    body = stack.moto.client("s3").get_object(Bucket=chain.BUCKET, Key=keys[0])["Body"].read()
    assert body == b"trained by a Pod the webhook wired up\n"
    # The pod role wrote nothing to S3 itself: it asked the tracking server, as itself, for the
    # upload URL, and S3 took the PUT on the server's signature.
    assert [c for c in ran.calls if c.action == "s3:PutObject"] == []
    asked = [s for s in ran.seen if s.path == UPLOAD_URL]
    assert [(s.method, s.role_arn) for s in asked] == [("POST", chain.ROLE_ARN)]


def test_direct_uploads_under_the_same_policy_are_denied(
    direct: WebhookProcess, pods: chain.Pods, stack: chain.Aws, mlflow: chain.MlflowServer
) -> None:
    ran = pods.train(direct, "direct")
    assert "SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED" not in ran.env
    assert ran.result.returncode != 0
    assert "AccessDenied" in ran.result.stderr
    denied = [c for c in ran.calls if not c.allowed]
    assert denied and {c.action for c in denied} == {"s3:PutObject"}
    assert all(POD_ROLE in c.caller for c in denied)
    artifact_uri = mlflow.run_in("direct")["info"]["artifact_uri"]
    assert chain.s3_keys(stack.moto, artifact_uri) == []


def test_what_presigned_uploads_carry(presigned: WebhookProcess, pods: chain.Pods) -> None:
    ran = pods.train(presigned, "kinds", Path(chain.__file__).with_name("kinds.py"))
    assert ran.result.returncode == 0, ran.result.stderr[-3000:]
    kinds = ("text", "dict", "model", "trace")
    outcomes = {
        kind: rest
        for kind, _, rest in (line.partition("=") for line in ran.result.stdout.splitlines())
        if kind in kinds
    }
    # A run's own artifacts go by presigned URL; traces go to the tracking server's API.
    assert {k: outcomes[k] for k in ("text", "dict", "trace")} == dict.fromkeys(
        ("text", "dict", "trace"), "ok"
    )
    # A logged model's artifacts live under models/<model id>/artifacts: the plugin sends the
    # model's id as `run_id`, the server finds no such run, and there is no fallback to S3.
    assert outcomes["model"] == "failed: Exception: Presigned upload URL request failed (HTTP 404)"
