"""`mlflow-webhook audit`: every opted-in Pod the webhook missed, for a person or a cron job.

It reads only (namespaces, and Pod metadata). Exit 1 when it found any, 0 when none, 2 when it
could not ask (a usage, kubeconfig or connection error), in one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from webhook.cli.commands import command
from webhook.cli.options import add, add_namespace_settings_flag, fail
from webhook.core import missed
from webhook.core.settings import CREDENTIALS
from webhook.kube.connection import unusable
from webhook.kube.missed import audit


def add_parser(commands: Any) -> None:
    p = command(
        commands,
        "audit",
        help="list opted-in Pods the webhook missed (exit 1 when any); reads only",
        description="List the Pods that opt in, in namespaces that opt in, which the webhook "
        "missed: admitted while it was unreachable, or created before their namespace was "
        "labelled. It reads only. Exit 0 when there are none, 1 when there are any, 2 when it "
        "cannot ask; a cron job can alert on 1.",
        examples=["mlflow-webhook audit", "mlflow-webhook audit --namespace team-a --output json"],
    )
    add(
        p,
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config; in a Pod, its own)",
    )
    # No environment variable: serve's MLFLOW_WEBHOOK_NAMESPACE (its own namespace, set in the
    # Deployment) must not narrow an audit run inside the webhook's Pod.
    p.add_argument("--namespace", help="look in this namespace only (default: every opted-in one)")
    add(
        p,
        "--output",
        choices=("table", "json"),
        default="table",
        help="table or json (default: %(default)s)",
    )
    add(
        p,
        "--prefix",
        default="mlflow-webhook.io",
        help="prefix of the webhook's labels and annotations (default: %(default)s)",
    )
    # As serve has them: a namespace whose own settings are wrong has its Pods left bare on
    # purpose, and which are wrong depends on both.
    add(
        p,
        "--credentials",
        choices=CREDENTIALS,
        help="how serve gives Pods AWS credentials (default: as serve's, irsa when "
        "MLFLOW_WEBHOOK_ROLE_ARN is set, else none)",
    )
    add_namespace_settings_flag(p)


def _connect(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig and not os.path.isfile(kubeconfig):
        fail(f"--kubeconfig {kubeconfig} is not a file")
    configuration = client.Configuration()
    in_pod = os.environ.get("KUBERNETES_SERVICE_HOST")
    try:
        if kubeconfig or not in_pod:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        fail(f"no usable kubeconfig: {' '.join(str(exc).split())}")
    except Exception as exc:  # noqa: BLE001 - a malformed file fails in many ways; one line
        fail(unusable(_named(kubeconfig), exc))
    configuration.retries = 1  # a cluster that is not there is said in seconds, not minutes
    return client.ApiClient(configuration)


def _named(kubeconfig: str | None) -> str:
    """The kubeconfig as the person gave it, as kubectl would have found it."""
    if kubeconfig:
        return f"--kubeconfig {kubeconfig}"
    if os.environ.get("KUBECONFIG"):
        return f"$KUBECONFIG {os.environ['KUBECONFIG']}"
    return "~/.kube/config"


def _why(exc: Exception) -> str:
    """The socket's own words (Connection refused, timed out), not urllib3's wrapping."""
    text = str(getattr(exc, "reason", None) or exc)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found[1].strip() if found else type(exc).__name__


def run(args: argparse.Namespace) -> int:
    # serve's own default, read from serve's variable: in the webhook's Pod, they agree.
    irsa = bool(os.environ.get("MLFLOW_WEBHOOK_ROLE_ARN"))
    credentials = args.credentials or ("irsa" if irsa else "none")
    settings = missed.lookup_settings(args.prefix, credentials=credentials)
    api = _connect(args.kubeconfig)
    selector = f"{args.prefix}/inject=enabled"
    own = args.namespace_settings == "on"
    try:
        if args.namespace:
            _check_namespace(api, args.namespace, selector)
        found = audit(api, settings, selector, args.namespace, namespace_settings=own)
    except client.ApiException as exc:
        fail(f"the API server refused: {exc.status} {exc.reason}")
    except (HTTPError, OSError) as exc:
        fail(f"cannot reach the API server at {api.configuration.host}: {_why(exc)}")
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "namespace": f.namespace,
            "name": f.name,
            "age": missed.age(f.created, now),
            "created": f.created,
            "reason": f.reason,
            "message": f.message,
        }
        for f in found.findings
    ]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        _table(rows)
    for name, problem in sorted(found.in_error.items()):
        print(
            f"mlflow-webhook: namespace {name}'s own MLflow settings are wrong, so its Pods are "
            f"left bare on purpose and not listed: {problem}",
            file=sys.stderr,
        )
    print(
        f"mlflow-webhook: {len(rows)} missed of {found.pods} Pods not finished",
        file=sys.stderr,
    )
    return 1 if rows else 0


def _check_namespace(api: client.ApiClient, name: str, selector: str) -> None:
    """A namespace that is not there is a mistake to say, not an audit that found nothing."""
    try:
        found = client.CoreV1Api(api).read_namespace(name)
    except client.ApiException as exc:
        if exc.status == 404:
            fail(f"--namespace {name}: no such namespace")
        raise
    key, _, value = selector.partition("=")
    if (found.metadata.labels or {}).get(key) != value:
        print(
            f"mlflow-webhook: namespace {name} does not opt in (no label {selector}): "
            "the webhook injects none of its Pods, so none is missed",
            file=sys.stderr,
        )


def _table(rows: list[dict[str, str]]) -> None:
    columns = ("namespace", "name", "age", "reason")
    if not rows:
        print("No missed Pods.")
        return
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    for line in [{c: c.upper() for c in columns}, *rows]:
        print("   ".join(line[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
