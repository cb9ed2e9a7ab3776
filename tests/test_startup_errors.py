"""What stops `serve` before it can work says so in one line, names what failed, and exits 2:
a certificate folder it cannot write, a ServiceAccount token it cannot read, an API server it
cannot reach. tests/test_image.py shows the same lines from the container."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testing.support import free_port

SERVE = ["serve", "--host", "127.0.0.1", "--port", "0", "--tracking-uri", "http://127.0.0.1:5000"]
TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def serve(*args: str, env: dict[str, str] | None = None) -> str:
    """The one line `serve` ends with; asserts exit 2 and nothing else on stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_WEBHOOK_", "KUBE"))}
    done = subprocess.run(
        [sys.executable, "-m", "webhook", *SERVE, *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cert_dir_that_cannot_be_written(tmp_path: Path) -> None:
    # Root writes through file modes, so the folder is made impossible: under a regular file.
    (tmp_path / "file").write_text("")
    cert_dir = tmp_path / "file" / "certs"
    line = serve("--self-signed", "--no-kube", "--cert-dir", str(cert_dir))
    assert line == (
        f"mlflow-webhook: error: cannot write to the certificate folder {cert_dir}: Not a directory"
    )


def test_certs_into_a_folder_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "certs"
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"mlflow-webhook: error: cannot write to the certificate folder {out}: Not a directory"
    )


def test_service_account_token_that_cannot_be_read(tmp_path: Path) -> None:
    if TOKEN.exists():
        pytest.skip(f"{TOKEN} exists here (a Pod): the in-cluster token would be read")
    line = serve(
        "--self-signed",
        "--cert-dir",
        str(tmp_path),
        env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
    )
    assert line == (
        f"mlflow-webhook: error: cannot read the ServiceAccount token {TOKEN}: "
        "No such file or directory"
    )


def test_api_server_that_cannot_be_reached(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    line = serve("--self-signed", "--cert-dir", str(tmp_path), "--kubeconfig", str(kubeconfig))
    assert line == (
        f"mlflow-webhook: error: cannot reach the API server at https://127.0.0.1:{port}: "
        "Connection refused"
    )


def test_kubeconfig_that_is_not_one(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not a kubeconfig\n")
    line = serve("--self-signed", "--cert-dir", str(tmp_path), "--kubeconfig", str(kubeconfig))
    assert line == f"mlflow-webhook: error: --kubeconfig {kubeconfig} is not a valid kubeconfig"
