"""The pure decision "is this Pod missed, and why", from a YAML table, and the Event it yields."""

from __future__ import annotations

import datetime as dt
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testing.support import FIXTURES, apply, review_for, settings
from webhook.core import missed
from webhook.core.decisions import admit
from webhook.core.reviews import parse

CASES = yaml.safe_load((FIXTURES / "missed" / "pods.yaml").read_text())
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def metadata(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "trainer",
        "namespace": "team-a",
        "uid": "0f3c2a9e-1111-2222-3333-444455556666",
        "creationTimestamp": "2026-03-01T11:50:00Z",
        **extra,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    pod = missed.facts(metadata(case["metadata"]), settings())
    assert missed.reason(pod, case["namespace"]) == case["expected"]


def test_lookup_settings_read_as_the_webhook_does() -> None:
    """`audit` builds settings without a tracking URI; they must decide the same."""
    for case in CASES:
        pod = missed.facts(metadata(case["metadata"]), missed.lookup_settings("mlflow-webhook.io"))
        assert missed.reason(pod, case["namespace"]) == case["expected"], case["case"]


@pytest.mark.parametrize(("exists", "expected"), [(False, "service-account-kept"), (True, None)])
def test_the_mutations_own_status_is_read(exists: bool, expected: str | None) -> None:
    """The status the mutation writes when our ServiceAccount is missing, read back here."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata({"annotations": {"mlflow-webhook.io/inject": "true"}}),
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }
    result = admit(parse(review_for(pod)), settings(), account_exists=exists)
    after = apply(pod, result.patch)
    assert missed.reason(missed.facts(after["metadata"], settings()), True) == expected


@pytest.mark.parametrize("why", missed.REASONS)
def test_event_is_a_valid_warning_on_the_pod(why: missed.Reason) -> None:
    pod = missed.facts(metadata({"annotations": {"mlflow-webhook.io/inject": "true"}}), settings())
    finding = missed.Finding(
        pod.namespace, pod.name, pod.uid, pod.created, why, missed.message(pod, why, settings())
    )
    event = missed.event(finding, NOW, "replica-1")
    kubernetes_validate.validate(event, kubernetes_validate.latest_version(), strict=True)
    assert event["type"] == "Warning" and event["reason"] == "MLflowInjectionMissed"
    assert event["involvedObject"]["uid"] == pod.uid
    assert "recreate the pod" in event["message"].lower()
    assert event["metadata"]["name"] == missed.event_name(pod.name, pod.uid)


def test_event_name_is_one_per_pod_and_valid_for_long_names() -> None:
    long = "p" * 253
    name = missed.event_name(long, "abcdef12-0000")
    assert len(name) <= 253 and name == missed.event_name(long, "abcdef12-ffff")
    assert missed.event_name("a", "11111111-x") != missed.event_name("a", "22222222-x")


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-03-01T11:59:15Z", "45s"),
        ("2026-03-01T11:50:00Z", "10m"),
        ("2026-03-01T09:00:00Z", "3h"),
        ("2026-02-24T12:00:00Z", "5d"),
        ("", "?"),
    ],
)
def test_age(created: str, expected: str) -> None:
    assert missed.age(created, NOW) == expected
