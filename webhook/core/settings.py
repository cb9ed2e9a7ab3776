"""Mutation settings: the one value every layer above reads, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from webhook.core.pointers import join

Credentials = Literal["irsa", "pod-identity", "none"]
ServiceAccountPolicy = Literal["keep", "override"]
# How artifacts reach S3: with the Pod's own S3 write, or through presigned URLs the tracking
# server hands out (the sagemaker-mlflow plugin's SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED).
ArtifactUploads = Literal["direct", "presigned"]

CREDENTIALS: tuple[Credentials, ...] = ("irsa", "pod-identity", "none")
SERVICE_ACCOUNT_POLICIES: tuple[ServiceAccountPolicy, ...] = ("keep", "override")
ARTIFACT_UPLOADS: tuple[ArtifactUploads, ...] = ("direct", "presigned")
PRESIGNED_UPLOAD_VAR = "SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED"
# The role in the tracking server's account the plugin assumes for its signed calls.
ASSUME_ROLE_VAR = "SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN"

# The names the EKS pod-identity webhook uses, so whichever of us runs first the other skips.
TOKEN_VOLUME = "aws-iam-token"  # noqa: S105 - a volume name, not a secret
TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"  # noqa: S105
TOKEN_FILE = f"{TOKEN_DIR}/token"
TOKEN_AUDIENCE = "sts.amazonaws.com"  # noqa: S105
TOKEN_EXPIRATION_SECONDS = 86400

_TRACKING_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov)?:sagemaker:(?P<region>[a-z0-9-]+):\d{12}:"
    r"(?P<kind>mlflow-tracking-server|mlflow-app)/[A-Za-z0-9-]{1,256}$"
)
_ROLE_ARN = re.compile(r"^arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# DNS-1123 subdomain: what Kubernetes accepts as a ServiceAccount name.
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PREFIX = _SA_NAME


# AWS's documentation account, and the settings file's placeholder: values copied from an
# example and never filled in, which must not reach a Pod.
EXAMPLE_ACCOUNT = "111122223333"
PLACEHOLDER = "REPLACE-ME"


class ConfigError(ValueError):
    """A setting is wrong; the message is one line a person can act on."""


def example_value(value: str) -> str | None:
    """Why `value` is an example rather than a real setting, or None when it is not one."""
    if PLACEHOLDER in value:
        return f"is still {PLACEHOLDER}: fill it in (manifests/base/settings.env)"
    if f":{EXAMPLE_ACCOUNT}:" in value:
        return (
            f"is in account {EXAMPLE_ACCOUNT}, AWS's documentation example: give your own "
            "(what `mlflow-webhook bootstrap` printed)"
        )
    return None


@dataclass(frozen=True)
class TrackingTarget:
    """What `MLFLOW_TRACKING_URI` points at, and the AWS region an ARN implies."""

    uri: str
    kind: Literal["mlflow-tracking-server", "mlflow-app", "url"]
    region: str | None


def parse_tracking_uri(uri: str) -> TrackingTarget:
    match = _TRACKING_ARN.match(uri)
    if match:
        if match["kind"] == "mlflow-app":
            return TrackingTarget(uri=uri, kind="mlflow-app", region=match["region"])
        return TrackingTarget(uri=uri, kind="mlflow-tracking-server", region=match["region"])
    if uri.startswith("arn:"):
        raise ConfigError(
            f"tracking URI {uri!r} is not a SageMaker MLflow tracking-server or MLflow App ARN"
        )
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"tracking URI {uri!r} must be a SageMaker MLflow ARN or an http(s) URL")
    return TrackingTarget(uri=uri, kind="url", region=None)


def check_role_arn(arn: str, name: str = "--role-arn") -> str:
    """`arn` when it is an IAM role ARN; else ConfigError, naming where it came from."""
    if not _ROLE_ARN.match(arn):
        raise ConfigError(f"{name} {arn!r} is not an IAM role ARN")
    return arn


def check_artifact_uploads(value: str, name: str = "--artifact-uploads") -> ArtifactUploads:
    """`value` when it is an upload mode; else ConfigError, naming where it came from."""
    for mode in ARTIFACT_UPLOADS:
        if value == mode:
            return mode
    raise ConfigError(f"{name} must be one of {', '.join(ARTIFACT_UPLOADS)}, not {value!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the mutation depends on. Build it with `Settings.create`, which validates."""

    tracking: TrackingTarget
    credentials: Credentials = "none"
    role_arn: str | None = None
    service_account: str = "sagemaker-mlflow-sa"
    service_account_policy: ServiceAccountPolicy = "keep"
    prefix: str = "mlflow-webhook.io"
    artifact_uploads: ArtifactUploads = "direct"
    assume_role_arn: str | None = None
    # A namespace's own settings (webhook.core.namespaces) set these; the global ones do not.
    experiment: str | None = None
    # The namespace's own run-tags and system-metrics annotations, read with the Pod's.
    run_tags: str | None = None
    system_metrics: str | None = None
    source: Literal["global", "namespace"] = "global"
    # Tell each run where it ran (webhook.core.provenance); the cluster's name among it.
    run_context: bool = False
    cluster_name: str | None = None
    inject_key: str = field(init=False)
    experiment_key: str = field(init=False)
    containers_key: str = field(init=False)
    status_key: str = field(init=False)
    status_pointer: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("inject", "experiment", "containers", "status"):
            object.__setattr__(self, f"{name}_key", f"{self.prefix}/{name}")
        pointer = join("metadata", "annotations", self.status_key)
        object.__setattr__(self, "status_pointer", pointer)

    @classmethod
    def create(
        cls,
        *,
        tracking_uri: str,
        credentials: str | None = None,
        role_arn: str | None = None,
        service_account: str = "sagemaker-mlflow-sa",
        service_account_policy: str = "keep",
        prefix: str = "mlflow-webhook.io",
        run_context: bool = False,
        cluster_name: str | None = None,
        artifact_uploads: str = "direct",
        assume_role_arn: str | None = None,
    ) -> Settings:
        if not tracking_uri:
            raise ConfigError("a tracking URI is required (--tracking-uri)")
        given = (
            ("--tracking-uri", tracking_uri),
            ("--role-arn", role_arn or ""),
            ("--assume-role-arn", assume_role_arn or ""),
        )
        for flag, value in given:
            reason = example_value(value)
            if reason:
                raise ConfigError(f"{flag} {value!r} {reason}")
        tracking = parse_tracking_uri(tracking_uri)
        role_arn = role_arn or None
        mode = credentials or ("irsa" if role_arn else "none")
        if mode not in CREDENTIALS:
            raise ConfigError(
                f"--credentials must be one of {', '.join(CREDENTIALS)}, not {mode!r}"
            )
        if mode == "irsa" and not role_arn:
            raise ConfigError("--credentials irsa needs --role-arn")
        if role_arn:
            check_role_arn(role_arn)
        if assume_role_arn:
            check_role_arn(assume_role_arn, "--assume-role-arn")
        if mode != "irsa" and role_arn:
            raise ConfigError(f"--role-arn is only used with --credentials irsa, not {mode}")
        if not _SA_NAME.match(service_account) or len(service_account) > 253:
            raise ConfigError(f"--service-account {service_account!r} is not a valid name")
        if service_account_policy not in SERVICE_ACCOUNT_POLICIES:
            raise ConfigError(
                f"--service-account-policy must be keep or override, not {service_account_policy!r}"
            )
        if not _PREFIX.match(prefix) or len(prefix) > 253:
            raise ConfigError(f"--prefix {prefix!r} must be a DNS subdomain such as example.com")
        return cls(
            tracking=tracking,
            credentials=mode,
            role_arn=role_arn,
            service_account=service_account,
            service_account_policy=service_account_policy,
            prefix=prefix,
            artifact_uploads=check_artifact_uploads(artifact_uploads),
            assume_role_arn=assume_role_arn or None,
            run_context=run_context,
            cluster_name=cluster_name or None,
        )


def account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def cross_account(settings: Settings) -> str:
    """Why the Pods' calls will be refused, when the tracking ARN is in another account than
    the Pods' role and no role there is assumed; else "". Only IRSA names the Pods' role."""
    if settings.assume_role_arn or not settings.role_arn or settings.tracking.kind == "url":
        return ""
    server, pods = account_of(settings.tracking.uri), account_of(settings.role_arn)
    if server == pods:
        return ""
    return (
        f"the tracking ARN is in account {server} but the Pods' role in {pods}, and no role to "
        f"assume there is set (--assume-role-arn): every MLflow call will be AccessDenied"
    )
