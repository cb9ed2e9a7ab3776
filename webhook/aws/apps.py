"""The serverless MLflow App: found by its name, created, kept as asked, and waited for.

An App's ARN holds an ID SageMaker assigns (mlflow-app/app-...), not its name, so it is found by
paging through ListMlflowApps. DescribeMlflowApp gives no tags and UpdateMlflowApp sets none:
tags are read with ListTags and added with AddTags.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from webhook.aws import tracking
from webhook.aws.clients import BootstrapError, Clients
from webhook.aws.config import BootstrapConfig
from webhook.core.plans import Plan
from webhook.core.policies import MANAGED_BY_KEY, MANAGED_BY_VALUE

READY = frozenset({"Created", "Updated"})
FAILED = frozenset({"CreateFailed", "UpdateFailed", "DeleteFailed"})
GONE = frozenset({"Deleting", "Deleted"})
RESOURCE = "mlflow-app"


def registration(config: BootstrapConfig) -> str:
    return (
        "AutoModelRegistrationEnabled"
        if config.automatic_model_registration
        else "AutoModelRegistrationDisabled"
    )


def wanted_tags(config: BootstrapConfig) -> dict[str, str]:
    return {MANAGED_BY_KEY: MANAGED_BY_VALUE, **config.tags}


def find(clients: Clients, name: str) -> dict[str, Any] | None:
    """The App called `name`, described; None when there is none, or it is being deleted.

    Should there be two (made elsewhere, or by two runs at once), the oldest is the one, so every
    replica settles on the same App.
    """
    found = [
        summary
        for page in clients.sagemaker.get_paginator("list_mlflow_apps").paginate()
        for summary in page.get("Summaries", [])
        if summary.get("Name") == name and summary.get("Status") not in GONE
    ]
    if not found:
        return None
    oldest = min(found, key=lambda s: s["CreationTime"])
    return dict(clients.sagemaker.describe_mlflow_app(Arn=oldest["Arn"]))


def ensure(
    clients: Clients,
    plan: Plan,
    config: BootstrapConfig,
    role_arn: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    name = config.tracking_server_name
    current = find(clients, name)
    if current is None:
        if not config.artifact_store_uri:
            raise BootstrapError(f"{config.what} does not exist: give --artifact-store-uri", 2)
        default = ", account default" if config.account_default else ""
        detail = f"{registration(config)}{default}, {config.artifact_store_uri}"
        plan.add(RESOURCE, name, "create", detail)
        # SageMaker assigns the ARN: a dry run cannot know it.
        plan.tracking_status = "Creating"
        plan.artifact_store_uri = config.artifact_store_uri
        if not plan.dry_run:
            plan.tracking_arn = _create(clients, config, role_arn, sleep)
        return
    arn = plan.tracking_arn = str(current["Arn"])
    plan.artifact_store_uri = str(current.get("ArtifactStoreUri", ""))
    status = plan.tracking_status = str(current["Status"])
    fail_if_failed(config, status)
    drift = _drift(current, config)
    tags = _tag_drift(clients, arn, config)
    if not drift and not tags:
        plan.add(RESOURCE, name, "ok" if status in READY else "wait", status)
        return
    changed = sorted(drift) + (["Tags"] if tags else [])
    if status not in READY:
        # SageMaker refuses an update while the App is still being created or updated.
        plan.add(RESOURCE, name, "wait", f"{status}; then update {', '.join(changed)}")
        return
    plan.add(RESOURCE, name, "update", ", ".join(changed))
    if plan.dry_run:
        return
    if tags:
        clients.sagemaker.add_tags(
            ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
    if drift:
        clients.sagemaker.update_mlflow_app(Arn=arn, **drift)
        plan.tracking_status = "Updating"


def _drift(current: dict[str, Any], config: BootstrapConfig) -> dict[str, Any]:
    wanted: dict[str, Any] = {"ModelRegistrationMode": registration(config)}
    if config.artifact_store_uri:
        wanted["ArtifactStoreUri"] = config.artifact_store_uri
    if config.account_default:
        wanted["AccountDefaultStatus"] = "ENABLED"
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def _tag_drift(clients: Clients, arn: str, config: BootstrapConfig) -> dict[str, str]:
    """Our tags that are missing or hold another value; tags of anyone else's stay as they are."""
    have = {t["Key"]: t["Value"] for t in clients.sagemaker.list_tags(ResourceArn=arn)["Tags"]}
    return {k: v for k, v in wanted_tags(config).items() if have.get(k) != v}


def _create(
    clients: Clients, config: BootstrapConfig, role_arn: str, sleep: Callable[[float], None]
) -> str:
    request: dict[str, Any] = {
        "Name": config.tracking_server_name,
        "ArtifactStoreUri": config.artifact_store_uri,
        "RoleArn": role_arn,
        "ModelRegistrationMode": registration(config),
        "Tags": [{"Key": k, "Value": v} for k, v in wanted_tags(config).items()],
    }
    if config.account_default:
        request["AccountDefaultStatus"] = "ENABLED"

    def create() -> str:
        return str(clients.sagemaker.create_mlflow_app(**request)["Arn"])

    def theirs() -> str | None:
        found = find(clients, config.tracking_server_name)
        return str(found["Arn"]) if found else None

    return tracking.creating(create, theirs, config, sleep)


def wait_ready(
    clients: Clients,
    config: BootstrapConfig,
    arn: str,
    progress: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    def status() -> str:
        found = str(clients.sagemaker.describe_mlflow_app(Arn=arn)["Status"])
        fail_if_failed(config, found)
        return found

    return tracking.polling(status, set(READY), config, sleep, progress)


def fail_if_failed(config: BootstrapConfig, status: str) -> None:
    if status in FAILED:
        # DescribeMlflowApp has no failure reason to give (botocore's model holds none).
        raise BootstrapError(
            f"{config.what} is {status}; SageMaker reports no further reason through its API: "
            "see the SageMaker console or CloudTrail"
        )
