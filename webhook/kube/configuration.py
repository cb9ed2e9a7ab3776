"""Reading the cluster's webhook configurations for the startup drift check."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from webhook.core import drift


def _read(api: client.AdmissionregistrationV1Api, name: str) -> dict[str, Any] | None:
    try:
        found = api.read_mutating_webhook_configuration(name)
    except client.ApiException as error:
        if error.status in (403, 404):
            return None
        raise
    return dict(api.api_client.sanitize_for_serialization(found))


def drift_warnings(api_client: client.ApiClient, name: str, own_namespace: str) -> list[str]:
    api = client.AdmissionregistrationV1Api(api_client)
    return drift.warnings(_read(api, name), _read(api, drift.EKS_WEBHOOK), own_namespace)
