"""The request mix: a minimal Pod, a 10-container Pod with 50 variables each, a Kubeflow worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import captured, review_for

INJECT = {"mlflow-webhook.io/inject": "true"}


def minimal() -> dict[str, Any]:
    return review_for(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tiny", "namespace": "team-a", "annotations": INJECT},
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
        }
    )


def wide() -> dict[str, Any]:
    base = captured("01-pod-create")["review"]["request"]["object"]
    main = base["spec"]["containers"][0]
    containers = [
        {
            **main,
            "name": f"c{i}",
            "env": [{"name": f"VAR_{i}_{j}", "value": f"value-{j}" * 3} for j in range(50)],
        }
        for i in range(10)
    ]
    pod = {**base, "spec": {**base["spec"], "containers": containers}}
    return review_for(pod)


def kubeflow_worker() -> dict[str, Any]:
    """A PyTorchJob worker Pod as the training operator creates it."""
    base = captured("05-job-pod-create")["review"]["request"]["object"]
    labels = {
        "training.kubeflow.org/job-name": "llama",
        "training.kubeflow.org/operator-name": "pytorchjob-controller",
        "training.kubeflow.org/replica-index": "0",
        "training.kubeflow.org/replica-type": "worker",
    }
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
    metadata = {
        **base["metadata"],
        "generateName": None,
        "name": "llama-worker-0",
        "labels": {**base["metadata"].get("labels", {}), **labels},
        "annotations": {**INJECT, "mlflow-webhook.io/experiment": "llama"},
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}
    pod = {**base, "metadata": metadata, "spec": {**base["spec"], "containers": [main]}}
    return review_for(pod)


MIX = {"minimal": minimal, "wide": wide, "kubeflow-worker": kubeflow_worker}


def write(directory: Path) -> list[Path]:
    paths = []
    for name, build in MIX.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(build()))
        paths.append(path)
    return paths
