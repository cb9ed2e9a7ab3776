"""A real moto server over HTTP on loopback, for IAM, STS, S3 and EKS."""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from moto.moto_api import recorder
from moto.server import ThreadedMotoServer

from testing.servers import WebhookProcess
from testing.support import free_port

REGION = "us-west-2"
ACCOUNT = "123456789012"  # moto's default account
CLUSTER = "ml"
SERVICES = ("IAM", "STS", "S3", "EKS")
READS = ("Get", "List", "Describe", "Head")


class Moto:
    """A real moto server over HTTP on loopback; boto3 reaches it only through endpoint URLs."""

    def __init__(self) -> None:
        # moto's werkzeug logs every request; the tests and the demo read their own output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"
        # moto's recorder writes to ./moto_recording unless told otherwise when it is imported.
        recorder._location = str(Path(tempfile.mkdtemp(prefix="moto-")) / "recording")
        # moto keeps its accounts per process, not per server: start from an empty one.
        self.reset()

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        """An empty account, and no recording (`record` starts one)."""
        self._post("/moto-api/reset")
        self._post("/moto-api/recorder/stop-recording")

    def record(self) -> None:
        """Start moto's own record of the requests it serves, empty."""
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def writes(self) -> list[str]:
        """Every request moto served since `record` that is not a read, as moto recorded it:
        the Action of a query-protocol call (IAM, STS), else the HTTP method and path."""
        text = urllib.request.urlopen(f"{self.url}/moto-api/recorder/download-recording").read()
        found = []
        for line in text.decode().splitlines():
            entry = json.loads(line)
            body = entry["body"] or ""
            if entry["body_encoded"]:
                body = base64.b64decode(body).decode(errors="replace")
            action = urllib.parse.parse_qs(body).get("Action", [""])[0]
            if action:
                if not action.startswith(READS):
                    found.append(action)
            elif entry["method"] not in ("GET", "HEAD"):
                found.append(f"{entry['method']} {urllib.parse.urlsplit(entry['url']).path}")
        return found

    def _post(self, path: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}{path}", method="POST"))

    def endpoints(self) -> dict[str, str]:
        """boto3 reaches moto through the SDK's standard AWS_ENDPOINT_URL_<SERVICE> variables."""
        return {f"AWS_ENDPOINT_URL_{service}": self.url for service in SERVICES}

    def stop(self) -> None:
        self.server.stop()


def serve_bootstrapping(directory: Path, artifact_store_uri: str) -> WebhookProcess:
    """`serve` with no tracking URI, so it runs the bootstrap against this moto first, waiting
    for the tracking server: as a cluster without a server yet starts it."""
    return WebhookProcess(
        directory,
        "--self-signed",
        "--cluster-name",
        CLUSTER,
        "--artifact-store-uri",
        artifact_store_uri,
        "--trust-namespaces",
        "team-a",
        "--wait",
        env=dict(os.environ),
    )
