"""The serverless MLflow App's own calls: found by its name, created, kept as asked, deleted,
and a presigned UI URL.

An App's ARN holds an ID SageMaker assigns (app-...), not its name, so it is found by paging
through ListMlflowApps. DescribeMlflowApp gives no tags and UpdateMlflowApp sets none: tags are
read with ListTags and added with AddTags.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from webhook.aws.clients import BootstrapError, Clients, code
from webhook.aws.config import BootstrapConfig
from webhook.aws.mlflow import Described, Mlflow, Sleep
from webhook.core import kinds
from webhook.core.plans import Plan


class App(Mlflow):
    kind = kinds.APP

    def find(self, clients: Clients, name: str) -> Described | None:
        """None too when it is being deleted. Should there be two (made elsewhere, or by two
        runs at once), the oldest is the one, so every replica settles on the same App."""
        found = [
            summary
            for summary in self._listed(clients)
            if summary.get("Name") == name and summary.get("Status") not in self.kind.gone
        ]
        if not found:
            return None
        oldest = min(found, key=lambda s: s["CreationTime"])
        return self.describe(clients, oldest["Arn"])

    def describe(self, clients: Clients, arn: str) -> Described:
        return self._described(dict(clients.sagemaker.describe_mlflow_app(Arn=arn)))

    def others(self, clients: Clients, skip: str) -> Iterator[Described]:
        for summary in self._listed(clients):
            if summary["Arn"] == skip or summary["Status"] in self.kind.gone:
                continue
            try:
                yield self.describe(clients, summary["Arn"])
            except ClientError as error:
                if code(error) != "ResourceNotFound":
                    raise
                # deleted since it was listed

    def delete(self, clients: Clients, found: Described) -> None:
        clients.sagemaker.delete_mlflow_app(Arn=found.arn)

    def _presign(self, clients: Clients, name: str, arn: str | None, timing: dict[str, int]) -> str:
        if not arn:
            found = self.find(clients, name)
            if found is None:
                raise BootstrapError(f"no MLflow App is named {name}")
            arn = found.arn
        return str(
            clients.sagemaker.create_presigned_mlflow_app_url(Arn=arn, **timing)["AuthorizedUrl"]
        )

    def _creation(self, config: BootstrapConfig) -> str:
        default = ", account default" if config.account_default else ""
        return f"{_registration(config)}{default}, {config.artifact_store_uri}"

    def _asked(self, config: BootstrapConfig) -> dict[str, Any]:
        asked = {"ModelRegistrationMode": _registration(config)}
        if config.account_default:
            asked["AccountDefaultStatus"] = "ENABLED"
        return asked

    def _create(self, clients: Clients, request: dict[str, Any]) -> str:
        return str(clients.sagemaker.create_mlflow_app(**request)["Arn"])

    def _keep(
        self,
        clients: Clients,
        plan: Plan,
        config: BootstrapConfig,
        current: Described,
        sleep: Sleep,
    ) -> None:
        name, arn, status = config.tracking_server_name, current.arn, current.status
        drift = _drift(current.fields, config)
        tags = self._tag_drift(clients, arn, config)
        if not drift and not tags:
            self._settled(plan, name, status)
            return
        changed = sorted(drift) + (["Tags"] if tags else [])
        if status not in self.kind.ready:
            # SageMaker refuses an update while the App is still being created or updated.
            plan.add(self.kind.step, name, "wait", f"{status}; then update {', '.join(changed)}")
            return
        plan.add(self.kind.step, name, "update", ", ".join(changed))
        if plan.dry_run:
            return
        if tags:
            clients.sagemaker.add_tags(
                ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )
        if drift:
            clients.sagemaker.update_mlflow_app(Arn=arn, **drift)
            plan.tracking_status = "Updating"

    def _tag_drift(self, clients: Clients, arn: str, config: BootstrapConfig) -> dict[str, str]:
        """Our tags that are missing or hold another value; anyone else's stay as they are."""
        listed = clients.sagemaker.list_tags(ResourceArn=arn)["Tags"]
        have = {t["Key"]: t["Value"] for t in listed}
        return {k: v for k, v in self._tags(config).items() if have.get(k) != v}

    def _listed(self, clients: Clients) -> Iterator[dict[str, Any]]:
        for page in clients.sagemaker.get_paginator("list_mlflow_apps").paginate():
            yield from page.get("Summaries", [])


def _registration(config: BootstrapConfig) -> str:
    return (
        "AutoModelRegistrationEnabled"
        if config.automatic_model_registration
        else "AutoModelRegistrationDisabled"
    )


def _drift(current: dict[str, Any], config: BootstrapConfig) -> dict[str, Any]:
    wanted: dict[str, Any] = {"ModelRegistrationMode": _registration(config)}
    if config.artifact_store_uri:
        wanted["ArtifactStoreUri"] = config.artifact_store_uri
    if config.account_default:
        wanted["AccountDefaultStatus"] = "ENABLED"
    return {k: v for k, v in wanted.items() if current.get(k) != v}
