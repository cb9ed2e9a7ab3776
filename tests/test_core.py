"""The pure core, table by table: what the fixtures and property tests leave unpinned."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import apply, review_for, settings
from webhook.core import reviews
from webhook.core.reviews import admit, parse

OPTED_IN = {"name": "trainer", "annotations": {"mlflow-webhook.io/inject": "true"}}
MAIN = {"name": "main", "image": "python:3.12"}


def decide(pod: dict[str, Any]) -> reviews.Admission:
    return admit(parse(review_for(pod)), settings())


# Odd but valid Pods, as an API server may send them: null lists, empty objects, no metadata
# annotations. None of them may take the fallback: each gets a real, applicable patch.
ODD_BUT_VALID = {
    "null-env-and-mounts": {
        "metadata": OPTED_IN,
        "spec": {"containers": [{**MAIN, "env": None, "volumeMounts": None}]},
    },
    "null-init-containers": {
        "metadata": OPTED_IN,
        "spec": {"initContainers": None, "containers": [MAIN], "volumes": None},
    },
    "label-opt-in-no-annotations": {
        "metadata": {"name": "t", "labels": {"mlflow-webhook.io/inject": "true"}},
        "spec": {"containers": [MAIN]},
    },
    "null-service-account": {
        "metadata": OPTED_IN,
        "spec": {"serviceAccountName": None, "containers": [MAIN]},
    },
    "env-from-only": {
        "metadata": OPTED_IN,
        "spec": {"containers": [{**MAIN, "envFrom": [{"configMapRef": {"name": "c"}}]}]},
    },
}


@pytest.mark.parametrize("pod", ODD_BUT_VALID.values(), ids=list(ODD_BUT_VALID))
def test_odd_but_valid_pods_never_take_the_fallback(pod: dict[str, Any]) -> None:
    result = decide(pod)
    assert (result.outcome, result.reason, result.error) == ("injected", "injected", "")
    mutated = apply(pod, result.patch)
    assert mutated["spec"]["serviceAccountName"] == "sagemaker-mlflow-sa"
    env = {e["name"] for e in mutated["spec"]["containers"][0]["env"]}
    assert {"MLFLOW_TRACKING_URI", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} <= env


def test_the_fallback_catches_only_a_failure_of_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the mutation (here, one made to raise) is admitted unchanged and counted as an
    error; the odd Pods above and the malformed ones (`tests/test_odd_objects.py`) never are."""

    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("env")

    monkeypatch.setattr(reviews, "mutate", broken)
    result = decide({"metadata": OPTED_IN, "spec": {"containers": [MAIN]}})
    assert (result.outcome, result.reason, result.patch) == ("error", "internal-error", [])
    assert result.error == "KeyError: 'env'"
    assert result.response["response"] == {
        "uid": result.uid,
        "allowed": True,
        "warnings": [
            "mlflow-webhook: could not inject MLflow settings into this Pod (KeyError); "
            "it was admitted unchanged"
        ],
    }
