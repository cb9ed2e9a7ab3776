"""The webhook installed from `manifests/` on a real API server, running as its own
ServiceAccount: the API server itself calls it for a Pod CREATE."""

from __future__ import annotations

from pathlib import Path

from testing.kube.controlplane import ControlPlane, eventually, replica
from testing.support import ROLE_ARN, TRACKING_ARN, free_port

SA = "sagemaker-mlflow-sa"


def test_api_server_calls_the_installed_webhook(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    port = free_port()
    kubeconfig = control_plane.install(port)
    server = replica(
        control_plane,
        kubeconfig,
        tmp_path / "certs",
        port,
        "--tracking-uri",
        TRACKING_ARN,
        "--role-arn",
        ROLE_ARN,
    )
    try:
        server.wait_for_log("serving")
        control_plane.label_namespace("team-a")
        eventually(
            lambda: control_plane.get("serviceaccount", SA, "team-a"), what="the ServiceAccount"
        )
        eventually(
            lambda: control_plane.get("mutatingwebhookconfiguration", "mlflow-webhook")["webhooks"][
                0
            ]["clientConfig"].get("caBundle"),
            what="the caBundle",
        )
        control_plane.kubectl(
            "run",
            "trainer",
            "-n",
            "team-a",
            "--image",
            "python:3.12",
            "--annotations",
            "mlflow-webhook.io/inject=true",
        )
        pod = control_plane.get("pod", "trainer", "team-a")
        assert pod is not None
        assert pod["spec"]["serviceAccountName"] == SA
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == TRACKING_ARN
        assert env["AWS_ROLE_ARN"] == ROLE_ARN
    finally:
        server.stop()
