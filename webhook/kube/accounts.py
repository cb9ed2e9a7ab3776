"""The configured ServiceAccount in each opted-in namespace: ensured, and known to admission."""

from __future__ import annotations

import logging
import threading

from kubernetes import client

from webhook.core import accounts

log = logging.getLogger("webhook.kube.accounts")


class AccountCache:
    """Namespaces where the ServiceAccount is known to exist. Misses are asked live, once."""

    def __init__(self, api: client.ApiClient, name: str, lookup_timeout: float = 1.0) -> None:
        self.core = client.CoreV1Api(api)
        self.name = name
        self.timeout = lookup_timeout
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def known(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._known

    def add(self, namespace: str) -> None:
        with self._lock:
            self._known.add(namespace)

    def discard(self, namespace: str) -> None:
        """The account was deleted: admission asks live again until it is back."""
        with self._lock:
            self._known.discard(namespace)

    def lookup(self, namespace: str) -> bool:
        """The one API call allowed on the request path: a GET with a short timeout."""
        try:
            self.core.read_namespaced_service_account(
                self.name, namespace, _request_timeout=self.timeout
            )
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        self.add(namespace)
        return True


def ensure(core: client.CoreV1Api, namespace: str, name: str, role_arn: str | None) -> str:
    """Create or repair the ServiceAccount; return what was done."""
    try:
        current = core.read_namespaced_service_account(name, namespace)
    except client.ApiException as error:
        if error.status != 404:
            raise
        try:
            core.create_namespaced_service_account(
                namespace, accounts.desired(name, namespace, role_arn)
            )
            return "created"
        except client.ApiException as conflict:
            if conflict.status != 409:
                raise
            current = core.read_namespaced_service_account(name, namespace)
    patch, why = accounts.repair(core.api_client.sanitize_for_serialization(current), role_arn)
    if patch is not None:
        core.patch_namespaced_service_account(name, namespace, patch)
    return why
