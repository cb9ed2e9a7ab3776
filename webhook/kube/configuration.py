"""Reading the cluster's webhook configurations for the startup drift check."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from webhook.core import drift
from webhook.kube.errors import describe


class Unreadable(Exception):
    """A configuration we may not read: RBAC lacks the grant; the message names it."""


# A warning's check, once at start: it must not hold the start up for long.
READ_TIMEOUT_SECONDS = 10


def _read(api: client.AdmissionregistrationV1Api, name: str) -> dict[str, Any] | None:
    """The configuration, None when it does not exist; a 403 is not a 404, it is raised."""
    try:
        found = api.read_mutating_webhook_configuration(name, _request_timeout=READ_TIMEOUT_SECONDS)
    except client.ApiException as error:
        if error.status == 404:
            return None
        if error.status == 403:
            raise Unreadable(
                f"cannot check MutatingWebhookConfiguration {name}: {describe(error)}"
            ) from error
        raise
    return dict(api.api_client.sanitize_for_serialization(found))


def drift_warnings(api_client: client.ApiClient, name: str, own_namespace: str) -> list[str]:
    """Warnings about our configuration and the EKS webhook's; a configuration we are not allowed
    to read is a warning that names the missing permission, and its checks are skipped."""
    api = client.AdmissionregistrationV1Api(api_client)
    try:
        ours = _read(api, name)
    except Unreadable as error:
        return [str(error)]
    try:
        eks = _read(api, drift.EKS_WEBHOOK)
    except Unreadable as error:
        return [*drift.warnings(ours, None, own_namespace), str(error)]
    return drift.warnings(ours, eks, own_namespace)
