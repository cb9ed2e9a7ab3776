"""Offline injection: find the Pod templates in workload manifests and mutate them in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from webhook.core.mutation import mutate
from webhook.core.optin import opt_in
from webhook.core.settings import Settings

_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


@dataclass
class Injected:
    """What offline injection did to a stream of documents."""

    templates: int = 0
    injected: int = 0
    warnings: list[str] = field(default_factory=list)


def pod_templates(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """(where, template) for every Pod or Pod template in a manifest, lists included."""
    if not isinstance(doc, dict):
        return []
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "")
    raw_spec = doc.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    where = f"{kind}/{name}"
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        return [t for item in doc.get("items") or () for t in pod_templates(item)]
    if kind == "Pod":
        return [(where, doc)]
    if kind in _TEMPLATE_KINDS:
        return [(where, spec["template"])] if isinstance(spec.get("template"), dict) else []
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        return [(where, template)] if isinstance(template, dict) else []
    # Kubeflow training jobs: PyTorchJob, TFJob, MPIJob, XGBoostJob, ... keep
    # one template per replica type under spec.<framework>ReplicaSpecs.
    found = []
    for key, replicas in spec.items():
        if key.endswith("ReplicaSpecs") and isinstance(replicas, dict):
            for replica, rspec in replicas.items():
                if isinstance(rspec, dict) and isinstance(rspec.get("template"), dict):
                    found.append((f"{where} {replica}", rspec["template"]))
    return found


def inject_documents(docs: list[Any], settings: Settings, *, everything: bool = False) -> Injected:
    """Mutate every opted-in template (or, with `everything`, every one not opted out)."""
    result = Injected()
    for doc in docs:
        for where, template in pod_templates(doc):
            result.templates += 1
            decision = opt_in(template.get("metadata") or {}, settings, default=everything)
            if decision.detail:
                result.warnings.append(f"{where}: {decision.detail}")
            if not decision.inject:
                continue
            mutation = mutate(template, settings)
            jsonpatch.apply_patch(template, mutation.patch, in_place=True)
            result.injected += 1
            result.warnings += [f"{where}: {n.target}: {n.reason}" for n in mutation.new_notes]
    return result
