"""A Pod-creating client that costs the machine little: one keep-alive HTTPS connection per
client thread, the body serialized once with only its name replaced, each response checked by a
byte search rather than parsed.

The `kubernetes` client spends milliseconds of Python per call (model objects, serialization);
on a two-core machine that is taken from the API server and the webhook and would blur what is
measured. A thread waits on its socket without the GIL, so a few of them cost little more than
one.
"""

from __future__ import annotations

import http.client
import itertools
import ssl
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

NAME = "@NAME@"


@dataclass
class Phase:
    """What one run of creates gave: each latency in seconds, and what went wrong."""

    latencies: list[float] = field(default_factory=list)
    marked: int = 0  # responses that carry the marker (the injected variable)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Phase) -> None:
        self.latencies += other.latencies
        self.marked += other.marked
        self.errors += other.errors
        self.seconds += other.seconds

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q < 1) by linear interpolation between the closest ranks."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


class Creator:
    """`clients` connections to the API server as its admin, each used by one thread at a time."""

    def __init__(self, netloc: str, context: ssl.SSLContext, clients: int) -> None:
        host, port = netloc.rsplit(":", 1)
        self.connections = [
            http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
            for _ in range(clients)
        ]

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    def create(
        self, namespace: str, pod: dict[str, Any], names: Sequence[str], marker: bytes
    ) -> Phase:
        """POST one Pod per name, the connections' threads sharing the list."""
        head, tail = orjson.dumps(pod).split(NAME.encode())
        path = f"/api/v1/namespaces/{namespace}/pods"
        taken = itertools.count()  # next() on it is atomic under the GIL
        parts = [Phase() for _ in self.connections]

        def work(connection: http.client.HTTPSConnection, phase: Phase) -> None:
            while (i := next(taken)) < len(names):
                body = head + names[i].encode() + tail
                started = time.perf_counter()
                try:
                    connection.request("POST", path, body, HEADERS)
                    response = connection.getresponse()
                    raw = response.read()
                except (OSError, http.client.HTTPException) as error:
                    connection.close()  # the next request opens a fresh one
                    phase.errors.append(f"{names[i]}: {error!r}")
                    continue
                phase.latencies.append(time.perf_counter() - started)
                if response.status != 201:
                    phase.errors.append(f"{names[i]}: {response.status} {raw[:300]!r}")
                elif marker in raw:
                    phase.marked += 1

        threads = [
            threading.Thread(target=work, args=pair)
            for pair in zip(self.connections, parts, strict=True)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = Phase(seconds=time.monotonic() - started)
        for part in parts:
            total.add(part)
        return total

    def get(self, path: str) -> bytes:
        """One GET on the first connection (between phases: /metrics, a list)."""
        connection = self.connections[0]
        connection.request("GET", path, headers={"Accept": "*/*"})
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {raw[:300]!r}")
        return raw

    def delete_all(self, namespace: str) -> None:
        """Every Pod in the namespace deleted at once (never bound, they go without grace)."""
        connection = self.connections[0]
        connection.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", headers=HEADERS)
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"deleting Pods in {namespace}: {response.status} {raw[:300]!r}")


HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
