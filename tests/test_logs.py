"""The decision log: written off the event loop, and nothing of it lost at SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import select
import threading
from pathlib import Path

import aiohttp

from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, review_for
from webhook.app.logs import JsonHandler

POD = {
    "metadata": {"name": "p", "annotations": {"mlflow-webhook.io/inject": "true"}},
    "spec": {"containers": [{"name": "c", "image": "i"}]},
}


def serve(tmp_path: Path) -> WebhookProcess:
    return WebhookProcess(
        tmp_path, "--self-signed", "--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN
    )


async def admit_all(server: WebhookProcess, uids: list[str], answered: list[str]) -> None:
    """Post one review a uid over eight keep-alive connections, as the API server does."""
    connector = aiohttp.TCPConnector(ssl=server.client_context(), limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(uid: str) -> None:
            review = review_for(POD, uid=uid)
            async with session.post(f"{server.url}/mutate", json=review) as response:
                body = await response.json()
            assert body["response"]["uid"] == uid
            answered.append(uid)

        await asyncio.gather(*(one(uid) for uid in uids), return_exceptions=True)


def logged(server: WebhookProcess) -> list[str]:
    """The uids of the admission lines, once the process has exited and its stderr is read."""
    server.proc.wait(timeout=30)
    server._reader.join(timeout=10)
    return [e["uid"] for e in server.logs if e.get("msg") == "admission"]


async def test_n_admissions_then_sigterm_at_once_leave_n_lines(tmp_path: Path) -> None:
    server = serve(tmp_path)
    try:
        uids = [f"uid-{i:04}" for i in range(600)]
        answered: list[str] = []
        await admit_all(server, uids, answered)
        assert sorted(answered) == uids
        server.proc.send_signal(15)  # the moment the last answer is in
        assert server.proc.wait(timeout=30) == 0
        lines = logged(server)
    finally:
        server.stop()
    assert sorted(lines) == uids  # each one once: none lost, none twice


async def test_sigterm_while_admissions_flow_logs_every_one_answered(tmp_path: Path) -> None:
    server = serve(tmp_path)
    try:
        uids = [f"uid-{i:04}" for i in range(2000)]
        answered: list[str] = []
        sending = asyncio.ensure_future(admit_all(server, uids, answered))
        while len(answered) < 200:
            await asyncio.sleep(0.01)
        server.proc.send_signal(15)
        await asyncio.wait_for(sending, 60)
        assert server.proc.wait(timeout=30) == 0
        lines = logged(server)
    finally:
        server.stop()
    assert len(answered) < len(uids)  # the signal landed mid-flow
    assert sorted(lines) == sorted(answered)


def readable(fd: int, seconds: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], seconds)
    return os.read(fd, 1 << 20) if ready else b""


def test_info_waits_for_the_writer_and_a_warning_takes_it_along_at_once() -> None:
    read, write = os.pipe()
    handler = JsonHandler(fd=write, flush_seconds=60)
    try:
        handler.write({"msg": "first"})
        handler.write({"msg": "second"})
        assert readable(read, 0.3) == b""  # nothing on the request path wrote
        handler.write({"msg": "bad"}, urgent=True)
        lines = readable(read, 1).splitlines()
        assert [json.loads(line)["msg"] for line in lines] == ["first", "second", "bad"]
        handler.write({"msg": "last"})
        handler.flush()  # as logging.shutdown does at exit
        assert json.loads(readable(read, 1))["msg"] == "last"
    finally:
        os.close(read)
        os.close(write)


def test_lines_from_many_threads_all_arrive_whole_while_the_writer_runs(tmp_path: Path) -> None:
    out = tmp_path / "log"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    handler = JsonHandler(fd=fd, flush_seconds=0.001)

    def emit(thread: int) -> None:
        for i in range(5000):
            handler.write({"msg": "admission", "n": f"{thread}-{i}"}, urgent=i % 1000 == 0)

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handler.flush()
    os.close(fd)
    seen = [json.loads(line)["n"] for line in out.read_bytes().splitlines()]
    assert sorted(seen) == sorted(f"{t}-{i}" for t in range(8) for i in range(5000))
    for t in range(8):  # each thread's lines in the order it wrote them
        mine = [int(n.split("-")[1]) for n in seen if n.startswith(f"{t}-")]
        assert mine == sorted(mine)
