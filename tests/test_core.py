"""The pure core, table by table: what the fixtures and property tests leave unpinned."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import apply, review_for, settings
from webhook.core import policies, reviews
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


IDENTITY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Roles",
            "Effect": "Allow",
            "Action": ["iam:GetRole", "iam:CreateRole", "iam:ListAttachedRolePolicies"],
            "Resource": "arn:aws:iam::210987654321:role/r",
        },
        {
            "Sid": "Pass",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "arn:aws:iam::210987654321:role/r",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        },
        {
            "Sid": "Bucket",
            "Effect": "Allow",
            "Action": "s3:HeadBucket",
            "Resource": "arn:aws:s3:::b",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}},
        },
        {
            "Sid": "Server",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribeMlflowTrackingServer", "sagemaker:AddTags"],
            "Resource": "*",
        },
    ],
}


def test_read_only_keeps_exactly_the_reads_of_each_statement() -> None:
    assert policies.read_only(IDENTITY) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Roles",
                "Effect": "Allow",
                "Action": ["iam:GetRole", "iam:ListAttachedRolePolicies"],
                "Resource": "arn:aws:iam::210987654321:role/r",
            },
            # A read keeps its resource but not the condition its write needed.
            {
                "Sid": "Bucket",
                "Effect": "Allow",
                "Action": ["s3:HeadBucket"],
                "Resource": "arn:aws:s3:::b",
            },
            {
                "Sid": "Server",
                "Effect": "Allow",
                "Action": ["sagemaker:DescribeMlflowTrackingServer"],
                "Resource": "*",
            },
        ],
    }
    lone = {"Version": "2012-10-17", "Statement": IDENTITY["Statement"][3]}
    assert policies.read_only(lone)["Statement"] == [
        {**IDENTITY["Statement"][3], "Action": ["sagemaker:DescribeMlflowTrackingServer"]}
    ]
    assert policies.read_only({"Statement": []}) == {"Version": "2012-10-17", "Statement": []}


@pytest.mark.parametrize(
    ("action", "read"),
    [
        ("iam:GetRole", True),
        ("s3:ListBucket", True),
        ("eks:DescribeCluster", True),
        ("s3:HeadBucket", True),
        ("iam:CreateRole", False),
        ("iam:TagRole", False),
        ("sagemaker:UpdateMlflowTrackingServer", False),
        # The verb is what follows the service: a service named like a verb is no read.
        ("get:CreateThing", False),
    ],
)
def test_is_read(action: str, read: bool) -> None:
    assert policies.is_read(action) is read


def test_trust_helpers() -> None:
    host = "oidc.example.com/id/1"
    ours = {"Sid": policies.TRUST_SID, "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity"}
    theirs = {
        "Effect": "Allow",
        "Condition": {"StringEquals": {f"{host}:sub": "system:serviceaccount:a:x"}},
    }
    like = {"Effect": "Allow", "Condition": {"StringLike": {f"{host}:sub": ["s:1", "s:2"]}}}
    denied = {"Effect": "Deny", "Condition": {"StringLike": {f"{host}:sub": "s:3"}}}
    other_host = {"Effect": "Allow", "Condition": {"StringLike": {"other:sub": "s:4"}}}
    stale = {**ours, "Action": "sts:AssumeRole"}
    merged = policies.merge_trust(policies.document(theirs, stale, like), ours)
    assert merged == {"Version": "2012-10-17", "Statement": [theirs, like, ours]}
    assert policies.merge_trust(None, ours) == policies.document(ours)
    trust = policies.document(theirs, like, denied, other_host)
    assert policies.trusted_subjects(trust, host) == {"system:serviceaccount:a:x", "s:1", "s:2"}
    assert policies.trusted_subjects({"Statement": like}, host) == {"s:1", "s:2"}
    assert policies.trusted_subjects({}, host) == set()


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"Statement": {"Action": "x"}}, {"Statement": [{"Action": "x"}]}, True),
        ({"Statement": [{"Action": ["b", "a"]}]}, {"Statement": [{"Action": ["a", "b"]}]}, True),
        (
            {"Statement": [{"Action": "a"}, {"Action": "b"}]},
            {"Statement": [{"Action": "a"}]},
            False,
        ),
        ({"Statement": [{"Action": ["a"]}]}, {"Statement": [{"Action": ["a", "b"]}]}, False),
        ({"Statement": [{"Action": "a"}]}, None, False),
        (None, None, True),
    ],
)
def test_same_policies(a: Any, b: Any, equal: bool) -> None:
    assert policies.same(a, b) is equal
