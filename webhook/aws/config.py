"""What the bootstrap is asked to ensure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from webhook.core import kinds
from webhook.core.kinds import Kind
from webhook.core.settings import (
    ConfigError,
    check_artifact_uploads,
    check_role_arn,
    example_value,
)

_S3 = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
SIZES = ("Small", "Medium", "Large")
# What the bootstrap keeps: a tracking server (sized, started and stopped) or a serverless App.
KINDS = kinds.NAMES
# S3's general purpose bucket naming rules (S3 User Guide, "Bucket naming rules").
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


@dataclass(frozen=True)
class BootstrapConfig:
    region: str | None = None
    cluster_name: str | None = None
    kind: str = "tracking-server"
    # The name of whichever kind: a server's is in its ARN, an App's is found by listing.
    tracking_server_name: str = "mlflow-tracking"
    artifact_store_uri: str | None = None
    # None: not asked for, so a server gets Small and an App is not refused for it.
    tracking_server_size: str | None = None
    mlflow_version: str | None = None
    automatic_model_registration: bool = False
    # An App only: make it the account's default MLflow App. Never unset when not asked.
    account_default: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    pod_role_name: str = "SM_MLFLOW_ACCESS_ROLE"
    pod_policy_name: str = "SageMakerMlFlowAccessPolicy"
    server_role_name: str = "mlflow-webhook-tracking-server"
    service_account: str = "sagemaker-mlflow-sa"
    # No default: the namespaces whose ServiceAccount may assume the pod role are asked for,
    # and "*" (every namespace, opted in or not) only when it is asked for.
    trust_namespaces: tuple[str, ...] = ()
    credentials: str = "irsa"
    # What the Pods' policy allows in S3: write (direct) or only read (presigned).
    artifact_uploads: str = "direct"
    # A tracking server in another account: the role there the Pods may assume.
    assume_role_arn: str | None = None
    tracking_server_arn: str | None = None
    dry_run: bool = False
    wait: bool = False
    # How long to poll a server that is still being created, and how long to wait out IAM's
    # eventual consistency before a just-created role can be passed to SageMaker.
    wait_timeout: float = 3600.0
    poll_cap_seconds: float = 30.0
    role_propagation_seconds: float = 90.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}")
        kind = kinds.named(self.kind)
        values = {
            "--tracking-server-size": self.tracking_server_size,
            "--mlflow-version": self.mlflow_version,
            "--account-default": self.account_default,
        }
        given = [flag for flag in kind.refuses if values[flag]]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise ConfigError(f"{' and '.join(given)} {verb} {kind.refusal}")
        if self.size not in SIZES:
            raise ConfigError(f"--tracking-server-size must be one of {', '.join(SIZES)}")
        if self.artifact_store_uri:
            problem = s3_uri_problem(self.artifact_store_uri)
            if problem:
                raise ConfigError(f"--artifact-store-uri {self.artifact_store_uri!r} {problem}")
        for flag, value in (
            ("--tracking-server-arn", self.tracking_server_arn),
            ("--artifact-store-uri", self.artifact_store_uri),
            ("--assume-role-arn", self.assume_role_arn),
        ):
            reason = example_value(value or "")
            if reason:
                raise ConfigError(f"{flag} {value!r} {reason}")
        check_artifact_uploads(self.artifact_uploads)
        if self.assume_role_arn:
            check_role_arn(self.assume_role_arn, "--assume-role-arn")
        if self.credentials == "pod-identity" and "*" in self.trust_namespaces:
            raise ConfigError(
                "--credentials pod-identity needs the namespaces listed in --trust-namespaces"
            )

    @property
    def trust_error(self) -> str | None:
        """Why the pod role's trust cannot be set, if it cannot: no namespaces were named."""
        if self.credentials == "none" or self.trust_namespaces:
            return None
        return (
            f"--credentials {self.credentials} needs --trust-namespaces: the namespaces whose "
            f"{self.service_account} may assume the pod role, comma-separated "
            "('*' trusts every namespace, opted in or not)"
        )

    @property
    def size(self) -> str:
        return self.tracking_server_size or "Small"

    @property
    def target(self) -> Kind:
        """What the bootstrap keeps, or only verifies with --tracking-server-arn."""
        return kinds.chosen(self.tracking_server_arn, self.kind)

    @property
    def what(self) -> str:
        """How a message names the tracking server or App."""
        return self.target.what(self.tracking_server_name)

    @property
    def bucket(self) -> str:
        return split_s3_uri(self.artifact_store_uri)[0]

    @property
    def prefix(self) -> str:
        return split_s3_uri(self.artifact_store_uri)[1]


def s3_uri_problem(uri: str) -> str | None:
    """What is wrong with s3://bucket/prefix, by S3's bucket naming rules; None when nothing."""
    if not uri.startswith("s3://"):
        return "must look like s3://bucket/prefix"
    bucket = uri.removeprefix("s3://").partition("/")[0]
    if not _BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket):
        return (
            f"names the bucket {bucket!r}, which is not a valid S3 bucket name: 3 to 63 "
            "lowercase letters, digits, dots and hyphens, beginning and ending with a letter "
            "or digit, not like an IP address"
        )
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        return f"names the bucket {bucket!r}, whose prefix or suffix S3 reserves"
    return None


def split_s3_uri(uri: str | None) -> tuple[str, str]:
    """(bucket, prefix ending in /, or empty) of s3://bucket/prefix; ("", "") for anything else."""
    match = _S3.match(uri or "")
    if not match:
        return "", ""
    prefix = match["prefix"] or ""
    return match["bucket"], prefix if not prefix or prefix.endswith("/") else prefix + "/"


def parse_tags(raw: list[str]) -> dict[str, str]:
    tags = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {item!r} must be KEY=VALUE")
        tags[key] = value
    return tags
