"""Start the real `mlflow-webhook serve` as a subprocess on loopback, and talk to it over TLS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from testing.support import ROLE_ARN, TRACKING_ARN


def serve_command(cert_dir: Path, port: int, *args: str, cluster: bool = False) -> list[str]:
    """`mlflow-webhook serve` on loopback, as the tests and the benchmark start it: admission
    only, as the quick start, unless the arguments name a kubeconfig or `cluster` says that
    the environment does."""
    cluster = cluster or bool({"--kubeconfig", "--no-kube"} & set(args))
    return [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cert-dir",
        str(cert_dir),
        *([] if cluster else ["--no-kube"]),
        *args,
    ]


def without_cluster(env: Mapping[str, str]) -> dict[str, str]:
    """The environment without the cluster a person's shell points at: a test server must never
    reach it (serve reads $KUBECONFIG, and in a Pod the Pod's own)."""
    return {k: v for k, v in env.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}


class WebhookProcess:
    """One server process; its JSON log lines are collected as they arrive."""

    def __init__(
        self, cert_dir: Path, *args: str, env: dict[str, str] | None = None, port: int = 0
    ) -> None:
        self.cert_dir = cert_dir
        self.logs: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        command = serve_command(cert_dir, port, *args, cluster="KUBECONFIG" in (env or {}))
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**without_cluster(os.environ), **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._wait_for_port()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.logs.append(json.loads(line))

    # Importing the server alone has taken 19 s on a loaded two-core machine.
    def _wait_for_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs:
                if entry.get("msg") == "listening":
                    return int(entry["ports"][0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("webhook did not start:\n" + "".join(self.stderr_lines))

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        """Trust only the webhook's CA, as the API server trusts only the caBundle."""
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def wait_for_entry(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """The first log entry that matches; info lines arrive in batches every 0.2 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.logs):
                if match(entry):
                    return entry
            time.sleep(0.02)
        raise AssertionError("no matching log entry in:\n" + "".join(self.stderr_lines))

    def wait_for_log(self, msg: str, timeout: float = 10) -> dict[str, Any]:
        return self.wait_for_entry(lambda e: str(e.get("msg", "")).startswith(msg), timeout)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start(cert_dir: Path, *args: str, env: dict[str, str] | None = None) -> WebhookProcess:
    default = ["--self-signed", "--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN]
    return WebhookProcess(cert_dir, *(args or default), env=env)
