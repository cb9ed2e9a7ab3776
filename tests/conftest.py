from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.kube.controlplane import ControlPlane, missing_reason
from testing.servers import WebhookProcess, start
from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.e2e import chain
from tests.e2e.front import Front


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """One real server over TLS with a generated CA, shared by a module's tests."""
    server = start(Path(tmp_path_factory.mktemp("certs")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    server = Moto()
    yield server
    server.stop()


@pytest.fixture
def aws(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Moto, SageMakerEmulator]]:
    """A fresh account: moto reset, a new emulator, an EKS cluster, and the SDK pointed at both."""
    moto.reset()
    emulator = SageMakerEmulator(account=ACCOUNT)
    emulator.start()
    env = {
        **moto.endpoints(),
        "AWS_ENDPOINT_URL_SAGEMAKER": emulator.url,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    moto.client("eks").create_cluster(
        name=CLUSTER,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
        resourcesVpcConfig={"subnetIds": []},
    )
    yield moto, emulator
    emulator.stop()


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    """A fresh real control plane for a module's tests; skipped, saying why, where none can run."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    plane = ControlPlane()
    plane.start()
    yield plane
    plane.stop()


# The end-to-end chain (tests/e2e/chain.py), once a module: moto with STS and IAM in front,
# a real `mlflow server`, and the SageMaker front-door emulator before it.
@pytest.fixture(scope="module")
def stack() -> Iterator[chain.Aws]:
    aws = chain.Aws.start()
    yield aws
    aws.stop()


@pytest.fixture(scope="module")
def mlflow(
    stack: chain.Aws, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[chain.MlflowServer]:
    server = chain.MlflowServer(tmp_path_factory.mktemp("mlflow"), stack.moto)
    yield server
    server.stop()


@pytest.fixture
def pods(stack: chain.Aws, control_plane: ControlPlane, front: Front, tmp_path: Path) -> chain.Pods:
    """Pods run through the chain, each test in its own folder."""
    return chain.Pods(stack, control_plane, front, tmp_path)


@pytest.fixture(scope="module")
def front(mlflow: chain.MlflowServer) -> Iterator[Front]:
    emulator = Front(mlflow.url)
    emulator.start()
    yield emulator
    emulator.stop()
