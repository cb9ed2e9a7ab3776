"""Self-signed mode in a cluster: one CA and serving certificate for every replica, kept in a
Secret; the leader renews it before expiry and keeps our webhook configuration's caBundle."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from pathlib import Path

from kubernetes import client

from webhook.tls import certs

log = logging.getLogger("webhook.kube.certificates")
KEYS = {
    "ca.crt": certs.CA_FILE,
    "ca.key": certs.CA_KEY_FILE,
    "tls.crt": certs.CERT_FILE,
    "tls.key": certs.KEY_FILE,
}


def _encode(files: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in files.items()}


def _decode(data: dict[str, str] | None) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


class ClusterCertificates:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        secret: str,
        webhook_config: str,
        cert_dir: Path,
        dns_names: list[str],
        ips: list[str],
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.namespace, self.secret, self.webhook_config = namespace, secret, webhook_config
        self.cert_dir, self.dns_names, self.ips = cert_dir, dns_names, ips

    def _fresh(self, ca: certs.Pem | None = None) -> dict[str, bytes]:
        ca = ca or certs.generate_ca()
        serving = certs.issue_serving(ca, self.dns_names, self.ips)
        return {
            "ca.crt": ca.cert,
            "ca.key": ca.key,
            "tls.crt": serving.cert,
            "tls.key": serving.key,
        }

    def _read(self) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(self.secret, self.namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def bootstrap(self) -> None:
        """Every replica, before serving: use the Secret, creating it if no replica has yet."""
        if self._read() is None:
            body = {
                "metadata": {
                    "name": self.secret,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "mlflow-webhook"},
                },
                "type": "kubernetes.io/tls",
                "data": _encode(self._fresh()),
            }
            try:
                self.core.create_namespaced_secret(self.namespace, body)
                log.info("created the certificate Secret", extra={"secret": self.secret})
            except client.ApiException as error:
                if error.status != 409:  # another replica created it first: use theirs
                    raise
        self.sync()

    def sync(self) -> bool:
        """Write the Secret's files into the certificate folder if they changed there."""
        secret = self._read()
        if secret is None:
            return False
        files = _decode(secret.data)
        changed = False
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        # The key before its certificate: a reader never finds a certificate without its key.
        for key in ("ca.key", "ca.crt", "tls.key", "tls.crt"):
            path = self.cert_dir / KEYS[key]
            if key in files and (not path.exists() or path.read_bytes() != files[key]):
                certs.write_atomic(path, files[key], 0o600 if key.endswith(".key") else 0o644)
                changed = True
        return changed

    def maintain(self) -> None:
        """The leader: renew the serving certificate before it expires, and keep the caBundle."""
        secret = self._read()
        if secret is None:
            return
        files = _decode(secret.data)
        now = dt.datetime.now(dt.UTC)
        if certs.not_after(files["tls.crt"]) < now + certs.RENEW_BEFORE or not certs.covers(
            files["tls.crt"], self.dns_names, self.ips
        ):
            # Same CA, new serving pair: clients that trust the caBundle trust it at once.
            ca = certs.Pem(files["ca.crt"], files["ca.key"])
            secret.data = _encode(self._fresh(ca))
            try:
                self.core.replace_namespaced_secret(self.secret, self.namespace, secret)
                log.info("renewed the serving certificate", extra={"secret": self.secret})
            except client.ApiException as error:
                if error.status != 409:
                    raise
        self.patch_ca_bundle(files["ca.crt"])

    def patch_ca_bundle(self, ca: bytes) -> None:
        config = self.admission.read_mutating_webhook_configuration(self.webhook_config)
        bundle = base64.b64encode(ca).decode()
        patch = []
        for index, hook in enumerate(config.webhooks or []):
            if hook.client_config.ca_bundle != bundle:
                patch += [
                    {"op": "test", "path": f"/webhooks/{index}/name", "value": hook.name},
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig/caBundle",
                        "value": bundle,
                    },
                ]
        if patch:
            self.admission.patch_mutating_webhook_configuration(self.webhook_config, patch)
            log.info("patched the caBundle", extra={"webhook_config": self.webhook_config})
