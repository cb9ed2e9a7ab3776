"""AdmissionReview v1 in, AdmissionReview v1 out; the decision between: `core.decisions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pybase64

from webhook.core.echo import shown, text
from webhook.core.optin import mapping
from webhook.core.patches import Patch

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
    patch: Patch = field(default_factory=Patch)
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


def pod_name(pod: dict[str, Any]) -> str:
    """For logs: the name, else the generateName, clipped; empty when neither is a string."""
    metadata = mapping(pod.get("metadata"))
    return text(metadata.get("name"), 253) or text(metadata.get("generateName"), 253)


def respond(uid: str, patch: Patch | None, warnings: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        # SIMD base64: binascii took 20 times the instructions on the wide Pod's 14 KB patch.
        response["patch"] = pybase64.b64encode_as_string(patch.json())
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
