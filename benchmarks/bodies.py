"""The request mix: a minimal Pod, a 10-container Pod with 50 variables each, a Kubeflow worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testing.support import captured, kubeflow_worker_pod, review_for

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
    return review_for(kubeflow_worker_pod(experiment="llama"))


MIX = {"minimal": minimal, "wide": wide, "kubeflow-worker": kubeflow_worker}


def write(directory: Path) -> list[Path]:
    paths = []
    for name, build in MIX.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(build()))
        paths.append(path)
    return paths
