"""`mlflow-webhook inject`: the same mutation, offline, on every workload with a Pod template."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from testing.support import FIXTURES, ROLE_ARN, TRACKING_ARN
from tests.test_lifecycle import cli
from webhook.core.templates import pod_templates

WORKLOADS = FIXTURES / "inject" / "workloads.yaml"
FLAGS = ["--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN]
BUILTIN = {
    "ConfigMap",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "List",
}


def injected_templates(docs: list[Any]) -> dict[str, bool]:
    """Where each template is, and whether its first container now has the tracking URI."""
    found = {}
    for doc in docs:
        for where, template in pod_templates(doc):
            env = {e["name"]: e["value"] for e in template["spec"]["containers"][0].get("env", [])}
            found[where] = env.get("MLFLOW_TRACKING_URI") == TRACKING_ARN
    return found


def run_inject(*args: str, stdin: str | None = None) -> tuple[list[Any], str]:
    result = cli("inject", *FLAGS, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout)), result.stderr


def test_opted_in_templates_only() -> None:
    docs, stderr = run_inject("-f", str(WORKLOADS))
    assert injected_templates(docs) == {
        "Pod/notebook": True,
        "Deployment/serve": True,  # opted in by label
        "StatefulSet/registry": True,
        "DaemonSet/exporter": False,  # not opted in
        "ReplicaSet/worker": False,  # opted out
        "Job/train": True,
        "CronJob/nightly": True,
        "PyTorchJob/llama Master": True,
        "PyTorchJob/llama Worker": True,
        "TFJob/mnist Worker": True,
        "MPIJob/horovod Launcher": False,
        "MPIJob/horovod Worker": True,
        "XGBoostJob/boost Master": True,
        "Pod/listed": True,
    }
    assert "injected 11 of 14 Pod templates" in stderr
    original = list(yaml.safe_load_all(WORKLOADS.read_text()))
    assert docs[0] == original[0]  # the ConfigMap passes through unchanged
    assert [d["kind"] for d in docs] == [d["kind"] for d in original]


def test_whole_template_matches_the_webhook() -> None:
    docs, _ = run_inject("-f", str(WORKLOADS))
    worker = docs[8]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    assert worker["spec"]["serviceAccountName"] == "sagemaker-mlflow-sa"
    env = {e["name"]: e["value"] for e in worker["spec"]["containers"][0]["env"]}
    assert env == {
        "MLFLOW_TRACKING_URI": TRACKING_ARN,
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ROLE_ARN": ROLE_ARN,
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "MLFLOW_EXPERIMENT_NAME": "llama",
    }
    assert worker["spec"]["volumes"][0]["name"] == "aws-iam-token"
    assert "mlflow-webhook.io/status" in worker["metadata"]["annotations"]


def test_all_injects_every_template_not_opted_out() -> None:
    docs, _ = run_inject("-f", "-", "--all", stdin=WORKLOADS.read_text())
    found = injected_templates(docs)
    assert found.pop("ReplicaSet/worker") is False
    assert all(found.values()), found


def test_output_is_valid_and_injecting_again_changes_nothing(tmp_path: Path) -> None:
    docs, _ = run_inject("-f", str(WORKLOADS), "--all")
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["kind"] in BUILTIN - {"List"}:
            kubernetes_validate.validate(doc, version, strict=True)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump_all(docs))
    docs2, _ = run_inject("-f", str(again), "--all")
    assert docs2 == docs


def test_bad_yaml_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\n  spec: [\n")
    result = cli("inject", *FLAGS, "-f", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "is not valid YAML" in result.stderr


def test_templates_are_found_without_copying() -> None:
    doc: dict[str, Any] = yaml.safe_load(WORKLOADS.read_text().split("---")[2])
    before = copy.deepcopy(doc)
    [(where, template)] = pod_templates(doc)
    assert where == "Deployment/serve"
    assert template is doc["spec"]["template"]
    assert doc == before


def test_comments_and_quoting_come_back(tmp_path: Path) -> None:
    source = tmp_path / "job.yaml"
    source.write_text(
        "# Nightly fine-tune; owned by team-a\n"
        "apiVersion: batch/v1\n"
        "kind: Job\n"
        "metadata:\n"
        "  name: finetune  # renamed in March\n"
        "spec:\n"
        "  template:\n"
        "    metadata:\n"
        "      annotations:\n"
        "        mlflow-webhook.io/inject: 'true'\n"
        "    spec:\n"
        "      restartPolicy: Never\n"
        "      containers:\n"
        "      - name: train  # the only container\n"
        "        image: trainer:1\n"
    )
    result = cli("inject", *FLAGS, "-f", str(source))
    assert result.returncode == 0, result.stderr
    for kept in (
        "# Nightly fine-tune; owned by team-a",
        "name: finetune  # renamed in March",
        "mlflow-webhook.io/inject: 'true'",
        "- name: train  # the only container",
    ):
        assert kept in result.stdout, kept
    [doc] = yaml.safe_load_all(result.stdout)
    assert injected_templates([doc]) == {"Job/finetune": True}


def test_an_opt_in_on_the_workload_says_where_it_belongs() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "annotations": {"mlflow-webhook.io/inject": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": "serve"}},
            "template": {
                "metadata": {"labels": {"app": "serve"}},
                "spec": {"containers": [{"name": "serve", "image": "serve:1"}]},
            },
        },
    }
    docs, stderr = run_inject("-f", "-", stdin=yaml.safe_dump(deployment))
    assert injected_templates(docs) == {"Deployment/serve": False}
    assert (
        "Deployment/serve: mlflow-webhook.io/inject is on the Deployment's own metadata, which "
        "no Pod gets: put it in spec.template.metadata.annotations, the Pod template's"
    ) in stderr


def test_a_file_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("kind: Pod\nmetadata:\n  name: caf\xe9\n".encode("latin-1"))
    result = cli("inject", *FLAGS, "-f", str(latin))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "is not UTF-8 text (byte 31)" in result.stderr


def test_a_template_it_cannot_read_is_left_unchanged_with_a_warning() -> None:
    opted_in = {"mlflow-webhook.io/inject": "true"}
    odd = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": 5, "spec": {"containers": []}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "names", "annotations": opted_in},
            "spec": {"containers": [{"name": "c", "env": [{"name": ["A"]}]}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "fine", "annotations": opted_in},
            "spec": {"containers": [{"name": "c", "image": "python:3.12"}]},
        },
    ]
    docs, stderr = run_inject("-f", "-", stdin=yaml.safe_dump_all(odd))
    assert docs[:2] == odd[:2]
    assert injected_templates(docs[2:]) == {"Pod/fine": True}
    assert "metadata is not an object; left unchanged" in stderr
    bad_name = "/spec/containers/0/env has an entry whose name is not a string; left unchanged"
    assert bad_name in stderr
