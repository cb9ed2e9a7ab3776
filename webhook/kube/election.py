"""Leader election on a coordination.k8s.io/v1 Lease. Only the leader writes to the cluster."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from kubernetes import client

from webhook.core import leases
from webhook.kube.errors import describe, permission

log = logging.getLogger("webhook.kube.election")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        on_start: Callable[[], None],
        on_stop: Callable[[], None],
        duration_seconds: int = 15,
        retry_seconds: float = 2.0,
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.on_start, self.on_stop = on_start, on_stop
        self.duration, self.retry = duration_seconds, retry_seconds
        self.leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; a leader gives the Lease up so another replica takes over at once."""
        self._stop.set()
        self._thread.join(timeout=self.retry + 10)
        if self.leading:
            self._lose()
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.renew_time = None
                    self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            except client.ApiException as error:
                log.warning(
                    "could not release the Lease: " + describe(error),
                    extra={"status": error.status, **(permission(error) or {})},
                )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._try()
            except Exception as error:  # noqa: BLE001 - an API hiccup must not end the campaign
                denied = permission(error) if isinstance(error, client.ApiException) else None
                log.warning(
                    "leader election attempt failed: " + describe(error),
                    extra={"error": repr(error), **(denied or {})},
                )
                held = False
            if held and not self.leading:
                self.leading = True
                log.info("became leader", extra={"identity": self.identity})
                self.on_start()
            elif not held and self.leading:
                self._lose()
            self._stop.wait(self.retry)

    def _lose(self) -> None:
        self.leading = False
        log.info("lost leadership", extra={"identity": self.identity})
        self.on_stop()

    def _try(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": leases.spec_for(self.identity, now, self.duration, None),
            }
            return self._write(lambda: self.api.create_namespaced_lease(self.namespace, body))
        spec = self.api.api_client.sanitize_for_serialization(lease.spec) or {}
        if leases.decide(spec, self.identity, now) == "follow":
            return False
        body = self.api.api_client.sanitize_for_serialization(lease)
        body["spec"] = leases.spec_for(self.identity, now, self.duration, spec)
        return self._write(
            lambda: self.api.replace_namespaced_lease(self.name, self.namespace, body)
        )

    @staticmethod
    def _write(call: Callable[[], object]) -> bool:
        """Create or update; a 409 means another replica got there first."""
        try:
            call()
        except client.ApiException as error:
            if error.status == 409:
                return False
            raise
        return True
