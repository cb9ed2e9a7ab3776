"""The decision for one admission request, pure, in two steps around what the cluster knows.

`screen` reads the request and gives the opt-in verdict. Only for an opted-in Pod does the app
gather `Facts` about its namespace (`webhook.app.facts`); `decide` then returns the answer,
with its status and patch, from the request and those facts alone.
"""

from __future__ import annotations

import traceback
from typing import Any, NamedTuple

from webhook.core.echo import text
from webhook.core.mutation import Unreadable, mutate, unreadable, wants_account
from webhook.core.optin import mapping, opt_in
from webhook.core.patches import Patch
from webhook.core.reviews import NAMESPACE_ERROR, Admission, pod_name, respond
from webhook.core.settings import Settings, cross_account

OPTED_IN = "opted-in"
MALFORMED = "malformed"
INTERNAL_ERROR = "internal-error"


class Facts(NamedTuple):
    """What the cluster says about the Pod's namespace, gathered before the decision."""

    # The settings that apply there: the namespace's own, else the global ones.
    settings: Settings
    # Why the namespace's own settings are unusable, which leaves its Pods uninjected; or "".
    namespace_error: str = ""
    # False: our ServiceAccount is not known to exist there (missing, or the lookup failed),
    # and the API server rejects a Pod naming a missing one. Asked only when `needs_account`.
    account_exists: bool = True


class Screened(NamedTuple):
    """A request, read, with the opt-in verdict: whether its Pod may be injected at all."""

    request: dict[str, Any]
    pod: dict[str, Any]
    namespace: str
    # The machine-readable reason: `opted-in`, else why the request gets nothing whatever the
    # cluster says (`not-create`, `not-a-pod`, `malformed`, an opt-in verdict, ...).
    reason: str
    warnings: tuple[str, ...] = ()
    # Only for an opted-in Pod: whether it would be given our ServiceAccount, so whether its
    # existence is a fact the decision reads.
    needs_account: bool = False
    # When reading it failed: the exception's type and description, answered by `decide`.
    error: tuple[str, str] | None = None

    @property
    def opted_in(self) -> bool:
        return self.reason == OPTED_IN


class _Unsafe(NamedTuple):
    reason: str
    warning: str = ""


def screen(request: dict[str, Any], settings: Settings) -> Screened:
    """The opt-in verdict for a parsed request (`reviews.parse`), with the global settings:
    a namespace's own settings change neither the opt-in key nor the ServiceAccount."""
    obj = request.get("object")
    pod = obj if isinstance(obj, dict) else {}
    namespace = text(request.get("namespace"), 253)
    try:
        found = _scope(request) or _readable(pod)
        if found is not None:
            warnings = (found.warning,) if found.warning else ()
            return Screened(request, pod, namespace, found.reason, warnings)
        verdict = opt_in(pod.get("metadata") or {}, settings)
        warnings = (f"mlflow-webhook: {verdict.detail}",) if verdict.detail else ()
        needs = verdict.inject and wants_account(pod, settings)
        return Screened(request, pod, namespace, verdict.verdict, warnings, needs)
    except Exception as exc:  # noqa: BLE001 - any failure must still admit the Pod
        return Screened(request, pod, namespace, INTERNAL_ERROR, error=_described(exc))


def _scope(request: dict[str, Any]) -> _Unsafe | None:
    """None when this request may be patched, else why it is let through untouched."""
    if request.get("operation") != "CREATE":
        return _Unsafe("not-create")
    kind = mapping(request.get("kind"))
    resource = mapping(request.get("resource"))
    if (kind.get("group"), kind.get("version"), kind.get("kind")) != ("", "v1", "Pod"):
        return _Unsafe("not-a-pod")
    if resource.get("resource") != "pods" or request.get("subResource"):
        return _Unsafe("not-a-pod")
    if not isinstance(request.get("object"), dict):
        return _Unsafe("no-object")
    return None


def _readable(pod: dict[str, Any]) -> _Unsafe | None:
    problem = unreadable(pod)
    return _Unsafe(MALFORMED, _malformed(problem)) if problem else None


def _malformed(problem: str) -> str:
    return f"mlflow-webhook: {problem}, so nothing was injected and the Pod was admitted unchanged"


def decide(screened: Screened, facts: Facts) -> Admission:
    """The answer to send, and what to log and count about it. One odd Pod must never block
    admission: errors allow."""
    request = screened.request
    result = Admission(
        response={},
        outcome="skipped",
        reason=screened.reason,
        uid=request["uid"],
        namespace=screened.namespace,
        pod=pod_name(screened.pod),
        dry_run=bool(request.get("dryRun")),
        warnings=list(screened.warnings),
    )
    try:
        if screened.error:
            _failed(result, *screened.error)
        elif screened.opted_in:
            _inject(screened, facts, result)
    except Exception as exc:  # noqa: BLE001 - any failure must still admit the Pod
        _failed(result, *_described(exc))
    result.response = respond(result.uid, result.patch, result.warnings)
    return result


def _described(exc: BaseException) -> tuple[str, str]:
    """The exception's type, for the person, and its description, for the log."""
    return type(exc).__name__, "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _failed(result: Admission, kind: str, description: str) -> None:
    result.outcome, result.reason, result.patch = "error", INTERNAL_ERROR, Patch()
    result.error = description
    result.warnings = [
        f"mlflow-webhook: could not inject MLflow settings into this Pod ({kind}); "
        "it was admitted unchanged"
    ]


def _inject(screened: Screened, facts: Facts, result: Admission) -> None:
    if facts.namespace_error:
        result.reason = NAMESPACE_ERROR
        result.warnings.append(
            f"mlflow-webhook: namespace {result.namespace}'s own MLflow settings are unusable: "
            f"{facts.namespace_error}; nothing was injected and the Pod was admitted unchanged"
        )
        return
    settings = facts.settings
    try:
        mutation = mutate(screened.pod, settings, facts.account_exists, result.namespace)
    except Unreadable as exc:
        result.reason = MALFORMED
        result.warnings.append(_malformed(str(exc)))
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


def admit(
    request: dict[str, Any],
    settings: Settings,
    account_exists: bool = True,
    namespace_error: str = "",
) -> Admission:
    """`screen` then `decide`, with the facts given: for callers that know them already."""
    return decide(screen(request, settings), Facts(settings, namespace_error, account_exists))
