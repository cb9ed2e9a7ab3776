"""The leader watches the ServiceAccounts it manages, on a real API server, as its own
ServiceAccount with the manifests' RBAC: one edited or deleted by hand is back within seconds,
long before a resync; one a person made keeps its own annotation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from testing.kube.controlplane import ControlPlane, eventually, replica
from testing.metrics import value
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, free_port

# Several minutes of a real control plane each on a busy machine, not the default two.
pytestmark = pytest.mark.timeout(300)

SA = "sagemaker-mlflow-sa"
ROLE = "eks.amazonaws.com/role-arn"
OTHER_ROLE = "arn:aws:iam::210987654321:role/someone-else"


@pytest.fixture(scope="module")
def leader(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    port = free_port()
    kubeconfig = control_plane.install(port)
    server = replica(
        control_plane,
        kubeconfig,
        tmp_path_factory.mktemp("certs"),
        port,
        "--tracking-uri",
        TRACKING_ARN,
        "--role-arn",
        ROLE_ARN,
        # A resync an hour away: what is put back here, the watch put back.
        "--resync-seconds",
        "3600",
    )
    server.wait_for_log("serving", timeout=30)
    server.wait_for_log("became leader", timeout=30)
    yield server
    server.stop()


def role_of(plane: ControlPlane, namespace: str) -> str | None:
    account = plane.get("serviceaccount", SA, namespace)
    if account is None:
        return None
    return str((account["metadata"].get("annotations") or {}).get(ROLE))


def test_edited_role_annotation_is_put_back(
    control_plane: ControlPlane, leader: WebhookProcess
) -> None:
    control_plane.label_namespace("edited")
    eventually(lambda: role_of(control_plane, "edited") == ROLE_ARN, what="the ServiceAccount")
    control_plane.kubectl(
        "annotate", "serviceaccount", SA, "-n", "edited", f"{ROLE}={OTHER_ROLE}", "--overwrite"
    )
    started = time.monotonic()
    eventually(lambda: role_of(control_plane, "edited") == ROLE_ARN, timeout=30, what="repair")
    assert time.monotonic() - started < 30
    entry = leader.wait_for_log("repaired a managed ServiceAccount")
    assert entry["namespace"] == "edited" and entry["did"] == "role annotation set"
    assert (
        value(leader, "mlflow_webhook_service_accounts_repaired_total", what="role-annotation") >= 1
    )


def test_deleted_account_is_recreated(control_plane: ControlPlane, leader: WebhookProcess) -> None:
    control_plane.label_namespace("deleted")
    eventually(lambda: role_of(control_plane, "deleted") == ROLE_ARN, what="the ServiceAccount")
    before = value(leader, "mlflow_webhook_service_accounts_repaired_total", what="recreated")
    control_plane.kubectl("delete", "serviceaccount", SA, "-n", "deleted")
    eventually(lambda: role_of(control_plane, "deleted") == ROLE_ARN, timeout=30, what="recreation")
    account = control_plane.get("serviceaccount", SA, "deleted")
    assert account is not None
    assert account["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlflow-webhook"
    eventually(
        lambda: (
            value(leader, "mlflow_webhook_service_accounts_repaired_total", what="recreated")
            > before
        ),
        what="the repaired counter",
    )
    leader.wait_for_entry(
        lambda e: (
            e.get("msg", "").startswith("repaired a managed ServiceAccount")
            and e.get("namespace") == "deleted"
        )
    )


def test_a_persons_account_keeps_its_annotation(
    control_plane: ControlPlane, leader: WebhookProcess
) -> None:
    control_plane.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "personal"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SA, "namespace": "personal", "annotations": {ROLE: OTHER_ROLE}},
        },
    )
    control_plane.label_namespace("personal")
    eventually(
        lambda: any(e.get("namespace") == "personal" for e in leader.logs),
        what="the reconciler to look at it",
    )
    control_plane.kubectl(
        "annotate", "serviceaccount", SA, "-n", "personal", f"{ROLE}={OTHER_ROLE}-2", "--overwrite"
    )
    time.sleep(3)
    assert role_of(control_plane, "personal") == f"{OTHER_ROLE}-2"
