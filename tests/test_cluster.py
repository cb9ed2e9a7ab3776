"""The webhook with a cluster: the Kubernetes API emulator over HTTPS, the official client through
a real kubeconfig, and `mlflow-webhook serve` replicas as subprocesses."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kube.apiserver import ApiServerEmulator
from tests.servers import WebhookProcess
from tests.support import ROLE_ARN, TRACKING_ARN, decode_patch, review_for
from webhook.tls import certs

LABEL = {"mlflow-webhook.io/inject": "enabled"}
SA = "sagemaker-mlflow-sa"


def webhook_configuration() -> dict[str, Any]:
    return {
        "metadata": {"name": "mlflow-webhook"},
        "webhooks": [
            {
                "name": "pods.mlflow-webhook.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "objectSelector": {
                    "matchExpressions": [
                        {
                            "key": "app.kubernetes.io/name",
                            "operator": "NotIn",
                            "values": ["mlflow-webhook"],
                        }
                    ]
                },
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "mlflow-webhook.io/inject",
                            "operator": "In",
                            "values": ["enabled"],
                        },
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": [
                                "kube-system",
                                "kube-public",
                                "kube-node-lease",
                                "mlflow-webhook",
                            ],
                        },
                    ]
                },
                "clientConfig": {
                    "service": {
                        "name": "mlflow-webhook",
                        "namespace": "mlflow-webhook",
                        "path": "/mutate",
                    }
                },
            }
        ],
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ApiServerEmulator]:
    api = ApiServerEmulator(tmp_path / "apiserver")
    api.start()
    api.put("namespaces", {"metadata": {"name": "mlflow-webhook"}})
    api.put("mutatingwebhookconfigurations", webhook_configuration())
    yield api
    api.stop()


def replica(
    api: ApiServerEmulator,
    tmp: Path,
    name: str,
    *mode: str,
) -> WebhookProcess:
    """One `serve` replica of the cluster, with fast leases; `mode` defaults to a given ARN."""
    given = not mode
    mode = mode or ("--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN)
    server = WebhookProcess(
        tmp / name,
        "--self-signed",
        *mode,
        "--kubeconfig",
        str(api.kubeconfig()),
        "--namespace",
        "mlflow-webhook",
        "--lease-duration-seconds",
        "2",
        "--lease-retry-seconds",
        "0.3",
        "--cert-reload-seconds",
        "0.3",
        env=dict(os.environ),
    )
    if given:
        server.wait_for_log("serving")  # ready: the cluster side has started
    return server


def eventually(check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def sa(api: ApiServerEmulator, namespace: str) -> dict[str, Any] | None:
    return api.get("serviceaccounts", namespace, SA)


def test_namespaces_get_their_service_account(
    cluster: ApiServerEmulator, tmp_path: Path
) -> None:
    cluster.put("namespaces", {"metadata": {"name": "team-a", "labels": LABEL}})
    cluster.put("namespaces", {"metadata": {"name": "team-b"}})
    # A managed one with the wrong role, and one a person made with a role of their own.
    cluster.put(
        "serviceaccounts",
        {
            "metadata": {
                "name": SA,
                "namespace": "team-c",
                "annotations": {
                    "eks.amazonaws.com/role-arn": "arn:aws:iam::210987654321:role/old"
                },
                "labels": {"app.kubernetes.io/managed-by": "mlflow-webhook"},
            }
        },
    )
    cluster.put("namespaces", {"metadata": {"name": "team-c", "labels": LABEL}})
    cluster.put(
        "serviceaccounts",
        {
            "metadata": {
                "name": SA,
                "namespace": "team-d",
                "annotations": {
                    "eks.amazonaws.com/role-arn": "arn:aws:iam::210987654321:role/theirs"
                },
            }
        },
    )
    cluster.put("namespaces", {"metadata": {"name": "team-d", "labels": LABEL}})
    server = replica(cluster, tmp_path, "one")
    try:
        created = eventually(
            lambda: sa(cluster, "team-a"), what="team-a's ServiceAccount"
        )
        assert created["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "mlflow-webhook"
        }
        assert created["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": ROLE_ARN
        }
        eventually(
            lambda: (
                (sa(cluster, "team-c") or {})["metadata"]["annotations"][
                    "eks.amazonaws.com/role-arn"
                ]
                == ROLE_ARN
            ),
            what="the wrong role annotation repaired",
        )
        assert sa(cluster, "team-d")["metadata"]["annotations"] == {  # type: ignore[index]
            "eks.amazonaws.com/role-arn": "arn:aws:iam::210987654321:role/theirs"
        }
        assert sa(cluster, "team-b") is None

        # A label added later.
        cluster.put("namespaces", {"metadata": {"name": "team-b", "labels": LABEL}})
        eventually(
            lambda: sa(cluster, "team-b"),
            what="team-b's ServiceAccount after labelling",
        )

        # The watch dropped: it resumes from where it was.
        cluster.drop_watches()
        cluster.put("namespaces", {"metadata": {"name": "team-e", "labels": LABEL}})
        eventually(
            lambda: sa(cluster, "team-e"),
            what="a namespace labelled after the watch dropped",
        )

        # History compacted while the watch is down: 410 Gone, then a fresh list.
        cluster.compact()
        cluster.drop_watches()
        cluster.put("namespaces", {"metadata": {"name": "team-f", "labels": LABEL}})
        eventually(
            lambda: sa(cluster, "team-f"), what="a namespace labelled across a 410"
        )
        server.wait_for_log("watch expired (410 Gone)")
    finally:
        server.stop()


def post(server: WebhookProcess, namespace: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "trainer",
            "namespace": namespace,
            "annotations": {"mlflow-webhook.io/inject": "true"},
        },
        "spec": {
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "containers": [{"name": "main", "image": "python:3.12"}],
        },
    }

    async def send() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.url + "/mutate",
                data=json.dumps(review_for(pod, namespace=namespace)),
                ssl=server.client_context(),
            ) as response,
        ):
            return dict(await response.json())

    return asyncio.run(send())


def test_namespace_pod_race(cluster: ApiServerEmulator, tmp_path: Path) -> None:
    """A Pod admitted before the reconciler has made the ServiceAccount keeps its own."""
    server = replica(cluster, tmp_path, "one")
    try:
        answer = post(server, "fresh")["response"]
        patch = decode_patch({"response": answer})
        assert not [op for op in patch if op["path"].startswith("/spec/serviceAccount")]
        assert any(
            "does not exist in this namespace yet" in w for w in answer["warnings"]
        )
        assert any(
            op["path"] == "/spec/containers/0/env" for op in patch
        )  # everything else still comes
        cluster.put("serviceaccounts", {"metadata": {"name": SA, "namespace": "fresh"}})
        patch = decode_patch(post(server, "fresh"))
        assert {"op": "add", "path": "/spec/serviceAccountName", "value": SA} in patch
        lookups = [
            p
            for m, p in cluster.requests
            if m == "GET" and p.startswith("/api/v1/namespaces/fresh/")
        ]
        assert (
            len(lookups) == 2
        )  # one live lookup a miss; the hit is cached from then on
        post(server, "fresh")
        assert (
            len(
                [
                    p
                    for m, p in cluster.requests
                    if m == "GET" and p.startswith("/api/v1/namespaces/fresh/")
                ]
            )
            == 2
        )
    finally:
        server.stop()


def leader_of(api: ApiServerEmulator) -> str:
    lease = api.get("leases", "mlflow-webhook", "mlflow-webhook")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def identity(server: WebhookProcess) -> str | None:
    for entry in server.logs:
        if entry.get("msg") == "became leader":
            return str(entry["identity"])
    return None


def test_one_leader_and_failover(cluster: ApiServerEmulator, tmp_path: Path) -> None:
    first = replica(cluster, tmp_path, "one")
    second = replica(cluster, tmp_path, "two")
    try:
        holder = eventually(lambda: leader_of(cluster), what="a leader")
        eventually(
            lambda: holder in (identity(first), identity(second)),
            what="the leader's log",
        )
        leader, follower = (
            (first, second) if identity(first) == holder else (second, first)
        )
        assert identity(leader) == holder and identity(follower) is None
        for server in (first, second):  # every replica serves, leading or not
            assert post(server, "mlflow-webhook")["response"]["allowed"] is True
        leader.proc.kill()  # a crash: the Lease is not released and must expire
        started = time.monotonic()
        eventually(lambda: identity(follower), timeout=15, what="failover")
        assert time.monotonic() - started < 8
        assert leader_of(cluster) == identity(follower)
        lease = cluster.get("leases", "mlflow-webhook", "mlflow-webhook")
        assert lease["spec"]["leaseTransitions"] >= 1  # type: ignore[index]
    finally:
        first.stop()
        second.stop()


def test_shared_certificate_cabundle_and_rotation(
    cluster: ApiServerEmulator, tmp_path: Path
) -> None:
    """One certificate for both replicas, never a CA key in the Secret; a renewal to a new CA
    (here of a staged near-expiry pair, then of that) fails no request for a client that trusts
    the caBundle as it stands at that moment."""
    first = replica(cluster, tmp_path, "one")
    second = replica(cluster, tmp_path, "two")
    try:
        secret = eventually(
            lambda: cluster.get("secrets", "mlflow-webhook", "mlflow-webhook-tls"),
            what="Secret",
        )
        assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        ca = base64.b64decode(secret["data"]["ca.crt"])

        def bundle() -> bytes:
            hooks = cluster.get("mutatingwebhookconfigurations", "", "mlflow-webhook")
            return base64.b64decode(
                (hooks or {})["webhooks"][0]["clientConfig"].get("caBundle", "")
            )

        eventually(lambda: bundle() == ca, what="caBundle")

        def trust() -> ssl.SSLContext:  # as the API server trusts us now
            return ssl.create_default_context(cadata=bundle().decode())

        async def serial(server: WebhookProcess) -> int:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=trust(), server_hostname="localhost"
            )
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            from cryptography import x509

            return x509.load_der_x509_certificate(der).serial_number

        before = {asyncio.run(serial(s)) for s in (first, second)}
        assert len(before) == 1  # both replicas serve the same certificate

        # As if the leader had staged a renewal whose pair expires in 5 days: it switches to
        # that pair, renews it at once with another new CA, and drops the CAs no longer used.
        staged_ca = certs.generate_ca(days=366)
        near = certs.issue_serving(staged_ca, ["localhost"], ["127.0.0.1"], days=5)
        secret["data"] |= {
            "ca.crt": base64.b64encode(ca + staged_ca.cert).decode(),
            "next.crt": base64.b64encode(near.cert).decode(),
            "next.key": base64.b64encode(near.key).decode(),
        }
        cluster.put("secrets", secret)

        async def load() -> tuple[list[Any], set[int]]:
            outcomes: list[Any] = []
            seen: set[int] = set()
            deadline = time.monotonic() + 12
            body = json.dumps(
                review_for(
                    {
                        "metadata": {"name": "p"},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    }
                )
            )
            while time.monotonic() < deadline:
                for server in (first, second):
                    connector = aiohttp.TCPConnector(ssl=trust(), force_close=True)
                    async with aiohttp.ClientSession(connector=connector) as session:
                        try:
                            async with session.post(
                                server.url + "/mutate", data=body
                            ) as r:
                                outcomes.append(r.status)
                        except aiohttp.ClientError as error:
                            outcomes.append(repr(error))
                    seen.add(await serial(server))
                await asyncio.sleep(0.05)
            return outcomes, seen

        outcomes, seen = asyncio.run(load())
        assert [o for o in outcomes if o != 200] == []
        renewed = {
            k: base64.b64decode(v)
            for k, v in cluster.get("secrets", "mlflow-webhook", "mlflow-webhook-tls")[
                "data"
            ].items()  # type: ignore[index]
        }
        assert set(renewed) == {"ca.crt", "tls.crt", "tls.key"}
        assert certs.not_after(renewed["tls.crt"]) > certs.not_after(near.cert)
        assert len(seen) == 3  # the first, the near-expiry and the renewed certificates
        assert renewed["ca.crt"] == bundle()
        assert len(certs.bundle(renewed["ca.crt"])) == 1
        assert certs.issued_by(renewed["tls.crt"], renewed["ca.crt"])
        for server in (first, second):
            assert not (server.cert_dir / "ca.key").exists()
    finally:
        first.stop()
        second.stop()


def test_drift_is_reported_at_startup(
    cluster: ApiServerEmulator, tmp_path: Path
) -> None:
    config = webhook_configuration()
    config["webhooks"][0]["namespaceSelector"]["matchExpressions"].pop()
    cluster.put("mutatingwebhookconfigurations", config)
    cluster.put(
        "mutatingwebhookconfigurations",
        {
            "metadata": {"name": "pod-identity-webhook"},
            "webhooks": [
                {
                    "name": "iam-for-pods.amazonaws.com",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
                }
            ],
        },
    )
    server = replica(cluster, tmp_path, "one")
    try:
        warning = server.wait_for_log(
            "webhook pods.mlflow-webhook.io does not exclude namespaces"
        )
        assert (
            "kube-system, kube-public, kube-node-lease, mlflow-webhook"
            in warning["msg"]
        )
    finally:
        server.stop()


def test_only_the_leader_bootstraps(
    cluster: ApiServerEmulator, aws: tuple[Any, Any], tmp_path: Path
) -> None:
    """Two replicas, no tracking URI: the leader creates, the follower reads until it is done."""
    _, emulator = aws
    bootstrapping = (
        *("--cluster-name", "ml", "--artifact-store-uri", "s3://team-mlflow/artifacts"),
        *("--trust-namespaces", "team-a"),
    )
    first = replica(cluster, tmp_path, "one", *bootstrapping)
    second = replica(cluster, tmp_path, "two", *bootstrapping)
    try:
        served = [s.wait_for_log("serving", timeout=60) for s in (first, second)]
        assert {s["tracking_uri"] for s in served} == {
            "arn:aws:sagemaker:us-west-2:123456789012:mlflow-tracking-server/mlflow-tracking"
        }
        assert emulator.calls.count("CreateMlflowTrackingServer") == 1
        done = [s.wait_for_log("bootstrap done") for s in (first, second)]
        writers = [
            d for d in done if any(step["action"] != "ok" for step in d["steps"])
        ]
        assert len(writers) == 1
    finally:
        first.stop()
        second.stop()
