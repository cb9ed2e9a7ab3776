"""What `serve` needs beyond the mutation settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from webhook.aws.config import BootstrapConfig
from webhook.core.plans import Plan
from webhook.core.settings import Settings

# The API server caps objects at 3 MiB; an AdmissionReview carries the object and its envelope.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Longer than the API server keeps an idle connection (its HTTP client's 90 s), so it is the
# one that closes, never racing our close with a request on a reused connection; and far
# short of aiohttp's default hour, so abandoned connections do not pile up.
DEFAULT_KEEPALIVE_SECONDS = 120.0
# Headers, and then the body, each get this long. The API server sends a review in
# milliseconds and waits at most 30 s (timeoutSeconds) for the answer.
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
# A connection costs 32 KiB idle, 54 KiB with its TLS handshake pending (docs/connections.md):
# this many keep a replica well inside the Deployment's 256 MiB limit, with room for requests
# in flight.
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class ClusterConfig:
    """How the webhook works with its cluster. Absent (--no-kube): admission only, nothing
    written."""

    kubeconfig: str | None
    # Where the kubeconfig came from, in the startup line's words ("$KUBECONFIG /path").
    source: str = "this Pod's ServiceAccount"
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
class Bootstrap:
    """`serve` without a tracking URI: the AWS bootstrap it runs at startup (the leader carries
    it out, a follower waits for it), and the settings the flags make with what it found."""

    config: BootstrapConfig
    settings: Callable[[Plan], Settings]


@dataclass(frozen=True)
class ServeConfig:
    """`settings`, or the `bootstrap` that yields them at startup, off the request path. The
    server is ready once settings exist."""

    settings: Settings | None
    bootstrap: Bootstrap | None = None
    host: str = "0.0.0.0"
    port: int = 8443
    cert_dir: Path = Path("certs")
    self_signed: bool = False
    service: str = "mlflow-webhook"
    namespace: str = "mlflow-webhook"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cert_reload_seconds: float = 10.0
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # The Pod's grace period is 30 s, of which the preStop sleep takes 5: requests in flight
    # get this long (more than the read deadline), and closing what is left takes the rest.
    shutdown_timeout: float = 15.0
    cluster: ClusterConfig | None = None
    # Each namespace may name its own tracking URI, role and experiment (webhook.core.namespaces).
    namespace_settings: bool = True
