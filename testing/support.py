"""Helpers for the tests: fixtures, reviews as the API server builds them, patches applied."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from webhook.core.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
REVIEWS = FIXTURES / "admission-reviews"
STATUS_KEY = "mlflow-webhook.io/status"

TRACKING_ARN = "arn:aws:sagemaker:us-west-2:210987654321:mlflow-tracking-server/mlflow-tracking"
ROLE_ARN = "arn:aws:iam::210987654321:role/SM_MLFLOW_ACCESS_ROLE"
DEFAULT_SETTINGS: dict[str, Any] = {"tracking_uri": TRACKING_ARN, "role_arn": ROLE_ARN}


class Body:
    """What the admission handler reads of an HTTP request: its body and the body's length."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.content_length = len(raw)

    async def read(self) -> bytes:
        return self.raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(**overrides: Any) -> Settings:
    return Settings.create(**{**DEFAULT_SETTINGS, **overrides})


def captured(name: str) -> dict[str, Any]:
    """A review captured from a real API server, as its `{"http": ..., "review": ...}` record."""
    return json.loads((REVIEWS / f"{name}.json").read_text())


def review_for(pod: dict[str, Any], **request: Any) -> dict[str, Any]:
    """An AdmissionReview shaped like the API server's, for a Pod CREATE unless told otherwise."""
    body: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team-a",
        "operation": "CREATE",
        "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": pod,
        "oldObject": None,
        "dryRun": False,
    }
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    inner = response["response"]
    if "patch" not in inner:
        return []
    assert inner["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(inner["patch"]))
    return patch


def apply(pod: dict[str, Any], patch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    return result


def readable(pod: dict[str, Any]) -> dict[str, Any]:
    """The Pod with its status annotation and each container's run context parsed, so
    fixtures compare them as objects (JSON key order and spacing are not the behaviour)."""
    pod = copy.deepcopy(pod)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if isinstance(annotations.get(STATUS_KEY), str):
        annotations[STATUS_KEY] = json.loads(annotations[STATUS_KEY])
    for group in ("initContainers", "containers"):
        for container in (pod.get("spec") or {}).get(group) or ():
            for entry in container.get("env") or ():
                if entry.get("name") == "MLFLOW_RUN_CONTEXT" and "value" in entry:
                    # Not JSON: compared as the string it is.
                    with contextlib.suppress(TypeError, ValueError):
                        entry["value"] = json.loads(entry["value"])
    return pod


def load_cases(folder: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.stem, yaml.safe_load(path.read_text()))
        for path in sorted((FIXTURES / folder).glob("*.yaml"))
    ]


def kubeflow_worker_pod(experiment: str | None = None) -> dict[str, Any]:
    """A PyTorchJob worker Pod as the Kubeflow training operator creates it, opted in."""
    base = captured("05-job-pod-create")["review"]["request"]["object"]
    annotations = {"mlflow-webhook.io/inject": "true"}
    if experiment:
        annotations["mlflow-webhook.io/experiment"] = experiment
    metadata = {
        key: value
        for key, value in base["metadata"].items()
        if key not in ("generateName", "labels", "finalizers", "ownerReferences")
    }
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "llama"}
    owner.update(
        uid="6a0e3c1d-5b7f-4f1e-9d2a-2c8b1f7e4a90", controller=True, blockOwnerDeletion=True
    )
    metadata.update(
        name="llama-worker-0",
        annotations=annotations,
        ownerReferences=[owner],
        labels={
            "training.kubeflow.org/job-name": "llama",
            "training.kubeflow.org/operator-name": "pytorchjob-controller",
            "training.kubeflow.org/replica-index": "0",
            "training.kubeflow.org/replica-type": "worker",
        },
    )
    main = {
        **base["spec"]["containers"][0],
        "name": "pytorch",
        "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        "command": ["torchrun", "--nnodes=3", "train.py"],
        "env": [
            {"name": "MASTER_PORT", "value": "23456"},
            {"name": "MASTER_ADDR", "value": "llama-master-0"},
            {"name": "WORLD_SIZE", "value": "3"},
            {"name": "RANK", "value": "1"},
            {"name": "PET_NNODES", "value": "3"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "resources": {
            "limits": {"nvidia.com/gpu": "8"},
            "requests": {"nvidia.com/gpu": "8", "memory": "64Gi"},
        },
    }
    return {**base, "metadata": metadata, "spec": {**base["spec"], "containers": [main]}}
