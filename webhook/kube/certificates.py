"""Self-signed mode in a cluster: one serving certificate for every replica, kept in a Secret
with the CA that signed it but never that CA's key; the leader renews it with a new CA before
expiry (webhook/tls/rotation.py) and keeps our webhook configuration's caBundle."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from pathlib import Path

from kubernetes import client

from webhook.tls import certs, rotation

log = logging.getLogger("webhook.kube.certificates")
# When the leader last staged or switched a renewal: the next step waits `overlap` after it.
ROTATED_AT = "mlflow-webhook.io/ca-rotated-at"
OVERLAP_RELOADS = 6


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
        reload_seconds: float = 10.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.namespace, self.secret, self.webhook_config = namespace, secret, webhook_config
        self.cert_dir, self.dns_names, self.ips = cert_dir, dns_names, ips
        # Each renewal step waits this long for the last to take hold everywhere: replicas load
        # new files within one reload period, the API server a caBundle within seconds.
        self.overlap = dt.timedelta(seconds=OVERLAP_RELOADS * reload_seconds)

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
                "data": _encode(rotation.fresh(self.dns_names, self.ips)),
            }
            try:
                self.core.create_namespaced_secret(self.namespace, body)
                log.info("created the certificate Secret", extra={"secret": self.secret})
            except client.ApiException as error:
                if error.status != 409:  # another replica created it first: use theirs
                    raise
        self.sync()

    def sync(self) -> bool:
        """Write the Secret's serving files into the certificate folder if they changed there.

        Only the CA certificate and the serving pair: never a CA key, nor a staged pair.
        """
        secret = self._read()
        if secret is None:
            return False
        files = _decode(secret.data)
        changed = False
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        # An earlier version wrote the CA's key here; nothing reads it any more.
        (self.cert_dir / certs.CA_KEY_FILE).unlink(missing_ok=True)
        # The key before its certificate: a reader never finds a certificate without its key.
        for key in rotation.SERVING:
            path = self.cert_dir / key
            if key in files and (not path.exists() or path.read_bytes() != files[key]):
                certs.write_atomic(path, files[key], 0o600 if key.endswith(".key") else 0o644)
                changed = True
        return changed

    def maintain(self) -> None:
        """The leader: take the renewal's next step, and keep the caBundle on the Secret's CAs."""
        secret = self._read()
        if secret is None:
            return
        annotations = (secret.metadata.annotations or {}) if secret.metadata else {}
        since = annotations.get(ROTATED_AT)
        step = rotation.next_step(
            _decode(secret.data),
            live_bundle=self._live_bundle(),
            since=dt.datetime.fromisoformat(since) if since else None,
            now=dt.datetime.now(dt.UTC),
            overlap=self.overlap,
            dns_names=self.dns_names,
            ips=self.ips,
        )
        if step.changed:
            secret.data = _encode(step.files)
            if step.action in ("stage", "switch"):
                stamp = dt.datetime.now(dt.UTC).isoformat()
                secret.metadata.annotations = {**annotations, ROTATED_AT: stamp}
            try:
                # A replace carries the resourceVersion read: a concurrent write wins, we retry.
                self.core.replace_namespaced_secret(self.secret, self.namespace, secret)
            except client.ApiException as error:
                if error.status != 409:
                    raise
                return
            log.info(
                "certificate renewal: " + step.action,
                extra={"secret": self.secret, "step": step.action},
            )
        self.patch_ca_bundle(step.files["ca.crt"])

    def _live_bundle(self) -> bytes | None:
        """The caBundle every webhook of our configuration holds, or None if they differ."""
        config = self.admission.read_mutating_webhook_configuration(self.webhook_config)
        held = {hook.client_config.ca_bundle for hook in config.webhooks or []}
        if len(held) != 1 or None in held:
            return None
        return base64.b64decode(held.pop())

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
