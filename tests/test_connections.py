"""Connections and time against the real server over TLS: deadlines, early refusals, errors in
JSON, a flood of idle connections, and shutdown with a client that stalls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.servers import WebhookProcess, start
from testing.support import ROLE_ARN, TRACKING_ARN, review_for
from webhook.app.connections import Connection, Pool

MEMORY_LIMIT_MIB = 256  # manifests/base/deployment.yaml
READ_TIMEOUT = 2.0
FLAGS = ["--self-signed", "--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN]
HEAD = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
REVIEW = json.dumps(
    review_for(
        {
            "metadata": {"name": "p", "annotations": {"mlflow-webhook.io/inject": "true"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
).encode()


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """Short deadlines, so that waiting for them is quick."""
    timeout = ["--read-timeout-seconds", str(READ_TIMEOUT)]
    server = start(Path(tmp_path_factory.mktemp("certs")), *FLAGS, *timeout)
    yield server
    server.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    seconds: float


async def connect(server: WebhookProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=server.client_context(), server_hostname="localhost"
    )


async def read_answer(reader: asyncio.StreamReader, started: float, timeout: float) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    seconds = time.monotonic() - started
    return Answer(int(status_line.split()[1]), headers, json.loads(body), seconds)


async def exchange(server: WebhookProcess, data: bytes, timeout: float = 10) -> Answer:
    """Send raw bytes over TLS, then read one answer (without waiting for the connection to end)."""
    reader, writer = await connect(server)
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    try:
        return await read_answer(reader, started, timeout)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (HEAD + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", "content-encoding"),
        (HEAD + b"X-Big: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}", "8190 bytes"),
        (
            HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "chunk size"),
        (HEAD + b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", "content-encoding: gzip"),
        (b"\x00\x01 nonsense\r\n\r\n", "Invalid method"),
    ],
    ids=["unknown-encoding-br", "8k-header", "cl-and-te", "bad-chunk-size", "not-gzip", "garbage"],
)
async def test_requests_aiohttp_cannot_parse_get_json(
    quick: WebhookProcess, data: bytes, says: str
) -> None:
    answer = await exchange(quick, data)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.body["status"] == 400
    assert says in answer.body["error"]
    assert len(answer.body["error"]) < 400  # the 9,000-byte header is not echoed back


async def test_expect_100_continue_is_told_to_go_on_then_answered(quick: WebhookProcess) -> None:
    """As curl sends a large body: the headers alone, and the body once told to continue."""
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    body = json.dumps(review_for(pod)).encode()
    reader, writer = await connect(quick)
    try:
        writer.write(HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        await writer.drain()
        answer = await read_answer(reader, time.monotonic(), 10)
        assert answer.status == 200
        assert answer.body["response"]["allowed"] is True
    finally:
        writer.close()


async def test_an_expectation_it_does_not_know_is_answered_417(quick: WebhookProcess) -> None:
    answer = await exchange(quick, HEAD + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}")
    assert answer.status == 417
    assert "teapot" in answer.body["error"]


async def test_head_on_a_get_path_answers_headers_alone(quick: WebhookProcess) -> None:
    reader, writer = await connect(quick)
    try:
        writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        # No body followed: the next answer on the connection is the next request's.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = await read_answer(reader, time.monotonic(), 5)
        assert (answer.status, answer.body) == (200, {"status": "ok"})
    finally:
        writer.close()


async def test_a_stalled_body_is_answered_408_within_the_deadline(quick: WebhookProcess) -> None:
    answer = await exchange(quick, HEAD + b"Content-Length: 3229\r\n\r\n" + b"x" * 100)
    assert answer.status == 408
    assert answer.body == {"error": f"body did not arrive within {READ_TIMEOUT:g} s", "status": 408}
    assert answer.headers["connection"] == "close"
    assert answer.seconds < READ_TIMEOUT + 5


async def test_stalled_headers_are_answered_408_within_the_deadline(quick: WebhookProcess) -> None:
    answer = await exchange(quick, HEAD + b"X-Partial: yes")
    assert answer.status == 408
    assert "headers did not arrive" in answer.body["error"]
    assert answer.seconds < READ_TIMEOUT + 5


async def test_content_length_over_the_limit_is_refused_before_any_body(
    quick: WebhookProcess,
) -> None:
    answer = await exchange(quick, HEAD + b"Content-Length: 8388609\r\n\r\n")
    assert answer.status == 413
    assert "larger than 8388608 bytes" in answer.body["error"]
    assert answer.headers["connection"] == "close"
    assert answer.seconds < READ_TIMEOUT  # it did not wait for the body's deadline


async def request_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float = 0
) -> Answer:
    """One admission request on an open connection, its body `pause` seconds after its headers;
    its answer."""
    started = time.monotonic()
    writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(REVIEW))
    await writer.drain()
    await asyncio.sleep(pause)
    writer.write(REVIEW)
    await writer.drain()
    return await read_answer(reader, started, 10)


async def test_a_slow_body_is_answered_and_the_idle_connection_then_hears_nothing(
    quick: WebhookProcess,
) -> None:
    """The body's deadline ends with the answer: nothing unprompted (a late 408) arrives while
    the connection idles past it, and the next request on it gets its own answer."""
    reader, writer = await connect(quick)
    try:
        answer = await request_on(reader, writer, pause=0.3)
        assert answer.status == 200 and "patch" in answer.body["response"]
        with pytest.raises(TimeoutError):
            heard = await asyncio.wait_for(reader.read(256), READ_TIMEOUT + 1.5)
            pytest.fail(f"the idle connection heard {heard!r}")
        again = await request_on(reader, writer)
        assert again.status == 200 and "patch" in again.body["response"]
    finally:
        writer.close()


async def test_a_client_that_leaves_mid_body_is_one_quiet_line(quick: WebhookProcess) -> None:
    _, writer = await connect(quick)
    writer.write(HEAD + b"Content-Length: 3229\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()
    await asyncio.sleep(0.3)  # the socket closes on the loop's next turn
    entry = quick.wait_for_log("client disconnected")
    assert entry["level"] == "info"
    assert "exception" not in entry
    await asyncio.sleep(0.5)
    assert not [e for e in quick.logs if e["level"] == "error" or "exception" in e]


class Fake:
    """What the pool reads of a connection, ranked by the connection's own method."""

    rank = Connection.rank

    def __init__(self, name: str, used: bool, busy: bool, since: float) -> None:
        self.name, self.used, self.busy, self.since = name, used, busy, since
        self.closed = self.aborted = False
        # An open connection's; aiohttp sets it to None once the connection starts to close.
        self.transport: object | None = object()

    def force_close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


def test_at_the_bound_the_longest_idle_go_first_never_used_before_used() -> None:
    evicted: list[int] = []
    pool = Pool(64, on_evict=evicted.append)
    used_old = [Fake(f"used-{i}", used=True, busy=False, since=i) for i in range(30)]
    busy = [Fake(f"busy-{i}", used=True, busy=True, since=i) for i in range(4)]
    never = [Fake(f"never-{i}", used=False, busy=False, since=100 + i) for i in range(30)]
    for conn in used_old + busy + never:
        pool.add(conn)  # type: ignore[arg-type]
    assert evicted == []
    newcomer = Fake("new", used=False, busy=False, since=1000)
    pool.add(newcomer)  # type: ignore[arg-type]
    closed = [c.name for c in used_old + busy + never if c.closed]
    assert closed == ["never-0", "never-1"]  # one over the bound, plus one of slack
    assert not newcomer.closed
    assert evicted == [2]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def scrape(server: WebhookProcess) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/metrics", ssl=server.client_context()) as response,
    ):
        text = await response.text()
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("mlflow_webhook_")
    }


FLOOD = 6000
KEEPALIVE = 10.0


@pytest.mark.timeout(300)
async def test_6000_idle_tls_connections(tmp_path: Path) -> None:
    """One replica with the default bound: while 6,000 idle TLS connections arrive it keeps
    answering and stays inside the Deployment's memory limit; the keep-alive timeout then
    closes the idle ones the bound left open."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 256:
        pytest.skip(f"needs {FLOOD + 256} open files, the hard limit is {hard}")
    server = start(tmp_path, *FLAGS, "--keepalive-seconds", str(KEEPALIVE))
    command = [sys.executable, "-m", "tests.flood", "--port", str(server.port)]
    command += ["--ca", str(tmp_path / "ca.crt"), "--count", str(FLOOD)]
    command += ["--wait", str(KEEPALIVE + 60)]
    flood = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    try:
        await watch_the_flood(server, flood)
    finally:
        if flood.returncode is None:
            flood.kill()
        server.stop()


async def watch_the_flood(server: WebhookProcess, flood: asyncio.subprocess.Process) -> None:
    assert flood.stdout is not None
    peak = {"rss": rss_mib(server.proc.pid), "open": 0.0}
    answered = 0
    line = asyncio.ensure_future(flood.stdout.readline())
    while not line.done():
        # Each scrape is also a request answered, on a new connection, during the flood.
        metrics = await scrape(server)
        answered += 1
        peak["open"] = max(peak["open"], metrics["mlflow_webhook_open_connections"])
        peak["rss"] = max(peak["rss"], rss_mib(server.proc.pid))
        await asyncio.wait([line], timeout=0.5)
    assert json.loads(line.result())["opened"] == FLOOD
    peak["rss"] = max(peak["rss"], rss_mib(server.proc.pid))
    assert peak["rss"] < MEMORY_LIMIT_MIB, peak
    assert peak["open"] <= 1000, peak
    assert answered >= 1

    # Admission still works, with the flood's survivors still open.
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/mutate", data=REVIEW, ssl=server.client_context()) as r,
    ):
        assert r.status == 200
        assert "patch" in (await r.json())["response"]
    evicted = (await scrape(server))["mlflow_webhook_connections_evicted_total"]

    # Every flood connection ends: those the bound left open, by the keep-alive timeout.
    ended = json.loads(await asyncio.wait_for(flood.stdout.readline(), KEEPALIVE + 90))
    assert ended["ended"] == FLOOD
    metrics = await scrape(server)
    assert metrics["mlflow_webhook_open_connections"] <= 2
    assert metrics["mlflow_webhook_connections_evicted_total"] == evicted
    assert rss_mib(server.proc.pid) < MEMORY_LIMIT_MIB
    assert await flood.wait() == 0


async def test_sockets_that_never_say_hello_meet_the_same_bound(tmp_path: Path) -> None:
    """Plain TCP connections that never start TLS cost more than idle TLS ones (about 50 KiB
    each, the handshake's state): they count toward the bound from accept() on."""
    count = 3000
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 256:
        pytest.skip(f"needs {count + 256} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = start(tmp_path, *FLAGS, "--max-connections", "500")
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", server.port)))
        await asyncio.sleep(1)
        metrics = await scrape(server)
        assert metrics["mlflow_webhook_open_connections"] <= 500
        assert metrics["mlflow_webhook_connections_evicted_total"] >= count - 500
        assert rss_mib(server.proc.pid) < MEMORY_LIMIT_MIB
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


async def test_silent_sockets_at_the_bound_leave_a_used_keepalive_connection_open(
    tmp_path: Path,
) -> None:
    """The API server's own keep-alive connection, idle between requests, outlives a flood of
    sockets that never send a request (plain TCP that never says hello, and TLS that does and
    then falls silent): at the bound those are closed first."""
    bound, count = 64, 200
    server = start(tmp_path, *FLAGS, "--max-connections", str(bound))
    sockets: list[socket.socket] = []
    silent_tls: list[asyncio.StreamWriter] = []
    reader, writer = await connect(server)
    try:
        assert (await request_on(reader, writer)).status == 200
        for _ in range(count // 2):
            sockets.append(socket.create_connection(("127.0.0.1", server.port)))
        for _ in range(count // 2):
            with contextlib.suppress(OSError):  # one the bound has closed mid-handshake
                silent_tls.append((await connect(server))[1])
        await asyncio.sleep(0.5)
        metrics = await scrape(server)
        assert metrics["mlflow_webhook_connections_evicted_total"] >= count - bound
        # The same connection, still open, is answered.
        answer = await request_on(reader, writer)
        assert answer.status == 200 and "patch" in answer.body["response"]
    finally:
        writer.close()
        for sock in sockets:
            sock.close()
        for silent in silent_tls:
            silent.close()
        server.stop()


async def test_shutdown_with_a_stalled_client_ends_within_25_s(tmp_path: Path) -> None:
    """Default deadlines: the Pod's grace period is 30 s, 5 of them the preStop sleep."""
    server = start(tmp_path)
    _, stalled = await connect(server)
    stalled.write(HEAD + b"Content-Length: 3229\r\n\r\n" + b"x" * 100)
    await stalled.drain()
    _, idle = await connect(server)  # a keep-alive connection that sends nothing
    await asyncio.sleep(0.3)
    started = time.monotonic()
    server.proc.send_signal(15)
    code = await asyncio.to_thread(server.proc.wait, 40)
    took = time.monotonic() - started
    stalled.close()
    idle.close()
    assert code == 0
    assert took < 25, took
    server.wait_for_log("stopped")
