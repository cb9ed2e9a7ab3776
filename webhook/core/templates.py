"""Offline injection: find the Pod templates in workload manifests and mutate them in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from webhook.core.mutation import Unreadable, mutate, unreadable
from webhook.core.optin import mapping, opt_in
from webhook.core.settings import Settings

_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


@dataclass
class Injected:
    """What offline injection did to a stream of documents."""

    templates: int = 0
    injected: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Located:
    """A Pod template, the object that holds it, and where in that object it is."""

    where: str  # Kind/name, and the replica type for a training job
    path: str  # the template's own path in its owner, for a person: spec.template
    owner: dict[str, Any]
    template: dict[str, Any]


def pod_templates(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """(where, template) for every Pod or Pod template in a manifest, lists included."""
    return [(found.where, found.template) for found in located_templates(doc)]


def located_templates(doc: Any) -> list[Located]:
    """Every Pod or Pod template in a manifest, lists included, with its owner and path."""
    if not isinstance(doc, dict):
        return []
    kind = doc.get("kind")
    name = mapping(doc.get("metadata")).get("name", "")
    raw_spec = doc.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    where = f"{kind}/{name}"
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        return [t for item in doc.get("items") or () for t in located_templates(item)]
    if kind == "Pod":
        return [Located(where, "", doc, doc)]
    if kind in _TEMPLATE_KINDS:
        template = spec.get("template")
        return (
            [Located(where, "spec.template", doc, template)] if isinstance(template, dict) else []
        )
    if kind == "CronJob":
        template = mapping(mapping(spec.get("jobTemplate")).get("spec")).get("template")
        path = "spec.jobTemplate.spec.template"
        return [Located(where, path, doc, template)] if isinstance(template, dict) else []
    # Kubeflow training jobs: PyTorchJob, TFJob, MPIJob, XGBoostJob, ... keep
    # one template per replica type under spec.<framework>ReplicaSpecs.
    found = []
    for key, replicas in spec.items():
        if key.endswith("ReplicaSpecs") and isinstance(replicas, dict):
            for replica, rspec in replicas.items():
                if isinstance(rspec, dict) and isinstance(rspec.get("template"), dict):
                    path = f"spec.{key}.{replica}.template"
                    found.append(Located(f"{where} {replica}", path, doc, rspec["template"]))
    return found


def misplaced(found: Located, settings: Settings) -> str | None:
    """A person who opted the workload in, not its Pod template: where the opt-in belongs.

    The API server sends the webhook Pods only, and a Pod gets its template's metadata, never
    its owner's, so an opt-in on a Deployment's own metadata reaches no Pod.
    """
    if found.owner is found.template:
        return None
    owner = opt_in(mapping(found.owner.get("metadata")), settings)
    metadata = mapping(found.template.get("metadata"))
    marked = settings.inject_key in mapping(metadata.get("labels")) or settings.inject_key in (
        mapping(metadata.get("annotations"))
    )
    if not owner.inject or marked:
        return None
    kind = found.owner.get("kind")
    return (
        f"{settings.inject_key} is on the {kind}'s own metadata, which no Pod gets: "
        f"put it in {found.path}.metadata.annotations, the Pod template's"
    )


def unquoted(found: Located) -> str | None:
    """The first label or annotation a manifest gives as a YAML boolean, number or null (the
    commonest slip: `inject: true`), named, with the fix; Kubernetes takes strings only."""
    metadata = mapping(found.template.get("metadata"))
    where = f"{found.path}.metadata" if found.path else "metadata"
    for key in ("labels", "annotations"):
        for name, value in mapping(metadata.get(key)).items():
            if isinstance(name, str) and not isinstance(value, str | dict | list):
                word = {True: "true", False: "false", None: ""}.get(value, str(value))
                kind = "a YAML boolean" if isinstance(value, bool) else "not a string"
                return (
                    f"{where}.{key} {name}: {word or 'null'} is {kind}; Kubernetes takes only "
                    f'strings there: quote it, {name}: "{word}"'
                )
    return None


def inject_documents(docs: list[Any], settings: Settings, *, everything: bool = False) -> Injected:
    """Mutate every opted-in template (or, with `everything`, every one not opted out)."""
    result = Injected()
    for doc in docs:
        for found in located_templates(doc):
            where, template = found.where, found.template
            result.templates += 1
            problem = unquoted(found) or unreadable(template)
            if problem:
                result.warnings.append(f"{where}: {problem}; left unchanged")
                continue
            decision = opt_in(template.get("metadata") or {}, settings, default=everything)
            if decision.detail:
                result.warnings.append(f"{where}: {decision.detail}")
            hint = misplaced(found, settings)
            if hint and not decision.inject:
                result.warnings.append(f"{where}: {hint}")
            if not decision.inject:
                continue
            try:
                mutation = mutate(template, settings)
            except Unreadable as exc:
                result.warnings.append(f"{where}: {exc}; left unchanged")
                continue
            jsonpatch.apply_patch(template, mutation.patch.ops(), in_place=True)
            result.injected += 1
            result.warnings += [f"{where}: {n.target}: {n.reason}" for n in mutation.new_notes]
    return result
