"""Whether a Pod the webhook should have injected was missed, and why: pure, from its metadata.

A Pod is missed when it opts in, its namespace opts in, and it either holds no status annotation
(the webhook never saw it: unreachable under `failurePolicy: Ignore`, or the namespace was
labelled after the Pod was made) or its status says it kept its own ServiceAccount because ours
did not exist yet. Finished Pods are left to the API server's field selector (`ACTIVE_PODS`):
metadata carries no phase.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from webhook.core.mutation import ACCOUNT_MISSING
from webhook.core.optin import opt_in
from webhook.core.settings import Credentials, Settings, TrackingTarget

Reason = Literal["not-injected", "service-account-kept"]
REASONS: tuple[Reason, ...] = ("not-injected", "service-account-kept")
Status = Literal["absent", "service-account-kept", "present"]

# Pods still running or about to: a metadata-only watch cannot see the phase, the server can.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
EVENT_REASON = "MLflowInjectionMissed"
COMPONENT = "mlflow-webhook"
# How a status written before notes had codes says it (0.1.0): such Pods may still
# be running, and are still found.
_ACCOUNT_MISSING_BEFORE_CODES = "does not exist in this namespace yet"


@dataclass(frozen=True, slots=True)
class PodFacts:
    """The little the missed-Pod watch keeps per Pod, so 10,000 Pods cost little memory."""

    namespace: str
    name: str
    uid: str
    created: str
    opted_in: bool
    status: Status
    kept: str  # the ServiceAccount a Pod kept, with status "service-account-kept"
    deleting: bool


@dataclass(frozen=True)
class Finding:
    namespace: str
    name: str
    uid: str
    created: str
    reason: Reason
    message: str


def lookup_settings(
    prefix: str, service_account: str = "sagemaker-mlflow-sa", credentials: str = "none"
) -> Settings:
    """Settings for reading Pods only (`audit`): the keys matter, no tracking URI is needed;
    the credentials mode decides which namespaces' own settings are wrong."""
    nowhere = TrackingTarget(uri="", kind="url", region=None)
    return Settings(
        tracking=nowhere,
        prefix=prefix,
        service_account=service_account,
        credentials=cast(Credentials, credentials),
    )


def facts(metadata: dict[str, Any], settings: Settings) -> PodFacts:
    annotations = metadata.get("annotations") or {}
    status: Status = "absent"
    kept = ""
    raw = annotations.get(settings.status_key)
    if raw is not None:
        status = "present"
        kept = _kept_account(raw)
        if kept:
            status = "service-account-kept"
    return PodFacts(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        created=str(metadata.get("creationTimestamp") or ""),
        opted_in=opt_in(metadata, settings).inject,
        status=status,
        kept=kept,
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def _kept_account(raw: str) -> str:
    """The ServiceAccount the Pod kept because ours was missing, or ""."""
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(status, dict):
        return ""
    for note in status.get("skipped") or ():
        if isinstance(note, dict) and _account_missing(note):
            return str(status.get("serviceAccount") or "default")
    return ""


def _account_missing(note: dict[str, Any]) -> bool:
    if note.get("target") != "serviceAccount":
        return False
    if "code" in note:
        return bool(note["code"] == ACCOUNT_MISSING)
    return _ACCOUNT_MISSING_BEFORE_CODES in str(note.get("reason"))


def reason(pod: PodFacts, namespace_opted_in: bool) -> Reason | None:
    if not namespace_opted_in or not pod.opted_in or pod.deleting:
        return None
    if pod.status == "absent":
        return "not-injected"
    if pod.status == "service-account-kept":
        return "service-account-kept"
    return None


def message(pod: PodFacts, why: Reason, settings: Settings) -> str:
    if why == "not-injected":
        return (
            f"This Pod opts in to MLflow tracking but was admitted without the webhook's changes "
            f"(no {settings.status_key} annotation): the webhook was unreachable under "
            "failurePolicy Ignore, or the namespace was labelled after the Pod was created. "
            "Recreate the Pod (delete it; its controller makes a new one), and check that the "
            "webhook is available: kubectl -n mlflow-webhook get pods, and its logs."
        )
    return (
        f"This Pod kept the ServiceAccount {pod.kept!r} because {settings.service_account!r} "
        "did not exist yet when it was created, so it has no AWS credentials for MLflow. "
        "The webhook creates the ServiceAccount in every opted-in namespace: recreate the Pod."
    )


def find(pod: PodFacts, namespace_opted_in: bool, settings: Settings) -> Finding | None:
    why = reason(pod, namespace_opted_in)
    if why is None:
        return None
    return Finding(pod.namespace, pod.name, pod.uid, pod.created, why, message(pod, why, settings))


def event_name(pod: str, uid: str) -> str:
    """One name per Pod, so a second writer (a new leader) gets 409 AlreadyExists, not a twin."""
    return f"{pod[:200]}.mlflow-missed-{uid[:8]}"


def event(finding: Finding, now: dt.datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Warning Event on the Pod, as `kubectl describe pod` shows it."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(finding.name, finding.uid),
            "namespace": finding.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": finding.namespace,
            "name": finding.name,
            "uid": finding.uid,
        },
        "type": "Warning",
        "reason": EVENT_REASON,
        "message": finding.message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def age(created: str, now: dt.datetime) -> str:
    """A short age, as kubectl prints it: 45s, 12m, 3h, 5d."""
    try:
        then = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
