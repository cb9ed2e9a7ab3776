"""IAM policy documents: the trust and access policies the bootstrap keeps in place, least
privilege throughout, and the policy the bootstrap's own identity needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.core import kinds
from webhook.core.documents import MANAGED_BY_KEY as MANAGED_BY_KEY
from webhook.core.documents import MANAGED_BY_VALUE as MANAGED_BY_VALUE
from webhook.core.documents import Document as Document
from webhook.core.documents import allow as _allow
from webhook.core.documents import document as document

# Our statement in a trust policy others may share: found, and repaired, by this Sid alone.
TRUST_SID = "MlflowWebhookServiceAccounts"


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def server_trust() -> Document:
    """The tracking server's execution role: assumed by SageMaker only."""
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )


def s3_access(
    part: str, bucket: str, prefix: str, actions: list[str], locate: bool = False
) -> list[Document]:
    """Object actions on the prefix, and listing the bucket within that prefix only.
    `locate`: s3:GetBucketLocation too."""
    objects = f"arn:{part}:s3:::{bucket}/{prefix}*" if prefix else f"arn:{part}:s3:::{bucket}/*"
    listing: Document = {
        "Sid": "ListArtifactPrefix",
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetBucketLocation"] if locate else ["s3:ListBucket"],
        "Resource": f"arn:{part}:s3:::{bucket}",
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return [
        {"Sid": "ArtifactObjects", "Effect": "Allow", "Action": actions, "Resource": objects},
        listing,
    ]


def server_access(part: str, bucket: str, prefix: str) -> Document:
    # The tracking server runs SageMaker's code, for which AWS suggests AmazonS3FullAccess and
    # which no test here can read: it keeps s3:GetBucketLocation in case it asks.
    objects = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    return document(*s3_access(part, bucket, prefix, objects, locate=True))


def pod_access(
    part: str,
    tracking_arn: str,
    bucket: str,
    prefix: str,
    uploads: str = "direct",
    assume_role_arn: str | None = None,
) -> Document:
    """What a training Pod needs: MLflow calls on this one server or App, and its artifact
    prefix.

    With direct uploads the MLflow client writes artifacts straight to S3 with the Pod's own
    credentials, so without s3:PutObject log_artifact and log_model fail. With presigned uploads
    (the plugin's S3PresignedArtifactRepository) every log_artifact and log_artifacts is a PUT
    to a URL the tracking server signed, so the Pod keeps only what MLflow's S3 repository reads
    with its own credentials: list_objects_v2 (s3:ListBucket) and head_object/download_file
    (s3:GetObject), for list_artifacts and download_artifacts.

    The MLflow calls' action is the kind's (webhook.core.kinds, from the Service Authorization
    Reference, https://docs.aws.amazon.com/service-authorization/latest/reference/).
    """
    mlflow = kinds.of_arn(tracking_arn).pod_statement(tracking_arn)
    # No s3:GetBucketLocation: MLflow's S3 repository lists the prefix and reads and writes
    # objects with the region it is given, and never asks where the bucket is.
    objects = ["s3:GetObject"] if uploads == "presigned" else ["s3:GetObject", "s3:PutObject"]
    statements = [mlflow, *s3_access(part, bucket, prefix, objects)]
    if assume_role_arn:
        # The plugin's AssumeRole passes RoleArn and RoleSessionName only (sagemaker_mlflow
        # auth.py, presigned_url.py): no session tags, so no sts:TagSession.
        statements.append(
            {
                "Sid": "AssumeTrackingRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": assume_role_arn,
            }
        )
    return document(*statements)


def central_role(
    part: str, pod_role_arn: str, tracking_arn: str, bucket: str, prefix: str, uploads: str
) -> Document:
    """For the central account's administrator: the role our Pods assume there, and what its
    artifact bucket must allow them.

    The role is for the tracking server's or App's API only: the plugin signs those calls with
    the assumed session, but MLflow reads and writes S3 with the Pod's own credentials (its S3
    repository uses boto3's default chain), so S3 belongs in the bucket's policy, for our Pods'
    role, and not in this role.
    """
    trust = document(
        {
            "Sid": "MlflowWebhookPods",
            "Effect": "Allow",
            "Principal": {"AWS": pod_role_arn},
            "Action": "sts:AssumeRole",
        }
    )
    # The wildcard, on the one server: training code may make any MLflow call, and some have no
    # action in the Service Authorization Reference yet (the presigned upload URL, MLflow 3's
    # traces). Nothing of SageMaker's control plane (the UI's presigned URL included): Pods
    # never call it.
    mlflow = pod_access(part, tracking_arn, bucket, prefix)["Statement"][0]
    objects = ["s3:GetObject"] if uploads == "presigned" else ["s3:GetObject", "s3:PutObject"]
    bucket_statements = [
        {**statement, "Principal": {"AWS": pod_role_arn}}
        for statement in s3_access(part, bucket, prefix, objects)
    ]
    return {
        "RoleTrustPolicy": trust,
        "RolePermissionsPolicy": document(mlflow),
        "BucketPolicyStatements": bucket_statements,
    }


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
        "Condition": _subject_condition(
            {f"{issuer_host}:aud": "sts.amazonaws.com"},
            f"{issuer_host}:sub",
            subjects(service_account, namespaces),
        ),
    }


def _subject_condition(audience: Document, key: str, subs: list[str]) -> Document:
    """Named namespaces are matched exactly; a "*" asked for is the only pattern."""
    if any("*" in s for s in subs):
        return {"StringEquals": audience, "StringLike": {key: subs}}
    return {"StringEquals": {**audience, key: subs}}


def pod_identity_statement(service_account: str, namespaces: list[str]) -> Document:
    """EKS Pod Identity, for our ServiceAccount in the namespaces asked for: the session tags
    EKS sets name them (EKS User Guide, "Create IAM role with trust policy required by EKS Pod
    Identity"), so an association made elsewhere cannot use the role."""
    return {
        "Sid": TRUST_SID,
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {
            "StringEquals": {
                "aws:RequestTag/kubernetes-namespace": namespaces,
                "aws:RequestTag/kubernetes-service-account": [service_account],
            }
        },
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


@dataclass(frozen=True)
class Scope:
    """What the bootstrap will touch, by exact name: the identity's policy names nothing else."""

    part: str
    region: str
    account: str
    pod_role: str
    server_role: str
    pod_policy: str
    tracking_server: str
    credentials: str = "irsa"
    cluster: str | None = None
    # The cluster's OIDC issuer URL; needed with irsa to name the one provider ARN.
    issuer: str | None = None
    bucket: str | None = None
    # --tracking-server-arn: that server or App is only described, nothing else is made.
    tracking_arn: str | None = None
    kind: str = kinds.SERVER.name  # --kind; an ARN given says for itself

    def iam(self, kind: str, name: str) -> str:
        return f"arn:{self.part}:iam::{self.account}:{kind}/{name}"


def bootstrap_identity(scope: Scope) -> Document:
    """Least privilege for whoever runs `mlflow-webhook bootstrap`: every write names its exact
    resource, and attaching or passing a role carries a condition.

    What no condition can bound is a document's content: the holder may still give the two named
    roles any permission (PutRolePolicy, CreatePolicyVersion) and any trust (CreateRole,
    UpdateAssumeRolePolicy). A permissions boundary owned by an administrator would cap that; this
    policy keeps the reach to those two roles and the one policy.
    """
    server_role = scope.iam("role", scope.server_role)
    pod_role = scope.iam("role", scope.pod_role)
    pod_policy = scope.iam("policy", scope.pod_policy)
    cluster = f"arn:{scope.part}:eks:{scope.region}:{scope.account}:cluster/{scope.cluster}"
    statements: list[Document] = []
    if scope.tracking_arn:
        # Verified only: described, and the ui-url command.
        statements.append(kinds.of_arn(scope.tracking_arn).verifying(scope.tracking_arn))
    else:
        statements += _server_side(scope, server_role)
    if scope.credentials == "none":
        return document(*statements)
    if not scope.cluster:
        raise ValueError(f"--credentials {scope.credentials} needs the cluster's name")
    statements += _pod_side(pod_role, pod_policy)
    if scope.credentials == "irsa":
        statements += _irsa(scope, cluster)
    else:
        statements += _pod_identity(cluster, pod_role)
    return document(*statements)


def _pod_side(pod_role: str, pod_policy: str) -> list[Document]:
    """The Pods' role and policy, made and kept as the bootstrap wants them."""
    return [
        # The Pods' policy: created, and given a new default version when it drifts (IAM keeps
        # five, so the oldest non-default one is deleted first). CreatePolicy with tags needs
        # TagPolicy.
        _allow(
            "PodPolicy",
            pod_policy,
            "iam:GetPolicy",
            "iam:GetPolicyVersion",
            "iam:ListPolicyVersions",
            "iam:CreatePolicy",
            "iam:TagPolicy",
            "iam:CreatePolicyVersion",
            "iam:DeletePolicyVersion",
        ),
        # The Pods' role: created with our trust, its trust repaired (only our statement),
        # its attachments read.
        _allow(
            "PodRole",
            pod_role,
            "iam:GetRole",
            "iam:CreateRole",
            "iam:TagRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:ListAttachedRolePolicies",
        ),
        # Only our policy may be attached, and only to the Pods' role.
        _allow(
            "AttachPodPolicy",
            pod_role,
            "iam:AttachRolePolicy",
            ArnEquals={"iam:PolicyARN": pod_policy},
        ),
    ]


def _irsa(scope: Scope, cluster: str) -> list[Document]:
    """IRSA: the cluster's OIDC provider, found or made."""
    if not scope.issuer:
        raise ValueError("--credentials irsa needs the cluster's OIDC issuer")
    host = scope.issuer.removeprefix("https://")
    return [
        _allow("Cluster", cluster, "eks:DescribeCluster"),  # to learn the OIDC issuer
        # Listing has no resource type in IAM: it can only be granted on "*".
        _allow("FindOidcProvider", "*", "iam:ListOpenIDConnectProviders"),
        # This cluster's provider only: created (tagged), or given the sts audience.
        _allow(
            "OidcProvider",
            scope.iam("oidc-provider", host),
            "iam:GetOpenIDConnectProvider",
            "iam:CreateOpenIDConnectProvider",
            "iam:TagOpenIDConnectProvider",
            "iam:AddClientIDToOpenIDConnectProvider",
        ),
    ]


def _pod_identity(cluster: str, pod_role: str) -> list[Document]:
    """EKS Pod Identity: an association per namespace, which passes the Pods' role."""
    return [
        # One association per namespace, on this cluster only.
        _allow(
            "PodIdentity",
            cluster,
            "eks:ListPodIdentityAssociations",
            "eks:CreatePodIdentityAssociation",
        ),
        # Creating an association passes the role: "The IAM principal that is creating the
        # association must have iam:PassRole" (EKS User Guide, "Configure a Kubernetes
        # service account to assume an IAM role with EKS Pod Identity",
        # https://docs.aws.amazon.com/eks/latest/userguide/pod-id-association.html).
        _allow(
            "PassPodRole",
            pod_role,
            "iam:PassRole",
            StringEquals={"iam:PassedToService": "pods.eks.amazonaws.com"},
        ),
    ]


def _server_side(scope: Scope, server_role: str) -> list[Document]:
    """The tracking server or App, and with an artifact store its bucket and execution role."""
    kind = kinds.named(scope.kind)
    tracking = kind.managing(scope.part, scope.region, scope.account, scope.tracking_server)
    if not scope.bucket:
        # Nothing to create without an artifact store: the execution role is only looked up.
        return [*tracking, _allow("ServerRole", server_role, "iam:GetRole")]
    return [
        *tracking,
        _allow(
            "ArtifactBucket",
            f"arn:{scope.part}:s3:::{scope.bucket}",
            "s3:ListBucket",
            "s3:CreateBucket",
            "s3:PutBucketTagging",  # the managed-by tag, by which a teardown knows the bucket
            "s3:GetBucketPublicAccessBlock",
            "s3:PutBucketPublicAccessBlock",
            "s3:GetEncryptionConfiguration",
            "s3:PutEncryptionConfiguration",
        ),
        # The execution role: created with SageMaker's trust, that trust repaired, and its
        # one inline S3 policy kept. Inline rather than managed: a managed policy would need
        # CreatePolicyVersion on it, which reaches exactly as far as PutRolePolicy on the role.
        _allow(
            "ServerRole",
            server_role,
            "iam:GetRole",
            "iam:CreateRole",
            "iam:TagRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:GetRolePolicy",
            "iam:PutRolePolicy",
        ),
        # SageMaker runs the server or App as this role: passed to SageMaker only.
        _allow(
            "PassServerRole",
            server_role,
            "iam:PassRole",
            StringEquals={"iam:PassedToService": "sagemaker.amazonaws.com"},
        ),
    ]


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
