"""What is wrong with the webhook configurations in the cluster, as warnings a person can act on."""

from __future__ import annotations

from typing import Any

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
EKS_WEBHOOK = "pod-identity-webhook"


def _excluded(hook: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for expression in (hook.get("namespaceSelector") or {}).get("matchExpressions") or ():
        if (
            expression.get("key") == "kubernetes.io/metadata.name"
            and expression.get("operator") == "NotIn"
        ):
            found.update(expression.get("values") or ())
    return found


def warnings(
    ours: dict[str, Any] | None, eks: dict[str, Any] | None, own_namespace: str
) -> list[str]:
    if ours is None:
        return ["our MutatingWebhookConfiguration was not found; the API server will not call us"]
    name = ours["metadata"]["name"]
    found = []
    for hook in ours.get("webhooks") or ():
        missing = [ns for ns in (*SYSTEM_NAMESPACES, own_namespace) if ns not in _excluded(hook)]
        if missing:
            found.append(
                f"webhook {hook['name']} does not exclude namespaces {', '.join(missing)}; "
                "a failure could block system Pods or our own"
            )
        if not hook.get("objectSelector"):
            found.append(f"webhook {hook['name']} has no objectSelector excluding our own Pods")
        if hook.get("reinvocationPolicy") != "IfNeeded":
            found.append(
                f"webhook {hook['name']} is not reinvoked (reinvocationPolicy IfNeeded): "
                "containers other webhooks add after us get no MLflow settings"
            )
    if eks is not None and eks["metadata"]["name"] < name:
        reinvoked = all(
            h.get("reinvocationPolicy") == "IfNeeded" for h in eks.get("webhooks") or ()
        )
        if not reinvoked:
            found.append(
                f"{EKS_WEBHOOK} runs before {name} and is not reinvoked, so it never sees the "
                "ServiceAccount we set; rely on --credentials irsa, or rename so we run first"
            )
    return found
