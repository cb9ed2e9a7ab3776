"""`410 Gone` at a chosen moment, against the API server emulator (`testing/kube/apiserver.py`).

Everything else about the cluster side runs on the real control plane (`tests/test_cluster.py`).
A real API server answers 410 only once the version a watch resumes from has left its watch
cache, which keeps at least 75 s of history, so it cannot be made to on demand: the emulator
compacts its history when told to, and the watch it then resumes is answered 410.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.kube.apiserver import ApiServerEmulator
from testing.kube.controlplane import eventually
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN

LABEL = {"mlflow-webhook.io/inject": "enabled"}
SA = "sagemaker-mlflow-sa"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServerEmulator]:
    emulator = ApiServerEmulator(tmp_path / "apiserver")
    emulator.start()
    emulator.put("namespaces", {"metadata": {"name": "mlflow-webhook"}})
    emulator.put("mutatingwebhookconfigurations", {"metadata": {"name": "mlflow-webhook"}})
    yield emulator
    emulator.stop()


def test_a_410_lists_again(api: ApiServerEmulator, tmp_path: Path) -> None:
    api.put("namespaces", {"metadata": {"name": "gone-a", "labels": LABEL}})
    server = WebhookProcess(
        tmp_path / "certs",
        "--self-signed",
        "--tracking-uri",
        TRACKING_ARN,
        "--role-arn",
        ROLE_ARN,
        "--kubeconfig",
        str(api.kubeconfig()),
        "--namespace",
        "mlflow-webhook",
        "--no-leader-election",
    )
    try:
        server.wait_for_log("serving", timeout=60)
        eventually(lambda: api.get("serviceaccounts", "gone-a", SA), 15, "gone-a's account")
        # History compacted while the watch is down: the resumed watch gets 410, then a list.
        api.compact()
        api.drop_watches()
        api.put("namespaces", {"metadata": {"name": "gone-b", "labels": LABEL}})
        eventually(lambda: api.get("serviceaccounts", "gone-b", SA), 15, "an account after a 410")
        server.wait_for_log("watch expired (410 Gone)")
    finally:
        server.stop()
