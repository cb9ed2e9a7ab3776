"""The webhook with its cluster, on a real control plane (../shared/kube): the manifests' RBAC
and webhook configuration installed, every replica running as the webhook's own ServiceAccount.

The API server decides every outcome here: RBAC, the ServiceAccount admission plugin, watches,
bookmarks, strategic merge, Lease conflicts. Where a fault is needed (a dropped watch, an API
server that does not answer), a recording proxy between the webhook and the API server makes it
(`testing/kube/proxy.py`). Only a `410 Gone` at a chosen moment still needs the emulator
(`tests/test_cluster_gone.py`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.kube.controlplane import NAMESPACE, ControlPlane, eventually
from testing.kube.harness import (
    CONFIG,
    GIVEN,
    LEASE,
    MANAGED,
    ROLE_KEY,
    SA,
    Setup,
    identity,
    metric,
    post,
    run_pod,
    serial_of,
    served_serial,
    since,
)
from testing.kube.proxy import Call
from testing.support import ROLE_ARN, decode_patch, review_for
from webhook.tls import certs

MISSING = "does not exist in this namespace yet"


@pytest.fixture
def cluster(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Setup]:
    """The manifests installed afresh (RBAC restored), no Lease or Secret from another test;
    every replica and the proxy stopped afterwards."""
    setup = Setup(control_plane, tmp_path)
    control_plane.delete("lease", LEASE, NAMESPACE)
    control_plane.delete("secret", "mlflow-webhook-tls", NAMESPACE)
    setup.install()
    try:
        yield setup
    finally:
        setup.close()


def namespace_calls(proxy: Any) -> list[Call]:
    """The webhook's list and watch requests for namespaces, in order."""
    calls: list[Call] = proxy.recorded(
        lambda c: c.method == "GET" and c.path == "/api/v1/namespaces"
    )
    return calls


# ServiceAccounts


def test_service_accounts_follow_the_opt_in_label(cluster: Setup) -> None:
    """Labelled before and after start; a managed account with the wrong role repaired, a
    person's kept (it only gains the annotation when it has none); unlabelled gets nothing."""
    theirs = "arn:aws:iam::210987654321:role/theirs"
    before = cluster.namespace("acct-before")
    later = cluster.namespace("acct-later", labelled=False)
    wrong, person, bare = (
        cluster.namespace(n, labelled=False) for n in ("acct-wrong", "acct-person", "acct-bare")
    )
    accounts = [
        (
            wrong,
            {"labels": MANAGED, "annotations": {ROLE_KEY: "arn:aws:iam::210987654321:role/old"}},
        ),
        (person, {"annotations": {ROLE_KEY: theirs, "team": "a"}}),
        (bare, {"labels": {"team": "b"}}),
    ]
    for namespace, metadata in accounts:
        cluster.plane.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": SA, "namespace": namespace, **metadata},
            }
        )
    for namespace in (wrong, person, bare):
        cluster.namespace(namespace)
    cluster.start("one")

    created = cluster.wait_for_account(before)
    assert created["metadata"]["labels"] == MANAGED
    assert created["metadata"]["annotations"] == {ROLE_KEY: ROLE_ARN}
    eventually(
        lambda: cluster.service_account(wrong)["metadata"]["annotations"][ROLE_KEY] == ROLE_ARN,  # type: ignore[index]
        what="the wrong role repaired",
    )
    eventually(
        lambda: cluster.service_account(bare)["metadata"].get("annotations"),  # type: ignore[index]
        what="a person's account without the annotation to gain it",
    )
    assert cluster.service_account(bare)["metadata"]["annotations"] == {ROLE_KEY: ROLE_ARN}  # type: ignore[index]
    assert cluster.service_account(bare)["metadata"]["labels"] == {"team": "b"}  # type: ignore[index]
    assert cluster.service_account(person)["metadata"]["annotations"] == {  # type: ignore[index]
        ROLE_KEY: theirs,
        "team": "a",
    }
    assert "labels" not in cluster.service_account(person)["metadata"]  # type: ignore[index]
    assert cluster.service_account(later) is None

    cluster.namespace(later)  # a label added after start
    assert cluster.wait_for_account(later)["metadata"]["labels"] == MANAGED


def test_a_dropped_watch_resumes_from_its_resource_version(cluster: Setup) -> None:
    """docs/cluster.md's promise: a dropped watch resumes from the last resourceVersion it saw, with
    no list in between."""
    cluster.start("one", proxied=True)
    proxy = cluster.proxy
    assert proxy is not None
    cluster.wait_for_account(cluster.namespace("resume-a"))
    watch = eventually(
        lambda: [c for c in namespace_calls(proxy) if c.watch and c.events], what="a watch event"
    )[-1]
    assert watch.query.get("allowWatchBookmarks") == "true"
    seen = watch.events[-1][1]
    count = len(namespace_calls(proxy))

    proxy.drop_watches()
    cluster.wait_for_account(cluster.namespace("resume-b"))
    after = namespace_calls(proxy)[count:]
    assert after, "no request after the drop"
    assert after[0].watch, "listed again instead of resuming the watch"
    assert after[0].resource_version == seen


def test_bookmarks_move_the_resume_point(cluster: Setup) -> None:
    """Writes the watch does not deliver still move its resume point, through bookmarks.

    The proxy asks the API server to end each namespace watch after 3 s (a server may end a
    watch early; it sends a bookmark 2 s before), so watches follow each other quickly."""
    cluster.proxied()
    assert cluster.proxy is not None
    cluster.proxy.shorten_watches(3)
    cluster.start("one", proxied=True)
    proxy = cluster.proxy
    cluster.wait_for_account(cluster.namespace("bookmark-a"))

    def resumed_after_bookmark() -> tuple[Call, Call] | None:
        watches = [c for c in namespace_calls(proxy) if c.watch]
        for first, then in itertools.pairwise(watches):
            marks = [v for t, v in first.events if t == "BOOKMARK"]
            if (
                first.events
                and first.events[-1][0] == "BOOKMARK"
                and int(marks[-1]) > int(first.resource_version)
            ):
                return first, then
        # Writes our watch does not deliver: namespaces without the label.
        cluster.namespace(f"bookmark-other-{len(watches)}", labelled=False)
        return None

    first, then = eventually(resumed_after_bookmark, timeout=20, what="a bookmark, then a watch")
    assert then.resource_version == first.events[-1][1] != first.resource_version


def test_resync_repairs_what_no_watch_delivers(cluster: Setup) -> None:
    """A short --resync-seconds: a hand-edited annotation on a managed account is put back, and
    a create that RBAC refused for a while is made once the grant returns, with no event."""
    edited = cluster.namespace("resync-edited")
    refused = "resync-refused"
    cluster.start("one", "--resync-seconds", "2", *GIVEN, proxied=True)
    proxy = cluster.proxy
    assert proxy is not None
    cluster.wait_for_account(edited)
    status, _ = cluster.plane.rest(
        "PATCH",
        f"/api/v1/namespaces/{edited}/serviceaccounts/{SA}",
        {"metadata": {"annotations": {ROLE_KEY: "by-hand"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    eventually(
        lambda: cluster.service_account(edited)["metadata"]["annotations"][ROLE_KEY] == ROLE_ARN,  # type: ignore[index]
        timeout=10,
        what="the hand edit undone by the resync",
    )

    def without_create(doc: dict[str, Any]) -> None:
        if doc["kind"] == "ClusterRole":
            doc["rules"] = [r for r in doc["rules"] if r["verbs"] != ["create"]]

    cluster.install(edit=without_create)
    cluster.namespace(refused)
    eventually(
        lambda: proxy.recorded(
            lambda c: c.method == "POST" and refused in c.path and c.status == 403
        ),
        what="the create refused",
    )
    cluster.install()  # the grant returns; nothing about the namespace changes
    cluster.wait_for_account(refused, timeout=10)


# Admission and the account cache


def test_admission_knows_the_accounts_the_reconciler_made(cluster: Setup) -> None:
    """After the reconciler makes the account, admission sets it without asking the API server:
    with the API server unreachable from the webhook, a Pod created through it still gets it."""
    server = cluster.start("one", proxied=True)
    proxy = cluster.proxy
    assert proxy is not None
    namespace = cluster.namespace("cache-made")
    cluster.wait_for_account(namespace)
    cluster.wait_for_ca_bundle()
    proxy.hold()  # nothing from the webhook reaches the API server now
    try:
        created, _ = run_pod(cluster.plane, namespace, "trainer")
    finally:
        proxy.release()
    assert created["spec"]["serviceAccountName"] == SA
    assert not [e for e in server.logs if e.get("msg") == "ServiceAccount lookup failed"]


def test_a_miss_is_looked_up_once_with_a_timeout(cluster: Setup) -> None:
    """A namespace the reconciler does not manage: one live lookup, its hit remembered; with
    the API server not answering, the lookup gives up within its timeout and the Pod keeps its
    own account. Namespace settings are off: with them on, an unknown namespace that cannot be
    read gets nothing at all (tests/test_namespace_settings.py)."""
    server = cluster.start("one", *GIVEN, "--namespace-settings", "off", proxied=True)
    proxy = cluster.proxy
    assert proxy is not None
    theirs = cluster.namespace("lookup-theirs", labelled=False)
    cluster.plane.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SA, "namespace": theirs},
        }
    )
    assert {"op": "add", "path": "/spec/serviceAccountName", "value": SA} in decode_patch(
        post(server, theirs)
    )
    path = f"/api/v1/namespaces/{theirs}/serviceaccounts/{SA}"
    assert [c.status for c in proxy.recorded(lambda c: c.path == path)] == [200]

    proxy.hold()
    try:
        started = time.monotonic()
        assert {"op": "add", "path": "/spec/serviceAccountName", "value": SA} in decode_patch(
            post(server, theirs)
        )
        assert since(started) < 0.5  # remembered: no second lookup
        assert [c.status for c in proxy.recorded(lambda c: c.path == path)] == [200]

        started = time.monotonic()
        answer = post(server, cluster.namespace("lookup-unknown", labelled=False))
        elapsed = since(started)
    finally:
        proxy.release()
    assert 1.0 <= elapsed < 2.5  # waited for the lookup (1 s), not for the API server
    patch = decode_patch(answer)
    assert not [op for op in patch if op["path"].startswith("/spec/serviceAccount")]
    assert any(MISSING in w for w in answer["response"]["warnings"])
    failed = server.wait_for_log("ServiceAccount lookup failed")
    assert "timed out" in failed["error"].lower() or "timeout" in failed["error"].lower()


def test_namespace_pod_race(cluster: Setup) -> None:
    """A Pod created through the API server before the reconciler's account exists keeps its own
    account (the API server would refuse one that names a missing account); the next one gets
    ours."""
    cluster.proxied()
    proxy = cluster.proxy
    assert proxy is not None
    namespace = cluster.namespace("race", labelled=False)
    eventually(lambda: cluster.service_account(namespace, "default"), what="the default account")
    proxy.hold(lambda c: c.method == "POST" and c.path.endswith(f"/{namespace}/serviceaccounts"))
    cluster.start("one", proxied=True)
    cluster.wait_for_ca_bundle()
    try:
        cluster.namespace(namespace)
        eventually(
            lambda: proxy.recorded(lambda c: c.method == "POST" and namespace in c.path),
            what="the reconciler's create, held",
        )
        first, warnings = run_pod(cluster.plane, namespace, "first")
    finally:
        proxy.release()
    assert first["spec"]["serviceAccountName"] == "default"
    assert MISSING in warnings
    env = {e["name"] for e in first["spec"]["containers"][0]["env"]}
    assert "MLFLOW_TRACKING_URI" in env  # everything else still comes
    status = json.loads(first["metadata"]["annotations"]["mlflow-webhook.io/status"])
    assert MISSING in json.dumps(status)

    cluster.wait_for_account(namespace)
    second, _ = run_pod(cluster.plane, namespace, "second")
    assert second["spec"]["serviceAccountName"] == SA


# Leader election


def test_one_leader_and_failover(cluster: Setup) -> None:
    first, second = cluster.start("one"), cluster.start("two")
    holder = eventually(cluster.holder, what="a leader")
    eventually(lambda: holder in (identity(first), identity(second)), what="the leader's log")
    leader, follower = (first, second) if identity(first) == holder else (second, first)
    assert identity(follower) is None
    for server in (first, second):  # every replica serves, leading or not
        assert post(server, "default")["response"]["allowed"] is True
    leader.proc.kill()  # a crash: the Lease is not released and must expire (2 s)
    started = time.monotonic()
    eventually(lambda: identity(follower), timeout=15, what="failover")
    assert since(started) < 8
    assert cluster.holder() == identity(follower)
    lease = cluster.plane.get("lease", LEASE, NAMESPACE)
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


@pytest.mark.parametrize("status", [403, 500])
def test_a_leader_that_cannot_renew_steps_down(cluster: Setup, status: int) -> None:
    """The leader's Lease writes start failing (the proxy refuses them for it alone): it steps
    down at once, long before its Lease expires, so two replicas never lead together; it writes
    nothing more, and the other replica leads once the Lease has expired."""
    lease = ("--lease-duration-seconds", "6", *GIVEN)
    leader = cluster.start("one", *lease, proxied=True)
    held = eventually(lambda: identity(leader), what="the proxied replica to lead")
    follower = cluster.start("two", *lease)
    proxy = cluster.proxy
    assert proxy is not None
    proxy.refuse(lambda c: c.method != "GET" and "/leases/" in c.path, status)
    failed = leader.wait_for_log("leader election attempt failed", timeout=10)
    assert f": {status} " in failed["msg"], failed
    lost = leader.wait_for_log("lost leadership", timeout=3)  # the Lease holds 6 s more
    assert at(lost) - at(failed) < 1
    assert metric(leader, "mlflow_webhook_leader") == 0
    eventually(lambda: identity(follower), timeout=20, what="the other replica to lead")
    assert cluster.holder() == identity(follower) != held
    assert at(lost) < at(follower.wait_for_log("became leader"))
    # From here the new leader does the writing, and the old one writes nothing at all.
    mark = len(proxy.recorded())
    team = cluster.namespace("after-step-down")
    assert cluster.wait_for_account(team)["metadata"]["labels"] == MANAGED
    time.sleep(2)
    assert [(c.method, c.path) for c in proxy.recorded()[mark:] if c.method != "GET"] == []
    assert metric(leader, "mlflow_webhook_leader") == 0
    assert metric(follower, "mlflow_webhook_leader") == 1
    # It stepped down once: a follower has nothing left to stop.
    assert [e.get("msg") for e in leader.logs].count("lost leadership") == 1


def at(entry: dict[str, Any]) -> float:
    """When a log line was written."""
    return dt.datetime.fromisoformat(entry["time"]).timestamp()


def test_sigterm_releases_the_lease(cluster: Setup) -> None:
    """With a 30 s Lease, a leader that stops hands over at once instead of after 30 s."""
    long = ("--lease-duration-seconds", "30", *GIVEN)
    first, second = cluster.start("one", *long), cluster.start("two", *long)
    holder = eventually(cluster.holder, what="a leader")
    eventually(lambda: holder in (identity(first), identity(second)), what="the leader's log")
    leader, follower = (first, second) if identity(first) == holder else (second, first)
    started = time.monotonic()
    assert leader.terminate() == 0
    assert cluster.holder() != holder
    eventually(lambda: identity(follower), timeout=10, what="the follower to lead")
    assert since(started) < 5
    assert cluster.holder() == identity(follower)


# Certificates


def test_shared_certificate_cabundle_and_rotation(cluster: Setup) -> None:
    """Two replicas serve one certificate from the shared Secret, which never holds a CA key. A
    year on (5 days to expiry) the leader renews it with a new CA under load: the caBundle trusts
    old and new, the new pair is served, the old CA leaves. A client trusting the caBundle the
    API server holds at that moment never fails, and the API server keeps calling the webhook."""
    cluster.proxied()
    proxy = cluster.proxy
    assert proxy is not None
    near = cluster.write_year_old()
    # The leader's renewal waits at the proxy until the load is running.
    proxy.hold(lambda c: c.method in ("PUT", "PATCH") and "/secrets/" in c.path)
    first = cluster.start("one", proxied=True)
    second = cluster.start("two", proxied=True)
    namespace = cluster.namespace("certs")
    cluster.wait_for_account(namespace)
    assert run_pod(cluster.plane, namespace, "before")[0]["spec"]["serviceAccountName"] == SA

    def trust() -> ssl.SSLContext:  # as the API server trusts us now
        return ssl.create_default_context(cadata=cluster.ca_bundle().decode())

    async def serials() -> set[int]:
        return {await served_serial(s.port, trust()) for s in (first, second)}

    assert asyncio.run(serials()) == {serial_of(near)}  # both serve the Secret's certificate

    async def load(stop: asyncio.Event) -> tuple[list[Any], set[int]]:
        outcomes: list[Any] = []
        seen: set[int] = set()
        body = json.dumps(review_for({"metadata": {"name": "p"}, "spec": {"containers": []}}))
        while not stop.is_set():
            for server in (first, second):
                connector = aiohttp.TCPConnector(ssl=trust(), force_close=True)
                async with aiohttp.ClientSession(connector=connector) as session:
                    try:
                        async with session.post(server.url + "/mutate", data=body) as r:
                            outcomes.append(r.status)
                    except aiohttp.ClientError as error:
                        outcomes.append(repr(error))
                seen.add(await served_serial(server.port, trust()))
            await asyncio.sleep(0.05)
        return outcomes, seen

    async def rotate() -> tuple[list[Any], set[int]]:
        stop = asyncio.Event()
        running = asyncio.create_task(load(stop))
        await asyncio.sleep(0.5)
        proxy.release()
        renewed = await asyncio.to_thread(
            eventually,
            lambda: (s := serial_of(cluster.secret()["tls.crt"])) != serial_of(near) and s,
            30,
            "the switch to the new pair",
        )
        await asyncio.to_thread(
            eventually, lambda: asyncio.run(serials()) == {renewed}, 15, "the new pair served"
        )
        await asyncio.to_thread(
            eventually,
            lambda: len(certs.bundle(cluster.ca_bundle())) == 1,
            30,
            "the old CA to leave the caBundle",
        )
        stop.set()
        return await running

    outcomes, seen = asyncio.run(rotate())
    assert [o for o in outcomes if o != 200] == []
    renewed = cluster.secret()
    assert set(renewed) == {"ca.crt", "tls.crt", "tls.key"}  # no CA key, no staged pair left
    assert certs.not_after(renewed["tls.crt"]) > certs.not_after(near)
    assert seen == {serial_of(near), serial_of(renewed["tls.crt"])}
    assert renewed["ca.crt"] == cluster.ca_bundle()
    assert certs.issued_by(renewed["tls.crt"], renewed["ca.crt"])
    for server in (first, second):
        assert sorted(p.name for p in server.cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert metric(server, "mlflow_webhook_certificate_reloads_total") == 1
    assert run_pod(cluster.plane, namespace, "after")[0]["spec"]["serviceAccountName"] == SA


def test_a_ca_key_left_by_an_earlier_version_is_renewed_away(cluster: Setup) -> None:
    """A Secret an earlier version wrote, with the CA's key in it: the key never reaches a
    replica's files, and the leader at once renews to a new CA and drops the key and that CA."""
    exposed = cluster.write_year_old(days=300, ca_key=True)
    server = cluster.start("one")
    assert sorted(p.name for p in server.cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]

    def renewed() -> bool:
        files, bundle = cluster.secret(), cluster.ca_bundle()
        return (
            set(files) == {"ca.crt", "tls.crt", "tls.key"}
            and files["tls.crt"] != exposed
            and files["ca.crt"] == bundle
            and len(certs.bundle(bundle)) == 1
        )

    eventually(renewed, 30, "the renewal away from the exposed CA")
    files = cluster.secret()
    assert certs.issued_by(files["tls.crt"], files["ca.crt"])
    assert sorted(p.name for p in server.cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


# Drift


def eks_configuration(reinvoked: bool = False) -> dict[str, Any]:
    """The EKS pod-identity webhook's configuration, pointed nowhere and matching no namespace."""
    hook: dict[str, Any] = {
        "name": "iam-for-pods.amazonaws.com",
        "admissionReviewVersions": ["v1beta1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
        "namespaceSelector": {"matchLabels": {"no-such-label": "x"}},
    }
    if reinvoked:
        hook["reinvocationPolicy"] = "IfNeeded"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "pod-identity-webhook"},
        "webhooks": [hook],
    }


RENAMED = "sagemaker-mlflow-webhook"  # sorts after pod-identity-webhook


def renamed(doc: dict[str, Any]) -> None:
    """Our configuration installed under a name that sorts after the EKS webhook's, RBAC too."""
    if doc["kind"] == "MutatingWebhookConfiguration":
        doc["metadata"]["name"] = RENAMED
    if doc["kind"] == "ClusterRole":
        for rule in doc["rules"]:
            if rule.get("resourceNames") == [CONFIG]:
                rule["resourceNames"] = [RENAMED]


def without_namespace_exclusions(doc: dict[str, Any]) -> None:
    if doc["kind"] == "MutatingWebhookConfiguration":
        doc["webhooks"][0]["namespaceSelector"]["matchExpressions"].pop()


DRIFT = {
    "selectors-missing": (
        without_namespace_exclusions,
        False,
        (),
        [
            "webhook pods.mlflow-webhook.io does not exclude namespaces "
            "kube-system, kube-public, kube-node-lease, mlflow-webhook"
        ],
    ),
    "eks-runs-first": (
        renamed,
        False,
        ("--webhook-config-name", RENAMED),
        [f"pod-identity-webhook runs before {RENAMED} and is not reinvoked"],
    ),
    "eks-runs-first-reinvoked": (renamed, True, ("--webhook-config-name", RENAMED), []),
    "eks-runs-after": (None, False, (), []),
}


@pytest.mark.parametrize("case", DRIFT)
def test_drift_warnings(cluster: Setup, case: str) -> None:
    edit, reinvoked, args, expected = DRIFT[case]
    cluster.install(edit=edit)
    cluster.plane.apply(eks_configuration(reinvoked))
    try:
        server = cluster.start("one", *args, *GIVEN)
        warned = [e["msg"] for e in server.logs if e.get("check") == "webhook configuration"]
        assert len(warned) == len(expected)
        for message, start in zip(warned, expected, strict=True):
            assert message.startswith(start)
    finally:
        cluster.plane.delete("mutatingwebhookconfiguration", "pod-identity-webhook")
        cluster.plane.delete("mutatingwebhookconfiguration", RENAMED)


def test_a_drift_check_that_fails_warns_and_admission_keeps_its_caches(cluster: Setup) -> None:
    """The configuration's read answered 500 at startup: one warning that says the check could
    not run, and the caches admission reads are made all the same, so an opted-in Pod is
    injected with its namespace's settings rather than left out as if they were wrong."""
    namespace = cluster.namespace("drift-unread")
    cluster.install()
    cluster.proxied()
    proxy = cluster.proxy
    assert proxy is not None
    proxy.refuse(lambda c: "/mutatingwebhookconfigurations/" in c.path, 500)
    server = cluster.start("one", *GIVEN, proxied=True)
    warned = [e["msg"] for e in server.logs if e.get("check") == "webhook configuration"]
    assert len(warned) == 1
    assert warned[0].startswith("could not check the webhook configuration for drift")
    eventually(lambda: cluster.service_account(namespace) is not None, what="our account made")
    answer = post(server, namespace)
    assert {"op": "add", "path": "/spec/serviceAccountName", "value": SA} in decode_patch(answer)
    assert not answer["response"].get("warnings")


# Without the cluster


def test_no_kube_touches_nothing(cluster: Setup) -> None:
    """--no-kube with a kubeconfig at hand: not one request reaches the API server, nothing is
    written, admission still works, and the startup line says so."""
    namespace = cluster.namespace("no-kube")
    server = cluster.start("one", "--no-kube", *GIVEN, proxied=True)
    proxy = cluster.proxy
    assert proxy is not None
    assert server.wait_for_log("listening")["cluster"] is False
    assert server.wait_for_log("cluster: ")["msg"] == (
        "cluster: none (--no-kube): admission only; nothing read or written in any cluster"
    )
    patch = decode_patch(post(server, namespace))
    assert {"op": "add", "path": "/spec/serviceAccountName", "value": SA} in patch
    time.sleep(2)  # a reconciler would have made the account in well under this
    assert proxy.recorded() == []
    assert cluster.service_account(namespace) is None
    assert cluster.plane.get("lease", LEASE, NAMESPACE) is None


def test_kubeconfig_from_the_environment(cluster: Setup) -> None:
    """$KUBECONFIG alone, as kubectl reads it: serve reaches that cluster and writes there, and
    its startup line names the API server, where the kubeconfig came from and what it writes."""
    from testing.servers import WebhookProcess

    namespace = cluster.namespace("from-env")
    server = WebhookProcess(
        cluster.tmp / "env",
        "--self-signed",
        "--namespace",
        NAMESPACE,
        *GIVEN,
        env={"KUBECONFIG": str(cluster.kubeconfig)},
        port=cluster.port,
    )
    cluster.replicas.append(server)
    assert server.wait_for_log("cluster: ")["msg"] == (
        f"cluster: {cluster.plane.url} (from $KUBECONFIG {cluster.kubeconfig}, context sa); "
        "the leader writes there: ServiceAccounts in namespaces labelled "
        "mlflow-webhook.io/inject=enabled, Warning Events on opted-in Pods it missed, "
        f"Lease {LEASE} in namespace {NAMESPACE}, Secret mlflow-webhook-tls in namespace "
        f"{NAMESPACE}, the caBundle of MutatingWebhookConfiguration {CONFIG}"
    )
    assert cluster.wait_for_account(namespace)["metadata"]["labels"] == MANAGED
    cluster.wait_for_ca_bundle()


# RBAC


def drop_verb(kind: str, resource: str, verb: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        if doc["kind"] != kind:
            return
        for rule in doc["rules"]:
            if resource in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        doc["rules"] = [r for r in doc["rules"] if r["verbs"]]

    return edit


def drop_rule(name: str) -> Any:
    """The ClusterRole without its rule for this resource name."""

    def edit(doc: dict[str, Any]) -> None:
        if doc["kind"] == "ClusterRole":
            doc["rules"] = [r for r in doc["rules"] if r.get("resourceNames") != [name]]

    return edit


def managed_account_with_the_wrong_role(cluster: Setup) -> None:
    """Something the reconciler must patch."""
    namespace = cluster.namespace("grant-patch", labelled=False)
    cluster.plane.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SA,
                "namespace": namespace,
                "labels": MANAGED,
                "annotations": {ROLE_KEY: "arn:aws:iam::210987654321:role/old"},
            },
        }
    )
    cluster.namespace(namespace)


def nothing(cluster: Setup) -> None:
    pass


def a_year_old_certificate(cluster: Setup) -> None:
    """Something the leader must renew, with an update of the Secret."""
    cluster.write_year_old()


MISSING_GRANTS = [
    pytest.param(
        drop_verb("Role", "leases", "update"),
        nothing,
        "leader election attempt failed",
        ("update", "leases", LEASE),
        id="lease-update",
    ),
    pytest.param(
        drop_rule("pod-identity-webhook"),
        nothing,
        "cannot check MutatingWebhookConfiguration pod-identity-webhook",
        ("get", "mutatingwebhookconfigurations", "pod-identity-webhook"),
        id="eks-webhook-get",
    ),
    pytest.param(
        drop_verb("ClusterRole", "serviceaccounts", "patch"),
        managed_account_with_the_wrong_role,
        "could not ensure ServiceAccount",
        ("patch", "serviceaccounts", SA),
        id="serviceaccount-patch",
    ),
    pytest.param(
        drop_verb("Role", "secrets", "update"),
        a_year_old_certificate,
        "certificate maintenance failed",
        ("update", "secrets", "mlflow-webhook-tls"),
        id="secret-update",
    ),
]


@pytest.mark.parametrize(("edit", "prepare", "message", "denied"), MISSING_GRANTS)
def test_a_missing_grant_is_named(
    cluster: Setup,
    edit: Callable[[dict[str, Any]], None],
    prepare: Callable[[Setup], None],
    message: str,
    denied: tuple[str, str, str],
) -> None:
    """The manifests' RBAC minus one rule our code needs: the webhook's log line says which verb
    on which resource and name the API server refused."""
    verb, resource, name = denied
    cluster.install(edit=edit)
    prepare(cluster)
    server = cluster.start("one")
    entry = server.wait_for_entry(lambda e: str(e.get("msg", "")).startswith(message), 20)
    assert f'cannot {verb} resource "{resource}"' in entry["msg"], entry
    assert f'"{name}"' in entry["msg"], entry


def resource(path: str) -> str:
    """`serviceaccounts` from /api/v1/namespaces/a/serviceaccounts/b, and so on."""
    parts = path.strip("/").split("/")
    if parts[0] not in ("api", "apis"):
        return path  # /version and the like
    rest = (parts[2:] if parts[0] == "api" else parts[3:]) or [""]
    return rest[2] if rest[0] == "namespaces" and len(rest) > 2 else rest[0]


def test_the_manifests_rbac_is_enough(cluster: Setup) -> None:
    """Every call of a full cycle, as the webhook's ServiceAccount with the manifests' RBAC:
    reconcile (create and repair), the lookup, the drift check, leader election, the Secret,
    the caBundle, a renewal, and the Lease released on SIGTERM. The API server refuses none."""
    cluster.plane.apply(eks_configuration())
    wrong = cluster.namespace("rbac-wrong", labelled=False)
    cluster.plane.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SA,
                "namespace": wrong,
                "labels": MANAGED,
                "annotations": {ROLE_KEY: "arn:aws:iam::210987654321:role/old"},
            },
        }
    )
    cluster.namespace(wrong)
    fresh = cluster.namespace("rbac-fresh")
    try:
        server = cluster.start("one", proxied=True)
        proxy = cluster.proxy
        assert proxy is not None
        cluster.wait_for_account(fresh)
        eventually(
            lambda: (
                cluster.service_account(wrong)["metadata"]["annotations"][ROLE_KEY]  # type: ignore[index]
                == ROLE_ARN
            ),
            what="the repair",
        )
        cluster.wait_for_ca_bundle()  # the Secret the replica created
        post(server, cluster.namespace("rbac-unknown", labelled=False))
        # A CA key in the Secret, as an earlier version left it, makes the leader renew at once.
        first = cluster.secret()["tls.crt"]
        key = base64.b64encode(b"an earlier version's CA key").decode()
        status, body = cluster.plane.rest(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/secrets/mlflow-webhook-tls",
            {"data": {"ca.key": key}},
            content_type="application/merge-patch+json",
        )
        assert status == 200, body
        eventually(lambda: cluster.secret()["tls.crt"] != first, 30, "the renewal")
        assert server.terminate() == 0
        assert cluster.holder() == ""
    finally:
        cluster.plane.delete("mutatingwebhookconfiguration", "pod-identity-webhook")
    calls = proxy.recorded()
    assert [(c.method, c.path, c.status) for c in calls if c.status == 403] == []
    seen = {(c.method, resource(c.path)) for c in calls}
    needed = {
        ("GET", "namespaces"),
        ("GET", "serviceaccounts"),
        ("POST", "serviceaccounts"),
        ("PATCH", "serviceaccounts"),
        ("GET", "mutatingwebhookconfigurations"),
        ("PATCH", "mutatingwebhookconfigurations"),
        ("GET", "leases"),
        ("POST", "leases"),
        ("PUT", "leases"),
        ("GET", "secrets"),
        ("POST", "secrets"),
        ("PUT", "secrets"),
    }
    assert needed <= seen, f"not exercised: {needed - seen}"
    assert next(c for c in calls if c.path.endswith("/pod-identity-webhook")).status == 200


# AWS


def test_only_the_leader_bootstraps(cluster: Setup, aws: tuple[Any, Any]) -> None:
    """Two replicas, no tracking URI: the leader creates, the follower reads until it is done."""
    _, emulator = aws
    bootstrapping = (
        *("--cluster-name", "ml", "--artifact-store-uri", "s3://team-mlflow/artifacts"),
        *("--trust-namespaces", "team-a"),
    )
    first = cluster.start("one", *bootstrapping, wait=False)
    second = cluster.start("two", *bootstrapping, wait=False)
    served = [s.wait_for_log("serving", timeout=60) for s in (first, second)]
    assert {s["tracking_uri"] for s in served} == {
        "arn:aws:sagemaker:us-west-2:123456789012:mlflow-tracking-server/mlflow-tracking"
    }
    assert emulator.calls.count("CreateMlflowTrackingServer") == 1
    done = [s.wait_for_log("bootstrap done") for s in (first, second)]
    writers = [d for d in done if any(step["action"] != "ok" for step in d["steps"])]
    assert len(writers) == 1
