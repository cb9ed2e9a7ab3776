"""Throughput, latency and memory of `mlflow-webhook serve` against a bare aiohttp floor.

    .venv/bin/python -m benchmarks.load [--seconds 3] [--rounds 10] [--connections 16]
        [--threads 1] [--compare floor|stack|namespace-settings|run-context] [--against REV]

Needs `wrk` (Debian: apt-get install wrk). Reports ratios against the floor measured in the same
run, alternating servers round by round so that drift on a noisy machine hits both alike, as
medians over the rounds (at least five for a figure worth quoting).

The independent `wrk` setup (two client threads, 16 keep-alive TLS connections, five alternating
5-second rounds of the three-Pod mix in mix.lua) is

    .venv/bin/python -m benchmarks.load --threads 2 --connections 16 --rounds 5 --seconds 5

It prints the machine (cores, CPU model, load average before and after) and where the CPU went:
wrk's own, the server's, everything else's. When wrk used more than half a core, it says the
ratio is damped: the client took CPU from both servers alike.

`--compare namespace-settings` measures instead what a namespace's own settings cost: the
webhook with a real control plane (../shared/kube), the request namespace carrying its own
tracking URI and role, `--namespace-settings off` against `on`. `--compare run-context`
measures what the run context costs: `--run-context off` against `on`. `--compare stack`
measures our HTTP stack on its own against the floor: `serve` whose /mutate only reads each
review and allows it (benchmarks/stack.py), so what `ours` costs beyond it is the decision.
`--against REV` runs another commit's `serve` (its source from `git archive`, this environment's
packages) against this checkout's (its tracked files as they are now, copied the same way), the
way to measure a change: before and after, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks import bodies, machine
from testing.servers import serve_command
from testing.support import ROLE_ARN, TRACKING_ARN, free_port, settings
from webhook.core.decisions import admit
from webhook.core.reviews import parse
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, ensure_self_signed

HERE = Path(__file__).parent


class Server:
    """`kind` floor, replay or stack (see their modules), else `serve`: this checkout's, or the
    one at `tree` (another commit's source, with this environment's packages). `under`: a
    command it runs under (valgrind's), with `env` added to its environment, and a startup that
    may take `ready_seconds`."""

    def __init__(
        self,
        kind: str,
        cert_dir: Path,
        log: Path,
        *extra: str,
        port: int | None = None,
        tree: Path | None = None,
        under: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ready_seconds: float = 60,
    ) -> None:
        self.port = port or free_port()
        if kind not in ("floor", "replay"):
            flags = ("--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN, *extra)
            command = serve_command(cert_dir, self.port, *flags)
            if kind == "stack":  # serve, its /mutate answering as the floor does
                command[1:3] = ["-m", "benchmarks.stack"]
        elif kind == "replay":  # run from the checkout's root, as the benchmarks are
            command = [sys.executable, "-m", "benchmarks.replay", str(cert_dir), str(self.port)]
        else:
            command = [sys.executable, str(HERE / "floor.py"), str(cert_dir), str(self.port)]
        env = {**os.environ, **({"PYTHONPATH": str(tree)} if tree else {}), **(env or {})}
        self.proc = subprocess.Popen(
            [*under, *command], stdout=subprocess.DEVNULL, stderr=log.open("ab"), cwd=tree, env=env
        )
        self._wait(cert_dir, ready_seconds)

    def _wait(self, cert_dir: Path, seconds: float) -> None:
        import ssl

        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was ready")
            try:
                url = f"https://localhost:{self.port}/readyz"
                urllib.request.urlopen(url, context=context, timeout=1)
                return  # ready: startup's work (the cluster's first lists) is done
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return  # the floor, which has no readiness to wait for
                time.sleep(0.05)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def answered(self, cert_dir: Path) -> int:
        """Admissions answered so far, from the server's own metrics."""
        import ssl

        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        url = f"https://localhost:{self.port}/metrics"
        text = urllib.request.urlopen(url, context=context).read().decode()
        return int(
            sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("mlflow_webhook_admissions_total{")
            )
        )

    def loop_lag_max(self, cert_dir: Path) -> float | None:
        """The event loop's longest lag so far, from the server's own metrics (None: no metric)."""
        import ssl

        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        url = f"https://localhost:{self.port}/metrics"
        try:
            text = urllib.request.urlopen(url, context=context).read().decode()
        except urllib.error.HTTPError:
            return None  # the floor has no metrics
        name = "mlflow_webhook_event_loop_lag_max_seconds "
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))

    def cpu_seconds(self) -> float:
        """User and system CPU the server has used: steadier than throughput on a noisy host."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Its measurement is taken: a slow shutdown must not end the run.
            print(f"  (server {self.proc.pid} still stopping after 30 s; killed)")
            self.proc.kill()
            self.proc.wait()


def wrk(
    port: int, files: list[Path], *, seconds: float, connections: int, threads: int = 1
) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{round(seconds)}s",
        "--latency",
        "-s",
        str(HERE / "mix.lua"),
        f"https://localhost:{port}/mutate",
        "--",
        *map(str, files),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def micro() -> dict[str, float]:
    """Microseconds per request with no HTTP: parse, decide and patch, write the response."""
    s = settings(run_context=True)  # as `serve` has it by default
    result = {}
    for name, build in bodies.MIX.items():
        raw = orjson.dumps(build())

        def once(raw: bytes = raw) -> bytes:
            return orjson.dumps(admit(parse(orjson.loads(raw)), s).response)

        number = 2000
        best = min(timeit.repeat(once, number=number, repeat=5))
        result[name] = best / number * 1e6
    return result


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk's client threads")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--against", metavar="REV", help="another commit's serve as the base")
    parser.add_argument(
        "--compare",
        choices=("floor", "stack", "namespace-settings", "run-context"),
        default="floor",
    )
    args = parser.parse_args()
    print(machine.describe())
    try:
        if args.against:
            with checkout(args.against) as tree, checkout(WORKING_TREE) as own:
                compare(args, {args.against: (), "ours": ()}, {args.against: tree, "ours": own})
        elif args.compare == "namespace-settings":
            from benchmarks.tenants import Tenants

            with Tenants() as tenants:
                compare(args, tenants.servers)
        elif args.compare == "stack":
            compare(args, {"floor": (), "stack": ()})
        elif args.compare == "run-context":
            compare(args, {"off": ("--run-context", "off"), "on": ("--run-context", "on")})
        else:
            compare(args, {"floor": (), "ours": ()})
    finally:
        print(f"\nload average after: {machine.load_average()}")


class Rounds:
    """Each server's wrk results round by round, and the CPU spent while it was measured."""

    def __init__(self, args: argparse.Namespace, work: Path, files: list[Path]) -> None:
        self.args, self.work, self.files = args, work, files
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.usage: dict[str, machine.Usage] = {}

    def wrk(self, server: Server, seconds: float) -> dict[str, Any]:
        args = self.args
        return wrk(
            server.port,
            self.files,
            seconds=seconds,
            connections=args.connections,
            threads=args.threads,
        )

    def measure(self, kind: str, server: Server) -> None:
        pids = [server.proc.pid]
        start = machine.Sample.take(pids, children=True)  # wrk is a child, counted once waited
        result = self.wrk(server, self.args.seconds)
        usage = machine.Usage.between(start, machine.Sample.take(pids, children=True))
        self.usage[kind] = self.usage.get(kind, machine.Usage()) + usage
        result["cpu_us"] = usage.servers / result["requests"] * 1e6
        result["wrk_cores"] = usage.cores(usage.client)
        result["lag_max"] = server.loop_lag_max(self.work)
        self.runs.setdefault(kind, []).append(result)
        errors = result["errors"] + result["non2xx"]
        lag = result["lag_max"]
        print(
            f"  {kind:5}  {result['rps']:8.0f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
            f"p99 {result['p99_us'] / 1000:6.2f} ms  {result['cpu_us']:6.1f} CPU us/req  "
            f"wrk {result['wrk_cores']:.2f} cores  errors {errors}"
            + ("" if lag is None else f"  loop lag max {lag * 1000:.1f} ms")
        )

    def median(self, kind: str, key: str) -> float:
        return statistics.median(r[key] for r in self.runs[kind])

    def paired(self, base: str, ours: str, key: str, invert: bool = False) -> list[float]:
        """Round by round, ours over the base (or the base over ours)."""
        pairs = zip(self.runs[ours], self.runs[base], strict=True)
        return [(f[key] / o[key]) if invert else (o[key] / f[key]) for o, f in pairs]


WORKING_TREE = ""


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The source tree at `rev`, in a folder of its own while the block runs. `WORKING_TREE`:
    this checkout's tracked files as they are now, uncommitted changes included.

    Both sides of `--against` run from such a folder: run from the checkout itself, the same
    code counted 1-2% apart from a copy under `benchmarks.cost`, as much as the changes it
    measures."""
    if rev == WORKING_TREE:
        stash = subprocess.run(
            ["git", "stash", "create"], cwd=HERE.parent, capture_output=True, text=True
        )
        rev = stash.stdout.strip() or "HEAD"  # nothing uncommitted: the commit itself
    with tempfile.TemporaryDirectory(prefix="mlflow-webhook-rev-") as folder:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=HERE.parent, capture_output=True
        )
        if archive.returncode:
            raise SystemExit(f"--against {rev}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def compare(
    args: argparse.Namespace,
    servers: dict[str, tuple[str, ...]],
    trees: dict[str, Path] | None = None,
) -> None:
    """Each server in turn, round by round: the first is the baseline, the second ours. A
    server named in `trees` runs from that source tree."""
    base, ours = servers

    work = Path(tempfile.mkdtemp(prefix="mlflow-webhook-bench-"))
    ensure_self_signed(work, list(LOCAL_NAMES), list(LOCAL_IPS))
    files = bodies.write(work)
    log = work / "servers.log"
    print(
        f"mix: {', '.join(bodies.MIX)}; wrk with {args.threads} thread(s), {args.connections} "
        f"keep-alive TLS connections; {args.rounds} rounds of {args.seconds:g}s each, {base} and "
        f"{ours} alternating (ABBA), both running throughout"
    )
    if args.rounds < 5:
        print(f"  (only {args.rounds} rounds: medians of fewer than five are not worth quoting)")

    rounds = Rounds(args, work, files)
    # Both stay up; each round runs them in turn, in the order ABBA, so drift on a noisy
    # machine falls on both alike and rounds can be short and many.
    trees = trees or {}
    running = {
        kind: Server(kind, work, log, *servers[kind], tree=trees.get(kind)) for kind in (base, ours)
    }
    try:
        for server in running.values():
            rounds.wrk(server, 2)  # warm up
        for round_ in range(args.rounds):
            for kind in (base, ours) if round_ % 2 == 0 else (ours, base):
                rounds.measure(kind, running[kind])
    finally:
        for server in running.values():
            server.stop()
    summarize(rounds, base, ours)
    if ours == "ours":
        print("\nmicroseconds per request without HTTP (parse, mutate, respond):")
        for name, us in micro().items():
            print(f"  {name:16} {us:8.1f} us")
        memory(args, work, files, log, rate=rounds.median(ours, "rps"))


def summarize(rounds: Rounds, base: str, ours: str) -> None:
    def listed(values: list[float], digits: int) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in values)

    print(f"\nresults (medians over {len(rounds.runs[base])} rounds)")
    print("| server | req/s | p50 ms | p99 ms | wrk cores |\n|---|---|---|---|---|")
    for kind in (base, ours):
        print(
            f"| {kind} | {rounds.median(kind, 'rps'):.0f} | "
            f"{rounds.median(kind, 'p50_us') / 1000:.2f} | "
            f"{rounds.median(kind, 'p99_us') / 1000:.2f} | "
            f"{rounds.median(kind, 'wrk_cores'):.2f} |"
        )
    ratios = rounds.paired(base, ours, "rps")
    print(
        f"\nthroughput ratio {ours}/{base}: {statistics.median(ratios):.3f} "
        f"(per round: {listed(ratios, 3)})"
    )
    tail = rounds.median(ours, "p99_us") / rounds.median(base, "p99_us")
    print(
        f"p99 ratio {ours}/{base}: {tail:.2f} "
        f"(per round: {listed(rounds.paired(base, ours, 'p99_us'), 2)})"
    )
    wrk_cores = max(rounds.usage[kind].cores(rounds.usage[kind].client) for kind in (base, ours))
    if wrk_cores > machine.CLIENT_LIMIT:
        print(
            f"  these ratios are DAMPED: wrk used {wrk_cores:.2f} cores (more than "
            f"{machine.CLIENT_LIMIT}), taken from both servers alike"
        )
    lags = [r["lag_max"] * 1000 for r in rounds.runs[ours] if r["lag_max"] is not None]
    if lags:
        print(f"{ours}'s longest event-loop lag: {max(lags):.1f} ms")
    cpu = rounds.paired(base, ours, "cpu_us", invert=True)
    print(
        f"CPU per request ratio {base}/{ours}: {statistics.median(cpu):.3f} "
        f"(per round: {listed(cpu, 3)})"
    )
    for kind in (base, ours):
        print(f"\nwhile {kind} was measured:")
        machine.report(rounds.usage[kind], client="wrk", servers=kind, event_loop=True)


def memory(
    args: argparse.Namespace, work: Path, files: list[Path], log: Path, *, rate: float
) -> None:
    """RSS once 1k requests are answered, then again past --memory-requests."""
    server = Server("ours", work, log)
    try:
        points = []
        for target in (1_000, args.memory_requests):
            while (done := server.answered(work)) < target:
                seconds = max(1, round((target - done) / rate))
                wrk(server.port, files, seconds=seconds, connections=args.connections)
            points.append((done, server.rss_mib()))
    finally:
        server.stop()
    (n1, rss1), (n2, rss2) = points
    print(
        f"\nRSS after {n1} requests: {rss1:.1f} MiB; after {n2}: {rss2:.1f} MiB; "
        f"ratio {rss2 / rss1:.3f}"
    )


if __name__ == "__main__":
    main()
