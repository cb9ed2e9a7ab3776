"""The kustomize manifests render, validate against the schemas, and say what we promise."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testing.kube.settings import filled, kustomize

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ["", "overlays/cert-manager", "overlays/irsa", "overlays/ignore", "overlays/monitoring"]
SCHEMA_VERSION = kubernetes_validate.latest_version()
# Custom resources: cert-manager's, and the Prometheus Operator's (tests/test_monitoring.py).
CRDS = {"cert-manager.io/v1", "monitoring.coreos.com/v1"}


def render(overlay: str) -> list[dict[str, Any]]:
    # Only the tests that render need kubectl; the Dockerfile and constraints tests run anyway.
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl renders kustomize")
    return kustomize(filled() / overlay)


def find(docs: list[dict[str, Any]], kind: str, name: str = "mlflow-webhook") -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o or "base" for o in OVERLAYS])
def test_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    assert len(docs) >= 12
    for doc in docs:
        if doc["apiVersion"] not in CRDS:
            kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
    # The image's entrypoint is the command line: every overlay's Pods say they serve.
    [container] = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]


def test_rbac_grants_nothing_beyond_the_list() -> None:
    docs = render("")
    rules = {
        (
            tuple(r["apiGroups"]),
            tuple(r["resources"]),
            tuple(r.get("resourceNames", ())),
            tuple(r["verbs"]),
        )
        for r in find(docs, "ClusterRole")["rules"]
    }
    assert rules == {
        (("",), ("namespaces",), (), ("get", "list", "watch")),
        # Reads, the watch and repairs name our ServiceAccount; create cannot be limited by name.
        (("",), ("serviceaccounts",), ("sagemaker-mlflow-sa",), ("get", "list", "watch", "patch")),
        (("",), ("serviceaccounts",), (), ("create",)),
        # The watch of Pod metadata; Events on missed Pods.
        (("",), ("pods",), (), ("list", "watch")),
        (("",), ("events",), (), ("create",)),
        (
            ("admissionregistration.k8s.io",),
            ("mutatingwebhookconfigurations",),
            ("mlflow-webhook",),
            ("get", "patch"),
        ),
        (
            ("admissionregistration.k8s.io",),
            ("mutatingwebhookconfigurations",),
            ("pod-identity-webhook",),
            ("get",),
        ),
    }
    role = find(docs, "Role")
    assert role["metadata"]["namespace"] == "mlflow-webhook"
    assert {
        (tuple(r["resources"]), tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
        for r in role["rules"]
    } == {
        (("leases",), (), ("get", "create", "update")),
        (("secrets",), (), ("create",)),
        (("secrets",), ("mlflow-webhook-tls",), ("get", "update")),
    }
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"- '\*'|\"\*\"", text), "no wildcard anywhere"
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert {s["name"] for b in bindings for s in b["subjects"]} == {"mlflow-webhook"}


def test_webhook_configuration() -> None:
    docs = render("")
    config = find(docs, "MutatingWebhookConfiguration")
    assert config["metadata"]["name"] < "pod-identity-webhook"  # called before the EKS webhook
    [hook] = config["webhooks"]
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert (
        hook["failurePolicy"],
        hook["reinvocationPolicy"],
        hook["timeoutSeconds"],
        hook["sideEffects"],
        hook["admissionReviewVersions"],
        hook["matchPolicy"],
    ) == ("Fail", "IfNeeded", 5, "None", ["v1"], "Equivalent")
    namespaces = hook["namespaceSelector"]["matchExpressions"]
    assert {
        "key": "mlflow-webhook.io/inject",
        "operator": "In",
        "values": ["enabled"],
    } in namespaces
    [excluded] = [e for e in namespaces if e["key"] == "kubernetes.io/metadata.name"]
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) == {
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "mlflow-webhook",
    }
    # Our own Pods carry the label the objectSelector excludes.
    [own] = hook["objectSelector"]["matchExpressions"]
    pod_labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert own["operator"] == "NotIn" and pod_labels[own["key"]] in own["values"]
    assert hook["clientConfig"]["service"] == {
        "name": "mlflow-webhook",
        "namespace": "mlflow-webhook",
        "path": "/mutate",
        "port": 443,
    }
    ignore = find(render("overlays/ignore"), "MutatingWebhookConfiguration")
    assert ignore["webhooks"][0]["failurePolicy"] == "Ignore"
    managed = find(render("overlays/cert-manager"), "MutatingWebhookConfiguration")
    assert managed["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "mlflow-webhook/mlflow-webhook"
    }


def test_deployment_is_locked_down() -> None:
    deployment = find(render(""), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["affinity"]["podAntiAffinity"] and spec["topologySpreadConstraints"]
    [container] = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["lifecycle"]["preStop"]
    assert set(container["resources"]) == {"requests", "limits"}
    docs = render("")
    assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert (
        find(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_dockerfile_and_dockerignore() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile.split("\nFROM ")[-1]
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2, "multi-stage"
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", final, re.M), "numeric non-root user"
    # The command line is the entrypoint (`docker run IMAGE --version` works); serve the default.
    assert 'ENTRYPOINT ["mlflow-webhook"]\nCMD ["serve"]' in final
    assert not re.search(r"apt-get|gcc|build-essential", final), "no compilers in the final image"
    assert all(
        label in final
        for label in ("org.opencontainers.image.title", "org.opencontainers.image.version")
    )
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # everything is left out unless listed
    assert not any(line.startswith(("!certs", "!tests")) for line in ignored)


def test_image_constraints_pin_every_runtime_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    wanted = {re.split(r"[<>=!;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert wanted <= pinned, wanted - pinned
