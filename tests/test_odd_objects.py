"""Odd objects in the pure core: each gets an answer, and any patch applies and is stable."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from testing.support import apply, review_for, settings
from webhook.core.decisions import admit
from webhook.core.reviews import BadReview, parse

INJECT = "mlflow-webhook.io/inject"
MAIN = {"name": "main", "image": "python:3.12"}


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# Deeper than orjson writes (255) and than a repr takes gladly, shallower than it reads (1024).
DEEP = nested(1000)


def opted_in(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": {INJECT: "true"}}, "spec": spec}


@pytest.mark.parametrize(
    ("pod", "says"),
    [
        ({"metadata": 5, "spec": {"containers": [MAIN]}}, "metadata is not an object"),
        ({"metadata": "x", "spec": {"containers": [MAIN]}}, "metadata is not an object"),
        ({"metadata": [1], "spec": {"containers": [MAIN]}}, "metadata is not an object"),
        ({"metadata": {"annotations": {INJECT: "true"}}}, "spec is not an object"),
        ({"metadata": {"annotations": {INJECT: "true"}}, "spec": None}, "spec is not an object"),
        ({"metadata": {"annotations": {INJECT: "true"}}, "spec": False}, "spec is not an object"),
        ({"metadata": {"annotations": {INJECT: "true"}}, "spec": 0}, "spec is not an object"),
        ({"metadata": {"annotations": {INJECT: "true"}}, "spec": []}, "spec is not an object"),
        (opted_in(containers=[{**MAIN, "env": False}]), "containers[0].env is not a list"),
        (opted_in(containers=[{**MAIN, "env": {}}]), "containers[0].env is not a list"),
        (opted_in(containers=[{**MAIN, "env": [5]}]), "containers[0].env is not a list"),
        (
            opted_in(containers=[MAIN, {**MAIN, "name": "c", "env": [{"name": {"A": 1}}]}]),
            "/spec/containers/1/env has an entry whose name is not a string",
        ),
        (
            opted_in(initContainers=[{**MAIN, "env": [{"name": ["A"]}]}]),
            "/spec/initContainers/0/env has an entry whose name is not a string",
        ),
        (opted_in(containers=[{**MAIN, "volumeMounts": 1}]), "volumeMounts is not a list"),
        (opted_in(containers=[{"name": 5}]), "containers[0].name is not a string"),
        (opted_in(containers=[{"name": None}]), "containers[0].name is not a string"),
        (opted_in(containers=[MAIN], initContainers=[{}]), "initContainers[0].name"),
        (opted_in(containers={"main": MAIN}), "spec.containers is not a list"),
        (opted_in(containers=[MAIN], volumes=False), "spec.volumes is not a list"),
        (opted_in(containers=[MAIN], serviceAccountName=5), "serviceAccountName is not a string"),
        (
            {"metadata": {"annotations": [], "labels": {INJECT: "true"}}, "spec": {}},
            "metadata.annotations is not an object of strings",
        ),
        (
            {"metadata": {"labels": {INJECT: True}}, "spec": {"containers": [MAIN]}},
            "metadata.labels is not an object of strings",
        ),
    ],
)
def test_a_pod_it_cannot_read_is_admitted_unchanged_with_a_warning(
    pod: dict[str, Any], says: str
) -> None:
    result = admit(parse(review_for(pod)), settings())
    assert (result.outcome, result.reason, result.patch) == ("skipped", "malformed", [])
    assert result.response["response"]["allowed"] is True
    assert "patch" not in result.response["response"]
    [warning] = result.warnings
    assert says in warning
    assert "admitted unchanged" in warning


LEFT_OUT = {"mlflow-webhook.io/containers": "a"}


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        (
            {"metadata": {"name": "p"}, "spec": {"containers": [{**MAIN, "env": [5]}]}},
            "not-opted-in",
        ),
        (
            {
                "metadata": {"annotations": {INJECT: "true", **LEFT_OUT}},
                "spec": {"containers": [{**MAIN, "name": "a"}, {**MAIN, "env": [5]}]},
            },
            "injected",
        ),
    ],
    ids=["not-opted-in", "container-left-out"],
)
def test_entries_are_checked_only_where_they_are_read(odd: dict[str, Any], reason: str) -> None:
    """An odd env entry in a Pod that is not injected, or in a container the containers
    annotation leaves out, is never read, so it makes nothing malformed."""
    result = admit(parse(review_for(odd)), settings())
    assert (result.reason, result.warnings) == (reason, [])
    assert apply(odd, result.patch)["spec"]["containers"][-1]["env"] == [5]


@pytest.mark.parametrize(
    "pod",
    [
        opted_in(),  # no containers: the ServiceAccount and the status still apply
        opted_in(containers=[{**MAIN, "env": []}]),
        opted_in(containers=[{**MAIN, "env": None, "volumeMounts": None}]),
        opted_in(containers=None, initContainers=None, volumes=None),
        {"metadata": {"annotations": {INJECT: "true"}, "labels": None}, "spec": {}},
        {"metadata": {"labels": {INJECT: "true"}, "annotations": None}, "spec": {}},
        {"metadata": {"labels": {INJECT: "true"}, "annotations": {}}, "spec": {}},
        opted_in(containers=[{"name": ""}, {"name": "5"}, {"name": "null"}]),
        opted_in(containers=[MAIN, MAIN]),  # the same name twice
    ],
)
def test_edge_shapes_it_can_read_get_a_patch_that_applies_and_is_stable(
    pod: dict[str, Any],
) -> None:
    first = admit(parse(review_for(pod)), settings())
    assert first.outcome == "injected", first.error
    mutated = apply(pod, first.patch)
    assert admit(parse(review_for(mutated)), settings()).patch == []


@pytest.mark.parametrize(
    "request_fields",
    [
        {"operation": DEEP},
        {"namespace": DEEP},
        {"kind": DEEP, "resource": "pods"},
        {"object": {"metadata": {"name": DEEP, "generateName": DEEP}, "spec": {}}},
        {"object": opted_in(containers=[{"name": "c", "env": [{"name": "A", "value": DEEP}]}])},
    ],
)
def test_deep_nesting_is_answered(request_fields: dict[str, Any]) -> None:
    review = review_for(opted_in(containers=[MAIN]), **request_fields)
    result = admit(parse(review), settings())
    orjson.dumps(result.response)  # the answer itself can be written
    assert result.response["response"]["allowed"] is True
    assert result.outcome != "error", result.error


def test_echoed_input_is_clipped() -> None:
    huge = "k" * (5 * 1024 * 1024)
    with pytest.raises(BadReview) as caught:
        parse({"kind": huge, "apiVersion": "admission.k8s.io/v1", "request": {"uid": "u"}})
    assert len(str(caught.value)) < 300
    assert "5242880 characters" in str(caught.value)
    with pytest.raises(BadReview, match="a JSON array"):
        parse({"kind": DEEP})
    pod = {"metadata": {"annotations": {INJECT: "y" * (2 * 1024 * 1024)}}, "spec": {}}
    result = admit(parse(review_for(pod)), settings())
    assert result.reason == "invalid-opt-in"
    assert len(result.warnings[0]) < 400
    named = opted_in(containers=[MAIN])
    named["metadata"]["annotations"]["mlflow-webhook.io/containers"] = "z" * 1_000_000
    result = admit(parse(review_for(named)), settings())
    assert all(len(w) < 400 for w in result.warnings)


# The accepted set, deliberately small: the words this project writes itself.
OPT_IN_TABLE = [
    ("true", "opted-in"),
    ("True", "opted-in"),
    ("TRUE", "opted-in"),
    (" true ", "opted-in"),
    ("enabled", "opted-in"),
    ("Enabled", "opted-in"),
    ("false", "opted-out"),
    ("FALSE", "opted-out"),
    ("disabled", "opted-out"),
    ("yes", "invalid-opt-in"),
    ("y", "invalid-opt-in"),
    ("on", "invalid-opt-in"),
    ("1", "invalid-opt-in"),
    ("no", "invalid-opt-in"),
    ("", "invalid-opt-in"),
    ("ture", "invalid-opt-in"),
    ("true,false", "invalid-opt-in"),
]


@pytest.mark.parametrize(("value", "verdict"), OPT_IN_TABLE)
@pytest.mark.parametrize("where", ["annotations", "labels"])
def test_opt_in_values(value: str, verdict: str, where: str) -> None:
    pod = {"metadata": {where: {INJECT: value}}, "spec": {"containers": [MAIN]}}
    result = admit(parse(review_for(pod)), settings())
    if verdict == "opted-in":
        assert result.outcome == "injected"
    else:
        assert (result.outcome, result.reason, result.patch) == ("skipped", verdict, [])
        assert bool(result.warnings) == (verdict == "invalid-opt-in")
