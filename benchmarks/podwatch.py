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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config

from tests.kube.controlplane import ControlPlane, eventually
from tests.support import settings
from webhook.kube.accounts import AccountCache
from webhook.kube.missed import MissedPods
from webhook.kube.reconciler import NamespaceReconciler

NAMESPACES = 10
STATUS = json.dumps(
    {
        "injected": ["main"],
        "serviceAccount": "sagemaker-mlflow-sa",
        "trackingUri": "arn:aws:sagemaker:us-west-2:210987654321:mlflow-tracking-server/mlflow",
        "credentials": "irsa",
        "skipped": [],
    }
)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def heap_mib() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 2**20


def make_pods(api: client.ApiClient, count: int) -> None:
    core = client.CoreV1Api(api)
    for n in range(NAMESPACES):
        labels = {"mlflow-webhook.io/inject": "enabled"}
        core.create_namespace({"metadata": {"name": f"team-{n}", "labels": labels}})

    def create(i: int) -> None:
        annotations = (
            {"mlflow-webhook.io/inject": "true", "mlflow-webhook.io/status": STATUS}
            if i % 2
            else {}
        )
        body = {
            "metadata": {
                "name": f"trainer-{i:05d}-worker",
                "annotations": annotations,
                "labels": {"app": "trainer", "job": f"job-{i // 8}"},
            },
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
        }
        core.create_namespaced_pod(f"team-{i % NAMESPACES}", body)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    print(f"created {count} Pods in {time.monotonic() - started:.0f} s")


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
        eventually(lambda: len(pods.watch) == args.pods, timeout=600, what="the first list")
        listed = time.monotonic() - started
        first = (rss_mib(), heap_mib())
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        pods.watch.stop()  # then list again from nothing, as after a 410 or a resync
        pods.watch.start()
        eventually(lambda: len(pods.watch) == args.pods, timeout=600, what="the second list")
        second = (rss_mib(), heap_mib())
        missed = len(pods.findings())
        namespaces.stop()
        pods.stop()
        print(f"Pods {args.pods}, missed {missed}, first list {listed:.1f} s")
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
