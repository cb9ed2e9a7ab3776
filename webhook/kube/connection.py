"""Reaching the API server: in-cluster, or through a kubeconfig file."""

from __future__ import annotations

import os

from kubernetes import client, config


def connect(kubeconfig: str | None) -> client.ApiClient | None:
    """An API client, or None when there is no cluster to talk to."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return None
