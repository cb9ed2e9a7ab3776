"""From an AdmissionReview to a metric in a real MLflow server, through the real SageMaker plugin.

The "container" is a process whose environment is only what the mutated Pod's container holds,
plus the test-only endpoint redirects documented in `tests.e2e.chain.redirects`. Its web
identity token comes from the real control plane's TokenRequest, and the STS in front of moto
verifies it as AWS does (`tests/aws/sts.py`); S3 enforces the pod role's policy
(`tests/aws/gate.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.kube.controlplane import ControlPlane
from testing.servers import WebhookProcess, start
from testing.support import kubeflow_worker_pod
from tests.aws.sagemaker import SageMakerEmulator
from tests.e2e import chain
from tests.e2e.front import Front
from webhook.aws import bootstrap
from webhook.aws.config import BootstrapConfig
from webhook.core import policies

pytestmark = pytest.mark.timeout(600)
SA = "sagemaker-mlflow-sa"


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, stack: chain.Aws) -> ControlPlane:
    """team-a with our ServiceAccount and another; STS trusts the cluster's issuer keys."""
    discovery = json.loads(
        control_plane.kubectl("get", "--raw", "/.well-known/openid-configuration").stdout
    )
    assert discovery["issuer"] == chain.ISSUER
    stack.sts.trust_keys(
        json.loads(control_plane.kubectl("get", "--raw", "/openid/v1/jwks").stdout)
    )
    accounts = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": n, "namespace": "team-a"},
        }
        for n in (SA, "other-sa")
    ]
    control_plane.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}, *accounts
    )
    return control_plane


def webhook_for(tmp: Path, tracking_uri: str, *flags: str) -> WebhookProcess:
    return start(tmp, "--self-signed", "--tracking-uri", tracking_uri, *flags)


@pytest.fixture(scope="module")
def irsa_webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = webhook_for(
        tmp_path_factory.mktemp("certs"),
        chain.SERVER_ARN,
        "--credentials",
        "irsa",
        "--role-arn",
        chain.ROLE_ARN,
    )
    yield server
    server.stop()


def injected(
    webhook: WebhookProcess, experiment: str, service_account: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    pod = kubeflow_worker_pod(experiment=experiment)
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    _, mutated = chain.admit(webhook, pod)
    return mutated, chain.container_env(mutated, "pytorch")


def test_tracking_server_arn_with_irsa(
    irsa_webhook: WebhookProcess,
    stack: chain.Aws,
    cluster: ControlPlane,
    mlflow: chain.MlflowServer,
    front: Front,
    tmp_path: Path,
) -> None:
    pod, env = injected(irsa_webhook, "llama")
    assert pod["spec"]["serviceAccountName"] == SA
    assert env["MLFLOW_TRACKING_URI"] == chain.SERVER_ARN
    assert env["AWS_REGION"] == chain.REGION
    assert env["MLFLOW_EXPERIMENT_NAME"] == "llama"
    chain.kubelet_token(cluster, pod, env, tmp_path)
    seen_before, verdicts_before = len(front.seen), len(stack.sts.verdicts)

    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN_ID=" in result.stdout

    # STS verified the control plane's token for our ServiceAccount before issuing anything.
    verdicts = stack.sts.verdicts[verdicts_before:]
    assert {(v.subject, tuple(v.audience), v.allowed) for v in verdicts} == {
        (f"system:serviceaccount:team-a:{SA}", ("sts.amazonaws.com",), True)
    }
    run = mlflow.run_in("llama")
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"foo": 1.0}
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"learning_rate": "0.001"}
    artifact_uri = run["info"]["artifact_uri"]
    assert artifact_uri.startswith(f"s3://{chain.BUCKET}/{chain.ARTIFACTS}")
    assert [k.rsplit("/", 1)[-1] for k in chain.s3_keys(stack.moto, artifact_uri)] == ["notes.txt"]
    # The artifact went through the IAM gate as the pod role, allowed by the pod policy.
    puts = [c for c in stack.gate.calls if c.action == "s3:PutObject"]
    assert puts and all(
        c.allowed and ":assumed-role/SM_MLFLOW_ACCESS_ROLE/" in c.caller for c in puts
    )
    # Every call reached MLflow signed for sagemaker-mlflow with the credentials STS issued for
    # the injected role from the injected web-identity token.
    calls = front.seen[seen_before:]
    assert calls
    assert {(c.service, c.region, c.arn, c.role_arn) for c in calls} == {
        ("sagemaker-mlflow", chain.REGION, chain.SERVER_ARN, chain.ROLE_ARN)
    }


@pytest.mark.parametrize(
    ("case", "override", "code"),
    [
        ("another ServiceAccount", {"service_account": "other-sa"}, "AccessDenied"),
        (
            "another audience",
            {"audience": "https://kubernetes.default.svc"},
            "InvalidIdentityToken",
        ),
    ],
)
def test_a_token_sts_must_refuse(
    irsa_webhook: WebhookProcess,
    stack: chain.Aws,
    cluster: ControlPlane,
    front: Front,
    tmp_path: Path,
    case: str,
    override: dict[str, str],
    code: str,
) -> None:
    """A real token from the control plane, but not one the role trusts: no credentials, so
    the training process fails and MLflow sees nothing."""
    pod, env = injected(irsa_webhook, "refused")
    chain.kubelet_token(cluster, pod, env, tmp_path, **override)
    seen_before, verdicts_before = len(front.seen), len(stack.sts.verdicts)
    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode != 0, case
    assert code in result.stderr
    assert [v.code for v in stack.sts.verdicts[verdicts_before:]] == [code]
    assert len(front.seen) == seen_before


def test_a_pod_with_another_service_account_gets_no_credentials(
    irsa_webhook: WebhookProcess,
    stack: chain.Aws,
    cluster: ControlPlane,
    front: Front,
    tmp_path: Path,
) -> None:
    """The Pod names its own ServiceAccount: the webhook keeps it (and warns), the kubelet's
    token is that account's, and the role's trust refuses it."""
    pod, env = injected(irsa_webhook, "other-sa", service_account="other-sa")
    assert pod["spec"]["serviceAccountName"] == "other-sa"
    chain.kubelet_token(cluster, pod, env, tmp_path)
    verdicts_before = len(stack.sts.verdicts)
    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert "Not authorized to perform sts:AssumeRoleWithWebIdentity" in result.stderr
    [verdict] = stack.sts.verdicts[verdicts_before:]
    assert (verdict.allowed, verdict.code) == (False, "AccessDenied")


def test_artifacts_outside_the_pod_prefix_are_denied(
    irsa_webhook: WebhookProcess,
    stack: chain.Aws,
    cluster: ControlPlane,
    mlflow: chain.MlflowServer,
    front: Front,
    tmp_path: Path,
) -> None:
    """An experiment whose artifacts live outside the pod policy's prefix: the run is logged,
    the artifact upload is refused by S3 as the pod role, and nothing lands there."""
    mlflow.api(
        "/api/2.0/mlflow/experiments/create",
        {"name": "elsewhere", "artifact_location": f"s3://{chain.BUCKET}/elsewhere"},
    )
    pod, env = injected(irsa_webhook, "elsewhere")
    chain.kubelet_token(cluster, pod, env, tmp_path)
    calls_before = len(stack.gate.calls)
    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr
    denied = [c for c in stack.gate.calls[calls_before:] if not c.allowed]
    assert denied and {c.action for c in denied} == {"s3:PutObject"}
    assert all(c.resource.startswith(f"arn:aws:s3:::{chain.BUCKET}/elsewhere/") for c in denied)
    assert chain.s3_keys(stack.moto, f"s3://{chain.BUCKET}/elsewhere") == []


def test_without_injected_credentials_fails_clearly(
    irsa_webhook: WebhookProcess, stack: chain.Aws, front: Front, tmp_path: Path
) -> None:
    _, env = injected(irsa_webhook, "no-credentials")
    del env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    seen_before = len(front.seen)
    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert "Unable to locate credentials" in result.stderr
    assert len(front.seen) == seen_before


def test_credentials_sts_never_issued_are_rejected(
    irsa_webhook: WebhookProcess, stack: chain.Aws, front: Front, tmp_path: Path
) -> None:
    """The front-door emulator really checks signatures: static keys of nobody's get a 403."""
    _, env = injected(irsa_webhook, "forged")
    del env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    env |= {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
    }
    rejected_before = len(front.rejected)
    result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert front.rejected[rejected_before:]
    assert "security token included in the request is invalid" in front.rejected[-1]


def bootstrapped_app(stack: chain.Aws, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ARN of the App `bootstrap --kind app` creates, against moto and the SageMaker
    emulator; the pod role is provisioned already, so only the server side is asked for."""
    emulator = SageMakerEmulator(account=chain.ACCOUNT)
    emulator.start()
    endpoints = {f"AWS_ENDPOINT_URL_{s}": stack.moto.url for s in ("IAM", "STS", "S3", "EKS")}
    env = {
        **endpoints,
        "AWS_ENDPOINT_URL_SAGEMAKER": emulator.url,
        "AWS_REGION": chain.REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        config = BootstrapConfig(
            kind="app",
            artifact_store_uri=f"s3://{chain.BUCKET}/mlflow",
            credentials="none",
            wait=True,
        )
        plan = bootstrap.run(config, sleep=lambda _: None)
    finally:
        emulator.stop()
    assert plan.tracking_status == "Created"
    return plan.tracking_arn


def test_mlflow_app_arn_created_by_the_bootstrap(
    stack: chain.Aws,
    cluster: ControlPlane,
    mlflow: chain.MlflowServer,
    front: Front,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real sagemaker-mlflow plugin resolves an App's ARN, made by the bootstrap, signs for
    `sagemaker` and names the App in its own header, with the credentials the webhook injected."""
    app_arn = bootstrapped_app(stack, monkeypatch)
    assert app_arn.startswith(f"arn:aws:sagemaker:{chain.REGION}:{chain.ACCOUNT}:mlflow-app/app-")
    webhook = webhook_for(tmp_path / "certs", app_arn, "--role-arn", chain.ROLE_ARN)
    try:
        pod, env = injected(webhook, "llama-app")
    finally:
        webhook.stop()
    assert env["MLFLOW_TRACKING_URI"] == app_arn
    chain.kubelet_token(cluster, pod, env, tmp_path)
    seen_before = len(front.seen)
    # The Pods' access to the App as a bootstrap given its ARN makes it (this one made the App
    # alone, --credentials none): the front door authorizes every call against it.
    iam = stack.moto.client("iam")
    access = policies.pod_access("aws", app_arn, chain.BUCKET, chain.ARTIFACTS)
    iam.put_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="app", PolicyDocument=json.dumps(access)
    )
    try:
        result = chain.run_training(chain.redirects(env, stack, front, tmp_path), tmp_path)
    finally:
        iam.delete_role_policy(RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="app")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {m["key"] for m in mlflow.run_in("llama-app")["data"]["metrics"]} == {"foo"}
    app_calls = [c for c in front.calls if c.resource == app_arn]
    assert app_calls and {(c.action, c.allowed) for c in app_calls} == {
        ("sagemaker:CallMlflowAppApi", True)
    }
    seen = front.seen[seen_before:]
    assert {(c.service, c.arn) for c in seen} == {("sagemaker", app_arn)}
    assert {c.role_arn for c in seen} == {chain.ROLE_ARN}


def test_self_hosted_mlflow_url(stack: chain.Aws, tmp_path: Path) -> None:
    server = chain.MlflowServer(tmp_path / "mlflow", stack.moto, mode="self-hosted")
    webhook = webhook_for(tmp_path / "certs", server.url, "--credentials", "none")
    try:
        pod, env = injected(webhook, "self-hosted")
        assert not [name for name in env if name.startswith("AWS_")]
        assert "volumes" not in pod["spec"] or all(
            v["name"] != "aws-iam-token" for v in pod["spec"]["volumes"]
        )
        result = chain.run_training(env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        run = server.run_in("self-hosted")
        assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"foo": 1.0}
        listed = server.api(f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
        assert [f["path"] for f in listed["files"]] == ["notes.txt"]
    finally:
        webhook.stop()
        server.stop()
