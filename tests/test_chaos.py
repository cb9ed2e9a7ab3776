"""Faults injected into the real control plane and into the replicas, while Pods are created.

Two replicas behind a TCP balancer (as a Service is), the `ignore` overlay, and a stream of
opted-in Pods created through the API server every 0.3 s. After each fault, every Pod that was
created is injected or reported missed (a Warning Event and `audit`): none is lost silently.
Each test prints, with `-s`, how long the fault took and the longest wait between two injected
Pods, as the client creating them saw it (about 0.5 s when nothing is wrong).
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testing.kube.controlplane import SHARED_KUBE, ControlPlane, eventually
from testing.metrics import value
from testing.servers import WebhookProcess
from testing.support import free_port
from tests.test_missed import SA, STATUS, events, listed, namespace, start

pytestmark = pytest.mark.timeout(300)


class Balancer:
    """Each connection to the next replica that accepts, round robin, as kube-proxy would."""

    def __init__(self, backends: list[int]) -> None:
        self.port, self.backends, self.turn = free_port(), backends, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.turn += 1
        for step in range(len(self.backends)):
            port = self.backends[(self.turn + step) % len(self.backends)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@dataclass
class Fleet:
    plane: ControlPlane
    kubeconfig: Path
    folder: Path
    ports: list[int]
    replicas: list[WebhookProcess] = field(default_factory=list)

    def start(self, index: int) -> WebhookProcess:
        server = start(self.plane, self.kubeconfig, self.folder / str(index), self.ports[index])
        self.replicas[index] = server
        return server

    def leader(self) -> int:
        return (
            eventually(
                lambda: next((i + 1 for i, r in enumerate(self.replicas) if alive_leader(r)), None),
                timeout=60,
                what="a leader",
            )
            - 1
        )


def alive_leader(server: WebhookProcess) -> bool:
    try:
        return server.proc.poll() is None and value(server, "mlflow_webhook_leader") == 1
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    ports = [free_port(), free_port()]
    balancer = Balancer(ports)
    kubeconfig = control_plane.install(balancer.port, "overlays/ignore")
    made = Fleet(control_plane, kubeconfig, tmp_path_factory.mktemp("fleet"), ports, [])
    made.replicas = [start(control_plane, kubeconfig, made.folder / "0", ports[0])]
    made.replicas.append(start(control_plane, kubeconfig, made.folder / "1", ports[1]))
    yield made
    for server in made.replicas:
        server.stop()
    balancer.stop()


class Creator(threading.Thread):
    """Opted-in Pods, one every 0.3 s; what the API server created, and when its answer came."""

    def __init__(self, plane: ControlPlane, team: str) -> None:
        super().__init__(daemon=True)
        self.plane, self.team = plane, team
        self.created: dict[str, float] = {}
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            name = f"p{n}"
            body = {
                "metadata": {"name": name, "annotations": {"mlflow-webhook.io/inject": "true"}},
                "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
            }
            try:
                status, _ = self.plane.rest("POST", f"/api/v1/namespaces/{self.team}/pods", body)
            except OSError:
                status = 0
            if status == 201:
                self.created[name] = time.monotonic()
            else:
                self.refused += 1  # the API server was down: the client sees it and retries
            self.halt.wait(0.3)


def through(fleet: Fleet, team: str, fault: Callable[[], None]) -> float:
    """Run the fault while Pods are created; once every Pod created is accounted for, return
    the longest wait between two injected Pods."""
    plane = fleet.plane
    namespace(plane, team)
    eventually(lambda: plane.get("serviceaccount", SA, team), 60, "the ServiceAccount")
    creator = Creator(plane, team)
    creator.start()
    time.sleep(2)
    began = time.monotonic()
    fault()
    ended = time.monotonic()
    eventually(lambda: any(t > ended for t in creator.created.values()), 60, "a Pod after it")
    time.sleep(3)
    creator.halt.set()
    creator.join(40)
    injected, missed = {}, []
    for name, at in creator.created.items():
        found = plane.get("pod", name, team)
        assert found is not None, name
        if STATUS in found["metadata"].get("annotations", {}):
            injected[name] = at
        else:
            missed.append(name)
    for name in missed:
        eventually(lambda n=name: events(plane, team, n), 90, f"the Event for {name}")
    if missed:
        audited = {n for ns, n, _ in listed(plane) if ns == team}
        assert set(missed) <= audited, (missed, audited)
    times = sorted(injected.values())
    assert times and times[-1] > ended, creator.created
    recovery = max(b - a for a, b in itertools.pairwise(times))
    print(
        f"\n{team}: the fault took {ended - began:.1f} s; {len(creator.created)} Pods created,"
        f" {len(missed)} missed, {creator.refused} refused; at most {recovery:.1f} s between"
        " two injected Pods"
    )
    return recovery


def shared_kube(plane: ControlPlane, *args: str) -> None:
    done = subprocess.run(
        [str(SHARED_KUBE / args[0]), *args[1:]],
        env=plane._env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_api_server_killed_and_back(fleet: Fleet) -> None:
    through(
        fleet,
        "chaos-apiserver",
        lambda: shared_kube(fleet.plane, "restart", "kube-apiserver", "--kill", "--down", "3"),
    )


def test_etcd_frozen_then_killed_and_back(fleet: Fleet) -> None:
    def fault() -> None:
        shared_kube(fleet.plane, "pause", "etcd", "5")
        shared_kube(fleet.plane, "restart", "etcd", "--kill", "--down", "3")

    through(fleet, "chaos-etcd", fault)


def test_the_leader_sigkilled(fleet: Fleet) -> None:
    leader = fleet.leader()

    def fault() -> None:
        fleet.replicas[leader].proc.kill()
        fleet.replicas[leader].proc.wait(10)
        assert fleet.leader() != leader

    through(fleet, "chaos-leader", fault)
    fleet.start(leader)


def test_one_replica_restarted_while_the_other_serves(fleet: Fleet) -> None:
    def fault() -> None:
        assert fleet.replicas[1].terminate() == 0
        fleet.start(1)

    through(fleet, "chaos-restart", fault)
