"""The three setups of `benchmarks.apiserver` on one real control plane (../shared/kube):

- `none`: a namespace no webhook selects, so the API server calls none;
- `floor`: a namespace only a second configuration selects, which calls the floor (a bare
  aiohttp server over TLS that allows with the uid: benchmarks/floor.py);
- `replay`: a namespace only a third configuration selects, which calls a floor that answers
  with our patch, made once (benchmarks/replay.py); our ServiceAccount is there, as the patch
  names it;
- `ours`: a namespace opted in, which the manifests' own configuration sends to
  `mlflow-webhook serve`, running with its cluster as its own ServiceAccount.

Every configuration is the manifests' (failurePolicy, timeout, reinvocation, object selector),
differing only in name, namespace selector and URL, and every server presents one certificate
from one CA, so the API server does the same TLS work for each.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.creates import Creator
from benchmarks.load import Server
from testing.kube.controlplane import NAMESPACE, ControlPlane, eventually, missing_reason
from testing.support import free_port
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, ensure_self_signed

SETUPS = ("none", "floor", "replay", "ours")
NAMESPACES = {setup: f"bench-{setup}" for setup in SETUPS}
OURS = "pods.mlflow-webhook.io"  # the manifests' webhook name, as the API server labels it
# The other setups' webhooks, as the API server labels them; each selects namespaces by a label.
FLOORS = {setup: f"{setup}.benchmark.mlflow-webhook.io" for setup in ("floor", "replay")}
CONFIG = "mlflow-webhook"
ACCOUNT = "sagemaker-mlflow-sa"  # the ServiceAccount our injection names


class Cluster:
    """The control plane, the configurations, a namespace per setup and the servers."""

    def __init__(self) -> None:
        reason = missing_reason()
        if reason:
            raise SystemExit(f"benchmarks.apiserver needs a control plane: {reason}")
        self.work = Path(tempfile.mkdtemp(prefix="mlflow-webhook-apiserver-"))
        self.plane = ControlPlane(self.work / "kube")
        self.servers: dict[str, Server] = {}

    def start(self) -> None:
        pki = self.work / "pki"
        ensure_self_signed(pki, list(LOCAL_NAMES), list(LOCAL_IPS))
        bundle = base64.b64encode((pki / "ca.crt").read_bytes()).decode()
        ports = {setup: free_port() for setup in ("floor", "replay", "ours")}
        self.plane.start()

        def trusted(doc: dict[str, Any]) -> None:
            for hook in doc.get("webhooks", []) if doc["kind"] == CONFIG_KIND else []:
                hook["clientConfig"]["caBundle"] = bundle

        kubeconfig = self.plane.install(ports["ours"], edit=trusted)
        ours = self._ours_configuration()
        for setup in FLOORS:
            self.plane.apply(floor_configuration(ours, setup, ports[setup]))
        self._namespaces()
        log = self.work / "servers.log"
        for setup in FLOORS:
            self.servers[setup] = Server(setup, pki, log, port=ports[setup])
        cluster = ("--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE)
        self.servers["ours"] = Server("ours", pki, log, *cluster, port=ports["ours"])
        for setup, namespace in NAMESPACES.items():
            account = ACCOUNT if setup in ("replay", "ours") else "default"
            eventually(
                lambda a=account, n=namespace: self.plane.get("serviceaccount", a, n),
                timeout=60,
                what=f"ServiceAccount {account} in {namespace}",
            )

    def _ours_configuration(self) -> dict[str, Any]:
        found = self.plane.get("mutatingwebhookconfiguration", CONFIG)
        assert found is not None
        return found

    def _namespaces(self) -> None:
        for setup in ("none", *FLOORS):
            labels = {FLOORS[setup]: "enabled"} if setup in FLOORS else {}
            metadata = {"name": NAMESPACES[setup], "labels": labels}
            self.plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
        metadata = {"name": ACCOUNT, "namespace": NAMESPACES["replay"]}
        self.plane.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
        self.plane.label_namespace(NAMESPACES["ours"])

    def creator(self, clients: int) -> Creator:
        """A client as the cluster's admin (system:masters: exempt from priority and fairness)."""
        return Creator(self.plane.url.split("//", 1)[1], self.plane.admin_context(), clients)

    def pids(self) -> dict[str, int]:
        """The processes that serve a create: the control plane's and the webhooks'."""
        found = {
            name: int((self.plane.run_dir / f"{name}.pid").read_text())
            for name in ("kube-apiserver", "etcd", "kube-controller-manager")
            if (self.plane.run_dir / f"{name}.pid").is_file()
        }
        found.update({setup: server.proc.pid for setup, server in self.servers.items()})
        return found

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.plane.stop()


CONFIG_KIND = "MutatingWebhookConfiguration"


@contextlib.contextmanager
def running() -> Iterator[Cluster]:
    """The cluster started, then everything stopped, whatever happens in between."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def floor_configuration(ours: dict[str, Any], setup: str, port: int) -> dict[str, Any]:
    """Ours, renamed, pointed at the setup's server and selecting only the setup's namespace."""
    hook = copy.deepcopy(ours["webhooks"][0])
    hook["name"] = FLOORS[setup]
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{port}/mutate",
        "caBundle": hook["clientConfig"]["caBundle"],
    }
    hook["namespaceSelector"] = {"matchLabels": {FLOORS[setup]: "enabled"}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": CONFIG_KIND,
        "metadata": {"name": f"benchmark-{setup}"},
        "webhooks": [hook],
    }
