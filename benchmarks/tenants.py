"""A real control plane for `load --compare namespace-settings`: the webhook's RBAC installed,
and the benchmark's namespace (team-a) opted in with a tracking URI and role of its own."""

from __future__ import annotations

from types import TracebackType

from testing.kube.controlplane import NAMESPACE, ControlPlane, missing_reason
from testing.support import ROLE_ARN, free_port

# The global role, named again: both servers run at once, each leading, and must agree on the
# ServiceAccount's role or they would rewrite it in turn. What is measured (the lookup and the
# resolved settings) costs the same whichever role is named.
TEAM = {
    "mlflow-webhook.io/tracking-uri": (
        "arn:aws:sagemaker:eu-west-1:444455556666:mlflow-tracking-server/team-a"
    ),
    "mlflow-webhook.io/role-arn": ROLE_ARN,
}


class Tenants:
    def __init__(self) -> None:
        reason = missing_reason()
        if reason:
            raise SystemExit(f"--compare namespace-settings needs a control plane: {reason}")
        self.plane = ControlPlane()
        self.servers: dict[str, tuple[str, ...]] = {}

    def __enter__(self) -> Tenants:
        self.plane.start()
        # The API server never calls the benchmark's servers: wrk posts to them directly.
        kubeconfig = self.plane.install(free_port())
        self.plane.label_namespace("team-a", **TEAM)
        # Each leads at once, so each keeps the namespace watch.
        cluster = ("--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE)
        cluster += ("--no-leader-election",)
        self.servers = {
            "off": (*cluster, "--namespace-settings", "off"),
            "on": (*cluster, "--namespace-settings", "on"),
        }
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.plane.stop()
