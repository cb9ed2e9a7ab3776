"""Reaching the API server: in-cluster, or through a kubeconfig file."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.config import incluster_config
from kubernetes.config.config_exception import ConfigException

# The first call waits this long for the API server; it tells an unreachable one apart at once.
PROBE_TIMEOUT_SECONDS = 10.0


class ClusterError(Exception):
    """The API server cannot be used: one line a person can act on."""


@dataclass(frozen=True)
class Connection:
    """An API client that has reached its API server, and the kubeconfig context it came from."""

    client: client.ApiClient
    context: str | None = None


def connect(kubeconfig: str | None, source: str = "kubeconfig") -> Connection:
    """The API server of this kubeconfig (a path, or several as $KUBECONFIG joins them), or
    without one the Pod's own, reached once so that a wrong one ends the start at once.
    `source` names it in errors as the person gave it (`--kubeconfig F`, `$KUBECONFIG F`)."""
    context = None
    if kubeconfig:
        paths = [path for path in kubeconfig.split(os.pathsep) if path]
        if not any(Path(path).is_file() for path in paths):
            raise ClusterError(
                f"{source} {'is not a file' if len(paths) == 1 else 'names no file'}"
            )
        try:
            api = config.new_client_from_config(config_file=kubeconfig)
            context = config.list_kube_config_contexts(config_file=kubeconfig)[1].get("name")
        except Exception as error:  # a malformed file fails in many ways
            raise ClusterError(unusable(source, error)) from error
    elif os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME):
        api = _in_cluster()
    else:
        raise ClusterError("no cluster: no kubeconfig given and not in a Pod")
    _probe(api)
    return Connection(api, context)


def located(kubeconfig: str | None) -> tuple[str | None, str]:
    """The kubeconfig a person means, in kubectl's order, and how to name it: --kubeconfig,
    $KUBECONFIG, ~/.kube/config, else (None) the Pod's own ServiceAccount."""
    if kubeconfig:
        return kubeconfig, f"--kubeconfig {kubeconfig}"
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"], f"$KUBECONFIG {os.environ['KUBECONFIG']}"
    home = Path("~/.kube/config").expanduser()
    if home.is_file():
        return str(home), "~/.kube/config"
    if not os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME):
        raise ClusterError(
            "no cluster: no --kubeconfig, $KUBECONFIG or ~/.kube/config, and not in a Pod"
        )
    return None, "this Pod's ServiceAccount"


@contextmanager
def asking(api: client.ApiClient) -> Iterator[None]:
    """Calls to the API server, whose failures become one ClusterError line each."""
    try:
        yield
    except client.ApiException as error:
        raise ClusterError(f"the API server refused: {error.status} {error.reason}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        host = api.configuration.host
        raise ClusterError(f"cannot reach the API server at {host}: {_why(error)}") from error


def unusable(source: str, error: BaseException) -> str:
    """Why a kubeconfig cannot be loaded, in one line that names it as the person gave it."""
    if isinstance(error, UnicodeDecodeError):
        return f"{source} is not a kubeconfig: not UTF-8 text (byte {error.start})"
    mark = getattr(error, "problem_mark", None)
    if mark is not None:  # PyYAML's own message names the file again and quotes it with a caret
        problem = " ".join(str(getattr(error, "problem", "") or "").split())
        return (
            f"{source} is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}"
        )
    if isinstance(error, ConfigException | OSError):
        return f"cannot use {source}: {' '.join(_why(error).split())}"
    return f"{source} is not a valid kubeconfig"


def _in_cluster() -> client.ApiClient:
    # The client's own messages name neither the file nor the reason it cannot be read.
    for what, path in (
        ("ServiceAccount token", incluster_config.SERVICE_TOKEN_FILENAME),
        ("API server's CA certificate", incluster_config.SERVICE_CERT_FILENAME),
    ):
        try:
            Path(path).read_bytes()
        except OSError as error:
            raise ClusterError(f"cannot read the {what} {path}: {_why(error)}") from error
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as error:
        raise ClusterError(f"in-cluster configuration: {error}") from error
    return client.ApiClient(configuration)


def _probe(api: client.ApiClient) -> None:
    """One cheap call (`/version`, open to every caller), so a wrong address or a refused
    token ends the start with a clear line instead of failing later, deep in a thread."""
    host = api.configuration.host
    # One attempt, without urllib3's retries and their warning lines: at startup a failure is
    # better reported at once; the kubelet restarts the container.
    once = copy.copy(api.configuration)
    once.retries = False
    try:
        client.VersionApi(client.ApiClient(once)).get_code(_request_timeout=PROBE_TIMEOUT_SECONDS)
    except client.ApiException as error:
        if error.status == 401:
            raise ClusterError(
                f"the API server at {host} refused our credentials (401 Unauthorized)"
            ) from error
        # Any other answer came from a reachable server; what we may do is RBAC's to decide.
    except urllib3.exceptions.HTTPError as error:
        raise ClusterError(f"cannot reach the API server at {host}: {_why(error)}") from error


def _why(error: BaseException) -> str:
    """The innermost cause, as its own short message: 'Connection refused', not a repr."""
    while True:
        inner = getattr(error, "reason", None) or error.__cause__
        if not isinstance(inner, BaseException) or inner is error:
            break
        error = inner
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
