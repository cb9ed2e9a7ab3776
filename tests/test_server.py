"""The real server over TLS, driven the way the API server drives it, with the captured reviews."""

from __future__ import annotations

import asyncio
import json
import ssl
import warnings
from typing import Any

import aiohttp
import pytest

from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, apply, captured, decode_patch, readable

STATUS = "mlflow-webhook.io/status"


async def post_captured(
    webhook: WebhookProcess, record: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """Send a captured review with the API server's own path query and headers."""
    headers = {
        k: v for k, v in record["http"]["headers"].items() if k not in ("Host", "Content-Length")
    }
    query = record["http"]["path"].partition("?")[2]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{webhook.url}/mutate?{query}",
            data=json.dumps(record["review"]),
            headers=headers,
            ssl=webhook.client_context(),
        ) as response,
    ):
        return response.status, await response.json()


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or ()}


@pytest.mark.parametrize(
    "name",
    [
        "01-pod-create",
        "02-deployment-pod-create",
        "03-pod-create-dry-run",
        "04-pod-native-sidecar",
        "05-job-pod-create",
    ],
)
async def test_captured_creates_are_injected(webhook: WebhookProcess, name: str) -> None:
    record = captured(name)
    status, body = await post_captured(webhook, record)
    assert status == 200
    request = record["review"]["request"]
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == request["uid"]
    assert body["response"]["allowed"] is True
    pod = apply(request["object"], decode_patch(body))
    assert (
        pod["spec"]["serviceAccountName"] == pod["spec"]["serviceAccount"] == "sagemaker-mlflow-sa"
    )
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        env = env_of(container)
        assert env["MLFLOW_TRACKING_URI"] == TRACKING_ARN
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-west-2"
        assert env["AWS_ROLE_ARN"] == ROLE_ARN
        assert {
            "name": "aws-iam-token",
            "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
            "readOnly": True,
        } in container["volumeMounts"]
    # The API server's own token volume is untouched; ours is added beside it.
    assert [v["name"] for v in pod["spec"]["volumes"]][-1] == "aws-iam-token"
    assert pod["spec"]["volumes"][:-1] == request["object"]["spec"]["volumes"]
    status_note = readable(pod)["metadata"]["annotations"][STATUS]
    assert status_note["serviceAccount"] == "sagemaker-mlflow-sa"
    experiment = request["object"]["metadata"]["annotations"].get("mlflow-webhook.io/experiment")
    assert env_of(pod["spec"]["containers"][0]).get("MLFLOW_EXPERIMENT_NAME") == experiment


async def test_update_is_allowed_without_patch(webhook: WebhookProcess) -> None:
    status, body = await post_captured(webhook, captured("09-pod-update"))
    assert status == 200
    assert body["response"] == {
        "uid": captured("09-pod-update")["review"]["request"]["uid"],
        "allowed": True,
    }


async def test_reinvocation_after_another_webhook(webhook: WebhookProcess) -> None:
    """Ours first, then the other webhook appends a container, then ours again (IfNeeded)."""
    first = captured("06-reinvocation-first-call")
    _, body = await post_captured(webhook, first)
    pod = apply(first["review"]["request"]["object"], decode_patch(body))
    added = captured("08-reinvocation-second-call")["review"]["request"]["object"]["spec"][
        "containers"
    ][-1]
    assert added["name"] == "added-by-b"
    pod["spec"]["containers"].append(added)
    second = json.loads(json.dumps(first))
    second["review"]["request"]["object"] = pod
    _, body = await post_captured(webhook, second)
    patch = decode_patch(body)
    assert all(
        op["path"].startswith(("/spec/containers/1/", "/metadata/annotations/")) for op in patch
    ), patch
    final = apply(pod, patch)
    assert env_of(final["spec"]["containers"][1])["MLFLOW_TRACKING_URI"] == TRACKING_ARN
    assert readable(final)["metadata"]["annotations"][STATUS]["injected"] == ["main", "added-by-b"]
    third = json.loads(json.dumps(second))
    third["review"]["request"]["object"] = final
    _, body = await post_captured(webhook, third)
    assert decode_patch(body) == []


async def test_only_the_generated_ca_is_trusted(webhook: WebhookProcess) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{webhook.url}/healthz", ssl=ssl.create_default_context())
        async with session.get(f"{webhook.url}/healthz", ssl=webhook.client_context()) as r:
            assert r.status == 200


async def test_plain_http_and_old_tls_are_refused(webhook: WebhookProcess) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{webhook.port}/healthz")
    # The same lenient client (security level 0 lifts its own refusal of old versions) gets
    # TLS 1.2 and is refused TLS 1.1: the refusal is the server's.
    for version, accepted in ((ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_1, False)):
        client = webhook.client_context()
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = client.maximum_version = version
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", webhook.port, ssl=client, server_hostname="localhost"
            )
            writer.close()
            connected = True
        except (ssl.SSLError, ConnectionResetError):
            connected = False
        assert connected is accepted, version


async def test_certificate_names_cover_service_and_loopback(webhook: WebhookProcess) -> None:
    for host in ("localhost", "127.0.0.1"):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", webhook.port, ssl=webhook.client_context(), server_hostname=host
        )
        cert = writer.get_extra_info("peercert")
        writer.close()
        names = {value for _, value in cert["subjectAltName"]}
        assert {"mlflow-webhook.mlflow-webhook.svc", "localhost", "127.0.0.1"} <= names


async def test_health_readiness_and_metrics(webhook: WebhookProcess) -> None:
    await post_captured(webhook, captured("01-pod-create"))
    async with aiohttp.ClientSession() as session:
        for path, expected in (("/healthz", "ok"), ("/readyz", "ready")):
            async with session.get(webhook.url + path, ssl=webhook.client_context()) as r:
                assert r.status == 200
                assert (await r.json())["status"] == expected
        async with session.get(webhook.url + "/metrics", ssl=webhook.client_context()) as r:
            assert r.status == 200
            text = await r.text()
    assert 'mlflow_webhook_admissions_total{outcome="injected",reason="injected"}' in text
    assert "mlflow_webhook_admission_duration_seconds_bucket" in text
    expiry = next(
        line
        for line in text.splitlines()
        if line.startswith("mlflow_webhook_certificate_expiry_timestamp_seconds ")
    )
    assert float(expiry.split()[1]) > 1.7e9


def test_decisions_are_logged_with_identity(webhook: WebhookProcess) -> None:
    asyncio.run(post_captured(webhook, captured("02-deployment-pod-create")))
    uid = captured("02-deployment-pod-create")["review"]["request"]["uid"]
    entry = webhook.wait_for_entry(lambda e: e.get("uid") == uid)
    assert entry["namespace"] == "team-a"
    assert entry["pod"] == "serve-59c6f5d9b4-"
    assert entry["outcome"] == "injected"
    assert entry["patch_ops"] > 0


async def test_the_event_loops_lag_is_measured_all_the_time(webhook: WebhookProcess) -> None:
    def sample(text: str, name: str) -> float:
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))

    async def scrape() -> str:
        url, context = webhook.url + "/metrics", webhook.client_context()
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as r:
            return await r.text()

    count = "mlflow_webhook_event_loop_lag_seconds_count "
    first = sample(await scrape(), count)
    for _ in range(100):  # it ticks every 0.1 s; a slow host gets 10 s to show two ticks
        after = await scrape()
        if sample(after, count) >= first + 2:
            break
        await asyncio.sleep(0.1)
    assert sample(after, count) >= first + 2
    worst = sample(after, "mlflow_webhook_event_loop_lag_max_seconds ")
    assert 0 <= worst <= sample(after, "mlflow_webhook_event_loop_lag_seconds_sum ")
