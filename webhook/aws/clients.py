"""boto3 clients from the SDK's own configuration, with adaptive retries, a record of every
write call, and errors turned into one line a person can act on."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from webhook.core.policies import READ_VERBS
from webhook.core.settings import example_value

# Throttling is retried by botocore itself, pacing the client to what the service allows.
RETRIES = Config(
    retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra="mlflow-webhook"
)
# What an AWS call raises that `explain` turns into one line: callers above this package
# name them here, so that only webhook.aws imports botocore.
AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}


class BootstrapError(RuntimeError):
    """Ends the bootstrap; the message is one line. `exit_code` 2 is a setup problem."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Clients:
    """One client per service, sharing a record of the operations called."""

    def __init__(self, region: str | None, dry_run: bool) -> None:
        # botocore reads AWS_DEFAULT_REGION; EKS and the pod-identity webhook also set AWS_REGION.
        self.session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION"))
        if not self.session.region_name:
            raise BootstrapError("no AWS region: give --region or set AWS_REGION", exit_code=2)
        self.region: str = self.session.region_name
        self.dry_run = dry_run
        self.calls: list[str] = []
        self._clients: dict[str, Any] = {}

    @property
    def writes(self) -> list[str]:
        return [
            c
            for c in self.calls
            if not c.split(":", 1)[1].startswith(READ_VERBS) and c != "sts:GetCallerIdentity"
        ]

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._clients:
            client = self.session.client(service, config=RETRIES)
            client.meta.events.register("before-call.*.*", self._record)
            self._clients[service] = client
        return self._clients[service]

    def _record(self, model: Any, **_: Any) -> None:
        name = f"{model.service_model.signing_name}:{model.name}"
        # A dry run must make no write at all: stop one before it is sent, not after.
        if (
            self.dry_run
            and not model.name.startswith(READ_VERBS)
            and name != "sts:GetCallerIdentity"
        ):
            raise BootstrapError(f"internal error: a dry run tried to call {name}")
        self.calls.append(name)


def code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def explain(error: Exception, resource: str) -> BootstrapError:
    """One line: what was denied or failed, on which resource."""
    if isinstance(error, NoCredentialsError):
        return BootstrapError(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run with a role",
            exit_code=2,
        )
    if isinstance(error, NoRegionError):
        return BootstrapError("no AWS region: give --region or set AWS_REGION", exit_code=2)
    if isinstance(error, ClientError):
        operation = error.operation_name
        message = error.response.get("Error", {}).get("Message", "")
        if code(error) in _DENIED:
            return BootstrapError(f"access denied: {operation} on {resource}: {message}")
        return BootstrapError(f"{operation} on {resource} failed: {code(error)}: {message}")
    if isinstance(error, BotoCoreError):
        return BootstrapError(f"AWS call on {resource} failed: {error}")
    return BootstrapError(str(error))


def preflight(region: str | None) -> None:
    """What would fail every AWS call, found before serving starts: one line, exit code 2."""
    clients = Clients(region, dry_run=True)
    # In a Pod, the EKS pod-identity webhook sets AWS_ROLE_ARN from our ServiceAccount's
    # annotation, which the irsa overlay fills from WEBHOOK_IAM_ROLE_ARN in settings.env.
    role = os.environ.get("AWS_ROLE_ARN", "")
    reason = example_value(role)
    if reason:
        raise BootstrapError(f"AWS_ROLE_ARN {role!r} {reason}", exit_code=2)
    if clients.session.get_credentials() is None:
        raise explain(NoCredentialsError(), "the caller identity")
