"""Time from `docker run` to ready for the image, run as the Deployment runs it.

    .venv/bin/python -m benchmarks.image_ready [RUNS]

Each run starts the Deployment's container (its security context, tmpfs volumes, limits and
settings from the rendered manifests; `testing/image.py`) without cluster access, so the time is
the image's own: Python and the imports, self-signed certificates into the tmpfs, the listener.
It is measured from the `docker run` call to the first 200 from the readiness probe's path,
polled every 20 ms; the median of the runs is the figure docs/image.md gives.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testing.image import IMAGE, Container, Deployment, answers, docker, missing_reason
from testing.kube.settings import GIVEN, filled_copy, kustomize
from testing.support import free_port


def once(deployment: Deployment) -> float:
    port = free_port()
    # No cluster: admission only, said as the quick start says it.
    env = {"MLFLOW_WEBHOOK_NO_KUBE": "true"}
    args = deployment.run_args(f"mlflow-webhook-ready-{uuid.uuid4().hex[:8]}", port, env=env)
    path = deployment.probe()["path"]
    started = time.monotonic()
    container = Container(args)
    try:
        while answers(port, path) != 200:
            if time.monotonic() - started > 60:
                raise RuntimeError("not ready after 60 s:\n" + container.logs())
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        container.remove()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    reason = missing_reason()
    if reason:
        sys.exit(reason)
    deployment = Deployment(kustomize(filled_copy(Path(tempfile.mkdtemp()), GIVEN)))
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    once(deployment)  # the first run also warms docker's own caches; not counted
    times = [once(deployment) for _ in range(runs)]
    print(f"{IMAGE}: {size / 1e6:.0f} MB")
    print("docker run to ready, s: " + ", ".join(f"{t:.2f}" for t in times))
    print(f"median {statistics.median(times):.2f} s over {runs} runs")


if __name__ == "__main__":
    main()
