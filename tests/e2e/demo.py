"""Watch the whole chain work on this machine, no cluster or AWS account needed:

    .venv/bin/python -m tests.e2e.demo

It starts moto (IAM, STS, S3) behind the STS web-identity emulator and the IAM gate, a real
`mlflow server`, the SageMaker front-door emulator and the webhook over TLS; sends the webhook a
Kubeflow PyTorchJob worker Pod; runs the recipe's training snippet with only the injected
environment; and prints each step and the run's URL. With no control plane here, the Pod's
token is signed by a local issuer whose keys STS is given, as it would be the cluster's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from testing.servers import start
from testing.support import kubeflow_worker_pod
from tests.aws.sts import LocalIssuer
from tests.e2e import chain, venv
from tests.e2e.front import Front


def show(title: str, value: Any) -> None:
    print(f"\n== {title}")
    print(
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, sort_keys=False, width=120).rstrip()
    )


def essentials(pod: dict[str, Any]) -> dict[str, Any]:
    """What the webhook reads and changes, whole: the ServiceAccount (both fields, as the API
    server keeps them), the first container's env and mounts, and every volume."""
    container = pod["spec"]["containers"][0]
    spec = {k: pod["spec"][k] for k in ("serviceAccountName", "serviceAccount") if k in pod["spec"]}
    return {
        "metadata": {
            "name": pod["metadata"]["name"],
            "annotations": pod["metadata"].get("annotations"),
        },
        "spec": {
            **spec,
            "containers": [{k: container.get(k) for k in ("name", "env", "volumeMounts")}],
            "volumes": pod["spec"].get("volumes", []),
        },
    }


def main() -> int:
    print("preparing the mlflow environment (cached after the first run) ...")
    venv.ensure()
    # Each server stops, and the folder goes, however the demo ends: a later server that fails
    # to start leaves none of the earlier ones running.
    with contextlib.ExitStack() as running:
        work = Path(tempfile.mkdtemp(prefix="mlflow-webhook-demo-"))
        running.callback(shutil.rmtree, work, ignore_errors=True)
        aws = chain.Aws.start()
        running.callback(aws.stop)
        issuer = LocalIssuer(chain.ISSUER)
        aws.sts.trust_keys(issuer.jwks())
        mlflow = chain.MlflowServer(work / "mlflow", aws.moto)
        running.callback(mlflow.stop)
        front = Front(mlflow.url)
        front.start()
        running.callback(front.stop)
        webhook = start(
            work / "certs",
            "--self-signed",
            "--tracking-uri",
            chain.SERVER_ARN,
            "--credentials",
            "irsa",
            "--role-arn",
            chain.ROLE_ARN,
        )
        running.callback(webhook.stop)
        show(
            "started",
            f"moto {aws.moto.url}\nmlflow server {mlflow.url} (UI)\n"
            f"SageMaker MLflow front-door emulator {front.url}\nwebhook {webhook.url}",
        )
        pod = kubeflow_worker_pod(experiment="llama")
        show("1. the Pod as the training operator creates it", essentials(pod))
        patch, mutated = chain.admit(webhook, pod)
        show("2. the webhook's patch, decoded", json.dumps(patch, indent=2))
        # The whole object, as the API server stores it once every webhook has run.
        show("3. the Pod the API server stores", mutated)
        # What the API server and the scheduler add later, which the Downward API gives the
        # container and so its run context (no control plane here to do it).
        mutated["metadata"]["uid"] = str(uuid.uuid4())
        mutated["spec"]["nodeName"] = "ip-10-0-1-23.us-west-2.compute.internal"
        env = chain.container_env(mutated, "pytorch")
        account = mutated["spec"]["serviceAccountName"]
        audience = chain.token_source(mutated)["audience"]
        token = issuer.token(f"system:serviceaccount:team-a:{account}", audience)
        chain.write_token(work, mutated, env, token)
        show("4. the training process runs with only that environment", chain.TRAIN.read_text())
        # MLflow's own "View run" line would name the front-door emulator, which is no UI; the
        # one URL that opens the run is printed below.
        quiet = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
        result = chain.run_training({**chain.redirects(env, aws, front, work), **quiet}, work)
        print(result.stdout.rstrip())
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        run = mlflow.run_in("llama")
        info = run["info"]
        url = f"{mlflow.url}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        where = {
            t["key"]: t["value"]
            for t in run["data"].get("tags", [])
            if t["key"].startswith(("k8s.", "container.", "mlflow-webhook.io/"))
        }
        show(
            "5. the result, read back from MLflow",
            {
                "run": url,
                "metrics": metrics,
                "where it ran (run tags)": where,
                "artifacts in S3": chain.s3_keys(aws.moto, info["artifact_uri"]),
                "tokens STS verified, for": sorted(
                    {v.subject for v in aws.sts.verdicts if v.allowed}
                ),
                "signed calls verified by the front door": len(front.seen),
                "as role": sorted({c.role_arn for c in front.seen}),
            },
        )
        if sys.stdin.isatty():
            print("\nWaiting for Enter: the run above stays viewable in the MLflow UI until then.")
            input("Press Enter to stop the servers and remove the demo's files. ")
        else:
            print("\nNot waiting for Enter (stdin is not a terminal): stopping.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
