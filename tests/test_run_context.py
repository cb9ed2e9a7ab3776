"""The run context, through the kubelet's own rules: whatever a Pod legally holds, each
container's MLFLOW_RUN_CONTEXT is valid JSON once the kubelet has expanded it, naming the Pod
it runs in and giving back every value of ours unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from testing.kube.kubelet import environment
from testing.support import apply, review_for, settings
from webhook.core.decisions import admit
from webhook.core.provenance import check_tag_key, image_tags, parse_run_tags
from webhook.core.reviews import parse

LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
# A DNS subdomain: what the API server takes as a Pod's or a node's name.
SUBDOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(".".join)
# What a person may write in an annotation or an image reference: anything but the separator.
FREE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=","), max_size=30)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    name, node = draw(SUBDOMAIN), draw(SUBDOMAIN)
    tag_value = draw(FREE).strip()
    image = draw(FREE).strip() or "python"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "uid": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
            "annotations": {
                "mlflow-webhook.io/inject": "true",
                "mlflow-webhook.io/run-tags": f"note={tag_value}",
            },
        },
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": image}]},
    }
    return pod, {"note": tag_value, "image": image}


@hsettings(max_examples=300, deadline=None)
@given(case=cases(), cluster=FREE)
def test_the_expanded_context_is_json_naming_the_pod(
    case: tuple[dict[str, Any], dict[str, str]], cluster: str
) -> None:
    pod, given_values = case
    chosen = settings(run_context=True, cluster_name=cluster.strip() or None)
    result = admit(parse(review_for(pod)), chosen)
    assert result.outcome == "injected", result.warnings
    env = environment(apply(pod, result.patch), "main")
    context = json.loads(env["MLFLOW_RUN_CONTEXT"])
    assert context["k8s.pod.name"] == pod["metadata"]["name"]
    assert context["k8s.pod.uid"] == pod["metadata"]["uid"]
    assert context["k8s.node.name"] == pod["spec"]["nodeName"]
    if cluster.strip():
        assert context["k8s.cluster.name"] == cluster.strip()
    assert context["note"] == given_values["note"]
    image = context["container.image.name"]
    if "container.image.tags" in context:
        image += ":" + context["container.image.tags"]
    if "container.image.repo_digests" in context:
        image += "@" + context["container.image.repo_digests"].split("@", 1)[1]
    assert image == given_values["image"]
    # Every tag is one MLflow takes.
    assert all(check_tag_key(k) == "" for k in context)
    assert all(isinstance(v, str) and len(v) <= 8000 for v in context.values())


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("python", {"container.image.name": "python"}),
        ("python:3.12", {"container.image.name": "python", "container.image.tags": "3.12"}),
        (
            "registry.local:5000/team/serve",
            {"container.image.name": "registry.local:5000/team/serve"},
        ),
        (
            "registry.local:5000/serve:1@sha256:ab",
            {
                "container.image.name": "registry.local:5000/serve",
                "container.image.tags": "1",
                "container.image.repo_digests": "registry.local:5000/serve@sha256:ab",
            },
        ),
        (
            "python@sha256:ab",
            {"container.image.name": "python", "container.image.repo_digests": "python@sha256:ab"},
        ),
    ],
)
def test_image_references(image: str, expected: dict[str, str]) -> None:
    assert image_tags(image) == expected


# MLflow's own rules (mlflow/utils/validation.py): `_validate_tag_name` and the length limit.
@pytest.mark.parametrize(
    ("key", "taken"),
    [
        ("team", True),
        ("cost-center", True),
        ("a.b/c d:e_f", True),
        ("ünïcode", True),
        ("", False),
        ("bad key!", False),
        ('quote"', False),
        ("/leading", False),
        ("trailing/", False),
        ("double//slash", False),
        ("..", False),
        (".", False),
        ("../up", False),
        ("a/./b", False),
        ("x" * 250, True),
        ("x" * 251, False),
        ("mlflow.runName", False),
    ],
)
def test_tag_keys_as_mlflow_takes_them(key: str, taken: bool) -> None:
    assert (check_tag_key(key) == "") is taken


def test_run_tags_parse() -> None:
    tags, problems = parse_run_tags(" a = 1 ,, b=x=y , c , d=" + "v" * 8001, "here")
    assert tags == {"a": "1", "b": "x=y"}
    assert [source for source, _ in problems] == ["here", "here"]
    assert problems[0][1] == "run tag 'c' is not key=value; left out"
    assert problems[1][1].endswith("has a value longer than MLflow's 8000 characters; left out")


def injected_env(pod: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    result = admit(parse(review_for(pod)), settings(run_context=True))
    return environment(apply(pod, result.patch), "main"), result.warnings


def bare_pod(**metadata: Any) -> dict[str, Any]:
    annotations = {"mlflow-webhook.io/inject": "true", **metadata.pop("annotations", {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations, **metadata},
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }


@pytest.mark.parametrize(
    ("index", "node_id"),
    [("3", "index-3"), ("$(AWS_ROLE_ARN)", None), ("1/2", None), ("٣", None)],
)
def test_a_node_id_is_only_ever_a_name_a_metric_takes(index: str, node_id: str | None) -> None:
    """From the completion index annotation, which no API server validates: digits or nothing."""
    env, _ = injected_env(bare_pod(annotations={"batch.kubernetes.io/job-completion-index": index}))
    assert env.get("MLFLOW_SYSTEM_METRICS_NODE_ID") == node_id


def test_run_tags_stop_short_of_what_an_environment_takes() -> None:
    """Twenty tags of 7,990 characters would make a 160 KB variable, past Linux's 128 KiB for
    one environment string: those past the run tags' 16 KiB are left out, with a warning."""
    raw = ",".join(f"t{i}={'v' * 7990}" for i in range(20))
    env, warnings = injected_env(bare_pod(annotations={"mlflow-webhook.io/run-tags": raw}))
    context = json.loads(env["MLFLOW_RUN_CONTEXT"])
    assert [k for k in context if k.startswith("t")] == ["t0", "t1"]
    assert len(env["MLFLOW_RUN_CONTEXT"]) < 20 * 1024
    assert any("'t2' and those after it are past 16384 bytes" in w for w in warnings), warnings


def test_a_long_argo_step_name_is_cut_to_what_mlflow_stores() -> None:
    name = "workflows.argoproj.io/node-name"
    env, _ = injected_env(bare_pod(annotations={name: "s" * 9000}))
    assert json.loads(env["MLFLOW_RUN_CONTEXT"])[f"k8s.pod.annotation.{name}"] == "s" * 8000
