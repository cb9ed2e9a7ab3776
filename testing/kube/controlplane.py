"""A real Kubernetes control plane (../shared/kube: kube-apiserver, kube-controller-manager, etcd)
on loopback, with the webhook installed from `manifests/` and running as its own ServiceAccount.

Where the API server decides an outcome (RBAC, admission, watch semantics, strategic merge,
TokenRequest), tests use this and not the emulator in `testing/kube/apiserver.py`.
"""

from __future__ import annotations

import base64
import copy
import functools
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from testing.kube.settings import filled, kustomize
from testing.servers import WebhookProcess
from testing.support import free_port

ROOT = Path(__file__).resolve().parents[2]
# A checkout beside ../shared (this workplace and its CI); MLFLOW_WEBHOOK_KUBE names another.
SHARED_KUBE = Path(os.environ.get("MLFLOW_WEBHOOK_KUBE", ROOT.parent / "shared" / "kube"))
NAMESPACE = "mlflow-webhook"
WEBHOOK_SA = "mlflow-webhook"
# What a cluster install needs from the manifests; the Deployment's Pods would never run here.
INSTALLED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "MutatingWebhookConfiguration",
}


def missing_reason() -> str | None:
    """Why the control plane cannot run here, or None when it can."""
    if not (SHARED_KUBE / "start").is_file():
        return f"no Kubernetes control plane at {SHARED_KUBE} (set MLFLOW_WEBHOOK_KUBE)"
    if shutil.which("kubectl") is None:
        return "kubectl is not installed"
    return None


def render(overlay: str = "") -> list[dict[str, Any]]:
    """`kubectl kustomize` of a manifests folder, as a user would apply it (a fresh copy)."""
    return copy.deepcopy(_rendered(overlay))


@functools.cache
def _rendered(overlay: str) -> list[dict[str, Any]]:
    # A checkout has no settings.env (each install writes its own): render a copy with one
    # filled in, so every overlay renders, irsa included. Only the RBAC and the webhook
    # configuration are installed here.
    return kustomize(filled() / overlay)


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """The first truthy value of `check`, polled until the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


class ControlPlane:
    """One fresh cluster: every `start` is empty; `stop` removes its processes."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="kube-"))
        self.admin = self.run_dir / "admin.kubeconfig"
        self.url = ""
        self._admin_tls: ssl.SSLContext | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "K8S_E2E_RUN_DIR": str(self.run_dir),
            "KUBECONFIG_OUT": str(self.admin),
        }

    def start(self) -> None:
        for attempt in range(3):
            done = subprocess.run(
                [str(SHARED_KUBE / "start")],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=180,
            )
            if done.returncode == 0:
                break
            # `start` picks free ports, then binds them: another process (an outgoing
            # connection's ephemeral port, most often) can take one in between. Fresh ports.
            if "address already in use" not in done.stdout + done.stderr or attempt == 2:
                raise RuntimeError(f"control plane did not start:\n{done.stdout}\n{done.stderr}")
            self.stop()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir.mkdir(parents=True)
        config = yaml.safe_load(self.admin.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]

    def stop(self) -> None:
        subprocess.run(
            [str(SHARED_KUBE / "stop")], env=self._env(), capture_output=True, timeout=120
        )

    @property
    def ca(self) -> Path:
        return self.run_dir / "ca.crt"

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as cluster admin (or as the identity in `kubeconfig`)."""
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.admin), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def apply(self, *docs: dict[str, Any]) -> None:
        """Server-side apply as the admin, through the REST API (kubectl costs a process each)."""
        for doc in docs:
            if doc["kind"].lower() not in KINDS:  # a kind the table below does not route
                self.kubectl(
                    "apply", "--server-side", "--force-conflicts", "-f", "-", input=_yaml([doc])
                )
                continue
            path = _path(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
            status, body = self.rest(
                "PATCH",
                path + "?fieldManager=tests&force=true",
                doc,
                content_type="application/apply-patch+yaml",
            )
            if status >= 300:
                raise AssertionError(f"apply {doc['kind']} {path} failed ({status}): {body}")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as the API server stores it, or None when it does not exist."""
        status, body = self.rest("GET", _path(kind, name, namespace))
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"get {kind} {name} failed ({status}): {body}")
        return body

    def rest(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """One call to the API server as the admin: the status and the decoded body."""
        connection = http.client.HTTPSConnection(
            urllib.parse.urlsplit(self.url).netloc, context=self.admin_context(), timeout=30
        )
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, data, {"Content-Type": content_type})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return response.status, json.loads(raw) if raw else {}

    def admin_context(self) -> ssl.SSLContext:
        """TLS as the cluster's admin (its client certificate, the cluster's CA), made once."""
        if self._admin_tls is not None:
            return self._admin_tls
        user = yaml.safe_load(self.admin.read_text())["users"][0]["user"]
        for key, name in (("client-certificate-data", "crt"), ("client-key-data", "key")):
            target = self.run_dir / f"tests-admin.{name}"
            target.write_bytes(base64.b64decode(user[key]))
            target.chmod(0o600)
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.run_dir / "tests-admin.crt", self.run_dir / "tests-admin.key")
        self._admin_tls = context
        return context

    def token(
        self,
        service_account: str,
        namespace: str,
        audience: str | None = None,
        duration: str = "2h",
    ) -> str:
        """A bound token from TokenRequest, as the kubelet projects one into a Pod."""
        args = ["create", "token", service_account, "-n", namespace, "--duration", duration]
        if audience:
            args += ["--audience", audience]
        return self.kubectl(*args).stdout.strip()

    def kubeconfig_for(
        self,
        service_account: str,
        namespace: str,
        path: Path,
        *,
        server: str | None = None,
        ca: Path | None = None,
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount, subject to RBAC; `server` and
        `ca` point it somewhere else that reaches the API server (a proxy)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cluster",
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": base64.b64encode(
                            (ca or self.ca).read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [
                {"name": service_account, "user": {"token": self.token(service_account, namespace)}}
            ],
            "contexts": [
                {"name": "sa", "context": {"cluster": "cluster", "user": service_account}}
            ],
            "current-context": "sa",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def install(
        self,
        webhook_port: int,
        overlay: str = "",
        *,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Path:
        """Apply the manifests' Namespace, ServiceAccount, RBAC and webhook configuration, the
        configuration pointed at `https://127.0.0.1:PORT/mutate` (no Services route here).
        Returns a kubeconfig for the webhook's own ServiceAccount."""
        docs = [doc for doc in render(overlay) if doc["kind"] in INSTALLED_KINDS]
        for doc in docs:
            if doc["kind"] == "MutatingWebhookConfiguration":
                for hook in doc["webhooks"]:
                    hook["clientConfig"] = {"url": f"https://127.0.0.1:{webhook_port}/mutate"}
            if edit is not None:
                edit(doc)
        self.apply(*docs)
        return self.kubeconfig_for(
            WEBHOOK_SA, NAMESPACE, self.run_dir / f"webhook-{webhook_port}.kubeconfig"
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Gone, or never there."""
        status, body = self.rest("DELETE", _path(kind, name, namespace))
        if status not in (200, 202, 404):
            raise AssertionError(f"delete {kind} {name} failed ({status}): {body}")

    def label_namespace(self, name: str, **annotations: str) -> None:
        """A namespace opted in, created if need be."""
        metadata: dict[str, Any] = {"name": name, "labels": {"mlflow-webhook.io/inject": "enabled"}}
        if annotations:
            metadata["annotations"] = annotations
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})


def replica(
    plane: ControlPlane,
    kubeconfig: Path,
    cert_dir: Path,
    port: int,
    *args: str,
    fast: bool = True,
) -> WebhookProcess:
    """One `mlflow-webhook serve` replica as its own ServiceAccount, on a fixed loopback port
    (the webhook configuration names it), with a self-signed CA shared through the cluster."""
    timing = (
        [
            "--lease-duration-seconds",
            "2",
            "--lease-retry-seconds",
            "0.3",
            "--cert-reload-seconds",
            "0.3",
        ]
        if fast
        else []
    )
    return WebhookProcess(
        cert_dir,
        "--self-signed",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        NAMESPACE,
        *timing,
        *args,
        port=port,
    )


def installed(plane: ControlPlane, cert_dir: Path, *args: str, fast: bool = True) -> WebhookProcess:
    """The manifests applied (`ControlPlane.install`) and one replica serving them."""
    port = free_port()
    return replica(plane, plane.install(port), cert_dir, port, *args, fast=fast)


# Kinds the tests read and write: (API prefix, plural, namespaced).
KINDS = {
    "namespace": ("/api/v1", "namespaces", False),
    "serviceaccount": ("/api/v1", "serviceaccounts", True),
    "secret": ("/api/v1", "secrets", True),
    "pod": ("/api/v1", "pods", True),
    "lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "mutatingwebhookconfiguration": (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        False,
    ),
    "clusterrole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "clusterrolebinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "rolebinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}


def _path(kind: str, name: str, namespace: str | None) -> str:
    prefix, plural, namespaced = KINDS[kind.lower()]
    scope = f"/namespaces/{namespace}" if namespaced else ""
    return f"{prefix}{scope}/{plural}/{name}"


def _yaml(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
