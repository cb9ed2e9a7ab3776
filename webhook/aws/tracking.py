"""The SageMaker MLflow tracking server: create, start, verify, wait, and a presigned UI URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from webhook.aws.clients import BootstrapError, Clients, code
from webhook.aws.config import BootstrapConfig
from webhook.core import policies
from webhook.core.plans import Plan

READY = frozenset({"Created", "Started", "Updated", "MaintenanceComplete"})


def arn_for(clients: Clients, account: str, name: str) -> str:
    part = policies.partition(clients.region)
    return f"arn:{part}:sagemaker:{clients.region}:{account}:mlflow-tracking-server/{name}"


def describe(clients: Clients, name: str) -> dict[str, Any] | None:
    try:
        return dict(clients.sagemaker.describe_mlflow_tracking_server(TrackingServerName=name))
    except ClientError as error:
        if code(error) == "ResourceNotFound":
            return None
        raise


def ensure(
    clients: Clients,
    plan: Plan,
    config: BootstrapConfig,
    account: str,
    role_arn: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    name = config.tracking_server_name
    current = describe(clients, name)
    if current is None:
        if not config.artifact_store_uri:
            raise BootstrapError(
                f"tracking server {name} does not exist: give --artifact-store-uri", 2
            )
        plan.add(
            "tracking-server",
            name,
            "create",
            f"{config.size}, {config.artifact_store_uri}",
        )
        plan.tracking_arn, plan.tracking_status = arn_for(clients, account, name), "Creating"
        plan.artifact_store_uri = config.artifact_store_uri
        if not plan.dry_run:
            plan.tracking_arn = _create(clients, config, role_arn, sleep)
        return
    plan.tracking_arn = str(current["TrackingServerArn"])
    plan.artifact_store_uri = str(current.get("ArtifactStoreUri", ""))
    status = plan.tracking_status = str(current["TrackingServerStatus"])
    _fail_if_failed(name, status)
    if status in ("Stopped", "Stopping"):
        plan.add("tracking-server", name, "start", f"was {status}")
        if not plan.dry_run:
            if status == "Stopping":
                _poll(clients, name, {"Stopped"}, config, sleep)
            clients.sagemaker.start_mlflow_tracking_server(TrackingServerName=name)
            plan.tracking_status = "Starting"
        return
    drift = _drift(current, config)
    if drift:
        plan.add("tracking-server", name, "update", ", ".join(sorted(drift)))
        if not plan.dry_run:
            clients.sagemaker.update_mlflow_tracking_server(TrackingServerName=name, **drift)
            plan.tracking_status = "Updating"
        return
    plan.add("tracking-server", name, "ok" if status in READY else "wait", status)


def _drift(current: dict[str, Any], config: BootstrapConfig) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "TrackingServerSize": config.size,
        "AutomaticModelRegistration": config.automatic_model_registration,
    }
    if config.artifact_store_uri:
        wanted["ArtifactStoreUri"] = config.artifact_store_uri
    return {k: v for k, v in wanted.items() if current.get(k) is not None and current.get(k) != v}


def _create(
    clients: Clients,
    config: BootstrapConfig,
    role_arn: str,
    sleep: Callable[[float], None],
) -> str:
    request: dict[str, Any] = {
        "TrackingServerName": config.tracking_server_name,
        "ArtifactStoreUri": config.artifact_store_uri,
        "RoleArn": role_arn,
        "TrackingServerSize": config.size,
        "AutomaticModelRegistration": config.automatic_model_registration,
        "Tags": [
            {"Key": k, "Value": v}
            for k, v in {"app.kubernetes.io/managed-by": "mlflow-webhook", **config.tags}.items()
        ],
    }
    if config.mlflow_version:
        request["MlflowVersion"] = config.mlflow_version

    def create() -> str:
        return str(clients.sagemaker.create_mlflow_tracking_server(**request)["TrackingServerArn"])

    def theirs() -> str | None:
        found = describe(clients, config.tracking_server_name)
        return str(found["TrackingServerArn"]) if found else None

    return creating(create, theirs, config, sleep)


def creating(
    create: Callable[[], str],
    theirs: Callable[[], str | None],
    config: BootstrapConfig,
    sleep: Callable[[float], None],
) -> str:
    """`create`'s ARN, or `theirs` when another replica created it first; retried while a
    just-created execution role is not yet visible to SageMaker."""
    deadline = time.monotonic() + config.role_propagation_seconds
    delay = 1.0
    while True:
        try:
            return create()
        except ClientError as error:
            message = str(error).lower()
            if code(error) == "ResourceInUse" or "already exists" in message:
                found = theirs()
                if found is not None:
                    return found
                raise
            # A just-created execution role is not yet visible to SageMaker for a while.
            not_ready = (
                code(error) == "ValidationException" and "assume" in message and "role" in message
            )
            if not (not_ready and time.monotonic() < deadline):
                raise
        sleep(delay)
        delay = min(delay * 2, 10.0)


def _poll(
    clients: Clients,
    name: str,
    until: set[str],
    config: BootstrapConfig,
    sleep: Callable[[float], None],
    progress: Callable[[str], None] | None = None,
) -> str:
    def status() -> str:
        current = describe(clients, name)
        found = str(current["TrackingServerStatus"]) if current else "missing"
        _fail_if_failed(name, found)
        return found

    return polling(status, until, config, sleep, progress, f"tracking server {name}")


def polling(
    status: Callable[[], str],
    until: set[str],
    config: BootstrapConfig,
    sleep: Callable[[float], None],
    progress: Callable[[str], None] | None = None,
    what: str = "",
) -> str:
    """Ask `status` (which raises on a failed state) until it is one of `until`, backing off."""
    what = what or config.what
    started = time.monotonic()
    delay = 1.0
    while True:
        found = status()
        elapsed = time.monotonic() - started
        if progress:
            progress(f"{what}: {found} ({int(elapsed) // 60}m{int(elapsed) % 60:02d}s)")
        if found in until:
            return found
        if elapsed > config.wait_timeout:
            raise BootstrapError(f"{what} still {found} after {int(elapsed)}s")
        sleep(delay)
        delay = min(delay * 1.5, config.poll_cap_seconds)


def wait_ready(
    clients: Clients,
    config: BootstrapConfig,
    progress: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    return _poll(clients, config.tracking_server_name, set(READY), config, sleep, progress)


def _fail_if_failed(name: str, status: str) -> None:
    if status.endswith("Failed") or status == "missing":
        raise BootstrapError(
            f"tracking server {name} is {status}; SageMaker reports no further reason "
            "through its API: see the SageMaker console or CloudTrail"
        )


def elsewhere(plan: Plan, arn: str, account: str) -> None:
    """`--tracking-server-arn` in another account: our credentials can neither see nor change it,
    so it is only recorded; the Pods reach it through --assume-role-arn."""
    kind, _, name = arn.split(":", 5)[5].partition("/")
    plan.tracking_arn, plan.tracking_status = arn, "unknown"
    plan.add(kind, name, "ok", f"in account {account}: not verified, nothing made")


def verify_existing(clients: Clients, plan: Plan, arn: str) -> None:
    """`--tracking-server-arn`: use what is there, change nothing."""
    kind, _, name = arn.split(":", 5)[5].partition("/")
    if kind == "mlflow-app":
        found: dict[str, Any] | None = clients.sagemaker.describe_mlflow_app(Arn=arn)
        status = str((found or {}).get("Status", "unknown"))
    else:
        found = describe(clients, name)
        status = str(found["TrackingServerStatus"]) if found else "missing"
    _fail_if_failed(arn, status)
    plan.tracking_arn, plan.tracking_status = arn, status
    plan.artifact_store_uri = str((found or {}).get("ArtifactStoreUri", ""))
    plan.add(kind, name, "ok", f"verified only; {status}")


def ui_url(
    clients: Clients, name: str, arn: str | None, expires: int = 300, session: int = 43200
) -> str:
    """A presigned URL for the UI of a tracking server (by name or ARN) or an MLflow App."""
    timing = {"ExpiresInSeconds": expires, "SessionExpirationDurationInSeconds": session}
    if arn and ":mlflow-app/" in arn:
        response = clients.sagemaker.create_presigned_mlflow_app_url(Arn=arn, **timing)
    else:
        name = arn.rsplit("/", 1)[-1] if arn else name
        response = clients.sagemaker.create_presigned_mlflow_tracking_server_url(
            TrackingServerName=name, **timing
        )
    return str(response["AuthorizedUrl"])
