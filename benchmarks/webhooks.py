"""The three setups of `benchmarks.apiserver` on one real control plane (../shared/kube):

- `none`: a namespace no webhook selects, so the API server calls none;
- `floor`: a namespace only a second configuration selects, which calls the floor (a bare
  aiohttp server over TLS that allows with the uid: benchmarks/floor.py);
- `ours`: a namespace opted in, which the manifests' own configuration sends to
  `mlflow-webhook serve`, running with its cluster as its own ServiceAccount.

Both configurations are the manifests' (failurePolicy, timeout, reinvocation, object selector),
differing only in name, namespace selector and URL, and both servers present one certificate
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

SETUPS = ("none", "floor", "ours")
NAMESPACES = {setup: f"bench-{setup}" for setup in SETUPS}
OURS = "pods.mlflow-webhook.io"  # the manifests' webhook name, as the API server labels it
FLOOR = "floor.benchmark.mlflow-webhook.io"
FLOOR_LABEL = "benchmark.mlflow-webhook.io/floor"
CONFIG = "mlflow-webhook"
ACCOUNT = "sagemaker-mlflow-sa"  # the ServiceAccount our injection names


class Cluster:
    """The control plane, both configurations, the three namespaces and both servers."""

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
        ports = {"floor": free_port(), "ours": free_port()}
        self.plane.start()

        def trusted(doc: dict[str, Any]) -> None:
            for hook in doc.get("webhooks", []) if doc["kind"] == CONFIG_KIND else []:
                hook["clientConfig"]["caBundle"] = bundle

        kubeconfig = self.plane.install(ports["ours"], edit=trusted)
        self.plane.apply(floor_configuration(self._ours_configuration(), ports["floor"]))
        self._namespaces()
        log = self.work / "servers.log"
        self.servers["floor"] = Server("floor", pki, log, port=ports["floor"])
        cluster = ("--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE)
        self.servers["ours"] = Server("ours", pki, log, *cluster, port=ports["ours"])
        for setup, namespace in NAMESPACES.items():
            account = ACCOUNT if setup == "ours" else "default"
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
        labels = {"none": {}, "floor": {FLOOR_LABEL: "enabled"}}
        for setup in ("none", "floor"):
            metadata = {"name": NAMESPACES[setup], "labels": labels[setup]}
            self.plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
        self.plane.label_namespace(NAMESPACES["ours"])

    def creator(self, clients: int) -> Creator:
        """A client as the cluster's admin (system:masters: exempt from priority and fairness)."""
        # The control plane's admin TLS context: its client certificate, its CA.
        context = self.plane._admin_context()
        return Creator(self.plane.url.split("//", 1)[1], context, clients)

    def pids(self) -> dict[str, int]:
        """The processes that serve a create: the control plane's and both webhooks'."""
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


def floor_configuration(ours: dict[str, Any], port: int) -> dict[str, Any]:
    """Ours, renamed, pointed at the floor and selecting only the floor's namespace."""
    hook = copy.deepcopy(ours["webhooks"][0])
    hook["name"] = FLOOR
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{port}/mutate",
        "caBundle": hook["clientConfig"]["caBundle"],
    }
    hook["namespaceSelector"] = {"matchLabels": {FLOOR_LABEL: "enabled"}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": CONFIG_KIND,
        "metadata": {"name": "benchmark-floor"},
        "webhooks": [hook],
    }
