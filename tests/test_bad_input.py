"""Bad input always gets a clear, well-formed answer, and never takes the server down."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.servers import WebhookProcess, start, without_cluster
from testing.support import ROLE_ARN, TRACKING_ARN, review_for

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


# The command line: what a person mistypes or feeds it gets one line that names the thing and
# the fix, and the exit code scripts act on; never a traceback. `{dir}` is the test's folder,
# `{admin}` a real control plane's admin kubeconfig (../shared/kube).
MALFORMED = "a: b: c\n"
BINARY = b"\x7fELF\x02\x01\xd0\xd0\x00"
UNQUOTED = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    mlflow-webhook.io/inject: true
spec:
  containers:
  - name: c
    image: i
"""
INJECT = ["inject", "--tracking-uri", "http://127.0.0.1:5000", "-f"]
OFFLINE_POLICY = [
    "iam-policy", "--region", "us-west-2", "--cluster-name", "prod",
    "--artifact-store-uri", "s3://ml-artifacts/mlflow", "--account", "210987654321",
    "--oidc-issuer", "https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71",
]  # fmt: skip
ERROR = "mlflow-webhook: error: "
CLI_TABLE = [
    (
        "audit, malformed --kubeconfig",
        ["audit", "--kubeconfig", "{dir}/malformed"],
        {},
        2,
        ERROR + "--kubeconfig {dir}/malformed is not valid YAML: line 1, column 5: "
        "mapping values are not allowed here",
    ),
    (
        "audit, binary --kubeconfig",
        ["audit", "--kubeconfig", "{dir}/binary"],
        {},
        2,
        ERROR + "--kubeconfig {dir}/binary is not a kubeconfig: not UTF-8 text (byte 6)",
    ),
    (
        "audit, malformed $KUBECONFIG",
        ["audit"],
        {"KUBECONFIG": "{dir}/malformed"},
        2,
        ERROR + "$KUBECONFIG {dir}/malformed is not valid YAML: line 1, column 5: "
        "mapping values are not allowed here",
    ),
    (
        "audit, binary $KUBECONFIG",
        ["audit"],
        {"KUBECONFIG": "{dir}/binary"},
        2,
        ERROR + "$KUBECONFIG {dir}/binary is not a kubeconfig: not UTF-8 text (byte 6)",
    ),
    (
        "serve, binary $KUBECONFIG",
        ["serve", "--tracking-uri", "http://127.0.0.1:5000", "--cert-dir", "{dir}/certs"],
        {"KUBECONFIG": "{dir}/binary"},
        2,
        ERROR + "$KUBECONFIG {dir}/binary is not a kubeconfig: not UTF-8 text (byte 6)",
    ),
    (
        "audit, a namespace that does not exist",
        ["audit", "--namespace", "nosuchns"],
        {"KUBECONFIG": "{admin}"},
        2,
        ERROR + "--namespace nosuchns: no such namespace",
    ),
    (
        "iam-policy, its reader gone (| head -c 10)",
        OFFLINE_POLICY,
        {},
        141,
        "",
    ),
    (
        "inject, an unquoted true",
        [*INJECT, "{dir}/unquoted.yaml"],
        {},
        0,
        "mlflow-webhook: warning: Pod/p: metadata.annotations mlflow-webhook.io/inject: true is "
        "a YAML boolean; Kubernetes takes only strings there: quote it, "
        'mlflow-webhook.io/inject: "true"; left unchanged\n'
        "mlflow-webhook: injected 0 of 1 Pod templates",
    ),
    (
        "inject, YAML that does not parse",
        [*INJECT, "{dir}/malformed"],
        {},
        2,
        ERROR + "{dir}/malformed is not valid YAML: line 1, column 5: "
        "mapping values are not allowed here",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [row[1:] for row in CLI_TABLE],
    ids=[row[0] for row in CLI_TABLE],
)
def test_command_line_bad_input_table(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    code: int,
    says: str,
) -> None:
    (tmp_path / "malformed").write_text(MALFORMED)
    (tmp_path / "binary").write_bytes(BINARY)
    (tmp_path / "unquoted.yaml").write_text(UNQUOTED)
    fill = {"dir": str(tmp_path)}
    if any("{admin}" in v for v in env.values()):
        fill["admin"] = str(request.getfixturevalue("control_plane").admin)
    # For 141, a pipe whose reader has already gone: what `| head -c 10` leaves, every time.
    reader, writer = os.pipe()
    os.close(reader)
    if code != 141:
        os.close(writer)
        writer = os.open(os.devnull, os.O_WRONLY)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "webhook", *(a.format(**fill) for a in args)],
            stdin=subprocess.DEVNULL,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            env={**without_cluster(os.environ), **{k: v.format(**fill) for k, v in env.items()}},
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr.rstrip("\n")) == (code, says.format(**fill))
