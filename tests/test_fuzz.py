"""Fuzzing over the captured AdmissionReviews, mutated at random: every request gets a
well-formed answer, never an error of ours; every patch applies with `jsonpatch` to the object
it was built from; and the webhook on its own output changes nothing more.

Thousands of cases drive the pure core; a few hundred go through the real server over TLS.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from testing.servers import WebhookProcess, start
from testing.support import REVIEWS, settings
from webhook.core.decisions import admit
from webhook.core.reviews import BadReview, parse
from webhook.core.settings import TOKEN_DIR, TOKEN_VOLUME

# Kept as bytes: loading a fresh copy is several times quicker than copy.deepcopy.
CAPTURED = {
    path.stem: orjson.dumps(json.loads(path.read_text())["review"])
    for path in sorted(REVIEWS.glob("*.json"))
}
KEY = "mlflow-webhook.io"
SETTINGS = [
    settings(run_context=True, cluster_name="prod"),
    settings(credentials="none", role_arn=None, tracking_uri="https://mlflow.example.com"),
    settings(
        credentials="pod-identity",
        role_arn=None,
        service_account_policy="override",
        run_context=True,
    ),
]

# Words the webhook reads, so that mutations land where they matter.
KEYS = [
    "metadata", "spec", "annotations", "labels", "name", "generateName", "containers",
    "initContainers", "ephemeralContainers", "env", "value", "valueFrom", "volumeMounts",
    "mountPath", "volumes", "serviceAccountName", "serviceAccount", "restartPolicy",
    f"{KEY}/inject", f"{KEY}/experiment", f"{KEY}/containers", f"{KEY}/status",
    f"{KEY}/run-tags", f"{KEY}/system-metrics", "ownerReferences", "controller", "kind", "uid",
    "image", "training.kubeflow.org/replica-type", "training.kubeflow.org/replica-index",
    "batch.kubernetes.io/job-completion-index", "ray.io/cluster",
]  # fmt: skip
WORDS = [
    "", "main", "5", "null", "true", "false", "enabled", "yes", " TRUE ", "default",
    "sagemaker-mlflow-sa", "MLFLOW_TRACKING_URI", "AWS_REGION", "AWS_ROLE_ARN", TOKEN_VOLUME,
    TOKEN_DIR, "main,sidecar", '{"injected":["main"],"skipped":[{}]}', "[1]", "{",
    "MLFLOW_RUN_CONTEXT", "MLFLOW_WEBHOOK_POD_NAME", "MLFLOW_SYSTEM_METRICS_NODE_ID", "$(",
    "$$", "a=b,c", "Job", "ReplicaSet", "worker", "registry:5000/x:1@sha256:0",
]  # fmt: skip


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(WORDS),
    st.text(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, st.lists(scalars)), max_size=3),
    # Past orjson's writing depth (255), within what copy.deepcopy in these checks can take.
    st.builds(nested, st.integers(250, 300)),
)


def places(value: Any, into: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (parent, key or index) under `value`."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        into.append((value, key))
        if isinstance(child, dict | list):
            places(child, into)
    return into


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    review = orjson.loads(CAPTURED[draw(st.sampled_from(sorted(CAPTURED)))])
    request = review["request"]
    pod = request.get("object")
    if isinstance(pod, dict) and draw(st.booleans()):
        # Most captured Pods are not opted in: opt half of them in, to reach the mutation.
        where = draw(st.sampled_from(["annotations", "labels"]))
        metadata = pod.setdefault("metadata", {})
        metadata.setdefault(where, {})[f"{KEY}/inject"] = draw(st.sampled_from(WORDS[:9]))
    for _ in range(draw(st.integers(0, 4))):
        target = request if draw(st.integers(0, 9)) == 0 else request.get("object")
        if not isinstance(target, dict | list) or not target:
            break
        found = places(target, [])
        parent, key = found[draw(st.integers(0, len(found) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(KEYS))] = draw(values)
        elif action == "add" and isinstance(parent[key], list):
            parent[key].append(draw(values))
        else:
            parent[key] = draw(values)
    return review


def check(review: dict[str, Any], which: int) -> int:
    """The properties, for one review through the core; the number of patch operations."""
    try:
        request = parse(review)
    except BadReview:
        return 0  # answered 400 over HTTP: tests/test_bad_input.py
    result = admit(request, SETTINGS[which])
    assert result.outcome != "error", result.error
    answer = orjson.loads(orjson.dumps(result.response))["response"]
    assert answer["uid"] == request["uid"]
    assert answer["allowed"] is True
    if not result.patch:
        return 0
    pod = request["object"]
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), result.patch)
    again = admit({**request, "object": patched}, SETTINGS[which])
    assert again.patch == [], (result.patch, again.patch)
    return len(result.patch)


@pytest.mark.timeout(600)
@hsettings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(review=mutated(), which=st.integers(0, len(SETTINGS) - 1))
def test_core_fuzz(review: dict[str, Any], which: int) -> None:
    check(review, which)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    process = start(Path(tmp_path_factory.mktemp("certs")))
    yield process
    process.stop()


def post(server: WebhookProcess, body: bytes) -> tuple[int, dict[str, Any]]:
    """One POST the way the API server sends it; a new connection each time, like a fresh
    client, so a closed connection cannot hide an answer."""
    connection = http.client.HTTPSConnection(
        "localhost", server.port, context=server.client_context(), timeout=30
    )
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/mutate?timeout=5s", body=body, headers=headers)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.timeout(600)
@hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(review=mutated())
def test_server_fuzz(server: WebhookProcess, review: dict[str, Any]) -> None:
    """The same properties through the real server (its default settings: IRSA)."""
    body = json.dumps(review).encode()
    status, answer = post(server, body)
    assert status < 500, answer
    if status != 200:
        assert status == 400 and answer["status"] == 400, answer
        return
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    if "patch" not in response:
        return
    patch = json.loads(base64.b64decode(response["patch"]))
    pod = review["request"]["object"]
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    again = {**review, "request": {**review["request"], "object": patched}}
    status, answer = post(server, json.dumps(again).encode())
    assert status == 200
    assert "patch" not in answer["response"]
