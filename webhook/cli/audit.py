"""`mlflow-webhook audit`: every opted-in Pod the webhook missed, for a person or a cron job.

It reads only (namespaces, and Pod metadata). Exit 1 when it found any, 0 when none, 2 when it
could not ask (a usage, kubeconfig or connection error), in one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from webhook.cli.commands import command
from webhook.cli.options import add, add_namespace_settings_flag, fail
from webhook.core import missed
from webhook.core.settings import CREDENTIALS
from webhook.kube.connection import ClusterError, asking, connect, located
from webhook.kube.missed import audit, namespace_labels


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


def run(args: argparse.Namespace) -> int:
    # serve's own default, read from serve's variable: in the webhook's Pod, they agree.
    irsa = bool(os.environ.get("MLFLOW_WEBHOOK_ROLE_ARN"))
    credentials = args.credentials or ("irsa" if irsa else "none")
    settings = missed.lookup_settings(args.prefix, credentials=credentials)
    selector = f"{args.prefix}/inject=enabled"
    own = args.namespace_settings == "on"
    try:
        api = connect(*located(args.kubeconfig)).client
        with asking(api):
            if args.namespace:
                _check_namespace(namespace_labels(api, args.namespace), args.namespace, selector)
            found = audit(api, settings, selector, args.namespace, namespace_settings=own)
    except ClusterError as exc:
        fail(str(exc))
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


def _check_namespace(labels: dict[str, str] | None, name: str, selector: str) -> None:
    """A namespace that is not there is a mistake to say, not an audit that found nothing."""
    if labels is None:
        fail(f"--namespace {name}: no such namespace")
    key, _, value = selector.partition("=")
    if labels.get(key) != value:
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
