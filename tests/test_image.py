"""The image built from the Dockerfile, run as the Deployment in `manifests/` runs it (read-only
root, no capabilities, its tmpfs volumes, its memory limit, its ConfigMaps), in-cluster against
a real API server: it becomes ready, patches the caBundle, keeps the ServiceAccount in a labelled
namespace, and the API server's Pods come back injected. Built by `.ci/build-image`, which
`.ci/run` runs first; elsewhere these skip, saying why, when there is no image or no daemon."""

from __future__ import annotations

import base64
import re
import ssl
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.image import (
    IMAGE,
    REQUIRED,
    ROOT,
    SERVICE_ACCOUNT_DIR,
    Container,
    Deployment,
    answers,
    docker,
    missing_reason,
    service_account_files,
)
from testing.kube.controlplane import NAMESPACE, WEBHOOK_SA, ControlPlane, eventually
from testing.kube.settings import GIVEN, filled_copy, kustomize
from testing.support import ROLE_ARN, TRACKING_ARN, free_port
from webhook import __version__

SA = "sagemaker-mlflow-sa"
CERT_VOLUME = "certs"


@pytest.fixture(scope="module")
def image() -> str:
    reason = missing_reason()
    if reason and REQUIRED:
        pytest.fail(f"MLFLOW_WEBHOOK_IMAGE is set, so this must run: {reason}")
    if reason:
        pytest.skip(reason)
    return IMAGE


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    """The manifests as a user fills them in (settings.env from the example, test ARNs)."""
    return Deployment(kustomize(filled_copy(tmp_path, GIVEN)))


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test starts; each removed afterwards, whatever the outcome."""
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def start(containers: list[Container], args: list[str]) -> Container:
    container = Container(args)
    containers.append(container)
    return container


def name() -> str:
    return f"mlflow-webhook-test-{uuid.uuid4().hex[:8]}"


@pytest.mark.timeout(300)
def test_the_deployments_container_serves_a_real_api_server(
    image: str,
    control_plane: ControlPlane,
    deployment: Deployment,
    containers: list[Container],
    tmp_path: Path,
) -> None:
    port = free_port()
    control_plane.install(port)
    api_port = urllib.parse.urlsplit(control_plane.url).port
    account = service_account_files(
        tmp_path / "serviceaccount",
        control_plane.token(WEBHOOK_SA, NAMESPACE),
        control_plane.ca.read_bytes(),
        NAMESPACE,
    )
    assert deployment.namespace == NAMESPACE
    env = deployment.environment()
    assert env["MLFLOW_WEBHOOK_TRACKING_URI"] == TRACKING_ARN  # the generated ConfigMap
    assert env["MLFLOW_WEBHOOK_CERT_DIR"] == "/var/run/mlflow-webhook/certs"  # the base one

    started = time.monotonic()
    container = start(
        containers,
        deployment.run_args(name(), port, service_account=account, api_server_port=api_port),
    )
    readiness = deployment.probe()
    try:
        eventually(
            lambda: answers(port, readiness["path"]) == 200, timeout=90, what="the readiness probe"
        )
        ready_after = time.monotonic() - started

        # The caBundle: the API server trusts the webhook's serving certificate through it,
        # for the address it calls.
        def bundle() -> str | None:
            config = control_plane.get("mutatingwebhookconfiguration", "mlflow-webhook")
            assert config is not None
            value: str | None = config["webhooks"][0]["clientConfig"].get("caBundle")
            return value

        ca = base64.b64decode(eventually(bundle, timeout=60, what="the caBundle"))
        trusting = ssl.create_default_context(cadata=ca.decode())
        assert answers(port, "/healthz", trusting) == 200

        # The ServiceAccount, in a namespace labelled after the webhook started.
        control_plane.label_namespace("team-a")
        account_made: dict[str, Any] = eventually(
            lambda: control_plane.get("serviceaccount", SA, "team-a"),
            timeout=60,
            what="the ServiceAccount",
        )
        metadata = account_made["metadata"]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "mlflow-webhook"
        assert metadata["annotations"]["eks.amazonaws.com/role-arn"] == ROLE_ARN

        # A Pod created through the API server, which calls the container to admit it.
        opt_in = "--annotations=mlflow-webhook.io/inject=true"
        control_plane.kubectl("run", "trainer", "--namespace=team-a", "--image=python:3.12", opt_in)
        pod = control_plane.get("pod", "trainer", "team-a") or {}
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        injected = (
            pod["spec"]["serviceAccountName"],
            env["MLFLOW_TRACKING_URI"],
            env["AWS_ROLE_ARN"],
        )
        assert injected == (SA, TRACKING_ARN, ROLE_ARN)
        assert "mlflow-webhook.io/status" in pod["metadata"]["annotations"]
        decision = eventually(
            lambda: [e for e in container.entries() if e.get("pod") == "trainer"],
            timeout=10,
            what="the decision log line",
        )
        assert decision[0]["outcome"] == "injected", decision

        # SIGTERM, as the kubelet stops it: the requests in flight finish and it exits 0.
        docker("stop", container.id, timeout=60)
        assert container.state()["ExitCode"] == 0
    except BaseException:
        print(container.logs())
        raise
    print(f"{image}: ready {ready_after:.2f} s after docker run")


@pytest.mark.timeout(120)
def test_a_root_filesystem_without_the_cert_volume_says_it_cannot_write(
    image: str, deployment: Deployment, containers: list[Container]
) -> None:
    """The Deployment's container without its certificate emptyDir: the read-only root says so."""
    cert_dir = deployment.environment()["MLFLOW_WEBHOOK_CERT_DIR"]
    args = deployment.run_args(
        name(),
        free_port(),
        leave_out=frozenset({CERT_VOLUME}),
        env={"MLFLOW_WEBHOOK_NO_KUBE": "true"},  # outside a Pod, as the quick start
    )
    assert ends_with(start(containers, args)) == (
        f"cannot write to the certificate folder {cert_dir}: Read-only file system"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("token_mode", "says"),
    [
        (
            0o600,
            f"cannot read the ServiceAccount token {SERVICE_ACCOUNT_DIR}/token: Permission denied",
        ),
        (0o644, "cannot reach the API server at https://127.0.0.1:{port}: Connection refused"),
    ],
    ids=["token-unreadable", "api-server-unreachable"],
)
def test_in_cluster_configuration_that_cannot_work_says_why(
    image: str,
    deployment: Deployment,
    containers: list[Container],
    tmp_path: Path,
    token_mode: int,
    says: str,
) -> None:
    account = service_account_files(tmp_path / "sa", "token", b"ca", NAMESPACE)
    # 0600: the test's own user's file, which the container's user may not read.
    (account / "token").chmod(token_mode)
    nobody = free_port()
    args = deployment.run_args(name(), free_port(), service_account=account, api_server_port=nobody)
    assert ends_with(start(containers, args)) == says.format(port=nobody)


def test_the_image_keeps_the_aws_models_the_code_calls(image: str) -> None:
    """The Dockerfile keeps botocore's models of some services only: every one the code calls,
    and STS, which the SDK's web-identity credentials call."""
    code = "\n".join(p.read_text() for p in (ROOT / "webhook").rglob("*.py"))
    available = docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        image,
        "-c",
        "import botocore.session; print(*botocore.session.get_session().get_available_services())",
    ).stdout.split()
    import botocore.session

    known = set(botocore.session.get_session().get_available_services())
    called = {s for s in re.findall(r"clients\.(\w+)\b", code) if s in known}
    called |= set(re.findall(r"\.client\(\s*['\"]([\w-]+)['\"]", code))
    assert called, "no AWS service found in the code: the pattern above is stale"
    assert called | {"sts"} <= set(available), sorted(called | {"sts"} - set(available))


def ends_with(container: Container) -> str:
    """The one line the container exits 2 with, without its prefix."""
    assert container.wait() == 2, container.logs()
    lines = [line for line in container.logs().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mlflow-webhook: error: "), lines[0]
    return lines[0].removeprefix("mlflow-webhook: error: ")


def test_the_image_runs_any_command(image: str) -> None:
    """The entrypoint is the command line and serve only its default: --version, inject."""
    done = docker("run", "--rm", image, "--version")
    assert done.stdout == f"mlflow-webhook {__version__}\n"
    pod = "kind: Pod\nmetadata: {name: p, annotations: {mlflow-webhook.io/inject: 'true'}}\n"
    pod += "spec: {containers: [{name: c, image: i}]}\n"
    done = subprocess.run(
        ["docker", "run", "--rm", "-i", image, "inject", "-f", "-", "--tracking-uri", "http://m"],
        input=pod,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "MLFLOW_TRACKING_URI" in done.stdout
    assert done.stderr.endswith("injected 1 of 1 Pod templates\n")


def test_the_image_doc_states_the_size_build_image_measures(image: str) -> None:
    """docs/image.md's figure, within 10% of the image built here (`.ci/build-image` prints it
    the same way: bytes / 1e6)."""
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6
    doc = " ".join((ROOT / "docs" / "image.md").read_text().split())
    found = re.search(r"Built by `\.ci/build-image` it is \*\*(\d+) MB\*\*", doc)
    assert found, "docs/image.md's image size"
    stated = int(found[1])
    assert abs(size - stated) <= 0.10 * stated, (
        f"docs/image.md says {stated} MB, the image is {size:.0f} MB"
    )
