"""The bootstrap identity's policy, in every mode, against actions that lead to escalation: none
may be granted on a wildcard, and attaching or passing a role needs its condition."""

from __future__ import annotations

import dataclasses
from fnmatch import fnmatchcase
from typing import Any

import pytest

from webhook.core import policies

ACCOUNT = "210987654321"
ISSUER = "https://oidc.eks.us-west-2.amazonaws.com/id/0A1B2C3D"
IRSA = policies.Scope(
    part="aws",
    region="us-west-2",
    account=ACCOUNT,
    pod_role="SM_MLFLOW_ACCESS_ROLE",
    server_role="mlflow-webhook-tracking-server",
    pod_policy="SageMakerMlFlowAccessPolicy",
    tracking_server="mlflow-tracking",
    cluster="ml",
    issuer=ISSUER,
    bucket="team-mlflow",
)
POD_IDENTITY = dataclasses.replace(IRSA, credentials="pod-identity", issuer=None)
APP = dataclasses.replace(IRSA, kind="app")
EXISTING = dataclasses.replace(
    IRSA, bucket=None, tracking_arn=f"arn:aws:sagemaker:us-west-2:{ACCOUNT}:mlflow-app/app-1"
)
MODES = {
    "irsa": policies.bootstrap_identity(IRSA),
    "pod-identity": policies.bootstrap_identity(POD_IDENTITY),
    "none": policies.bootstrap_identity(dataclasses.replace(IRSA, credentials="none")),
    "no-artifact-store": policies.bootstrap_identity(dataclasses.replace(IRSA, bucket=None)),
    "tracking-server-arn": policies.bootstrap_identity(EXISTING),
    "app": policies.bootstrap_identity(APP),
    "app-no-artifact-store": policies.bootstrap_identity(dataclasses.replace(APP, bucket=None)),
    "serve-app": policies.read_only(policies.bootstrap_identity(APP)),
    "serve-irsa": policies.read_only(policies.bootstrap_identity(IRSA)),
    "serve-pod-identity": policies.read_only(policies.bootstrap_identity(POD_IDENTITY)),
}

# Each lets its holder widen what some principal may do or who may act as it.
ESCALATION = [
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:DeletePolicyVersion",
    "iam:PassRole",
    "iam:CreateOpenIDConnectProvider",
    "iam:UpdateOpenIDConnectProviderThumbprint",
    "iam:AddClientIDToOpenIDConnectProvider",
    "iam:CreateRole",
    "iam:UpdateRole",
    "iam:TagRole",
    "iam:CreateServiceLinkedRole",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:CreateUser",
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:AttachUserPolicy",
    "iam:PutUserPolicy",
    "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy",
    "iam:AddUserToGroup",
    "sts:AssumeRole",
    "sts:AssumeRoleWithWebIdentity",
    "eks:CreatePodIdentityAssociation",
    "eks:UpdatePodIdentityAssociation",
    "eks:CreateAccessEntry",
    "eks:AssociateAccessPolicy",
]
# These are granted only with the condition that names what they may touch.
NEEDS_CONDITION = {
    "iam:AttachRolePolicy": "iam:PolicyARN",
    "iam:PassRole": "iam:PassedToService",
}


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(doc: policies.Document) -> list[tuple[str, str, dict[str, Any]]]:
    """(escalation action, resource, condition) for every Allow that matches one."""
    found = []
    for statement in listed(doc["Statement"]):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for pattern in listed(statement["Action"]):
            for action in ESCALATION:
                if fnmatchcase(action.lower(), pattern.lower()):
                    for resource in listed(statement["Resource"]):
                        found.append((action, resource, statement.get("Condition", {})))
    return found


@pytest.mark.parametrize("mode", MODES)
def test_no_escalation_action_on_a_wildcard_or_without_its_condition(mode: str) -> None:
    for action, resource, condition in grants(MODES[mode]):
        assert "*" not in resource and "?" not in resource, (mode, action, resource)
        if action in NEEDS_CONDITION:
            keys = {key for values in condition.values() for key in values}
            assert NEEDS_CONDITION[action] in keys, (mode, action)


@pytest.mark.parametrize(
    ("mode", "action", "resource", "condition"),
    [
        (
            "irsa",
            "iam:AttachRolePolicy",
            f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE",
            {
                "ArnEquals": {
                    "iam:PolicyARN": f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
                }
            },
        ),
        (
            "irsa",
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/mlflow-webhook-tracking-server",
            {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
        (
            "irsa",
            "iam:CreateOpenIDConnectProvider",
            f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/0A1B2C3D",
            {},
        ),
        (
            "pod-identity",
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE",
            {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}},
        ),
        (
            "pod-identity",
            "eks:CreatePodIdentityAssociation",
            f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/ml",
            {},
        ),
    ],
)
def test_the_grants_that_remain_name_their_target(
    mode: str, action: str, resource: str, condition: dict[str, Any]
) -> None:
    assert (action, resource, condition) in grants(MODES[mode])


@pytest.mark.parametrize(
    ("mode", "absent"),
    [
        # Only the calls the bootstrap makes in that mode.
        ("irsa", {"iam:DetachRolePolicy", "eks:CreatePodIdentityAssociation"}),
        ("pod-identity", {"iam:CreateOpenIDConnectProvider", "eks:DescribeCluster"}),
        ("none", {"iam:AttachRolePolicy", "iam:CreatePolicyVersion"}),
        ("no-artifact-store", {"iam:PassRole", "iam:PutRolePolicy", "s3:CreateBucket"}),
        ("tracking-server-arn", {"sagemaker:CreateMlflowTrackingServer", "iam:PutRolePolicy"}),
        ("app", {"sagemaker:CreateMlflowTrackingServer", "sagemaker:UpdateMlflowTrackingServer"}),
        ("app-no-artifact-store", {"iam:PassRole", "sagemaker:CreateMlflowTrackingServer"}),
        ("serve-app", set(ESCALATION) | {"sagemaker:CreateMlflowApp", "sagemaker:AddTags"}),
        ("serve-irsa", set(ESCALATION)),
        ("serve-pod-identity", set(ESCALATION)),
    ],
)
def test_what_a_mode_does_not_call_is_not_granted(mode: str, absent: set[str]) -> None:
    actions = {a for s in listed(MODES[mode]["Statement"]) for a in listed(s["Action"])}
    assert not actions & absent
    # And never the whole of a service, or every resource, except the listings that have no
    # resource type in IAM.
    assert not [a for a in actions if "*" in a]
    wide = {
        a for s in MODES[mode]["Statement"] if s["Resource"] == "*" for a in listed(s["Action"])
    }
    assert wide <= {"iam:ListOpenIDConnectProviders", "sagemaker:ListMlflowApps"}


def test_an_apps_writes_are_bound_to_our_tag() -> None:
    """An App's ARN is unknown until SageMaker assigns it, so its statements name the resource
    type; each write is conditioned on our managed-by tag, on the request or on the App."""
    tag = "app.kubernetes.io/managed-by"
    for statement in MODES["app"]["Statement"]:
        writes = [a for a in listed(statement["Action"]) if not policies.is_read(a)]
        if not any(a.startswith("sagemaker:") for a in writes):
            continue
        assert statement["Resource"] == f"arn:aws:sagemaker:us-west-2:{ACCOUNT}:mlflow-app/*"
        if writes == ["sagemaker:CreatePresignedMlflowAppUrl"]:
            continue  # the ui-url command: a URL to the UI, nothing changed
        keys = statement["Condition"]["StringEquals"]
        assert {f"aws:RequestTag/{tag}", f"aws:ResourceTag/{tag}"} & set(keys), statement
        assert set(keys.values()) <= {"mlflow-webhook", "CreateMlflowApp"}


def test_irsa_without_the_issuer_is_refused() -> None:
    with pytest.raises(ValueError, match="OIDC issuer"):
        policies.bootstrap_identity(dataclasses.replace(IRSA, issuer=None))
