"""Bad input always gets a clear, well-formed answer, and never takes the server down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.servers import WebhookProcess, start
from tests.support import ROLE_ARN, TRACKING_ARN, review_for

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = start(
        Path(tmp_path_factory.mktemp("certs")),
        "--self-signed",
        "--tracking-uri",
        TRACKING_ARN,
        "--role-arn",
        ROLE_ARN,
        "--max-body-bytes",
        str(LIMIT),
    )
    yield server
    server.stop()


async def send(
    server: WebhookProcess, method: str, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, server.url + path, data=body, ssl=server.client_context(), **kwargs
        ) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


REVIEW = review_for(
    {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
)
NO_UID = json.loads(json.dumps(REVIEW))
del NO_UID["request"]["uid"]


TABLE = [
    ("POST", "/mutate", b"{not json", 400, "not JSON"),
    ("POST", "/mutate", b"", 400, "not JSON"),
    ("POST", "/mutate", b"[1, 2]", 400, "JSON object"),
    (
        "POST",
        "/mutate",
        json.dumps({"kind": "Pod", "apiVersion": "v1"}),
        400,
        "kind must be AdmissionReview",
    ),
    (
        "POST",
        "/mutate",
        json.dumps({**REVIEW, "apiVersion": "admission.k8s.io/v1beta1"}),
        400,
        "apiVersion",
    ),
    ("POST", "/mutate", json.dumps({**REVIEW, "request": None}), 400, "no request"),
    ("POST", "/mutate", json.dumps(NO_UID), 400, "no uid"),
    ("GET", "/mutate", None, 405, "Method Not Allowed"),
    ("PUT", "/healthz", None, 405, "Method Not Allowed"),
    ("POST", "/", b"{}", 404, "Not Found"),
    ("POST", "/validate", json.dumps(REVIEW), 404, "Not Found"),
    ("POST", "/mutate", b"x" * (LIMIT + 1), 413, f"larger than {LIMIT}"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), TABLE)
async def test_bad_input_table(
    small: WebhookProcess, method: str, path: str, body: Any, status: int, says: str
) -> None:
    got, answer = await send(small, method, path, body)
    assert got == status
    assert answer["status"] == status
    assert says in answer["error"]


async def test_oversized_chunked_body(small: WebhookProcess) -> None:
    """No Content-Length to judge by: the limit holds while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 4096 + 2):
            yield b" " * 4096

    status, answer = await send(small, "POST", "/mutate", chunks())
    assert status == 413
    assert "larger than" in answer["error"]


async def test_strange_pod_is_admitted_unchanged_with_warning(small: WebhookProcess) -> None:
    odd = review_for(
        {
            "metadata": {"annotations": {"mlflow-webhook.io/inject": "true"}},
            "spec": {"containers": {"main": "not a list"}},
        }
    )
    status, answer = await send(small, "POST", "/mutate", json.dumps(odd))
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert "spec.containers is not a list" in response["warnings"][0]
    assert "admitted unchanged" in response["warnings"][0]
    entry = small.wait_for_log("admission: a Pod it cannot read")
    assert entry["level"] == "warning"
    assert entry["uid"] == odd["request"]["uid"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(small.url + "/metrics", ssl=small.client_context()) as r,
    ):
        assert (
            'mlflow_webhook_admissions_total{outcome="skipped",reason="malformed"} 1.0'
            in await r.text()
        )


async def test_server_survives_the_table(small: WebhookProcess) -> None:
    """The whole table, here and now, whatever ran before: then a good review is answered."""
    for method, path, body, expected, _ in TABLE:
        assert (await send(small, method, path, body))[0] == expected
    status, answer = await send(small, "POST", "/mutate", json.dumps(REVIEW))
    assert status == 200
    assert answer["response"]["uid"] == REVIEW["request"]["uid"]
    assert small.proc.poll() is None


async def test_default_limit_admits_the_largest_object(webhook: WebhookProcess) -> None:
    """The API server caps objects at 3 MiB; such a Pod must get through at the default limit."""
    pod = {
        "metadata": {
            "name": "big",
            "annotations": {"mlflow-webhook.io/inject": "true", "blob": "x" * (3 * 1024 * 1024)},
        },
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    status, answer = await send(webhook, "POST", "/mutate", json.dumps(review_for(pod)))
    assert status == 200
    assert "patch" in answer["response"]


async def test_default_limit_is_8_mib(webhook: WebhookProcess) -> None:
    """A review of exactly 8 MiB is answered; one byte more gets 413 before it is parsed."""
    limit = 8 * 1024 * 1024
    review = json.dumps(review_for({"metadata": {"name": "big"}, "spec": {"containers": []}}))
    # Pad inside the JSON (spaces before the closing brace) so the body stays a valid review.
    under = review[:-1] + " " * (limit - len(review)) + "}"
    assert len(under) == limit
    status, answer = await send(webhook, "POST", "/mutate", under)
    assert status == 200
    assert answer["response"]["allowed"] is True
    status, answer = await send(webhook, "POST", "/mutate", under[:-1] + " }")
    assert status == 413
    assert f"larger than {limit}" in answer["error"]


async def test_many_bad_requests_at_once(small: WebhookProcess) -> None:
    results = await asyncio.gather(*(send(small, "POST", "/mutate", b"{") for _ in range(50)))
    assert {status for status, _ in results} == {400}
