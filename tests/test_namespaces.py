"""A namespace's own settings, a YAML table of cases (tests/fixtures/namespaces), and what an
admission makes of them: its own values in the Pod, or nothing and a warning."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from testing.support import FIXTURES, STATUS_KEY, apply, review_for, settings
from tests.test_inject import run_inject
from webhook.core import namespaces
from webhook.core.decisions import admit
from webhook.core.reviews import NAMESPACE_ERROR, parse

CASES = yaml.safe_load((FIXTURES / "namespaces" / "settings.yaml").read_text())


def resolved(case: dict[str, Any]) -> namespaces.Resolved:
    base = settings(**(case.get("global") or {}))
    return namespaces.resolve(namespaces.pick(case["annotations"], base.prefix), base)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    result = resolved(case)
    if "error" in case:
        assert result.settings is None
        assert case["error"] in result.error
        assert result.role_arn is None  # nor the global role for its ServiceAccount
        return
    assert result.settings is not None, result.error
    got = {
        "tracking_uri": result.settings.tracking.uri,
        "role_arn": result.settings.role_arn,
        "region": result.settings.tracking.region,
        "experiment": result.settings.experiment,
        "credentials": result.settings.credentials,
        "source": result.settings.source,
    }
    assert {k: got[k] for k in case["expected"]} == case["expected"]


def pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "trainer",
            "annotations": {"mlflow-webhook.io/inject": "true", **annotations},
        },
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }


def env(mutated: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in mutated["spec"]["containers"][0]["env"]}


TEAM = {
    "mlflow-webhook.io/tracking-uri": "arn:aws:sagemaker:eu-west-1:444455556666:mlflow-app/team",
    "mlflow-webhook.io/role-arn": "arn:aws:iam::444455556666:role/team",
    "mlflow-webhook.io/experiment": "team-default",
}


def admitted(annotations: dict[str, str], the_pod: dict[str, Any]) -> Any:
    result = namespaces.resolve(namespaces.pick(annotations, "mlflow-webhook.io"), settings())
    if result.settings is None:
        return admit(parse(review_for(the_pod)), settings(), namespace_error=result.error)
    return admit(parse(review_for(the_pod)), result.settings)


def test_pod_gets_its_namespace_settings_and_status_says_so() -> None:
    mutated = apply(pod(), admitted(TEAM, pod()).patch)
    assert env(mutated) == {
        "MLFLOW_TRACKING_URI": TEAM["mlflow-webhook.io/tracking-uri"],
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ROLE_ARN": TEAM["mlflow-webhook.io/role-arn"],
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "MLFLOW_EXPERIMENT_NAME": "team-default",
    }
    status = json.loads(mutated["metadata"]["annotations"][STATUS_KEY])
    assert status["settings"] == "namespace"
    assert status["trackingUri"] == TEAM["mlflow-webhook.io/tracking-uri"]


def test_global_settings_leave_the_status_as_before() -> None:
    mutated = apply(pod(), admitted({}, pod()).patch)
    assert "settings" not in json.loads(mutated["metadata"]["annotations"][STATUS_KEY])


def test_pods_own_experiment_wins_over_its_namespace() -> None:
    own = pod(**{"mlflow-webhook.io/experiment": "mine"})
    assert env(apply(own, admitted(TEAM, own).patch))["MLFLOW_EXPERIMENT_NAME"] == "mine"


def test_namespace_in_error_admits_unchanged_with_the_reason() -> None:
    wrong = {"mlflow-webhook.io/tracking-uri": "https://mlflow.example.com"}
    result = admitted(wrong, pod())
    assert result.response["response"]["allowed"] is True
    assert (result.outcome, result.reason, result.patch) == ("skipped", NAMESPACE_ERROR, [])
    [warning] = result.warnings
    assert "mlflow-webhook.io/role-arn is not" in warning
    assert "namespace team-a" in warning


def test_namespace_in_error_says_nothing_to_a_pod_not_opted_in() -> None:
    quiet = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}
    result = admit(parse(review_for(quiet)), settings(), namespace_error="bad")
    assert (result.reason, result.warnings) == ("not-opted-in", [])


def test_inject_takes_a_namespaces_settings_as_flags() -> None:
    """Offline there is no namespace to read: its values come as --tracking-uri, --role-arn
    (run_inject's) and --experiment; a template's own experiment still wins."""
    manifest = yaml.safe_dump_all(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "annotations": own},
                "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
            }
            for name, own in (
                ("plain", {"mlflow-webhook.io/inject": "true"}),
                (
                    "own",
                    {"mlflow-webhook.io/inject": "true", "mlflow-webhook.io/experiment": "mine"},
                ),
            )
        ]
    )
    docs, _ = run_inject("-f", "-", "--experiment", "team-default", stdin=manifest)
    assert [env(doc)["MLFLOW_EXPERIMENT_NAME"] for doc in docs] == ["team-default", "mine"]
