"""Certificate rotation under load, graceful shutdown, and configuration errors."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp

from testing.servers import WebhookProcess, without_cluster
from testing.support import TRACKING_ARN, review_for
from webhook.tls.certs import (
    CA_FILE,
    CA_KEY_FILE,
    KEY_FILE,
    Pem,
    generate_ca,
    issue_serving,
    write_atomic,
    write_pair,
)

REVIEW = json.dumps(
    review_for(
        {
            "metadata": {"name": "p", "annotations": {"mlflow-webhook.io/inject": "true"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
)


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**without_cluster(os.environ), **(env or {})},
        timeout=60,
    )


async def serial_seen(server: WebhookProcess) -> int:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=server.client_context(), server_hostname="localhost"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


async def test_rotation_while_requests_flow(tmp_path: Path) -> None:
    assert cli("certs", "--out", str(tmp_path)).returncode == 0
    server = WebhookProcess(
        tmp_path, "--tracking-uri", TRACKING_ARN, "--cert-reload-seconds", "0.1"
    )
    try:
        before = await serial_seen(server)
        outcomes: list[int | str] = []
        stop = asyncio.Event()

        async def load(fresh_connections: bool) -> None:
            connector = aiohttp.TCPConnector(
                ssl=server.client_context(), force_close=fresh_connections
            )
            async with aiohttp.ClientSession(connector=connector) as session:
                while not stop.is_set():
                    try:
                        async with session.post(server.url + "/mutate", data=REVIEW) as r:
                            outcomes.append(r.status)
                    except (aiohttp.ClientError, ssl.SSLError) as exc:
                        outcomes.append(repr(exc))

        workers = [asyncio.create_task(load(fresh)) for fresh in (True, True, False, False)]
        await asyncio.sleep(0.5)
        ca = Pem((tmp_path / CA_FILE).read_bytes(), (tmp_path / CA_KEY_FILE).read_bytes())
        # First a key with no certificate to match: the old pair must keep serving.
        write_atomic(
            tmp_path / KEY_FILE, issue_serving(ca, ["localhost"], ["127.0.0.1"]).key, 0o600
        )
        server.wait_for_log("certificate files are missing or do not load")
        assert await serial_seen(server) == before
        write_pair(tmp_path, issue_serving(ca, ["localhost"], ["127.0.0.1"]), "tls.crt", "tls.key")
        server.wait_for_log("loaded a rotated certificate")
        after = await serial_seen(server)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
    finally:
        server.stop()
    assert after != before
    failures = [o for o in outcomes if o != 200]
    assert len(outcomes) > 50
    assert failures == []


async def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    server = WebhookProcess(tmp_path, "--self-signed", "--tracking-uri", TRACKING_ARN)
    body = REVIEW.encode()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=server.client_context(), server_hostname="localhost"
    )
    writer.write(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:20]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    server.proc.send_signal(15)
    server.wait_for_log("shutting down")
    writer.write(body[20:])
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    answer = json.loads(await reader.readexactly(length))
    assert answer["response"]["allowed"] is True
    writer.close()
    assert server.proc.wait(timeout=30) == 0
    server.wait_for_log("stopped")


def test_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    cases = [
        (
            ["serve", "--tracking-uri", "s3://bucket"],
            {},
            "must be a SageMaker MLflow ARN or an http(s) URL",
        ),
        (["serve", "--tracking-uri", "arn:aws:s3:::bucket"], {}, "is not a SageMaker MLflow"),
        (
            ["serve", "--tracking-uri", TRACKING_ARN, "--credentials", "irsa"],
            {},
            "needs --role-arn",
        ),
        (
            ["serve", "--tracking-uri", TRACKING_ARN, "--role-arn", "role"],
            {},
            "is not an IAM role ARN",
        ),
        (["serve", "--artifact-store-uri", "ftp://x"], {}, "must look like s3://bucket/prefix"),
        (["serve"], {"MLFLOW_WEBHOOK_PORT": "https"}, "MLFLOW_WEBHOOK_PORT='https'"),
        (["serve"], {"MLFLOW_WEBHOOK_SELF_SIGNED": "perhaps"}, "must be true or false"),
        (
            [
                "serve",
                "--tracking-uri",
                TRACKING_ARN,
                "--no-kube",
                "--cert-dir",
                str(tmp_path / "none"),
            ],
            {},
            "--self-signed",
        ),
        (["serve", "--port", "x"], {}, "invalid port value"),
        (["serve", "--tracking-uri", TRACKING_ARN], {}, "no cluster to work with"),
        (
            ["serve", "--tracking-uri", TRACKING_ARN],
            {"KUBECONFIG": "/nonexistent"},
            "$KUBECONFIG /nonexistent names no file",
        ),
        (
            ["serve", "--tracking-uri", TRACKING_ARN, "--kubeconfig", "/nonexistent"],
            {},
            "is not a file",
        ),
        (
            ["inject", "-f", str(tmp_path / "missing.yaml"), "--tracking-uri", TRACKING_ARN],
            {},
            "cannot read",
        ),
    ]
    for args, env, says in cases:
        result = cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (args, result.stderr)
        assert says in lines[0], (args, lines[0])


async def test_environment_configures_serve(tmp_path: Path) -> None:
    server = WebhookProcess(
        tmp_path,
        env={
            "MLFLOW_WEBHOOK_SELF_SIGNED": "true",
            "MLFLOW_WEBHOOK_TRACKING_URI": "http://mlflow.mlflow.svc:5000",
            "MLFLOW_WEBHOOK_SERVICE_ACCOUNT": "ml-runner",
        },
    )
    try:
        entry = server.wait_for_log("serving")
        assert entry["tracking_uri"] == "http://mlflow.mlflow.svc:5000"
        assert entry["credentials"] == "none"
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url + "/mutate", data=REVIEW, ssl=server.client_context()) as r,
        ):
            assert "patch" in (await r.json())["response"]
    finally:
        server.stop()


def test_certs_command_is_idempotent(tmp_path: Path) -> None:
    first = cli("certs", "--service", "hook", "--namespace", "ml", "--out", str(tmp_path))
    assert "wrote ca.crt, ca.key, tls.crt, tls.key" in first.stdout
    assert "hook.ml.svc" in first.stdout
    crt = (tmp_path / "tls.crt").read_bytes()
    second = cli("certs", "--service", "hook", "--namespace", "ml", "--out", str(tmp_path))
    assert "kept" in second.stdout
    assert (tmp_path / "tls.crt").read_bytes() == crt
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    # Asking for other names issues a serving certificate that covers them, under the same CA.
    ca = (tmp_path / "ca.crt").read_bytes()
    third = cli("certs", "--service", "other", "--namespace", "ml", "--out", str(tmp_path))
    assert "wrote tls.crt, tls.key" in third.stdout
    assert (tmp_path / "ca.crt").read_bytes() == ca


def test_stale_self_signed_certificate_is_reissued(tmp_path: Path) -> None:
    ca = generate_ca()
    write_pair(tmp_path, ca, CA_FILE, CA_KEY_FILE)
    write_pair(
        tmp_path, issue_serving(ca, ["localhost"], ["127.0.0.1"], days=10), "tls.crt", "tls.key"
    )
    result = cli("certs", "--out", str(tmp_path))
    assert "wrote tls.crt, tls.key" in result.stdout
