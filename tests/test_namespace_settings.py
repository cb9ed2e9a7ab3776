"""One webhook, many teams, on the real control plane: each namespace names its own tracking
server and role in annotations, the webhook runs as its own ServiceAccount, and the API server
calls it for every Pod created here."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.kube.controlplane import ControlPlane, eventually
from testing.kube.harness import GIVEN, ROLE_KEY, Setup, post, run_pod, since
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, STATUS_KEY, TRACKING_ARN, decode_patch

URI, ROLE, EXPERIMENT = (
    f"mlflow-webhook.io/{n}" for n in ("tracking-uri", "role-arn", "experiment")
)
TEAM_A = {
    URI: "arn:aws:sagemaker:eu-west-1:444455556666:mlflow-tracking-server/team-a",
    ROLE: "arn:aws:iam::444455556666:role/team-a-mlflow",
}
TEAM_B = {
    URI: "arn:aws:sagemaker:ap-south-1:777788889999:mlflow-app/app-team-b",
    ROLE: "arn:aws:iam::777788889999:role/team-b-mlflow",
    EXPERIMENT: "team-b-default",
}
ERRORS = "mlflow_webhook_namespace_settings_errors"


@pytest.fixture
def cluster(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Setup]:
    """The manifests installed; each test's close removes the Lease and Secret it made."""
    setup = Setup(control_plane, tmp_path)
    setup.install()
    try:
        yield setup
    finally:
        setup.close()


def team(cluster: Setup, name: str, annotations: dict[str, str]) -> str:
    """A namespace opted in, carrying exactly `annotations` (server-side apply drops others)."""
    metadata: dict[str, Any] = {"name": name, "labels": {"mlflow-webhook.io/inject": "enabled"}}
    metadata["annotations"] = annotations
    cluster.plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    return name


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or ()}


def status(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(pod["metadata"]["annotations"][STATUS_KEY])
    return found


def role_of(cluster: Setup, namespace: str) -> str | None:
    account = cluster.service_account(namespace) or {}
    return ((account.get("metadata") or {}).get("annotations") or {}).get(ROLE_KEY)


def counted(server: WebhookProcess, name: str, suffix: str = "_total") -> dict[str, float]:
    """Every series of one metric, by its labels as written."""

    async def scrape() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/metrics", ssl=server.client_context()) as response,
        ):
            return await response.text()

    found = {}
    for line in asyncio.run(scrape()).splitlines():
        if line.startswith(name + suffix + "{"):
            labels, value = line[len(name) + len(suffix) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def test_each_team_gets_its_own_settings_and_follows_a_change(cluster: Setup) -> None:
    a = team(cluster, "team-a", TEAM_A)
    b = team(cluster, "team-b", TEAM_B)
    c = team(cluster, "team-c", {})
    cluster.start("one", *GIVEN)
    for namespace, role in ((a, TEAM_A[ROLE]), (b, TEAM_B[ROLE]), (c, ROLE_ARN)):
        eventually(lambda n=namespace, r=role: role_of(cluster, n) == r, what=f"{namespace}'s role")
    cluster.wait_for_ca_bundle()

    pods = {n: run_pod(cluster.plane, n, "trainer") for n in (a, b, c)}
    got = {n: env(pod) for n, (pod, _) in pods.items()}
    assert got[a]["MLFLOW_TRACKING_URI"] == TEAM_A[URI]
    assert (got[a]["AWS_ROLE_ARN"], got[a]["AWS_REGION"]) == (TEAM_A[ROLE], "eu-west-1")
    assert "MLFLOW_EXPERIMENT_NAME" not in got[a]
    assert got[b]["MLFLOW_TRACKING_URI"] == TEAM_B[URI]
    assert (got[b]["AWS_ROLE_ARN"], got[b]["AWS_REGION"]) == (TEAM_B[ROLE], "ap-south-1")
    assert got[b]["MLFLOW_EXPERIMENT_NAME"] == "team-b-default"
    assert got[c]["MLFLOW_TRACKING_URI"] == TRACKING_ARN
    assert (got[c]["AWS_ROLE_ARN"], got[c]["AWS_REGION"]) == (ROLE_ARN, "us-west-2")
    assert [status(pods[n][0]).get("settings") for n in (a, b, c)] == [
        "namespace",
        "namespace",
        None,  # absent: the global settings
    ]
    assert all(warnings == "" for _, warnings in pods.values())

    # team-a moves to another server and role: its ServiceAccount follows within seconds,
    # and Pods created after get the new values.
    moved = {
        URI: "arn:aws:sagemaker:eu-central-1:444455556666:mlflow-tracking-server/team-a-2",
        ROLE: "arn:aws:iam::444455556666:role/team-a-mlflow-2",
    }
    changed = time.monotonic()
    team(cluster, a, moved)
    eventually(lambda: role_of(cluster, a) == moved[ROLE], timeout=30, what="the new role")
    print(f"team-a's ServiceAccount followed in {since(changed):.1f} s")
    after, _ = run_pod(cluster.plane, a, "after")
    assert env(after)["MLFLOW_TRACKING_URI"] == moved[URI]
    assert (env(after)["AWS_ROLE_ARN"], env(after)["AWS_REGION"]) == (moved[ROLE], "eu-central-1")
    assert role_of(cluster, b) == TEAM_B[ROLE]

    # A replica that does not lead keeps no watch: it asks for the namespace, once, and
    # answers with the namespace's settings all the same.
    follower = cluster.start("two", *GIVEN)
    patched = json.dumps(decode_patch(post(follower, b)))
    assert TEAM_B[URI] in patched and TEAM_B[ROLE] in patched and TRACKING_ARN not in patched


def test_namespace_in_error_gets_pods_admitted_bare_warned_and_counted(cluster: Setup) -> None:
    bad_arn = team(cluster, "bad-arn", {**TEAM_A, ROLE: "arn:aws:iam::4444:role/short"})
    no_role = team(cluster, "no-role", {URI: TEAM_A[URI]})
    server = cluster.start("one", *GIVEN)
    cluster.wait_for_ca_bundle()
    for namespace in (bad_arn, no_role):
        cluster.wait_for_account(namespace)
        # Never the global role for a namespace that names settings of its own.
        assert role_of(cluster, namespace) is None
    made = {n: run_pod(cluster.plane, n, "trainer") for n in (bad_arn, no_role)}
    second, _ = run_pod(cluster.plane, no_role, "second")
    for namespace, (pod, warnings) in made.items():
        assert env(pod) == {}, namespace
        assert STATUS_KEY not in (pod["metadata"].get("annotations") or {})
        assert f"namespace {namespace}'s own MLflow settings are unusable" in warnings
    assert "arn:aws:iam::4444:role/short' is not an IAM role ARN" in made[bad_arn][1]
    assert "mlflow-webhook.io/role-arn is not" in made[no_role][1]
    assert env(second) == {}
    assert counted(server, ERRORS) == {
        '{namespace="bad-arn"}': 1.0,
        '{namespace="no-role"}': 2.0,
    }
    assert any(
        entry.get("level") == "error" and entry.get("namespace") == no_role
        for entry in list(server.logs)
    )
    # A namespace that goes wrong: its ServiceAccount loses its role, and gets no other.
    went_wrong = team(cluster, "went-wrong", TEAM_A)
    eventually(lambda: role_of(cluster, went_wrong) == TEAM_A[ROLE], timeout=30, what="its role")
    team(cluster, went_wrong, {URI: TEAM_B[URI]})
    eventually(lambda: role_of(cluster, went_wrong) is None, timeout=30, what="no role at all")
    # Left bare on purpose, and said so: not counted as missed by the webhook.
    time.sleep(3)
    assert not [e for e in list(server.logs) if e.get("msg") == "Pod missed by the webhook"]
    assert sum(counted(server, "mlflow_webhook_missed_pods", suffix="").values()) == 0


def test_switched_off_every_namespace_gets_the_global_settings(cluster: Setup) -> None:
    a = team(cluster, "off-a", TEAM_A)
    cluster.start("one", *GIVEN, "--namespace-settings", "off")
    eventually(lambda: role_of(cluster, a) == ROLE_ARN, what="the global role")
    cluster.wait_for_ca_bundle()
    pod, _ = run_pod(cluster.plane, a, "trainer")
    assert env(pod)["MLFLOW_TRACKING_URI"] == TRACKING_ARN
    assert env(pod)["AWS_ROLE_ARN"] == ROLE_ARN
    assert "settings" not in status(pod)


def test_a_miss_costs_one_bounded_lookup_kept_for_the_next_pods(cluster: Setup) -> None:
    """A replica that does not lead keeps no namespace watch: its first Pod in a namespace asks
    once, the next ones use the answer; a lookup that does not answer within its bound leaves
    the Pod unchanged with a warning, never with the global settings."""
    b = team(cluster, "kept-b", TEAM_B)
    cluster.start("one", *GIVEN)
    cluster.wait_for_account(b)
    follower = cluster.start("two", *GIVEN, proxied=True)
    assert cluster.proxy is not None
    proxy = cluster.proxy
    first = time.monotonic()
    for _ in range(3):
        assert TEAM_B[URI] in json.dumps(decode_patch(post(follower, b)))
    lookups = proxy.recorded(lambda c: c.method == "GET" and c.path == f"/api/v1/namespaces/{b}")
    assert len(lookups) == 1

    held = team(cluster, "held", TEAM_A)
    paths = {f"/api/v1/namespaces/{n}" for n in (b, held)}
    proxy.hold(lambda c: c.path in paths)
    try:
        started = time.monotonic()
        answer = post(follower, held)["response"]
        took = since(started)
        # Past its 10 s, a namespace is asked again; when that fails, what it last said holds.
        time.sleep(max(0.0, 10.5 - since(first)))
        stale = post(follower, b)
    finally:
        proxy.release()
    assert took < 5, took
    assert answer["allowed"] is True and "patch" not in answer
    assert "they could not be read (TimeoutError)" in " ".join(answer["warnings"])
    assert TEAM_B[URI] in json.dumps(decode_patch(stale))
    assert follower.wait_for_log("namespace lookup failed")["namespace"] in (b, held)
