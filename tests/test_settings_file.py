"""The manifests cannot run with example values: an unedited checkout does not render, every
overlay rendered from a filled settings.env carries no example value, and a settings.env copied
but not filled in renders into a webhook that refuses to start."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.kube.settings import BOOTSTRAP, GIVEN, ROOT, filled_copy, git_view, kustomize
from testing.servers import WebhookProcess
from tests.aws.moto import Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_lifecycle import cli

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders kustomize")

# Every folder kubectl can apply: kustomizations, not the components they include.
OVERLAYS = sorted(
    str(p.parent.relative_to(ROOT / "manifests"))
    for p in (ROOT / "manifests").glob("**/kustomization.yaml")
    if yaml.safe_load(p.read_text()).get("kind", "Kustomization") == "Kustomization"
)
# Values from documentation and examples that must never reach a running webhook.
EXAMPLES = re.compile(r"111122223333|123456789012|REPLACE-ME|example\.com|EXAMPLE", re.IGNORECASE)


def webhook_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the webhook container gets from its ConfigMaps, as the kubelet builds it."""
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update(maps[source["configMapRef"]["name"]])
    return env


def test_an_unedited_checkout_does_not_render(tmp_path: Path) -> None:
    """settings.env stays out of git, so a fresh clone cannot apply an example value."""
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "manifests/base/settings.env"], check=False
    )
    assert ignored.returncode in (0, 128), "keep manifests/base/settings.env in .gitignore"
    manifests = git_view(tmp_path)
    assert not (manifests / "base" / "settings.env").exists(), "keep it out of git"
    for overlay in OVERLAYS:
        done = subprocess.run(
            ["kubectl", "kustomize", str(manifests / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, overlay
        assert "settings.env" in done.stderr, (overlay, done.stderr)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_example_value_reaches_the_webhook(overlay: str, tmp_path: Path) -> None:
    values = BOOTSTRAP if "irsa" in overlay else GIVEN
    docs = kustomize(filled_copy(tmp_path, values) / overlay)
    text = yaml.safe_dump_all(docs)
    assert not EXAMPLES.search(text), EXAMPLES.findall(text)
    env = webhook_env(docs)
    for key, value in values.items():
        if key.startswith("MLFLOW_WEBHOOK_"):
            assert env[key] == value
    # The image is named once, in base/kustomization.yaml's `images:`, and every overlay has it.
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "mlflow-webhook:0.1.0"
    )


def test_the_irsa_overlay_carries_every_bootstrap_input(tmp_path: Path) -> None:
    docs = kustomize(filled_copy(tmp_path, BOOTSTRAP) / "overlays" / "irsa")
    env = webhook_env(docs)
    assert "MLFLOW_WEBHOOK_TRACKING_URI" not in env  # so serve runs the bootstrap
    for key in ("REGION", "CLUSTER_NAME", "ARTIFACT_STORE_URI", "TRUST_NAMESPACES"):
        assert env[f"MLFLOW_WEBHOOK_{key}"] == BOOTSTRAP[f"MLFLOW_WEBHOOK_{key}"]
    [account] = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "mlflow-webhook"
    ]
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == BOOTSTRAP["WEBHOOK_IAM_ROLE_ARN"]


def test_the_irsa_overlay_without_the_webhooks_role_does_not_render(tmp_path: Path) -> None:
    folder = filled_copy(
        tmp_path, {k: v for k, v in BOOTSTRAP.items() if k != "WEBHOOK_IAM_ROLE_ARN"}
    )
    done = subprocess.run(
        ["kubectl", "kustomize", str(folder / "overlays" / "irsa")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "WEBHOOK_IAM_ROLE_ARN" in done.stderr


def test_a_copied_but_unfilled_settings_file_stops_serve(tmp_path: Path) -> None:
    folder = git_view(tmp_path)
    shutil.copy(folder / "base" / "settings.env.example", folder / "base" / "settings.env")
    env = webhook_env(kustomize(folder))
    env["MLFLOW_WEBHOOK_CERT_DIR"] = str(tmp_path / "certs")
    result = cli("serve", "--no-kube", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "REPLACE-ME" in result.stderr and "settings.env" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--tracking-uri", "arn:aws:sagemaker:us-west-2:111122223333:mlflow-tracking-server/x"],
            "AWS's documentation example",
        ),
        (
            [
                "--tracking-uri",
                "arn:aws:sagemaker:us-west-2:210987654321:mlflow-tracking-server/x",
                "--role-arn",
                "arn:aws:iam::111122223333:role/SM_MLFLOW_ACCESS_ROLE",
            ],
            "--role-arn 'arn:aws:iam::111122223333:role/SM_MLFLOW_ACCESS_ROLE' is in account",
        ),
    ],
)
def test_serve_refuses_the_documentation_account(args: list[str], says: str) -> None:
    result = cli("serve", "--no-kube", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


def test_the_irsa_overlay_bootstraps_with_what_it_renders(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Path
) -> None:
    """serve with exactly the environment the irsa overlay gives its Pod (AWS reached through
    the fixture's endpoints) makes everything and starts serving with it."""
    env = webhook_env(kustomize(filled_copy(tmp_path, BOOTSTRAP) / "overlays" / "irsa"))
    moto, emulator = aws
    # The fixture's cluster is "ml", the settings' cluster name; the account is moto's own.
    server = WebhookProcess(tmp_path / "certs", "--no-kube", env=env)
    try:
        serving = server.wait_for_log("serving", timeout=90)
        assert (
            serving["tracking_uri"]
            == emulator.servers["mlflow-tracking"].record["TrackingServerArn"]
        )
        assert moto.client("iam").get_role(RoleName="SM_MLFLOW_ACCESS_ROLE")
    finally:
        server.stop()


def test_part_c_a_self_hosted_mlflow_needs_no_aws(tmp_path: Path) -> None:
    """Part C as the example says it: A's URL an http one, the role deleted, credentials none;
    serve starts with what the base renders, and no AWS anywhere."""
    url = "http://mlflow.mlflow.svc.cluster.local:5000"
    folder = filled_copy(tmp_path, {"MLFLOW_WEBHOOK_TRACKING_URI": url})
    settings = folder / "base" / "settings.env"
    text = settings.read_text()
    assert "MLFLOW_WEBHOOK_ROLE_ARN" not in text.replace("delete MLFLOW_WEBHOOK_ROLE_ARN", "")
    settings.write_text(
        text.replace("MLFLOW_WEBHOOK_CREDENTIALS=irsa", "MLFLOW_WEBHOOK_CREDENTIALS=none")
    )
    env = webhook_env(kustomize(folder))
    assert env["MLFLOW_WEBHOOK_CREDENTIALS"] == "none"
    no_aws = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    server = WebhookProcess(tmp_path / "certs", "--no-kube", env={**env, **no_aws})
    try:
        serving = server.wait_for_log("serving", timeout=60)
        assert serving["tracking_uri"] == url
    finally:
        server.stop()


def test_serve_refuses_an_example_role_of_its_own(tmp_path: Path) -> None:
    """In a Pod the EKS webhook sets AWS_ROLE_ARN from the irsa overlay's WEBHOOK_IAM_ROLE_ARN."""
    env = {
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/mlflow-webhook-bootstrap",
        "AWS_REGION": "us-west-2",
    }
    result = cli("serve", "--no-kube", "--cluster-name", "ml", "--trust-namespaces", "a", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "AWS_ROLE_ARN 'arn:aws:iam::111122223333:role/mlflow-webhook-bootstrap'" in result.stderr
