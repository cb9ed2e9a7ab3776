"""What one request costs each server, counted exactly: instructions, cache misses and
mispredicted branches, as callgrind simulates them, and the cycles they add up to.

    .venv/bin/python -m benchmarks.cost [--requests 300] [--against REV]

Needs valgrind. Each server runs under `valgrind --tool=callgrind --cache-sim=yes
--branch-sim=yes` with PYTHONHASHSEED=0: the floor, our HTTP stack alone (`benchmarks.stack`)
and ours by default; with `--against REV`, that commit's `serve` and this checkout's, each from
a copy of its tracked files (`load.checkout`). One
keep-alive TLS connection posts the mix (minimal, wide, kubeflow-worker) one request at a time.
The counters are zeroed before a batch and dumped after it, for a batch of `--requests` and one
of twice as many: their difference, over `--requests`, is one request's cost, with startup, the
dump and the client's pauses left out.

Unlike the timings of `benchmarks.load`, these figures do not move with what else the machine
runs, but two runs of one commit still differ by up to about 1%: the log writer and the
loop-lag timer wake by the clock, and under valgrind a request takes a tenth of a second. A
change smaller than that needs `benchmarks.handlers --instructions`, which counts the handler
alone, in process, exactly. They are a model of one x86 core:
estimated cycles are instructions + 10 * (L1 misses + mispredicted branches) + 100 * LL
misses, the weights KCachegrind uses. And one request at a time shows no effect of concurrency
(what an event loop saves when one turn serves many connections): that is `benchmarks.load`'s.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import bodies, machine
from benchmarks.load import WORKING_TREE, Server, checkout
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, ensure_self_signed

# KCachegrind's estimate of cycles from callgrind's simulated events.
L1_MISS = BRANCH_MISS = 10
LL_MISS = 100
WARM_UP = 30


@dataclass(frozen=True)
class Cost:
    """Callgrind's events for one request."""

    instructions: float
    l1_misses: float
    ll_misses: float
    branch_misses: float

    @property
    def cycles(self) -> float:
        return (
            self.instructions
            + L1_MISS * self.l1_misses
            + BRANCH_MISS * self.branch_misses
            + LL_MISS * self.ll_misses
        )

    @classmethod
    def of(cls, events: dict[str, int], requests: int) -> Cost:
        def total(*names: str) -> float:
            # A count that barely moves (LL misses) can come out below zero: noise, shown as 0.
            return max(0, sum(events.get(name, 0) for name in names)) / requests

        return cls(
            total("Ir"),
            total("I1mr", "D1mr", "D1mw"),
            total("ILmr", "DLmr", "DLmw"),
            total("Bcm", "Bim"),
        )


def summary(dump: str) -> dict[str, int]:
    """A callgrind dump's totals, by event name."""
    lines = dump.splitlines()
    [names] = [line.split()[1:] for line in lines if line.startswith("events:")]
    [values] = [line.split()[1:] for line in lines if line.startswith("summary:")]
    return dict(zip(names, map(int, values), strict=True))


def difference(small: dict[str, int], large: dict[str, int]) -> dict[str, int]:
    return {name: large[name] - small.get(name, 0) for name in large}


class Client:
    """One keep-alive TLS connection posting the mix in turn, as the API server does."""

    def __init__(self, port: int, cert_dir: Path, mix: list[bytes]) -> None:
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        self.connection = http.client.HTTPSConnection("localhost", port, context=context)
        self.mix, self.sent = mix, 0

    def post(self, count: int) -> None:
        for _ in range(count):
            body = self.mix[self.sent % len(self.mix)]
            self.connection.request(
                "POST", "/mutate?timeout=5s", body, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
            answer = response.read()
            if response.status != 200 or b'"allowed":true' not in answer.replace(b" ", b""):
                raise RuntimeError(f"request {self.sent}: {response.status} {answer[:200]!r}")
            self.sent += 1


def measure(server: Server, work: Path, mix: list[bytes], requests: int) -> Cost:
    """One request's cost: batches of `requests` and of twice as many, zeroed before and dumped
    after, their difference."""
    client = Client(server.port, work, mix)
    client.post(WARM_UP)  # every path and cache of the handler run once first
    pid = str(server.proc.pid)
    found = []
    for number, count in enumerate((requests, 2 * requests), start=1):
        _control("--zero", pid)
        client.post(count)
        _control("--dump", pid)
        found.append(summary(_dump(work, pid, number).read_text()))
    return Cost.of(difference(*found), requests)


def _control(flag: str, pid: str) -> None:
    subprocess.run(["callgrind_control", flag, pid], check=True, capture_output=True)


def _dump(work: Path, pid: str, number: int) -> Path:
    """The process's `number`th dump (callgrind numbers them from 1), once written whole."""
    path = work / f"callgrind.{pid}.{number}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and "\ntotals:" in (text := path.read_text()) and "summary:" in text:
            return path
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump {number} for {pid}")


def servers(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, Path | None, str]]:
    """(label, source tree or None for this checkout, kind) of each server, the baseline first."""
    if args.against:
        with checkout(args.against) as tree, checkout(WORKING_TREE) as own:
            yield args.against, tree, "ours"
            yield "ours", own, "ours"
        return
    yield "floor", None, "floor"
    yield "stack", None, "stack"
    yield "ours", None, "ours"


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--against", metavar="REV", help="another commit's serve as the base")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (Debian: apt-get install valgrind)")
    print(machine.describe())
    print(
        f"mix: {', '.join(bodies.MIX)}; one keep-alive TLS connection, one request at a time; "
        f"batches of {args.requests} and {2 * args.requests} requests under callgrind, "
        "their difference"
    )
    with tempfile.TemporaryDirectory(prefix="mlflow-webhook-cost-") as folder:
        try:
            costs = counted(args, Path(folder))
        except RuntimeError:
            # The folder goes with the run: what the servers said goes to the screen first.
            log = Path(folder) / "servers.log"
            if log.exists():
                sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
    report(costs)


def counted(args: argparse.Namespace, work: Path) -> dict[str, Cost]:
    """Each server's cost, counted in turn; its dumps (a few MB each) in `work`."""
    ensure_self_signed(work, list(LOCAL_NAMES), list(LOCAL_IPS))
    mix = [path.read_bytes() for path in bodies.write(work)]
    under = (
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        "--branch-sim=yes",
        f"--callgrind-out-file={work}/callgrind.%p",
    )
    costs: dict[str, Cost] = {}
    for label, tree, kind in servers(args, work):
        server = Server(
            kind,
            work,
            work / "servers.log",
            tree=tree,
            under=under,
            env={"PYTHONHASHSEED": "0"},
            ready_seconds=300,
        )
        try:
            costs[label] = measure(server, work, mix, args.requests)
        finally:
            server.stop()
        print(f"  {label:10} {costs[label].instructions:>12,.0f} instructions a request")
    return costs


def report(costs: dict[str, Cost]) -> None:
    base = next(iter(costs))
    print(
        f"\none request, on average over the mix\n"
        f"| server | instructions | L1 misses | LL misses | mispredicted branches "
        f"| estimated cycles | {base}/server |\n|---|---|---|---|---|---|---|"
    )
    for label, cost in costs.items():
        print(
            f"| {label} | {cost.instructions:,.0f} | {cost.l1_misses:,.0f} | "
            f"{cost.ll_misses:,.0f} | {cost.branch_misses:,.0f} | {cost.cycles:,.0f} | "
            f"{costs[base].cycles / cost.cycles:.3f} |"
        )


if __name__ == "__main__":
    main()
