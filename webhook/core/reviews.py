"""AdmissionReview v1 in, AdmissionReview v1 out: the decision for one request, without I/O."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pybase64

from webhook.core.echo import shown, text
from webhook.core.mutation import Unreadable, mutate, unreadable
from webhook.core.optin import mapping, opt_in
from webhook.core.settings import Settings, cross_account

API_VERSION = "admission.k8s.io/v1"
Outcome = Literal["injected", "skipped", "error"]
# The reason an opted-in Pod got nothing: its namespace's own settings are wrong.
NAMESPACE_ERROR = "namespace-settings-error"


class BadReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer; the message says why."""


@dataclass
class Admission:
    """The response to send, and what to log and count about it."""

    response: dict[str, Any]
    outcome: Outcome
    reason: str
    uid: str
    namespace: str = ""
    pod: str = ""
    dry_run: bool = False
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str = ""


def parse(body: Any) -> dict[str, Any]:
    """Return the review's `request`, or raise BadReview."""
    if not isinstance(body, dict):
        raise BadReview("body must be a JSON object holding an AdmissionReview")
    if body.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, not {shown(body.get('kind'))}")
    if body.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion must be {API_VERSION}, not {shown(body.get('apiVersion'))}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    return request


def _scope(request: dict[str, Any]) -> str:
    """Empty when this request may be patched, else the reason it is let through untouched."""
    if request.get("operation") != "CREATE":
        return "not-create"
    kind = mapping(request.get("kind"))
    resource = mapping(request.get("resource"))
    if (kind.get("group"), kind.get("version"), kind.get("kind")) != ("", "v1", "Pod"):
        return "not-a-pod"
    if resource.get("resource") != "pods" or request.get("subResource"):
        return "not-a-pod"
    if not isinstance(request.get("object"), dict):
        return "no-object"
    return ""


def pod_name(pod: dict[str, Any]) -> str:
    """For logs: the name, else the generateName, clipped; empty when neither is a string."""
    metadata = mapping(pod.get("metadata"))
    return text(metadata.get("name"), 253) or text(metadata.get("generateName"), 253)


def admit(
    request: dict[str, Any],
    settings: Settings,
    account_exists: bool = True,
    namespace_error: str = "",
) -> Admission:
    """Decide and build the response. One odd Pod must never block admission: errors allow.

    `namespace_error`: the Pod's namespace names settings of its own that are wrong
    (`webhook.core.namespaces`), so an opted-in Pod gets nothing and a warning saying why.
    """
    uid = request["uid"]
    obj = request.get("object")
    pod = obj if isinstance(obj, dict) else {}
    result = Admission(
        response={},
        outcome="skipped",
        reason="",
        uid=uid,
        namespace=text(request.get("namespace"), 253),
        pod=pod_name(pod),
        dry_run=bool(request.get("dryRun")),
    )
    try:
        _decide(request, pod, settings, account_exists, namespace_error, result)
    except Exception as exc:  # noqa: BLE001 - any failure must still admit the Pod
        result.outcome, result.reason, result.patch = "error", "internal-error", []
        result.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result.warnings = [
            "mlflow-webhook: could not inject MLflow settings into this Pod "
            f"({type(exc).__name__}); it was admitted unchanged"
        ]
    result.response = respond(uid, result.patch, result.warnings)
    return result


def _decide(
    request: dict[str, Any],
    pod: dict[str, Any],
    settings: Settings,
    account_exists: bool,
    namespace_error: str,
    result: Admission,
) -> None:
    scope = _scope(request)
    if scope:
        result.reason = scope
        return
    problem = unreadable(pod)
    if problem:
        _malformed(problem, result)
        return
    decision = opt_in(pod.get("metadata") or {}, settings)
    result.reason = decision.verdict
    if decision.detail:
        result.warnings.append(f"mlflow-webhook: {decision.detail}")
    if not decision.inject:
        return
    if namespace_error:
        result.reason = NAMESPACE_ERROR
        result.warnings.append(
            f"mlflow-webhook: namespace {result.namespace}'s own MLflow settings are unusable: "
            f"{namespace_error}; nothing was injected and the Pod was admitted unchanged"
        )
        return
    try:
        mutation = mutate(pod, settings, account_exists, result.namespace)
    except Unreadable as exc:
        _malformed(str(exc), result)
        return
    result.patch = mutation.patch
    result.warnings += [n.warning() for n in mutation.new_notes]
    if settings.source == "namespace" and cross_account(settings):
        result.warnings.append(
            f"mlflow-webhook: namespace {result.namespace}'s own MLflow settings: "
            f"{cross_account(settings)}"
        )
    result.outcome = "injected"
    result.reason = "injected" if mutation.patch else "already-injected"


def _malformed(problem: str, result: Admission) -> None:
    result.reason = "malformed"
    result.warnings.append(
        f"mlflow-webhook: {problem}, so nothing was injected and the Pod was admitted unchanged"
    )


def sets_service_account(patch: list[dict[str, Any]]) -> bool:
    # `mutate` decides the ServiceAccount first, so its operation, when there is one, leads.
    return bool(patch) and patch[0]["path"] == "/spec/serviceAccountName"


def respond(uid: str, patch: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        # SIMD base64: binascii took 20 times the instructions on the wide Pod's 14 KB patch.
        response["patch"] = pybase64.b64encode_as_string(orjson.dumps(patch))
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
