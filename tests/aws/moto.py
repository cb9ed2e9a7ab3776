"""A real moto server over HTTP on loopback, for IAM, STS, S3 and EKS."""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support import free_port

REGION = "us-west-2"
ACCOUNT = "123456789012"  # moto's default account
CLUSTER = "ml"
SERVICES = ("IAM", "STS", "S3", "EKS")


class Moto:
    """A real moto server over HTTP on loopback; boto3 reaches it only through endpoint URLs."""

    def __init__(self) -> None:
        # moto's werkzeug logs every request; the tests and the demo read their own output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"
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
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))

    def endpoints(self) -> dict[str, str]:
        """boto3 reaches moto through the SDK's standard AWS_ENDPOINT_URL_<SERVICE> variables."""
        return {f"AWS_ENDPOINT_URL_{service}": self.url for service in SERVICES}

    def stop(self) -> None:
        self.server.stop()
