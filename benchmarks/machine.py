"""What a benchmark ran on and who spent the CPU: so that a ratio from one machine can be read
beside a ratio from another.

A ratio taken while the client itself burns a core says more about the client than the server:
the client's share of the machine is taken from the server under test and the baseline alike,
which pulls their ratio toward 1. Each benchmark therefore prints the machine, its own client's
CPU, the servers', everyone else's, and which of them limited the run.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

# More than this many cores of client CPU and the ratio is damped (the threshold).
CLIENT_LIMIT = 0.5
# A single event loop saturates near one core.
LOOP_SATURATED = 0.85
TICK = os.sysconf("SC_CLK_TCK")


def cores() -> int:
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def describe() -> str:
    """One line: cores, CPU model, kernel, Python, load average now."""
    return (
        f"machine: {cores()} cores, {cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load_average()}"
    )


def process_cpu(pid: int) -> float:
    """User and system CPU seconds a process has used (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu(children: bool) -> float:
    """This process's CPU seconds, or its finished children's (wrk, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values[:8]) - idle) / TICK  # guest time is already counted in user


@dataclass(frozen=True)
class Sample:
    """A snapshot of the counters; two of them make a Usage."""

    wall: float
    client: float
    servers: float
    busy: float

    @classmethod
    def take(cls, server_pids: list[int], children: bool = False) -> Sample:
        return cls(
            time.monotonic(),
            own_cpu(children),
            sum(process_cpu(pid) for pid in server_pids),
            machine_busy(),
        )


@dataclass(frozen=True)
class Usage:
    """CPU seconds over a stretch of wall time; added up over rounds."""

    seconds: float = 0.0
    client: float = 0.0
    servers: float = 0.0
    busy: float = 0.0

    @classmethod
    def between(cls, start: Sample, end: Sample) -> Usage:
        return cls(
            end.wall - start.wall,
            end.client - start.client,
            end.servers - start.servers,
            end.busy - start.busy,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.seconds + other.seconds,
            self.client + other.client,
            self.servers + other.servers,
            self.busy + other.busy,
        )

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds else 0.0

    @property
    def others(self) -> float:
        """Cores busy with neither the client nor the servers: other work on the machine."""
        return max(0.0, self.cores(self.busy - self.client - self.servers))

    def line(self, client: str, servers: str) -> str:
        return (
            f"CPU (cores busy on average): {client} {self.cores(self.client):.2f}, "
            f"{servers} {self.cores(self.servers):.2f}, everything else {self.others:.2f}, "
            f"machine {self.cores(self.busy):.2f} of {cores()}"
        )

    def bottleneck(self, *, event_loop: bool) -> str:
        """Which part limited the run, in words; `event_loop`: the server is one Python loop."""
        client = self.cores(self.client)
        if client > CLIENT_LIMIT:
            return (
                f"bottleneck: the client ({client:.2f} cores, more than {CLIENT_LIMIT}): "
                "it took CPU from what it measured, baseline and ours alike, so the "
                "comparison is DAMPED (a ratio pulled toward 1)"
            )
        if self.cores(self.busy) > 0.9 * cores():
            return (
                f"bottleneck: the machine (all {cores()} cores busy, {self.others:.2f} of them "
                "with other work): the servers were measured under contention"
            )
        if event_loop and self.cores(self.servers) > LOOP_SATURATED:
            return "bottleneck: the server (its event loop is saturated); the client kept up"
        return "bottleneck: none saturated: latency-bound (round trips, not CPU)"


def report(usage: Usage, *, client: str, servers: str, event_loop: bool) -> None:
    print(usage.line(client, servers))
    print(usage.bottleneck(event_loop=event_loop))
