"""What `serve` needs beyond the mutation settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from webhook.core.settings import Settings

# The API server caps objects at 3 MiB; an AdmissionReview carries the object and its envelope.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ClusterConfig:
    """How the webhook works with its cluster. Absent: admission only, nothing written."""

    kubeconfig: str | None
    namespace: str = "mlflow-webhook"
    webhook_config_name: str = "mlflow-webhook"
    leader_election: bool = True
    identity: str = ""
    lease_name: str = "mlflow-webhook"
    secret_name: str = "mlflow-webhook-tls"  # noqa: S105 - a Secret's name, not a secret
    namespace_selector: str = "mlflow-webhook.io/inject=enabled"
    resync_seconds: float = 300.0
    lease_seconds: int = 15
    retry_seconds: float = 2.0
    lookup_timeout: float = 1.0


@dataclass(frozen=True)
class ServeConfig:
    """`settings`, or `prepare`: work that yields them at startup, off the request path (the AWS
    bootstrap when no tracking URI is given), told whether this replica leads, since only the
    leader writes. The server is ready once settings exist."""

    settings: Settings | None
    prepare: Callable[[Callable[[], bool]], Settings] | None = None
    host: str = "0.0.0.0"
    port: int = 8443
    cert_dir: Path = Path("certs")
    self_signed: bool = False
    service: str = "mlflow-webhook"
    namespace: str = "mlflow-webhook"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cert_reload_seconds: float = 10.0
    shutdown_timeout: float = 20.0
    cluster: ClusterConfig | None = None
