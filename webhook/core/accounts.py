"""The ServiceAccount each opted-in namespace must have, and the smallest patch that repairs one."""

from __future__ import annotations

from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "mlflow-webhook"
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"


def desired(name: str, namespace: str, role_arn: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY: MANAGER},
    }
    if role_arn:
        metadata["annotations"] = {ROLE_ANNOTATION: role_arn}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def repair(current: dict[str, Any], role_arn: str | None) -> tuple[dict[str, Any] | None, str]:
    """A merge patch for `current`, or None, and why.

    One we manage gets its role annotation set right. One a person made keeps everything;
    it only gains the role annotation when it has none, since without it IRSA cannot work.
    `role_arn` None: no opinion. Empty: it must carry no role (its namespace's own settings are
    wrong), so ours loses the annotation rather than keep a role no one chose for it now.
    """
    metadata = current.get("metadata") or {}
    managed = (metadata.get("labels") or {}).get(MANAGED_BY) == MANAGER
    have = (metadata.get("annotations") or {}).get(ROLE_ANNOTATION)
    if role_arn is None or have == role_arn or (role_arn == "" and have is None):
        return None, "ok"
    if role_arn == "":
        if managed:
            return {"metadata": {"annotations": {ROLE_ANNOTATION: None}}}, "role annotation removed"
        return None, f"left alone: not managed by {MANAGER}, and its role annotation names {have}"
    if managed or have is None:
        return {"metadata": {"annotations": {ROLE_ANNOTATION: role_arn}}}, "role annotation set"
    return None, f"left alone: not managed by {MANAGER}, and its role annotation names {have}"
