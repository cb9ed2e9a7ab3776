"""One test's view of the real control plane: the manifests installed, the webhook's replicas as
its own ServiceAccount (straight to the API server, or through the recording proxy), and the few
things tests read back: ServiceAccounts, the Lease, the Secret, served certificates, metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from testing.kube.controlplane import NAMESPACE, WEBHOOK_SA, ControlPlane, eventually, replica
from testing.kube.proxy import ApiProxy
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, free_port, review_for
from webhook.tls import certs

SA = "sagemaker-mlflow-sa"
LEASE = "mlflow-webhook"
SECRET = "mlflow-webhook-tls"
CONFIG = "mlflow-webhook"
GIVEN = ("--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN)
ROLE_KEY = "eks.amazonaws.com/role-arn"
MANAGED = {"app.kubernetes.io/managed-by": "mlflow-webhook"}


@dataclass
class Setup:
    plane: ControlPlane
    tmp: Path
    port: int = field(default_factory=free_port)  # where the webhook configuration points
    kubeconfig: Path = Path()
    proxy: ApiProxy | None = None
    replicas: list[WebhookProcess] = field(default_factory=list)

    def install(self, edit: Callable[[dict[str, Any]], None] | None = None) -> None:
        """The manifests' RBAC and configuration, edited if asked (a later call restores them)."""
        self.kubeconfig = self.plane.install(self.port, edit=edit)

    def proxied(self) -> Path:
        """A kubeconfig for the webhook's ServiceAccount that goes through a recording proxy."""
        if self.proxy is None:
            self.proxy = ApiProxy(self.plane.url, self.plane.ca, self.tmp / "proxy")
            self.proxy.start()
        return self.plane.kubeconfig_for(
            WEBHOOK_SA,
            NAMESPACE,
            self.tmp / "proxied.kubeconfig",
            server=self.proxy.url,
            ca=self.proxy.ca,
        )

    def start(
        self, name: str, *args: str, proxied: bool = False, wait: bool = True
    ) -> WebhookProcess:
        """A replica; the first one started listens where the webhook configuration points."""
        kubeconfig = self.proxied() if proxied else self.kubeconfig
        port = self.port if not self.replicas else free_port()
        server = replica(self.plane, kubeconfig, self.tmp / name, port, *(args or GIVEN))
        self.replicas.append(server)
        if wait:
            server.wait_for_log("serving", timeout=60)
        return server

    def close(self) -> None:
        for server in self.replicas:
            server.stop()
            # Shown by pytest only when the test failed.
            print(f"--- {server.cert_dir.name}:\n" + "".join(server.stderr_lines[-40:]))
        if self.proxy is not None:
            self.proxy.stop()
        self.plane.delete("lease", LEASE, NAMESPACE)
        self.plane.delete("secret", SECRET, NAMESPACE)

    # What the cluster holds.

    def namespace(self, name: str, *, labelled: bool = True) -> str:
        labels = {"mlflow-webhook.io/inject": "enabled"} if labelled else {}
        self.plane.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        )
        return name

    def service_account(self, namespace: str, name: str = SA) -> dict[str, Any] | None:
        return self.plane.get("serviceaccount", name, namespace)

    def wait_for_account(self, namespace: str, timeout: float = 20) -> dict[str, Any]:
        found: dict[str, Any] = eventually(
            lambda: self.service_account(namespace),
            timeout,
            f"{SA} in {namespace}",
        )
        return found

    def holder(self) -> str:
        lease = self.plane.get("lease", LEASE, NAMESPACE) or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def secret(self) -> dict[str, bytes]:
        found = eventually(lambda: self.plane.get("secret", SECRET, NAMESPACE), what="the Secret")
        return {k: base64.b64decode(v) for k, v in found["data"].items()}

    def ca_bundle(self) -> bytes:
        config = self.plane.get("mutatingwebhookconfiguration", CONFIG) or {}
        bundle = config["webhooks"][0]["clientConfig"].get("caBundle", "")
        return base64.b64decode(bundle)

    def wait_for_ca_bundle(self) -> bytes:
        """The caBundle the leader wrote: the CA in the shared Secret."""
        ca = self.secret()["ca.crt"]
        eventually(lambda: self.ca_bundle() == ca, what="the caBundle to trust our CA")
        return ca

    def write_year_old(self, days: int = 5, ca_key: bool = False) -> bytes:
        """Before any replica starts: the Secret and caBundle as a year of serving leaves them.
        The serving certificate expires in `days`; its CA's key is gone, as ours always is,
        unless `ca_key` keeps it in the Secret, as earlier versions did."""
        ca = certs.generate_ca(days=366)
        near = certs.issue_serving(ca, ["localhost"], ["127.0.0.1"], days=days)
        data = {"ca.crt": ca.cert, "tls.crt": near.cert, "tls.key": near.key}
        if ca_key:
            data["ca.key"] = ca.key
        secret = {
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        status, body = self.plane.rest("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        assert status == 201, body
        hooks = (self.plane.get("mutatingwebhookconfiguration", CONFIG) or {})["webhooks"]
        bundle = base64.b64encode(ca.cert).decode()
        status, body = self.plane.rest(
            "PATCH",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}",
            {
                "webhooks": [
                    {"name": h["name"], "clientConfig": {"caBundle": bundle}} for h in hooks
                ]
            },
            content_type="application/strategic-merge-patch+json",
        )
        assert status == 200, body
        return near.cert


def identity(server: WebhookProcess) -> str | None:
    """Whom this replica said it became, if it has led."""
    for entry in list(server.logs):
        if entry.get("msg") == "became leader":
            return str(entry["identity"])
    return None


def pod(namespace: str, name: str = "trainer") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"mlflow-webhook.io/inject": "true"},
        },
        "spec": {
            "serviceAccountName": "default",
            "containers": [{"name": "main", "image": "python:3.12"}],
        },
    }


def post(server: WebhookProcess, namespace: str) -> dict[str, Any]:
    """A Pod CREATE sent straight to the webhook, as the API server would send it."""

    async def send() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.url + "/mutate",
                data=json.dumps(review_for(pod(namespace), namespace=namespace)),
                ssl=server.client_context(),
            ) as response,
        ):
            return dict(await response.json())

    return asyncio.run(send())


def run_pod(plane: ControlPlane, namespace: str, name: str) -> tuple[dict[str, Any], str]:
    """A Pod created through the API server, which calls the webhook; the Pod and kubectl's
    warnings."""
    done = plane.kubectl("create", "-f", "-", input=json.dumps(pod(namespace, name)))
    created = plane.get("pod", name, namespace)
    assert created is not None
    return created, done.stderr


async def served_serial(port: int, trust: ssl.SSLContext) -> int:
    """The serial number of the certificate a replica serves, to a client trusting `trust`."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=trust, server_hostname="localhost"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return int(x509.load_der_x509_certificate(der).serial_number)


def serial_of(pem: bytes) -> int:
    return int(x509.load_pem_x509_certificate(pem).serial_number)


def metric(server: WebhookProcess, name: str) -> float:
    async def scrape() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/metrics", ssl=server.client_context()) as response,
        ):
            return await response.text()

    for line in asyncio.run(scrape()).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def since(started: float) -> float:
    return time.monotonic() - started
