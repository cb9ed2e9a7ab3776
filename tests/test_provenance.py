"""Provenance, and the EKS pod-identity webhook's wiring, on the real control plane: workloads
made by the real Job and Deployment controllers, and a Kubeflow-style PyTorchJob's master and
worker, are created through the API server, which calls the installed webhook. Each
container's environment is resolved as the kubelet would (`testing.kube.kubelet`), and the real
MLflow client starts a run with exactly that environment, through the `sagemaker-mlflow`
plugin, against a real `mlflow server`. The run's tags, read back from the server, name where
it ran.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.kube.controlplane import ControlPlane, eventually, installed
from testing.kube.kubelet import environment
from testing.servers import WebhookProcess
from tests.e2e import chain, venv
from tests.e2e.front import Front

pytestmark = pytest.mark.timeout(900)
NS = "team-a"
SA = "sagemaker-mlflow-sa"
CLUSTER = "ml-prod"
EXPERIMENT = "provenance"
SEARCH = Path(__file__).parent / "e2e" / "search.py"
# The searches docs/provenance.md shows, run as written.
BY_LABEL = "tags.`k8s.pod.label.training.kubeflow.org/job-name` = 'mnist'"
BY_JOB = "tags.`k8s.job.name` = 'train'"
TEMPLATE_METADATA = {
    "annotations": {
        "mlflow-webhook.io/inject": "true",
        "mlflow-webhook.io/experiment": EXPERIMENT,
    }
}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "pytorchjobs.kubeflow.org"},
    "spec": {
        "group": "kubeflow.org",
        "names": {"kind": "PyTorchJob", "plural": "pytorchjobs", "singular": "pytorchjob"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, stack: chain.Aws, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    """Installed from the manifests and running as its own ServiceAccount, for team-a; STS
    trusts the cluster's token issuer."""
    stack.sts.trust_keys(
        json.loads(control_plane.kubectl("get", "--raw", "/openid/v1/jwks").stdout)
    )
    server = installed(
        control_plane,
        tmp_path_factory.mktemp("certs"),
        "--tracking-uri",
        chain.SERVER_ARN,
        "--role-arn",
        chain.ROLE_ARN,
        "--cluster-name",
        CLUSTER,
    )
    try:
        server.wait_for_log("serving")
        control_plane.label_namespace(NS)
        eventually(lambda: control_plane.get("serviceaccount", SA, NS), what="the ServiceAccount")
        eventually(
            lambda: control_plane.get("mutatingwebhookconfiguration", "mlflow-webhook")["webhooks"][
                0
            ]["clientConfig"].get("caBundle"),
            what="the caBundle",
        )
        yield server
    finally:
        server.stop()


def pods(plane: ControlPlane, selector: str, count: int) -> list[dict[str, Any]]:
    def listed() -> list[dict[str, Any]] | None:
        status, body = plane.rest("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector={selector}")
        assert status == 200, body
        items: list[dict[str, Any]] = body["items"]
        return items if len(items) == count else None

    found: list[dict[str, Any]] = eventually(listed, timeout=60, what=f"{count} Pods {selector}")
    return sorted(found, key=lambda p: p["metadata"]["name"])


def bind(plane: ControlPlane, pod: dict[str, Any], node: str) -> dict[str, Any]:
    """What the scheduler does: bind the Pod to a node (its spec.nodeName); the stored Pod."""
    name = pod["metadata"]["name"]
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    status, body = plane.rest("POST", f"/api/v1/namespaces/{NS}/pods/{name}/binding", binding)
    assert status == 201, body
    stored = plane.get("pod", name, NS)
    assert stored is not None and stored["spec"]["nodeName"] == node
    return stored


def pytorch_job(plane: ControlPlane) -> list[dict[str, Any]]:
    """A PyTorchJob and its master and worker Pods, as the Training Operator makes them: its
    labels, and the job as the controlling owner."""
    plane.apply(CRD)
    plane.kubectl(
        "wait", "--for=condition=Established", "crd/pytorchjobs.kubeflow.org", "--timeout=60s"
    )
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "mnist", "namespace": NS},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(job))
    uid = json.loads(plane.kubectl("get", "pytorchjob", "mnist", "-n", NS, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    made = []
    for kind in ("master", "worker"):
        labels = {
            "training.kubeflow.org/job-name": "mnist",
            "training.kubeflow.org/operator-name": "pytorchjob-controller",
            "training.kubeflow.org/replica-type": kind,
            "training.kubeflow.org/replica-index": "0",
        }
        if kind == "master":
            labels["training.kubeflow.org/job-role"] = "master"
        owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "mnist"}
        owner.update(uid=uid, controller=True, blockOwnerDeletion=True)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"mnist-{kind}-0",
                "labels": labels,
                "ownerReferences": [owner],
                **TEMPLATE_METADATA,
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "pytorch", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"}
                ],
            },
        }
        status, body = plane.rest("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        assert status == 201, body
        made.append(body)
    return made


def workloads(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    """Every Pod, bound to a node as the scheduler would, by a short name."""
    made = pytorch_job(plane)
    template = {
        "metadata": {**TEMPLATE_METADATA, "labels": {"app": "serve"}},
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": template,
        },
    }
    job_template = {
        "metadata": TEMPLATE_METADATA,
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "python:3.12"}],
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": NS},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "template": job_template,
        },
    }
    plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment, job]}),
    )
    made += pods(plane, "batch.kubernetes.io/job-name=train", 2)
    made += pods(plane, "app=serve", 1)
    names = ["master", "worker", "index-0", "index-1", "serve"]
    return {
        short: bind(plane, pod, f"node-{n}")
        for n, (short, pod) in enumerate(zip(names, made, strict=True))
    }


@pytest.fixture(scope="module")
def created(control_plane: ControlPlane, webhook: WebhookProcess) -> dict[str, dict[str, Any]]:
    return workloads(control_plane)


@pytest.fixture(scope="module")
def runs(
    created: dict[str, dict[str, Any]],
    control_plane: ControlPlane,
    stack: chain.Aws,
    mlflow: chain.MlflowServer,
    front: Front,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """A run started from each Pod's first container, with exactly its resolved environment:
    the run as the tracking server stores it."""
    out = {}
    for short, pod in created.items():
        root = tmp_path_factory.mktemp(short)
        container = pod["spec"]["containers"][0]["name"]
        env = environment(pod, container)
        chain.kubelet_token(control_plane, pod, env, root, NS)
        done = chain.run_training(chain.redirects(env, stack, front, root), root)
        assert done.returncode == 0, done.stderr[-3000:]
        run_id = done.stdout.rsplit("RUN_ID=", 1)[1].strip()
        out[short] = mlflow.api(f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    return out


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_every_run_names_its_pod_node_container_and_image(
    created: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> None:
    for short, pod in created.items():
        got = tags(runs[short])
        container = pod["spec"]["containers"][0]
        image, _, tag = container["image"].rpartition(":")
        assert {
            "k8s.cluster.name": got.get("k8s.cluster.name"),
            "k8s.namespace.name": got.get("k8s.namespace.name"),
            "k8s.pod.name": got.get("k8s.pod.name"),
            "k8s.pod.uid": got.get("k8s.pod.uid"),
            "k8s.node.name": got.get("k8s.node.name"),
            "k8s.container.name": got.get("k8s.container.name"),
            "container.image.name": got.get("container.image.name"),
            "container.image.tags": got.get("container.image.tags"),
            "mlflow-webhook.io/service-account": got.get("mlflow-webhook.io/service-account"),
        } == {
            "k8s.cluster.name": CLUSTER,
            "k8s.namespace.name": NS,
            "k8s.pod.name": pod["metadata"]["name"],
            "k8s.pod.uid": pod["metadata"]["uid"],
            "k8s.node.name": pod["spec"]["nodeName"],
            "k8s.container.name": container["name"],
            "container.image.name": image,
            "container.image.tags": tag,
            "mlflow-webhook.io/service-account": SA,
        }, short


def test_the_workload_and_the_replica_are_named(
    created: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> None:
    job = tags(runs["master"])
    owner = created["master"]["metadata"]["ownerReferences"][0]
    assert {
        k: v for k, v in job.items() if k.startswith(("mlflow-webhook.io/owner", "k8s.pod.label"))
    } == {
        "mlflow-webhook.io/owner-kind": "PyTorchJob",
        "mlflow-webhook.io/owner-name": "mnist",
        "mlflow-webhook.io/owner-uid": owner["uid"],
        "k8s.pod.label.training.kubeflow.org/job-name": "mnist",
        "k8s.pod.label.training.kubeflow.org/replica-type": "master",
        "k8s.pod.label.training.kubeflow.org/replica-index": "0",
        "k8s.pod.label.training.kubeflow.org/job-role": "master",
    }
    assert tags(runs["worker"])["k8s.pod.label.training.kubeflow.org/replica-type"] == "worker"
    for index in ("0", "1"):
        got = tags(runs[f"index-{index}"])
        job_owner = created[f"index-{index}"]["metadata"]["ownerReferences"][0]
        assert (job_owner["kind"], job_owner["name"]) == ("Job", "train")
        assert got["k8s.job.name"] == "train"
        assert got["k8s.job.uid"] == job_owner["uid"]
        assert got["k8s.pod.label.batch.kubernetes.io/job-completion-index"] == index
    serve = tags(runs["serve"])
    replica_set = created["serve"]["metadata"]["ownerReferences"][0]
    assert (serve["k8s.replicaset.name"], serve["k8s.replicaset.uid"]) == (
        replica_set["name"],
        replica_set["uid"],
    )
    assert serve["k8s.deployment.name"] == "serve"


def test_a_distributed_jobs_pods_are_told_apart(created: dict[str, dict[str, Any]]) -> None:
    """Resolved node ids: one per Pod, from the replica type and index or the completion
    index, so a restarted Pod keeps its own; none for a Deployment's Pod."""
    node_ids = {
        short: environment(pod, pod["spec"]["containers"][0]["name"]).get(
            "MLFLOW_SYSTEM_METRICS_NODE_ID"
        )
        for short, pod in created.items()
    }
    assert node_ids == {
        "master": "master-0",
        "worker": "worker-0",
        "index-0": "index-0",
        "index-1": "index-1",
        "serve": None,
    }


def search(
    filter_string: str,
    pod: dict[str, Any],
    plane: ControlPlane,
    stack: chain.Aws,
    front: Front,
    root: Path,
) -> list[str]:
    """A search docs/provenance.md shows, run from a Pod's own environment through the plugin."""
    env = environment(pod, pod["spec"]["containers"][0]["name"])
    chain.kubelet_token(plane, pod, env, root, NS)
    done = subprocess.run(
        [str(venv.ensure() / "bin" / "python"), str(SEARCH), filter_string],
        env={**chain.RUNTIME_ENV, **chain.redirects(env, stack, front, root)},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_every_run_of_one_job_is_found_by_its_tag(
    created: dict[str, dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    control_plane: ControlPlane,
    stack: chain.Aws,
    front: Front,
    tmp_path: Path,
) -> None:
    ids = {short: run["info"]["run_id"] for short, run in runs.items()}
    pod = created["master"]
    assert search(BY_LABEL, pod, control_plane, stack, front, tmp_path) == sorted(
        [ids["master"], ids["worker"]]
    )
    assert search(BY_JOB, pod, control_plane, stack, front, tmp_path) == sorted(
        [ids["index-0"], ids["index-1"]]
    )


def test_the_docs_show_the_searches_run_here() -> None:
    """What a user copies from docs/provenance.md (and the README's one) is what runs here."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "provenance.md").read_text()
    for search_text in (BY_LABEL, BY_JOB):
        assert f'filter_string="{search_text}"' in doc, search_text
    assert f'filter_string="{BY_JOB}"' in (root / "README.md").read_text()


def test_the_api_server_stores_a_windows_pod_with_the_windows_token_path(
    control_plane: ControlPlane, webhook: WebhookProcess
) -> None:
    """As the EKS pod-identity webhook would wire it: the token's Windows path where the Pod
    selects Windows nodes, and no credentials in a container skip-containers names."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "windows-trainer",
            "annotations": {
                "mlflow-webhook.io/inject": "true",
                "eks.amazonaws.com/skip-containers": "sidecar",
            },
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/os": "windows"},
            "containers": [
                {"name": "main", "image": "mcr.microsoft.com/windows/servercore:ltsc2022"},
                {"name": "sidecar", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"},
            ],
        },
    }
    status, body = control_plane.rest("POST", f"/api/v1/namespaces/{NS}/pods", pod)
    assert status == 201, body
    stored = control_plane.get("pod", "windows-trainer", NS)
    assert stored is not None
    main, sidecar = stored["spec"]["containers"]
    env = environment(stored, "main")
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == (
        "C:\\var\\run\\secrets\\eks.amazonaws.com\\serviceaccount\\token"
    )
    assert env["AWS_ROLE_ARN"] == chain.ROLE_ARN
    assert {m["mountPath"] for m in main["volumeMounts"] if m["name"] == "aws-iam-token"} == {
        "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    }
    side = environment(stored, "sidecar")
    assert "AWS_ROLE_ARN" not in side and "AWS_WEB_IDENTITY_TOKEN_FILE" not in side
    assert side["MLFLOW_TRACKING_URI"] == chain.SERVER_ARN
    assert all(m["name"] != "aws-iam-token" for m in sidecar.get("volumeMounts", []))
