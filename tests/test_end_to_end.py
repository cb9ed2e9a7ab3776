"""From an AdmissionReview to a metric in a real MLflow server, through the real SageMaker plugin.

The "container" is a process whose environment is only what the mutated Pod's container holds,
plus the test-only endpoint redirects documented in `tests.e2e.chain.redirects`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import chain
from tests.e2e.front import Front
from tests.servers import WebhookProcess, start
from tests.support import kubeflow_worker_pod

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def moto() -> Iterator[chain.Moto]:
    server = chain.Moto()
    chain.provision(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow(
    moto: chain.Moto, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[chain.MlflowServer]:
    server = chain.MlflowServer(tmp_path_factory.mktemp("mlflow"), moto)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(mlflow: chain.MlflowServer) -> Iterator[Front]:
    emulator = Front(mlflow.url)
    emulator.start()
    yield emulator
    emulator.stop()


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
    webhook: WebhookProcess, experiment: str, root: Path
) -> tuple[dict[str, object], dict[str, str]]:
    _, pod = chain.admit(webhook, kubeflow_worker_pod(experiment=experiment))
    env = chain.container_env(pod, "pytorch")
    if "AWS_WEB_IDENTITY_TOKEN_FILE" in env:
        chain.write_token(root, pod)
    return pod, env


def test_tracking_server_arn_with_irsa(
    irsa_webhook: WebhookProcess,
    moto: chain.Moto,
    mlflow: chain.MlflowServer,
    front: Front,
    tmp_path: Path,
) -> None:
    pod, env = injected(irsa_webhook, "llama", tmp_path)
    assert pod["spec"]["serviceAccountName"] == "sagemaker-mlflow-sa"
    assert env["MLFLOW_TRACKING_URI"] == chain.SERVER_ARN
    assert env["AWS_REGION"] == chain.REGION
    assert env["MLFLOW_EXPERIMENT_NAME"] == "llama"
    seen_before = len(front.seen)

    result = chain.run_training(chain.redirects(env, moto, front, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN_ID=" in result.stdout

    run = mlflow.run_in("llama")
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"foo": 1.0}
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"learning_rate": "0.001"}
    artifact_uri = run["info"]["artifact_uri"]
    assert artifact_uri.startswith(f"s3://{chain.BUCKET}/")
    assert [k.rsplit("/", 1)[-1] for k in chain.s3_keys(moto, artifact_uri)] == ["notes.txt"]
    # Every call reached MLflow signed for sagemaker-mlflow with the credentials STS issued for
    # the injected role from the injected web-identity token.
    calls = front.seen[seen_before:]
    assert calls
    assert {(c.service, c.region, c.arn, c.role_arn) for c in calls} == {
        ("sagemaker-mlflow", chain.REGION, chain.SERVER_ARN, chain.ROLE_ARN)
    }


def test_without_injected_credentials_fails_clearly(
    irsa_webhook: WebhookProcess, moto: chain.Moto, front: Front, tmp_path: Path
) -> None:
    _, env = injected(irsa_webhook, "no-credentials", tmp_path)
    del env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    seen_before = len(front.seen)
    result = chain.run_training(chain.redirects(env, moto, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert "Unable to locate credentials" in result.stderr
    assert len(front.seen) == seen_before


def test_credentials_sts_never_issued_are_rejected(
    irsa_webhook: WebhookProcess, moto: chain.Moto, front: Front, tmp_path: Path
) -> None:
    """The front-door emulator really checks signatures: static keys of nobody's get a 403."""
    _, env = injected(irsa_webhook, "forged", tmp_path)
    del env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    env |= {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
    }
    rejected_before = len(front.rejected)
    result = chain.run_training(chain.redirects(env, moto, front, tmp_path), tmp_path)
    assert result.returncode != 0
    assert front.rejected[rejected_before:]
    assert "security token included in the request is invalid" in front.rejected[-1]


def test_mlflow_app_arn(
    moto: chain.Moto, mlflow: chain.MlflowServer, front: Front, tmp_path: Path
) -> None:
    webhook = webhook_for(tmp_path / "certs", chain.APP_ARN, "--role-arn", chain.ROLE_ARN)
    try:
        _, env = injected(webhook, "llama-app", tmp_path)
    finally:
        webhook.stop()
    assert env["MLFLOW_TRACKING_URI"] == chain.APP_ARN
    seen_before = len(front.seen)
    result = chain.run_training(chain.redirects(env, moto, front, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {m["key"] for m in mlflow.run_in("llama-app")["data"]["metrics"]} == {"foo"}
    assert {(c.service, c.arn) for c in front.seen[seen_before:]} == {("sagemaker", chain.APP_ARN)}


def test_self_hosted_mlflow_url(moto: chain.Moto, tmp_path: Path) -> None:
    server = chain.MlflowServer(tmp_path / "mlflow", moto, mode="self-hosted")
    webhook = webhook_for(tmp_path / "certs", server.url, "--credentials", "none")
    try:
        pod, env = injected(webhook, "self-hosted", tmp_path)
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
