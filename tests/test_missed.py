"""Pods the webhook missed, on a real API server with the manifests' RBAC and `failurePolicy:
Ignore`: found by the leader's metadata-only Pod watch, told with one Warning Event each,
counted in a gauge that falls back to 0, and listed by `audit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.kube.controlplane import NAMESPACE, WEBHOOK_SA, ControlPlane, eventually, replica
from testing.kube.proxy import ApiProxy, Call
from testing.metrics import sample, scrape, value
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, free_port

# Several minutes of a real control plane each on a busy machine, not the default two.
pytestmark = pytest.mark.timeout(300)

SA = "sagemaker-mlflow-sa"
STATUS = "mlflow-webhook.io/status"
GAUGE = "mlflow_webhook_missed_pods"
ROLE = "eks.amazonaws.com/role-arn"


@pytest.fixture(scope="module")
def port(control_plane: ControlPlane) -> int:
    return free_port()


@pytest.fixture(scope="module")
def kubeconfig(control_plane: ControlPlane, port: int) -> Path:
    """The `ignore` overlay: with the webhook down, Pods are admitted unchanged."""
    return control_plane.install(port, "overlays/ignore")


def start(
    plane: ControlPlane, kubeconfig: Path, cert_dir: Path, port: int, *args: str
) -> WebhookProcess:
    server = replica(
        plane,
        kubeconfig,
        cert_dir,
        port,
        "--tracking-uri",
        TRACKING_ARN,
        "--role-arn",
        ROLE_ARN,
        *args,
    )
    server.wait_for_log("serving", timeout=30)
    return server


def pod(
    plane: ControlPlane, namespace: str, name: str, inject: str | None = "true"
) -> dict[str, Any]:
    annotations = {"mlflow-webhook.io/inject": inject} if inject is not None else {}
    plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
        }
    )
    found = plane.get("pod", name, namespace)
    assert found is not None
    return found


def events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    done = plane.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"reason=MLflowInjectionMissed,involvedObject.name={name}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
    return items


def audit(
    plane: ControlPlane, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mlflow-webhook audit` as a person: the admin kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(plane.admin), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def listed(plane: ControlPlane, *args: str) -> list[tuple[str, str, str]]:
    done = audit(plane, "--output", "json", *args)
    assert done.returncode in (0, 1), done.stderr
    return [(r["namespace"], r["name"], r["reason"]) for r in json.loads(done.stdout)]


def namespace(plane: ControlPlane, name: str, labelled: bool = True) -> str:
    if labelled:
        plane.label_namespace(name)
    else:
        plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def test_missed_pod_is_told_counted_audited_and_forgotten(
    control_plane: ControlPlane, kubeconfig: Path, port: int, tmp_path: Path
) -> None:
    plane = control_plane
    team, plain = namespace(plane, "team-a"), namespace(plane, "plain", labelled=False)
    # The webhook is down: an opted-in Pod is admitted as it came.
    missed = pod(plane, team, "missed")
    assert STATUS not in missed["metadata"].get("annotations", {})
    assert missed["spec"]["serviceAccountName"] == "default"
    pod(plane, team, "finishes")
    pod(plane, team, "opted-out", inject="false")
    pod(plane, team, "not-asking", inject=None)
    pod(plane, plain, "elsewhere")

    server = start(plane, kubeconfig, tmp_path / "certs", port, "--resync-seconds", "3")
    started = time.monotonic()
    try:
        eventually(lambda: plane.get("serviceaccount", SA, team), what="the ServiceAccount")
        injected = pod(plane, team, "injected")
        assert STATUS in injected["metadata"]["annotations"]

        [event] = eventually(lambda: events(plane, team, "missed"), timeout=60, what="the Event")
        assert event["type"] == "Warning"
        assert event["involvedObject"]["uid"] == missed["metadata"]["uid"]
        assert "Recreate the Pod" in event["message"]
        eventually(
            lambda: value(server, GAUGE, namespace=team, reason="not-injected") == 2,
            timeout=60,
            what="the gauge to count both",
        )
        assert time.monotonic() - started < 60
        assert listed(plane) == [
            (team, "finishes", "not-injected"),
            (team, "missed", "not-injected"),
        ]
        table = audit(plane)
        assert table.returncode == 1
        assert table.stdout.split("\n")[0].split() == ["NAMESPACE", "NAME", "AGE", "REASON"]
        assert any(line.split()[:2] == [team, "missed"] for line in table.stdout.splitlines())

        # A Pod that finished is no longer counted; the API server's field selector drops it.
        plane.kubectl(
            "patch", "pod", "finishes", "-n", team, "--subresource=status",
            "-p", '{"status": {"phase": "Succeeded"}}',
        )  # fmt: skip
        eventually(
            lambda: value(server, GAUGE, namespace=team, reason="not-injected") == 1,
            what="a finished Pod to leave the count",
        )
        assert listed(plane) == [(team, "missed", "not-injected")]

        # Resyncs every 3 s: still one Event, never repeated, and none on the others.
        time.sleep(7)
        [again] = events(plane, team, "missed")
        assert again["metadata"]["uid"] == event["metadata"]["uid"] and again.get("count") == 1
        for name in ("injected", "opted-out", "not-asking"):
            assert events(plane, team, name) == [], name
        assert events(plane, plain, "elsewhere") == []
        assert value(server, GAUGE, namespace=plain, reason="not-injected") == 0

        plane.kubectl("delete", "pod", "missed", "-n", team, "--wait=false")
        plane.kubectl("delete", "pod", "finishes", "-n", team, "--wait=false")
        eventually(
            lambda: value(server, GAUGE, namespace=team, reason="not-injected") == 0,
            what="the gauge back to 0",
        )
        assert sample(scrape(server), GAUGE, namespace=team, reason="not-injected") == 0
        done = audit(plane)
        assert (done.returncode, done.stdout.strip()) == (0, "No missed Pods."), done.stderr
    finally:
        server.stop()


def test_pod_that_kept_its_service_account_is_missed(
    control_plane: ControlPlane, kubeconfig: Path, port: int, tmp_path: Path
) -> None:
    """RBAC without ServiceAccount create for a while: ours stays missing in a new namespace,
    so its Pod keeps its own (the namespace/Pod race, held open)."""
    plane = control_plane

    def without_account_create(doc: dict[str, Any]) -> None:
        if doc["kind"] == "ClusterRole":
            doc["rules"] = [
                r
                for r in doc["rules"]
                if not (r["resources"] == ["serviceaccounts"] and r["verbs"] == ["create"])
            ]

    plane.install(port, "overlays/ignore", edit=without_account_create)
    team = namespace(plane, "no-account")
    server = start(plane, kubeconfig, tmp_path / "certs", port)
    try:
        server.wait_for_log("could not ensure ServiceAccount", timeout=30)
        kept = pod(plane, team, "kept")
        assert kept["spec"]["serviceAccountName"] == "default"
        assert "does not exist" in kept["metadata"]["annotations"][STATUS]
        eventually(lambda: events(plane, team, "kept"), timeout=60, what="the Event")
        assert "kept the ServiceAccount 'default'" in events(plane, team, "kept")[0]["message"]
        eventually(
            lambda: value(server, GAUGE, namespace=team, reason="service-account-kept") == 1,
            what="the gauge",
        )
        assert listed(plane, "--namespace", team) == [(team, "kept", "service-account-kept")]
    finally:
        server.stop()
        plane.install(port, "overlays/ignore")


def test_pod_of_a_namespace_labelled_later_is_missed_from_then(
    control_plane: ControlPlane, kubeconfig: Path, port: int, tmp_path: Path
) -> None:
    """Not counted while its namespace does not opt in; found once the label arrives."""
    plane = control_plane
    later = namespace(plane, "labelled-later", labelled=False)
    server = start(plane, kubeconfig, tmp_path / "certs", port)
    try:
        early = pod(plane, later, "early")  # the webhook runs, but not for this namespace
        assert STATUS not in early["metadata"].get("annotations", {})
        server.wait_for_log("became leader", timeout=30)
        time.sleep(3)
        assert events(plane, later, "early") == []
        assert (later, "early", "not-injected") not in listed(plane)
        plane.label_namespace(later)
        eventually(lambda: events(plane, later, "early"), timeout=60, what="the Event")
        eventually(
            lambda: value(server, GAUGE, namespace=later, reason="not-injected") == 1,
            what="the gauge",
        )
        assert listed(plane, "--namespace", later) == [(later, "early", "not-injected")]
    finally:
        server.stop()


def without_event_create(doc: dict[str, Any]) -> None:
    if doc["kind"] == "ClusterRole":
        doc["rules"] = [r for r in doc["rules"] if r["resources"] != ["events"]]


def test_an_event_write_that_fails_is_tried_again_until_it_lands(
    control_plane: ControlPlane, kubeconfig: Path, port: int, tmp_path: Path
) -> None:
    """The missed-Pod Event's write fails three ways: refused by RBAC (the API server's own
    403), an API server error (a 500 the proxy gives), and no answer (the proxy holds it and the
    client gives up). Each time it is tried again, on the next resync, until its one Event
    lands."""
    plane = control_plane
    refused, errored, unanswered = (
        namespace(plane, name, labelled=False) for name in ("ev-403", "ev-500", "ev-timeout")
    )
    for team in (refused, errored, unanswered):
        pod(plane, team, "missed")  # its namespace is not opted in yet: nothing asks
    proxy = ApiProxy(plane.url, plane.ca, tmp_path / "proxy")
    proxy.start()
    proxied = plane.kubeconfig_for(
        WEBHOOK_SA, NAMESPACE, tmp_path / "proxied.kubeconfig", server=proxy.url, ca=proxy.ca
    )
    plane.install(port, "overlays/ignore", edit=without_event_create)
    server = start(plane, proxied, tmp_path / "certs", port, "--resync-seconds", "2")

    def writes(team: str) -> list[int | None]:
        path = f"/api/v1/namespaces/{team}/events"
        return [c.status for c in proxy.recorded(lambda c: c.method == "POST" and c.path == path)]

    def told(team: str) -> bool:
        return bool(events(plane, team, "missed"))

    try:
        plane.label_namespace(refused)
        eventually(lambda: writes(refused).count(403) >= 2, what="the refused write tried again")
        assert not told(refused)
        plane.install(port, "overlays/ignore")  # the grant is back
        eventually(lambda: told(refused), what="the Event once allowed")

        proxy.refuse(lambda c: c.method == "POST" and c.path.endswith(f"/{errored}/events"), 500)
        plane.label_namespace(errored)
        eventually(lambda: writes(errored).count(500) >= 2, what="the failed write tried again")
        assert not told(errored)
        proxy.accept()
        eventually(lambda: told(errored), what="the Event once the API server answers")

        first: list[Call] = []

        def first_write(call: Call) -> bool:
            if call.method != "POST" or not call.path.endswith(f"/{unanswered}/events"):
                return False
            first.append(call)
            return call is first[0]

        proxy.hold(first_write)  # the first write alone: the API server never sees it
        plane.label_namespace(unanswered)
        server.wait_for_entry(
            lambda e: (
                e.get("msg") == "could not write the missed-Pod Event"
                and e.get("namespace") == unanswered
                and "timed out" in str(e.get("error"))
            ),
            timeout=30,
        )
        eventually(lambda: told(unanswered), what="the Event after a write that timed out")
        proxy.release()

        for team in (refused, errored, unanswered):
            [event] = events(plane, team, "missed")
            assert event.get("count") == 1
            assert 201 in writes(team)
    finally:
        server.stop()
        proxy.stop()
        plane.install(port, "overlays/ignore")


def edit_and_see_it_repaired(plane: ControlPlane, team: str, leader: WebhookProcess) -> None:
    plane.kubectl("annotate", "serviceaccount", SA, "-n", team, f"{ROLE}=by-hand", "--overwrite")

    def role() -> str:
        account = plane.get("serviceaccount", SA, team) or {}
        return str(account["metadata"]["annotations"][ROLE])

    eventually(lambda: role() == ROLE_ARN, what="the repair")
    leader.wait_for_entry(
        lambda e: (
            str(e.get("msg")).startswith("repaired a managed ServiceAccount")
            and e.get("namespace") == team
            and e.get("was") == "role annotation was by-hand"
        )
    )


def identity_of(server: WebhookProcess) -> str:
    return str(server.wait_for_log("became leader", timeout=30)["identity"])


def test_only_the_leader_writes_and_a_new_leader_repeats_nothing(
    control_plane: ControlPlane, kubeconfig: Path, port: int, tmp_path: Path
) -> None:
    plane = control_plane
    team = namespace(plane, "ha")
    pod(plane, team, "ha-missed")  # no webhook runs: admitted unchanged
    first = start(plane, kubeconfig, tmp_path / "a", port)
    second: WebhookProcess | None = None
    try:
        leader = identity_of(first)
        second = start(plane, kubeconfig, tmp_path / "b", free_port())
        [event] = eventually(lambda: events(plane, team, "ha-missed"), timeout=60, what="the Event")
        assert event["reportingInstance"] == leader
        eventually(lambda: plane.get("serviceaccount", SA, team), what="the ServiceAccount")
        edit_and_see_it_repaired(plane, team, first)
        assert value(first, "mlflow_webhook_leader") == 1
        assert value(second, "mlflow_webhook_leader") == 0
        assert value(first, GAUGE, namespace=team, reason="not-injected") == 1
        assert value(second, GAUGE, namespace=team, reason="not-injected") == 0

        def wrote(server: WebhookProcess) -> list[str]:
            return [
                str(e.get("msg"))
                for e in server.logs
                if str(e.get("msg", "")).startswith(("Pod missed", "repaired", "ServiceAccount "))
            ]

        assert wrote(second) == []

        first.stop()  # a crash: the Lease expires, the second takes over
        identity_of(second)
        eventually(
            lambda: value(second, GAUGE, namespace=team, reason="not-injected") == 1,
            what="the new leader to count the Pod",
        )
        time.sleep(2)
        [still] = events(plane, team, "ha-missed")
        assert still["metadata"]["uid"] == event["metadata"]["uid"]
        assert still["reportingInstance"] == leader and still.get("count") == 1
        assert not [m for m in wrote(second) if m.startswith("Pod missed")]

        edit_and_see_it_repaired(plane, team, second)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_audit_leaves_out_a_namespace_whose_own_settings_are_wrong_and_says_so(
    control_plane: ControlPlane,
) -> None:
    plane = control_plane
    uri = "arn:aws:sagemaker:eu-west-1:444455556666:mlflow-tracking-server/team-x"
    # A tracking URI of its own but no role: wrong under irsa, as serve sees it.
    plane.label_namespace("team-x", **{"mlflow-webhook.io/tracking-uri": uri})
    pod(plane, "team-x", "bare")  # no webhook answers: admitted as it came
    # In the webhook's Pod, serve's settings make audit's default irsa, as they make serve's.
    done = audit(plane, "--namespace", "team-x", env={"MLFLOW_WEBHOOK_ROLE_ARN": ROLE_ARN})
    assert (done.returncode, done.stdout.strip()) == (0, "No missed Pods."), done.stderr
    assert (
        "namespace team-x's own MLflow settings are wrong, so its Pods are left bare on purpose "
        "and not listed: mlflow-webhook.io/tracking-uri is set but mlflow-webhook.io/role-arn "
        "is not"
    ) in done.stderr
    # Where no role is needed, or the namespace's own settings are not read, it is missed.
    for args in ([], ["--credentials", "none"], ["--namespace-settings", "off"]):
        assert listed(plane, "--namespace", "team-x", *args) == [("team-x", "bare", "not-injected")]


@pytest.mark.parametrize("problem", ["missing-file", "no-server", "bad-output"])
def test_audit_that_cannot_ask_says_so_in_one_line_with_exit_2(
    problem: str, tmp_path: Path
) -> None:
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    args = {
        "missing-file": ["--kubeconfig", str(tmp_path / "absent")],
        "no-server": ["--kubeconfig", str(unreachable)],
        "bad-output": ["--kubeconfig", str(unreachable), "--output", "xml"],
    }[problem]
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
