"""IAM policy documents: the trust and access policies the bootstrap keeps in place, least
privilege throughout, and the policy the bootstrap's own identity needs."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]
VERSION = "2012-10-17"
# Our statement in a trust policy others may share: found, and repaired, by this Sid alone.
TRUST_SID = "MlflowWebhookServiceAccounts"


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def document(*statements: Document) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def server_trust() -> Document:
    """The tracking server's execution role: assumed by SageMaker only."""
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )


def s3_access(part: str, bucket: str, prefix: str, actions: list[str]) -> list[Document]:
    """Object actions on the prefix, and listing the bucket within that prefix only."""
    objects = f"arn:{part}:s3:::{bucket}/{prefix}*" if prefix else f"arn:{part}:s3:::{bucket}/*"
    listing: Document = {
        "Sid": "ListArtifactPrefix",
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
        "Resource": f"arn:{part}:s3:::{bucket}",
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return [
        {"Sid": "ArtifactObjects", "Effect": "Allow", "Action": actions, "Resource": objects},
        listing,
    ]


def server_access(part: str, bucket: str, prefix: str) -> Document:
    return document(
        *s3_access(part, bucket, prefix, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    )


def pod_access(part: str, tracking_arn: str, bucket: str, prefix: str) -> Document:
    """What a training Pod needs: MLflow calls on this one server, and its artifact prefix.

    The MLflow client writes artifacts straight to S3 with the Pod's own credentials, so
    without the S3 statements log_artifact and log_model fail.
    """
    mlflow = {
        "Sid": "TrackingServer",
        "Effect": "Allow",
        "Action": "sagemaker-mlflow:*",
        "Resource": tracking_arn,
    }
    return document(mlflow, *s3_access(part, bucket, prefix, ["s3:GetObject", "s3:PutObject"]))


def subjects(service_account: str, namespaces: list[str]) -> list[str]:
    return [f"system:serviceaccount:{ns}:{service_account}" for ns in namespaces]


def irsa_statement(
    provider_arn: str, issuer_host: str, service_account: str, namespaces: list[str]
) -> Document:
    return {
        "Sid": TRUST_SID,
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {f"{issuer_host}:aud": "sts.amazonaws.com"},
            "StringLike": {f"{issuer_host}:sub": subjects(service_account, namespaces)},
        },
    }


def pod_identity_statement() -> Document:
    return {
        "Sid": TRUST_SID,
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    }


def merge_trust(current: Document | None, ours: Document) -> Document:
    """`current` with our statement in place; every other statement is kept as it is."""
    others = [s for s in (current or {}).get("Statement", []) if s.get("Sid") != TRUST_SID]
    return document(*others, ours)


def trusted_subjects(trust: Document, issuer_host: str) -> set[str]:
    """ServiceAccount subjects any web-identity statement of `trust` already admits."""
    found: set[str] = set()
    for statement in _statements(trust):
        if statement.get("Effect") != "Allow":
            continue
        for operator in ("StringLike", "StringEquals"):
            value = (statement.get("Condition") or {}).get(operator, {}).get(f"{issuer_host}:sub")
            found.update([value] if isinstance(value, str) else value or [])
    return found


def _statements(doc: Document) -> list[Document]:
    statements = doc.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def same(a: Document | None, b: Document | None) -> bool:
    """Equal as policies: a lone statement equals a list of one, and lists equal in any order."""
    return bool(_normal(a) == _normal(b))


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        if "Statement" in out and isinstance(out["Statement"], dict):
            out["Statement"] = [out["Statement"]]
        return out
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return sorted(items, key=repr) if all(isinstance(i, str) for i in items) else items
    return value


def bootstrap_identity(
    part: str, region: str, account: str, names: dict[str, str], bucket: str
) -> Document:
    """Least privilege for whoever runs `mlflow-webhook bootstrap`, iam:PassRole included."""
    iam = f"arn:{part}:iam::{account}"
    roles = [f"{iam}:role/{names['pod_role']}", f"{iam}:role/{names['server_role']}"]
    server = (
        f"arn:{part}:sagemaker:{region}:{account}:mlflow-tracking-server/{names['tracking_server']}"
    )
    return document(
        {
            "Sid": "Identity",
            "Effect": "Allow",
            "Action": [
                "sts:GetCallerIdentity",
                "eks:DescribeCluster",
                "iam:ListOpenIDConnectProviders",
            ],
            "Resource": "*",
        },
        {
            "Sid": "OidcProvider",
            "Effect": "Allow",
            "Resource": f"{iam}:oidc-provider/*",
            "Action": [
                "iam:GetOpenIDConnectProvider",
                "iam:CreateOpenIDConnectProvider",
                "iam:AddClientIDToOpenIDConnectProvider",
                "iam:TagOpenIDConnectProvider",
            ],
        },
        {
            "Sid": "Roles",
            "Effect": "Allow",
            "Resource": roles,
            "Action": [
                "iam:GetRole",
                "iam:CreateRole",
                "iam:TagRole",
                "iam:UpdateAssumeRolePolicy",
                "iam:GetRolePolicy",
                "iam:PutRolePolicy",
                "iam:ListAttachedRolePolicies",
                "iam:AttachRolePolicy",
            ],
        },
        {
            "Sid": "PassServerRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": f"{iam}:role/{names['server_role']}",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        },
        {
            "Sid": "PodPolicy",
            "Effect": "Allow",
            "Resource": f"{iam}:policy/{names['pod_policy']}",
            "Action": [
                "iam:GetPolicy",
                "iam:GetPolicyVersion",
                "iam:CreatePolicy",
                "iam:CreatePolicyVersion",
                "iam:ListPolicyVersions",
                "iam:DeletePolicyVersion",
            ],
        },
        {
            "Sid": "ArtifactBucket",
            "Effect": "Allow",
            "Resource": f"arn:{part}:s3:::{bucket}",
            "Action": [
                "s3:ListBucket",
                "s3:CreateBucket",
                "s3:GetBucketPublicAccessBlock",
                "s3:PutBucketPublicAccessBlock",
                "s3:GetEncryptionConfiguration",
                "s3:PutEncryptionConfiguration",
            ],
        },
        {
            "Sid": "TrackingServer",
            "Effect": "Allow",
            "Resource": server,
            "Action": [
                "sagemaker:DescribeMlflowTrackingServer",
                "sagemaker:CreateMlflowTrackingServer",
                "sagemaker:StartMlflowTrackingServer",
                "sagemaker:UpdateMlflowTrackingServer",
                "sagemaker:AddTags",
                "sagemaker:CreatePresignedMlflowTrackingServerUrl",
            ],
        },
        {
            "Sid": "PodIdentity",
            "Effect": "Allow",
            "Resource": "*",
            "Action": ["eks:ListPodIdentityAssociations", "eks:CreatePodIdentityAssociation"],
        },
    )


READ_VERBS = ("Get", "List", "Describe", "Head")


def is_read(action: str) -> bool:
    return bool(action.split(":", 1)[1].startswith(READ_VERBS))


def read_only(policy: Document) -> Document:
    """The read actions of `policy`: what `serve` needs to verify what the bootstrap made."""
    statements = []
    for statement in _statements(policy):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        kept = [a for a in actions if is_read(a)]
        if kept:
            statements.append(
                {**{k: v for k, v in statement.items() if k != "Condition"}, "Action": kept}
            )
    return document(*statements)
