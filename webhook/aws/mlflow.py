"""A tracking server or an MLflow App, as one interface: found, made or kept as asked, waited
for, verified, deleted, and its UI opened. What is the same for both is written here once; each
kind's own calls are in tracking.py and apps.py, and its words and policies in
webhook.core.kinds."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from webhook.aws.clients import BootstrapError, Clients, code
from webhook.aws.config import BootstrapConfig
from webhook.core.documents import MANAGED_BY_KEY, MANAGED_BY_VALUE
from webhook.core.kinds import Kind
from webhook.core.plans import Plan
from webhook.core.policies import partition

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Described:
    """One server or App as SageMaker describes it, under the same names for both kinds."""

    arn: str
    name: str
    status: str
    artifact_store_uri: str
    role_arn: str
    fields: dict[str, Any]  # as SageMaker gave them


class Mlflow(ABC):
    kind: Kind
    # What SageMaker's descriptions put before Arn, Name and Status: "TrackingServer" or nothing.
    fields = ""

    @abstractmethod
    def find(self, clients: Clients, name: str) -> Described | None:
        """The one called `name`, the bootstrap's to keep; None when there is none."""

    @abstractmethod
    def describe(self, clients: Clients, arn: str) -> Described | None:
        """The one this ARN names; None when it is not there."""

    @abstractmethod
    def others(self, clients: Clients, skip: str) -> Iterator[Described]:
        """Every one in the region, ours or anyone's, but `skip` and those going away."""

    @abstractmethod
    def delete(self, clients: Clients, found: Described) -> None: ...

    @abstractmethod
    def _presign(
        self, clients: Clients, name: str, arn: str | None, timing: dict[str, int]
    ) -> str: ...

    @abstractmethod
    def _creation(self, config: BootstrapConfig) -> str:
        """The plan's detail for a new one."""

    @abstractmethod
    def _asked(self, config: BootstrapConfig) -> dict[str, Any]:
        """What a create request asks of this kind alone."""

    @abstractmethod
    def _create(self, clients: Clients, request: dict[str, Any]) -> str:
        """The create call; the new one's ARN."""

    @abstractmethod
    def _keep(
        self,
        clients: Clients,
        plan: Plan,
        config: BootstrapConfig,
        current: Described,
        sleep: Sleep,
    ) -> None:
        """One that is there: started, updated, waited for, or left as it is."""

    def ensure(
        self,
        clients: Clients,
        plan: Plan,
        config: BootstrapConfig,
        account: str,
        role_arn: str,
        sleep: Sleep = time.sleep,
    ) -> None:
        name = config.tracking_server_name
        current = self.find(clients, name)
        if current is None:
            if not config.artifact_store_uri:
                raise BootstrapError(
                    f"{self.kind.what(name)} does not exist: give --artifact-store-uri", 2
                )
            plan.add(self.kind.step, name, "create", self._creation(config))
            # Empty when SageMaker assigns it: a dry run cannot know it.
            region = clients.region
            plan.tracking_arn = self.kind.arn(partition(region), region, account, name)
            plan.tracking_status = "Creating"
            plan.artifact_store_uri = config.artifact_store_uri
            if not plan.dry_run:
                plan.tracking_arn = self._created(clients, config, role_arn, sleep)
            return
        plan.tracking_arn, plan.artifact_store_uri = current.arn, current.artifact_store_uri
        plan.tracking_status = current.status
        self._fail_if_failed(name, current.status)
        self._keep(clients, plan, config, current, sleep)

    def _described(self, found: dict[str, Any]) -> Described:
        return Described(
            arn=str(found[f"{self.fields}Arn"]),
            name=str(found.get(f"{self.fields}Name", "")),
            status=str(found[f"{self.fields}Status"]),
            artifact_store_uri=str(found.get("ArtifactStoreUri", "")),
            role_arn=str(found.get("RoleArn") or ""),
            fields=dict(found),
        )

    def _settled(self, plan: Plan, name: str, status: str) -> None:
        """Nothing to change: ready, or to be waited for."""
        plan.add(self.kind.step, name, "ok" if status in self.kind.ready else "wait", status)

    def _tags(self, config: BootstrapConfig) -> dict[str, str]:
        return {MANAGED_BY_KEY: MANAGED_BY_VALUE, **config.tags}

    def _created(
        self, clients: Clients, config: BootstrapConfig, role_arn: str, sleep: Sleep
    ) -> str:
        def theirs() -> str | None:
            found = self.find(clients, config.tracking_server_name)
            return found.arn if found else None

        request = {
            f"{self.fields}Name": config.tracking_server_name,
            "ArtifactStoreUri": config.artifact_store_uri,
            "RoleArn": role_arn,
            **self._asked(config),
            "Tags": [{"Key": k, "Value": v} for k, v in self._tags(config).items()],
        }
        return creating(lambda: self._create(clients, request), theirs, config, sleep)

    def wait_ready(
        self,
        clients: Clients,
        config: BootstrapConfig,
        arn: str,
        progress: Callable[[str], None] | None,
        sleep: Sleep = time.sleep,
        until: frozenset[str] | None = None,
    ) -> str:
        """Its status once it is one of `until` (ready, unless said), polled with backoff."""
        name = config.tracking_server_name

        def status() -> str:
            found = self.describe(clients, arn)
            status = found.status if found else "missing"
            self._fail_if_failed(name, status)
            return status

        what = self.kind.what(name)
        return polling(status, until or self.kind.ready, config, sleep, progress, what)

    def verify(self, clients: Clients, plan: Plan, arn: str) -> None:
        """`--tracking-server-arn`: use what is there, change nothing."""
        resource, _, name = arn.split(":", 5)[5].partition("/")
        found = self.describe(clients, arn)
        status = found.status if found else "missing"
        self._fail_if_failed(arn, status)
        plan.tracking_arn, plan.tracking_status = arn, status
        plan.artifact_store_uri = found.artifact_store_uri if found else ""
        plan.add(resource, name, "ok", f"verified only; {status}")

    def ui_url(
        self,
        clients: Clients,
        name: str,
        arn: str | None,
        expires: int = 300,
        session: int = 43200,
    ) -> str:
        """A presigned URL for its UI, by ARN, else by name."""
        timing = {"ExpiresInSeconds": expires, "SessionExpirationDurationInSeconds": session}
        return self._presign(clients, name, arn, timing)

    def _fail_if_failed(self, name: str, status: str) -> None:
        if self.kind.failed(status):
            # Neither describe call has a failure reason to give (botocore's model holds none).
            raise BootstrapError(
                f"{self.kind.what(name)} is {status}; SageMaker reports no further reason "
                "through its API: see the SageMaker console or CloudTrail"
            )


def elsewhere(plan: Plan, arn: str, account: str) -> None:
    """`--tracking-server-arn` in another account: our credentials can neither see nor change it,
    so it is only recorded; the Pods reach it through --assume-role-arn."""
    resource, _, name = arn.split(":", 5)[5].partition("/")
    plan.tracking_arn, plan.tracking_status = arn, "unknown"
    plan.add(resource, name, "ok", f"in account {account}: not verified, nothing made")


def creating(
    create: Callable[[], str],
    theirs: Callable[[], str | None],
    config: BootstrapConfig,
    sleep: Sleep,
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


def polling(
    status: Callable[[], str],
    until: frozenset[str],
    config: BootstrapConfig,
    sleep: Sleep,
    progress: Callable[[str], None] | None,
    what: str,
) -> str:
    """Ask `status` (which raises on a failed state) until it is one of `until`, backing off."""
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
