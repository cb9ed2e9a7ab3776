"""What the leader's missed-Pod watch costs in memory, on a real control plane (../shared/kube).

    .venv/bin/python -m benchmarks.podwatch [--pods 10000]

Creates the Pods (as the webhook would leave them: half opted in and injected, with their status
annotation, half not asking), then runs the real namespace and Pod watches in this process and
reports the process's RSS and the Python heap (tracemalloc) before the watch starts, once its
first list is in the cache, and after a second full list (a resync). The Pods carry no spec
beyond one container: the watch asks for metadata only, so a larger spec costs it nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from testing.kube.controlplane import ControlPlane, eventually
from testing.support import settings
from webhook.kube.accounts import AccountCache
from webhook.kube.missed import MissedPods
from webhook.kube.reconciler import NamespaceReconciler

NAMESPACES = 10
OPT_IN = "mlflow-webhook.io/inject"
# The status annotation the webhook writes on a Pod it injected.
STATUS = json.dumps(
    {
        "injected": ["main"],
        "serviceAccount": "sagemaker-mlflow-sa",
        "trackingUri": "arn:aws:sagemaker:us-west-2:210987654321:mlflow-tracking-server/mlflow",
        "credentials": "irsa",
        "skipped": [],
    }
)


def rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def heap_mib() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 2**20


def pod(name: str, annotations: dict[str, str], job: int) -> dict[str, Any]:
    """A Pod as a Job's controller makes one: labels of its own, one container."""
    return {
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": {"app": "trainer", "job": f"job-{job}"},
        },
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }


def injected() -> dict[str, str]:
    """What an opted-in Pod carries once the webhook has injected it."""
    return {OPT_IN: "true", "mlflow-webhook.io/status": STATUS}


def in_parallel(work: Callable[[int], object], items: Iterable[int], threads: int = 8) -> float:
    """Each item done by a pool of API clients, as many controllers would; the seconds taken."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, items))
    return time.monotonic() - started


def make_pods(api: client.ApiClient, count: int) -> None:
    core = client.CoreV1Api(api)
    for n in range(NAMESPACES):
        labels = {OPT_IN: "enabled"}
        core.create_namespace({"metadata": {"name": f"team-{n}", "labels": labels}})

    def create(i: int) -> None:
        body = pod(f"trainer-{i:05d}-worker", injected() if i % 2 else {}, i // 8)
        core.create_namespaced_pod(f"team-{i % NAMESPACES}", body)

    print(f"created {count} Pods in {in_parallel(create, range(count)):.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10_000)
    args = parser.parse_args()
    plane = ControlPlane()
    plane.start()
    try:
        api = config.new_client_from_config(config_file=str(plane.admin))
        make_pods(api, args.pods)
        tracemalloc.start()
        before = (rss_mib(), heap_mib())
        cache = AccountCache(api, "sagemaker-mlflow-sa")
        namespaces = NamespaceReconciler(api, cache, "mlflow-webhook.io/inject=enabled", None)
        pods = MissedPods(api, settings(), namespaces, "benchmark")
        namespaces.start()
        started = time.monotonic()
        pods.start()
        eventually(lambda: pods.watch.lists, timeout=600, what="the first list")
        listed = time.monotonic() - started
        first = (rss_mib(), heap_mib())
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        pods.watch.stop()  # then list again from nothing, as after a 410 or a resync
        pods.watch.lists = 0
        pods.watch.start()
        eventually(lambda: pods.watch.lists, timeout=600, what="the second list")
        second = (rss_mib(), heap_mib())
        missed = len(pods.findings())
        namespaces.stop()
        pods.stop()
        print(f"Pods {args.pods}, held {len(pods.watch)}, missed {missed}, list {listed:.1f} s")
        print(f"RSS MiB: before {before[0]:.1f}, cached {first[0]:.1f}, relisted {second[0]:.1f}")
        print(
            f"Python heap MiB: before {before[1]:.1f}, cached {first[1]:.1f} "
            f"(peak while listing {peak:.1f}), relisted {second[1]:.1f}"
        )
        print(f"heap per Pod: {(first[1] - before[1]) * 2**20 / args.pods:.0f} bytes")
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
