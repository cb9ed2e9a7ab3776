"""The pieces every IAM policy of ours is made of: a document, an Allow statement, and the tag
that marks what the bootstrap makes."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]
VERSION = "2012-10-17"
# The tag on everything the bootstrap makes, by which a teardown, and an App's policy, know it.
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "mlflow-webhook"


def document(*statements: Document) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def allow(sid: str, resource: str | list[str], *actions: str, **condition: Any) -> Document:
    statement: Document = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions[0] if len(actions) == 1 else list(actions),
        "Resource": resource,
    }
    if condition:
        statement["Condition"] = condition
    return statement
