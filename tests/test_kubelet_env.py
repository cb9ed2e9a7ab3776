"""The test helper that resolves a container's environment as the kubelet does, checked against
what Kubernetes documents, before other tests trust it."""

from __future__ import annotations

import pytest

from testing.kube.kubelet import environment, expand

DEFINED = {"VAR_A": "A", "VAR_B": "B", "EMPTY": ""}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_A)___", "___A___"),
        ("$(VAR_A)-$(VAR_B)", "A-B"),
        ("$(EMPTY)x", "x"),
        # An undefined reference stays as written.
        ("$(VAR_C)", "$(VAR_C)"),
        ("$(VAR_A)$(VAR_C)", "A$(VAR_C)"),
        # `$$` is one `$`: the escape of a reference.
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("a$$b", "a$b"),
        # Any other `$` stays, as does an unterminated reference.
        ("$", "$"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_A", "$(VAR_A"),
        ("$()", "$()"),
        ("$)", "$)"),
        ("a$", "a$"),
    ],
)
def test_expansion(value: str, expected: str) -> None:
    assert expand(value, DEFINED) == expected


def test_the_documented_example() -> None:
    """Kubernetes' "Define Dependent Environment Variables": order of definition decides."""
    pod = {
        "metadata": {"name": "dependent-envars-demo"},
        "spec": {
            "containers": [
                {
                    "name": "dependent-envars-demo",
                    "env": [
                        {"name": "SERVICE_PORT", "value": "80"},
                        {"name": "SERVICE_IP", "value": "172.17.0.1"},
                        {
                            "name": "UNCHANGED_REFERENCE",
                            "value": "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)",
                        },
                        {"name": "PROTOCOL", "value": "https"},
                        {
                            "name": "SERVICE_ADDRESS",
                            "value": "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)",
                        },
                        {
                            "name": "ESCAPED_REFERENCE",
                            "value": "$$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)",
                        },
                    ],
                }
            ]
        },
    }
    env = environment(pod, "dependent-envars-demo")
    assert env["UNCHANGED_REFERENCE"] == "$(PROTOCOL)://172.17.0.1:80"
    assert env["SERVICE_ADDRESS"] == "https://172.17.0.1:80"
    assert env["ESCAPED_REFERENCE"] == "$(PROTOCOL)://172.17.0.1:80"


def test_downward_fields_resolve_and_are_never_expanded() -> None:
    pod = {
        "metadata": {"name": "p-0", "uid": "u-1", "labels": {"app": "$(X)"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [
                {
                    "name": "main",
                    "env": [
                        {"name": "X", "value": "x"},
                        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "APP",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                        },
                        {"name": "WHERE", "value": "$(NAME)@$(NODE)"},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "AFTER", "value": "$(NAME)@$(NODE)"},
                    ],
                }
            ],
        },
    }
    env = environment(pod, "main")
    assert env["APP"] == "$(X)"
    assert env["WHERE"] == "p-0@$(NODE)"
    assert env["AFTER"] == "p-0@node-a"


def test_service_variables_are_defined_but_the_containers_own_win() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "env": [
                        {"name": "A", "value": "$(KUBERNETES_SERVICE_HOST)"},
                        {"name": "KUBERNETES_SERVICE_HOST", "value": "mine"},
                        {"name": "B", "value": "$(KUBERNETES_SERVICE_HOST)"},
                    ],
                }
            ]
        },
    }
    env = environment(pod, "main", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert (env["A"], env["B"]) == ("10.0.0.1", "mine")
