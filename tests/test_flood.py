"""Clients that never read and a handshake slowloris, against one replica's connection bound.

A client that never reads never answers the server's TLS close_notify: what the bound closes
must end without waiting on it, and still count until its socket is gone. Throughout each
flood the server's open descriptors stay within the bound plus 64, its RSS under the
Deployment's limit, and admission is answered; once the flood has gone, memory comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testing.servers import WebhookProcess, start
from tests.flood import handshake
from tests.test_connections import FLAGS, MEMORY_LIMIT_MIB, REVIEW, Fake, rss_mib
from webhook.app.connections import Pool

BOUND = 1000  # --max-connections' default
HEADROOM = 64  # the listening socket, the log pipe, the loop's own, and those being closed
HANDSHAKE = 3.0  # --read-timeout-seconds, the handshake's deadline
BACK = 30.0  # how long after a flood its memory must be back


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 6000 + 256:
        pytest.skip(f"needs {6000 + 256} open files, the hard limit is {hard}")
    timeout = ["--read-timeout-seconds", str(HANDSHAKE)]
    started = start(Path(tmp_path_factory.mktemp("certs")), *FLAGS, *timeout)
    yield started
    started.stop()


@dataclass
class Watch:
    """What the server held while a flood ran."""

    start_rss: float
    peak_fds: int = 0
    peak_rss: float = 0.0
    answered: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def admit(server: WebhookProcess) -> None:
    """One admission, on a new connection, as the API server would open one mid-flood."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.post(server.url + "/mutate", data=REVIEW, ssl=server.client_context()) as r,
    ):
        assert r.status == 200
        assert "patch" in (await r.json())["response"]


async def flood(server: WebhookProcess, *args: str) -> Watch:
    """Run `tests.flood` against the server, watching it every 0.25 s until the flood is gone,
    then wait (up to BACK) for its memory to come back."""
    pid = server.proc.pid
    await admit(server)  # what the first request loads is not the flood's
    watch = Watch(start_rss=rss_mib(pid))
    command = [sys.executable, "-m", "tests.flood", "--port", str(server.port)]
    command += ["--ca", str(server.cert_dir / "ca.crt"), *args]
    # Not asyncio's subprocesses: its child watcher has lost the race for one's exit status
    # (returncode 255, "Unknown child process") on a loaded machine.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            watch.peak_fds = max(watch.peak_fds, open_fds(pid))
            watch.peak_rss = max(watch.peak_rss, rss_mib(pid))
            await admit(server)
            watch.answered += 1
            await asyncio.sleep(0.25)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    watch.lines = [json.loads(line) for line in output.splitlines()]
    assert watch.peak_fds <= BOUND + HEADROOM, watch
    assert watch.peak_rss < MEMORY_LIMIT_MIB, watch
    assert watch.answered >= 1
    await admit(server)
    ended = time.monotonic()

    def back() -> bool:
        return rss_mib(pid) <= 1.25 * watch.start_rss and open_fds(pid) <= 64

    while not back() and time.monotonic() - ended < BACK:
        await asyncio.sleep(1)
    assert back(), (rss_mib(pid), open_fds(pid), watch)
    return watch


@pytest.mark.timeout(240)
@pytest.mark.parametrize("burst", [1, 500], ids=["one-after-another", "bursts-of-500"])
async def test_6000_clients_that_never_read(server: WebhookProcess, burst: int) -> None:
    """Each completes its handshake, then never reads: the server's close_notify is never
    answered. Before, those the bound closed waited 30 s on it, counted and chosen again."""
    watch = await flood(server, "--mode", "still", "--count", "6000", "--burst", str(burst))
    assert watch.lines[0]["opened"] + watch.lines[0]["failed"] == 6000, watch


@pytest.mark.timeout(180)
async def test_a_handshake_slowloris(server: WebhookProcess) -> None:
    """ClientHellos sent a byte a second, on 2,000 connections in bursts of 500: each is closed
    at the handshake's deadline, if the bound has not closed it first."""
    args = ["--mode", "hello", "--count", "2000", "--burst", "500", "--every", "1"]
    watch = await flood(server, *args)
    ended = watch.lines[-1]
    assert ended["ended"] == 2000, watch
    assert ended["longest"] < HANDSHAKE + 5, watch


class Closing(Fake):
    """A connection whose TLS close has begun: aiohttp has let go of its transport."""

    def __init__(self, name: str, used: bool, busy: bool, since: float) -> None:
        super().__init__(name, used, busy, since)
        self.transport = None


def test_at_the_bound_those_closing_go_first_and_an_aborted_one_is_not_chosen_again() -> None:
    evicted: list[int] = []
    pool = Pool(4, on_evict=evicted.append)
    closing = Closing("closing", used=True, busy=False, since=5)
    idle = [Fake(f"idle-{i}", used=True, busy=False, since=i) for i in range(3)]
    for conn in [closing, *idle]:
        pool.add(conn)  # type: ignore[arg-type]
    newcomer = Fake("new", used=False, busy=False, since=10)
    pool.add(newcomer)  # type: ignore[arg-type]
    assert [c.name for c in [closing, *idle] if c.aborted] == ["closing", "idle-0"]
    # Both still count until their sockets are gone; the next arrival closes three others.
    assert len(pool) == 5
    pool.add(Fake("newer", used=False, busy=False, since=11))  # type: ignore[arg-type]
    assert evicted == [2, 3]
    assert all(c.aborted for c in [*idle, newcomer])


@pytest.mark.timeout(120)
async def test_an_idle_client_that_never_reads_is_gone_soon_after_its_keep_alive(
    tmp_path: Path,
) -> None:
    """Its close_notify never comes: the TLS close waits 2 s for it, not the loop's 30 s."""
    server = start(tmp_path, *FLAGS, "--keepalive-seconds", "1")
    pid = server.proc.pid
    try:
        await admit(server)  # what the first connection opens for good is not counted
        await asyncio.sleep(2)
        before = open_fds(pid)
        sock = await handshake(server.port, server.client_context())
        opened = time.monotonic()
        assert open_fds(pid) > before
        while open_fds(pid) > before and time.monotonic() - opened < 30:
            await asyncio.sleep(0.1)
        took = time.monotonic() - opened
        sock.close()
        assert open_fds(pid) <= before
        assert took < 1 + 2 + 5, took  # the keep-alive, the shutdown's wait, a busy machine
    finally:
        server.stop()
