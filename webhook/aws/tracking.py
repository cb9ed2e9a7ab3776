"""The SageMaker MLflow tracking server's own calls: described by name, created, started when
stopped, updated when it drifts, deleted, and a presigned UI URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from webhook.aws.clients import Clients, code
from webhook.aws.config import BootstrapConfig
from webhook.aws.mlflow import Described, Mlflow, Sleep
from webhook.core import kinds
from webhook.core.plans import Plan

STOPPED = frozenset({"Stopped", "Stopping"})


class TrackingServer(Mlflow):
    kind = kinds.SERVER
    fields = "TrackingServer"

    def find(self, clients: Clients, name: str) -> Described | None:
        try:
            found = clients.sagemaker.describe_mlflow_tracking_server(TrackingServerName=name)
        except ClientError as error:
            if code(error) == "ResourceNotFound":
                return None
            raise
        return self._described(dict(found))

    def describe(self, clients: Clients, arn: str) -> Described | None:
        return self.find(clients, arn.rsplit("/", 1)[-1])

    def others(self, clients: Clients, skip: str) -> Iterator[Described]:
        for page in clients.sagemaker.get_paginator("list_mlflow_tracking_servers").paginate():
            for summary in page.get("TrackingServerSummaries", []):
                if (
                    summary["TrackingServerArn"] == skip
                    or summary["TrackingServerStatus"] in self.kind.gone
                ):
                    continue
                found = self.find(clients, summary["TrackingServerName"])
                if found is not None:
                    yield found

    def delete(self, clients: Clients, found: Described) -> None:
        clients.sagemaker.delete_mlflow_tracking_server(TrackingServerName=found.name)

    def _presign(self, clients: Clients, name: str, arn: str | None, timing: dict[str, int]) -> str:
        name = arn.rsplit("/", 1)[-1] if arn else name
        response = clients.sagemaker.create_presigned_mlflow_tracking_server_url(
            TrackingServerName=name, **timing
        )
        return str(response["AuthorizedUrl"])

    def _creation(self, config: BootstrapConfig) -> str:
        return f"{config.size}, {config.artifact_store_uri}"

    def _asked(self, config: BootstrapConfig) -> dict[str, Any]:
        asked: dict[str, Any] = {
            "TrackingServerSize": config.size,
            "AutomaticModelRegistration": config.automatic_model_registration,
        }
        if config.mlflow_version:
            asked["MlflowVersion"] = config.mlflow_version
        return asked

    def _create(self, clients: Clients, request: dict[str, Any]) -> str:
        found = clients.sagemaker.create_mlflow_tracking_server(**request)
        return str(found["TrackingServerArn"])

    def _keep(
        self,
        clients: Clients,
        plan: Plan,
        config: BootstrapConfig,
        current: Described,
        sleep: Sleep,
    ) -> None:
        name, status = current.name, current.status
        if status in STOPPED:
            plan.add(self.kind.step, name, "start", f"was {status}")
            if not plan.dry_run:
                if status == "Stopping":
                    stopped = frozenset({"Stopped"})
                    self.wait_ready(clients, config, current.arn, None, sleep, until=stopped)
                clients.sagemaker.start_mlflow_tracking_server(TrackingServerName=name)
                plan.tracking_status = "Starting"
            return
        drift = _drift(current.fields, config)
        if drift:
            plan.add(self.kind.step, name, "update", ", ".join(sorted(drift)))
            if not plan.dry_run:
                clients.sagemaker.update_mlflow_tracking_server(TrackingServerName=name, **drift)
                plan.tracking_status = "Updating"
            return
        self._settled(plan, name, status)


def _drift(current: dict[str, Any], config: BootstrapConfig) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "TrackingServerSize": config.size,
        "AutomaticModelRegistration": config.automatic_model_registration,
    }
    if config.artifact_store_uri:
        wanted["ArtifactStoreUri"] = config.artifact_store_uri
    return {k: v for k, v in wanted.items() if current.get(k) is not None and current.get(k) != v}
