"""docs/install.md, "Installing it in a cluster", followed as written against a real API server.

Every shell block marked `<!-- install-test: NAME -->` runs line by line, as a person would run
it, from a copy of the checkout, with kubectl pointed at the cluster. Two things stand in for
what this cluster cannot do, and nothing else:
- the person's edit of settings.env is the example with each REPLACE-ME filled in;
- `rollout status` (no image, no kubelet here): the webhook runs from the virtualenv as its own
  ServiceAccount with the environment its Pod would get from the applied ConfigMaps, and the
  webhook configuration is pointed at it on loopback (no Service routing here).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from testing.kube.controlplane import NAMESPACE, WEBHOOK_SA, ControlPlane, eventually
from testing.kube.settings import GIVEN, ROOT, git_view, settings_text
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, free_port

MANAGED = "app.kubernetes.io/managed-by=mlflow-webhook"
BLOCK = re.compile(r"<!-- install-test: (?P<name>[\w-]+) -->\n```sh\n(?P<body>.*?)```", re.DOTALL)


def install_blocks() -> dict[str, list[str]]:
    """Each marked block's commands, continuation lines joined."""
    text = (ROOT / "docs" / "install.md").read_text()
    return {
        m["name"]: [line for line in m["body"].replace("\\\n", " ").splitlines() if line.strip()]
        for m in BLOCK.finditer(text)
    }


class Person:
    """A shell in the copy of the checkout, with kubectl pointed at the cluster."""

    def __init__(self, plane: ControlPlane, home: Path) -> None:
        self.plane, self.home = plane, home
        self.env = {**os.environ, "KUBECONFIG": str(plane.admin)}
        self.ran: list[str] = []

    def run(self, line: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.ran.append(line)
        if check:
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done


def webhook_as_its_pod(plane: ControlPlane, person: Person, home: Path) -> WebhookProcess:
    """The stand-in for the Deployment's Pods: serve as the webhook's ServiceAccount, with the
    applied ConfigMaps as its environment, the configuration pointed at it on loopback."""
    port = free_port()
    hook = {"url": f"https://127.0.0.1:{port}/mutate"}
    patch = [{"op": "replace", "path": "/webhooks/0/clientConfig", "value": hook}]
    plane.kubectl(
        "patch", "mutatingwebhookconfiguration", "mlflow-webhook", "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip
    maps = json.loads(plane.kubectl("get", "configmap", "-n", NAMESPACE, "-o", "json").stdout)
    env = {
        key: value
        for item in maps["items"]
        if item["metadata"]["name"].startswith("mlflow-webhook")
        for key, value in item.get("data", {}).items()
    }
    kubeconfig = plane.kubeconfig_for(WEBHOOK_SA, NAMESPACE, home / "webhook.kubeconfig")
    server = WebhookProcess(
        home / "certs",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        NAMESPACE,
        "--lease-duration-seconds",
        "2",
        "--lease-retry-seconds",
        "0.3",
        env=env,
        port=port,
    )
    server.wait_for_log("serving", timeout=30)
    return server


def labelled(plane: ControlPlane) -> list[str]:
    """Every object of every listable kind that carries our managed-by label."""
    kinds = plane.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    found = plane.kubectl("get", ",".join(kinds), "-A", "-l", MANAGED, "-o", "name").stdout
    return found.split()


def test_the_install_doc_as_written(control_plane: ControlPlane, tmp_path: Path) -> None:
    blocks = install_blocks()
    assert list(blocks) == ["settings", "apply", "label", "smoke", "uninstall"]
    git_view(tmp_path)  # a clone's manifests/, whatever this checkout's own hold
    person = Person(control_plane, tmp_path)
    for line in blocks["settings"]:
        person.run(line)
    # The person's edit: part A, the ARNs `bootstrap` printed.
    (tmp_path / "manifests" / "base" / "settings.env").write_text(settings_text(GIVEN))

    server = None
    try:
        for line in blocks["apply"]:
            if "rollout status" in line:
                server = webhook_as_its_pod(control_plane, person, tmp_path)
            else:
                person.run(line)
        assert server is not None

        [create, label, get_account] = blocks["label"]
        person.run(create)
        person.run(create)  # and again, as for a team's namespace that is there already
        person.run(label)
        eventually(lambda: person.run(get_account, check=False).returncode == 0, what=get_account)

        run_pod, show, delete = blocks["smoke"]
        person.run(run_pod)
        first, *env, status = person.run(show).stdout.splitlines()
        assert first == "sagemaker-mlflow-sa"
        assert f"MLFLOW_TRACKING_URI={TRACKING_ARN}" in env
        assert f"AWS_ROLE_ARN={ROLE_ARN}" in env
        assert "AWS_REGION=us-west-2" in env
        assert json.loads(status)["injected"] == ["mlflow-smoke"]
        person.run(delete)

        assert "serviceaccount/sagemaker-mlflow-sa" in labelled(control_plane)
        for line in blocks["uninstall"]:
            person.run(line)
            if line.startswith("kubectl delete -k"):
                server.stop()  # the Deployment's Pods stop with it
                server = None
    finally:
        if server is not None:
            server.stop()
    assert person.run("kubectl get mutatingwebhookconfiguration -o name").stdout == ""
    assert eventually(lambda: not labelled(control_plane), timeout=90, what="nothing labelled")


@pytest.mark.parametrize("name", ["apply", "uninstall"])
def test_the_blocks_name_the_same_manifests(name: str) -> None:
    """apply and uninstall speak of the same folder, so uninstall removes what apply made."""
    assert any("-k manifests/" in line for line in install_blocks()[name])
