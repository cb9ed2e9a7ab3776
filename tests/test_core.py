"""The pure core, table by table: what the fixtures and property tests leave unpinned."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from testing.support import apply, review_for, settings
from webhook.core import accounts, decisions, policies, reviews
from webhook.core.decisions import admit
from webhook.core.mutation import mutate
from webhook.core.optin import opt_in
from webhook.core.reviews import parse
from webhook.core.settings import TOKEN_DIR, TOKEN_VOLUME

ROLE_KEY = accounts.ROLE_ANNOTATION
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

    monkeypatch.setattr(decisions, "mutate", broken)
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


def statused(pod: dict[str, Any], account_exists: bool = True) -> tuple[dict[str, Any], Any]:
    """The Pod after `mutate`, and its status annotation read back."""
    out = mutate(pod, settings(), account_exists)
    mutated = apply(pod, out.patch)
    status = json.loads(mutated["metadata"]["annotations"]["mlflow-webhook.io/status"])
    return mutated, status


@pytest.mark.parametrize("metadata", [None, "absent"])
def test_a_template_without_metadata_gets_the_status(metadata: Any) -> None:
    """`inject --all` mutates templates that may have no metadata at all."""
    pod: dict[str, Any] = {"spec": {"containers": [MAIN]}}
    if metadata is None:
        pod["metadata"] = None
    _, status = statused(pod)
    assert status["injected"] == ["main"]


def test_status_keeps_what_an_earlier_call_injected_and_survives_odd_values() -> None:
    earlier = {"injected": ["sidecar", 5], "skipped": [{"target": "t", "reason": "r"}, "x"]}
    pod = {
        "metadata": {"annotations": {"mlflow-webhook.io/status": json.dumps(earlier)}},
        "spec": {"containers": [MAIN]},
    }
    _, status = statused(pod)
    assert status["injected"] == ["sidecar", "main"]
    assert status["skipped"] == [{"target": "t", "reason": "r"}]
    for odd in ("[1]", "not json", '"a string"'):
        pod["metadata"]["annotations"]["mlflow-webhook.io/status"] = odd
        assert statused(pod)[1]["injected"] == ["main"]


def test_init_containers_are_named_as_such() -> None:
    init = {
        "name": "setup",
        "image": "busybox",
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": "x"}],
    }
    pod = {
        "metadata": {"annotations": {"mlflow-webhook.io/containers": "setup"}},
        "spec": {"initContainers": [init], "containers": [MAIN]},
    }
    out = mutate(pod, settings())
    # The annotation's name is found among init containers too, so no "not in the Pod" note.
    assert [(n.target, n.reason) for n in out.notes] == [
        ("initContainer/setup", "kept its own MLFLOW_TRACKING_URI")
    ]
    assert out.injected == ["setup"]


def test_only_the_named_container_even_when_it_comes_last() -> None:
    pod = {
        "metadata": {"annotations": {"mlflow-webhook.io/containers": "trainer"}},
        "spec": {"containers": [MAIN, {"name": "trainer", "image": "python:3.12"}]},
    }
    mutated, status = statused(pod)
    assert status["injected"] == ["trainer"]
    assert "env" not in mutated["spec"]["containers"][0]


def test_the_token_volume_is_added_when_any_container_mounts_it() -> None:
    """The second container already mounts it; the first needed a mount, so the volume too."""
    mounted = {
        **MAIN,
        "name": "second",
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}],
    }
    mutated, _ = statused({"spec": {"containers": [MAIN, mounted]}})
    assert [v["name"] for v in mutated["spec"]["volumes"]] == [TOKEN_VOLUME]


def test_a_missing_account_keeps_default_named_as_such() -> None:
    out = mutate({"spec": {"containers": [MAIN]}}, settings(), account_exists=False)
    assert out.service_account == "default"
    assert "so the Pod keeps 'default'" in out.notes[0].reason


@pytest.mark.parametrize(
    ("metadata", "detail"),
    [
        ({"labels": {"mlflow-webhook.io/inject": "maybe"}}, "label mlflow-webhook.io/inject="),
        (
            {"annotations": {"mlflow-webhook.io/inject": "yes"}},
            "annotation mlflow-webhook.io/inject=",
        ),
    ],
)
def test_an_invalid_opt_in_value_is_named_with_its_source(
    metadata: dict[str, Any], detail: str
) -> None:
    decision = opt_in(metadata, settings())
    assert decision.inject is False
    assert decision.detail.startswith(detail)
    assert decision.detail.endswith("so nothing was injected")
    value = next(iter((metadata.get("labels") or metadata.get("annotations")).values()))
    assert repr(value) in decision.detail or value in decision.detail


def test_unmarked_objects_follow_the_default() -> None:
    assert opt_in({}, settings(), default=True).verdict == "opted-in"
    assert opt_in({}, settings(), default=True).inject is True
    assert opt_in({}, settings()).verdict == "not-opted-in"


GOOD = review_for({"metadata": OPTED_IN, "spec": {"containers": [MAIN]}})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1], "body must be a JSON object holding an AdmissionReview"),
        ({**GOOD, "kind": "Pod"}, "kind must be AdmissionReview, not 'Pod'"),
        (
            {**GOOD, "apiVersion": "admission.k8s.io/v1beta1"},
            "apiVersion must be admission.k8s.io/v1, not 'admission.k8s.io/v1beta1'",
        ),
        ({**GOOD, "request": None}, "AdmissionReview has no request object"),
        ({**GOOD, "request": {**GOOD["request"], "uid": ""}}, "AdmissionReview request has no uid"),
        ({**GOOD, "request": {**GOOD["request"], "uid": 7}}, "AdmissionReview request has no uid"),
    ],
)
def test_parse_says_what_is_wrong(body: Any, says: str) -> None:
    """These words are the 400's body."""
    with pytest.raises(reviews.BadReview) as caught:
        parse(body)
    assert str(caught.value) == says


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"operation": "UPDATE"}, "not-create"),
        ({"kind": {"group": "apps", "version": "v1", "kind": "Pod"}}, "not-a-pod"),
        ({"resource": {"group": "", "version": "v1", "resource": "services"}}, "not-a-pod"),
        ({"subResource": "ephemeralcontainers"}, "not-a-pod"),
        ({"object": None}, "no-object"),
    ],
)
def test_out_of_scope_requests_are_named(request_fields: dict[str, Any], reason: str) -> None:
    review = review_for({"metadata": OPTED_IN, "spec": {"containers": [MAIN]}}, **request_fields)
    result = admit(parse(review), settings())
    assert (result.outcome, result.reason, result.patch) == ("skipped", reason, [])


@pytest.mark.parametrize(
    ("metadata", "logged"),
    [
        ({"name": "trainer", "generateName": "t-"}, "trainer"),
        ({"generateName": "llama-worker-"}, "llama-worker-"),
        # Clipped, saying how long it was: names come from the Pod, not yet validated.
        ({"name": "x" * 300}, "x" * 253 + "... (300 characters)"),
        ({"generateName": "g" * 300}, "g" * 253 + "... (300 characters)"),
        ({}, ""),
    ],
)
def test_the_pod_is_logged_by_name_else_generate_name(
    metadata: dict[str, Any], logged: str
) -> None:
    result = admit(
        parse(review_for({"metadata": metadata, "spec": {"containers": [MAIN]}})), settings()
    )
    assert result.pod == logged


def test_the_response_on_the_wire() -> None:
    """What the API server reads: the review's envelope, the uid, and the patch as base64."""
    result = decide(
        {"metadata": OPTED_IN, "spec": {"serviceAccountName": "other", "containers": [MAIN]}}
    )
    response = result.response
    assert (response["apiVersion"], response["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    inner = response["response"]
    assert set(inner) == {"uid", "allowed", "patchType", "patch", "warnings"}
    assert (inner["uid"], inner["allowed"], inner["patchType"]) == (result.uid, True, "JSONPatch")
    assert json.loads(base64.b64decode(inner["patch"])) == result.patch
    assert inner["warnings"] == result.warnings and result.warnings
    untouched = decide({"metadata": {"name": "p"}, "spec": {"containers": [MAIN]}}).response
    assert untouched["response"] == {"uid": untouched["response"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("labels", "have", "role", "patch", "why"),
    [
        (
            {"app.kubernetes.io/managed-by": "mlflow-webhook"},
            "arn:r",
            "",
            {"metadata": {"annotations": {ROLE_KEY: None}}},
            "role annotation removed",
        ),
        ({"app.kubernetes.io/managed-by": "mlflow-webhook"}, None, "", None, "ok"),
        (
            {},
            "arn:theirs",
            "",
            None,
            "left alone: not managed by mlflow-webhook, and its role annotation names arn:theirs",
        ),
        ({"app.kubernetes.io/managed-by": "mlflow-webhook"}, "arn:r", None, None, "ok"),
        (
            {"app.kubernetes.io/managed-by": "mlflow-webhook"},
            "arn:old",
            "arn:new",
            {"metadata": {"annotations": {ROLE_KEY: "arn:new"}}},
            "role annotation set",
        ),
    ],
    ids=["ours-withdrawn", "ours-had-none", "theirs-kept", "no-opinion", "ours-set"],
)
def test_a_service_accounts_role_is_set_withdrawn_or_left(
    labels: dict[str, str], have: str | None, role: str | None, patch: Any, why: str
) -> None:
    annotations = {} if have is None else {ROLE_KEY: have}
    current = {
        "metadata": {"name": "sagemaker-mlflow-sa", "labels": labels, "annotations": annotations}
    }
    assert accounts.repair(current, role) == (patch, why)
