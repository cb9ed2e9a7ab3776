"""What the Pod schema alone does not catch, the real API server does: our expected Pods pass
its validation, and a second mount at one mountPath (what `mutation.py` must never emit) is
rejected. The webhook is not installed here: the API server judges our output directly."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from testing.kube.controlplane import ControlPlane
from testing.support import STATUS_KEY, load_cases
from webhook.core.settings import TOKEN_DIR

NAMESPACE = "pods-judged"
# Only what the webhook changed is ours to judge.
CASES = [
    (name, case)
    for name, case in load_cases("mutation")
    if case.get("schema", True) and not case.get("unchanged")
]


def as_created(pod: dict[str, Any]) -> dict[str, Any]:
    """The Pod as a client would create it in our namespace (the status annotation and each
    run context a string again: fixtures hold them as objects)."""
    pod = copy.deepcopy(pod)
    metadata = pod.setdefault("metadata", {})
    metadata["namespace"] = NAMESPACE
    metadata.setdefault("name", "judged")
    metadata.pop("generateName", None)
    # Set only through the ephemeralcontainers subresource, never on create; we leave them be.
    pod["spec"].pop("ephemeralContainers", None)
    annotations = metadata.get("annotations") or {}
    if isinstance(annotations.get(STATUS_KEY), dict):
        annotations[STATUS_KEY] = json.dumps(annotations[STATUS_KEY])
    for group in ("initContainers", "containers"):
        for container in pod["spec"].get(group) or ():
            for entry in container.get("env") or ():
                if isinstance(entry.get("value"), dict):
                    entry["value"] = json.dumps(entry["value"])
    return pod


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> ControlPlane:
    accounts = {
        case["expected"]["spec"].get("serviceAccountName") or "default" for _, case in CASES
    }
    control_plane.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *[
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": NAMESPACE},
            }
            for name in sorted(accounts - {"default"})
        ],
    )
    return control_plane


def server_dry_run(plane: ControlPlane, pod: dict[str, Any]) -> tuple[int, str]:
    done = plane.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        "-o",
        "name",
        input=yaml.safe_dump(pod),
        check=False,
    )
    return done.returncode, done.stderr


def test_every_expected_pod_passes_the_api_servers_validation(plane: ControlPlane) -> None:
    refused = {}
    for name, case in CASES:
        code, error = server_dry_run(plane, as_created(case["expected"]))
        if code != 0:
            refused[name] = error
    assert refused == {}


def test_two_mounts_at_one_mount_path_are_rejected(plane: ControlPlane) -> None:
    """What `mutation.py` would emit with its mountPath check dropped (the `or` made `and`)."""
    [case] = [c for n, c in CASES if n == "irsa-mount-path-taken"]
    pod = as_created(case["expected"])
    pod["spec"]["volumes"].append(
        {
            "name": "aws-iam-token",
            "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]},
        }
    )
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "aws-iam-token", "mountPath": TOKEN_DIR, "readOnly": True}
    )
    code, error = server_dry_run(plane, pod)
    assert code != 0
    assert "spec.containers[0].volumeMounts[1].mountPath: Invalid value" in error
    assert "must be unique" in error
