"""The mutation rules, a YAML fixture a case: input Pod, settings, expected Pod after the patch."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate
import pytest

from testing.support import apply, load_cases, readable, review_for, settings
from webhook.core.decisions import admit
from webhook.core.reviews import parse

CASES = load_cases("mutation")
SCHEMA_VERSION = kubernetes_validate.latest_version()


def shared_mount_paths(pod: dict[str, Any]) -> list[str]:
    """Containers with two mounts at one mountPath, which a real API server rejects
    (`tests/test_controlplane.py`) and the Pod schema alone does not catch."""
    spec = pod.get("spec") or {}
    found = []
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or ():
            paths = [m.get("mountPath") for m in container.get("volumeMounts") or ()]
            found += [f"{container.get('name')}:{p}" for p in set(paths) if paths.count(p) > 1]
    return found


def run(case: dict[str, Any], pod: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    chosen = settings(**(case.get("settings") or {}))
    # What a namespace's own annotations set (webhook.core.namespaces.resolve).
    chosen = dataclasses.replace(chosen, **(case.get("namespace_settings") or {}))
    result = admit(
        parse(review_for(pod, **(case.get("request") or {}))),
        chosen,
        account_exists=case.get("account_exists", True),
    )
    assert result.response["response"]["allowed"] is True
    return apply(pod, result.patch), result


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
def test_case(name: str, case: dict[str, Any]) -> None:
    pod = case["pod"]
    mutated, result = run(case, pod)
    assert (result.outcome, result.reason) == (case["outcome"], case["reason"])
    if case.get("unchanged"):
        assert result.patch == []
        assert mutated == pod
    else:
        assert readable(mutated) == readable(case["expected"])
    for expected in case.get("warnings") or []:
        assert any(expected in w for w in result.warnings), result.warnings
    if not case.get("warnings"):
        assert result.warnings == []
    # Rule 9: the webhook on its own output changes nothing and warns about nothing new.
    again, second = run(case, mutated)
    assert second.patch == []
    assert again == mutated
    if result.outcome == "injected":
        assert second.warnings == []
    if case.get("schema", True):
        kubernetes_validate.validate(mutated, SCHEMA_VERSION, strict=True)
        assert shared_mount_paths(mutated) == []


def test_every_rule_has_a_case() -> None:
    prefixes = {name.split("-")[0] for name, _ in CASES}
    expected = {
        "scope",
        "optin",
        "sa",
        "containers",
        "region",
        "irsa",
        "pod",
        "experiment",
        "status",
        "reinvocation",
        "unknown",
        "provenance",
    }
    assert expected <= prefixes
