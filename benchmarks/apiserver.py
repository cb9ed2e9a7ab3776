"""Pod CREATE latency through a real kube-apiserver: what a webhook adds, as a user feels it.

    .venv/bin/python -m benchmarks.apiserver [--clients 1 8] [--rounds 5] [--pods 200]

Starts the control plane in ../shared/kube, and for each number of concurrent clients runs
rounds that rotate among four setups (benchmarks/webhooks.py): no webhook called, a floor
webhook that allows (bare aiohttp over TLS), the floor answering with our patch (made once, then
replayed: benchmarks/replay.py), and ours (`mlflow-webhook serve` with its cluster, the
namespace opted in, the Pods annotated). Every Pod of the last two is injected, which is
checked. Each round creates `--pods` Pods per setup, then deletes them all, so etcd holds the
same for every setup.

Reports, per setup, p50 and p99 of the create as the client saw it, and what each step adds:
calling any webhook (the floor over none), the API server applying our patch (the replay over
the floor), our webhook's own work (ours over the replay), and ours over the floor, their sum.
Beside them, the API server's own `apiserver_admission_webhook_admission_duration_seconds` for
each webhook, from the buckets' deltas over the run. Then the machine, where the CPU went, and
whether the client limited the run. docs/benchmark-apiserver.md says how to read it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from benchmarks import machine
from benchmarks.creates import NAME, Creator, Phase, quantile
from benchmarks.histograms import EMPTY, Histogram, webhook_histogram
from benchmarks.webhooks import FLOORS, NAMESPACES, OURS, SETUPS, Cluster, running

# A training Pod as a job controller would send it, opted in; the same body in every setup.
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": NAME,
        "labels": {"app.kubernetes.io/name": "trainer", "job-name": "bench"},
        "annotations": {"mlflow-webhook.io/inject": "true"},
    },
    "spec": {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
                "command": ["python", "train.py"],
                "env": [{"name": "EPOCHS", "value": "10"}, {"name": "BATCH", "value": "64"}],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
            }
        ],
    },
}
INJECTED = b'"MLFLOW_TRACKING_URI"'  # in the created Pod only if our webhook injected it
LABELS = {
    "none": "no webhook called",
    "floor": "floor webhook (allows)",
    "replay": "floor answering with our patch",
    "ours": "ours",
}
WEBHOOKS = {**FLOORS, "ours": OURS}
# What one setup adds over another: (setup, base, in words), as the report lists them.
STEPS = (
    ("floor", "none", "calling any webhook"),
    ("replay", "floor", "the API server applying our patch"),
    ("ours", "replay", "our webhook's own work"),
    ("ours", "floor", "ours over the floor"),
)
INJECTING = ("replay", "ours")


@dataclass
class Level:
    """One number of concurrent clients: each setup's creates, round by round."""

    clients: int
    rounds: dict[str, list[Phase]] = field(default_factory=lambda: {s: [] for s in SETUPS})
    webhook_cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SETUPS, 0.0))
    histograms: dict[str, Histogram] = field(default_factory=dict)
    usage: machine.Usage = field(default_factory=machine.Usage)

    def pooled(self, setup: str) -> Phase:
        total = Phase()
        for phase in self.rounds[setup]:
            total.add(phase)
        return total


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pods", type=int, default=200, help="creates per setup per round")
    args = parser.parse_args()
    print(machine.describe())
    print(
        f"{args.pods} Pod creates per setup per round, {args.rounds} rounds rotating among "
        f"{', '.join(LABELS.values())}; every Pod deleted after each round"
    )
    levels = []
    with running() as cluster:
        print(f"control plane: {cluster.plane.url}; servers ready")
        for clients in args.clients:
            levels.append(run_level(cluster, clients, args))
    print()
    summary(levels)
    print(f"\nload average after: {machine.load_average()}")


def run_level(cluster: Cluster, clients: int, args: argparse.Namespace) -> Level:
    print(f"\n{clients} concurrent client(s)")
    creator = cluster.creator(clients)
    level = Level(clients)
    pids = cluster.pids()
    try:
        for setup in SETUPS:  # warm up: connections, the webhooks' clients, caches
            check(setup, creator.create(NAMESPACES[setup], POD, names("warm", setup, 20), INJECTED))
        clean(creator)
        before = scrape(creator)
        for round_ in range(args.rounds):
            turn = round_ % len(SETUPS)
            order = SETUPS[turn:] + SETUPS[:turn]
            line = []
            for setup in order:
                batch = names(f"r{round_}", setup, args.pods)
                line.append(measure(level, creator, pids, setup, batch))
            clean(creator)
            print(f"  round {round_ + 1}: p50/p99 ms  " + "  ".join(line))
        after = scrape(creator)
        level.histograms = {s: after[s] - before.get(s, EMPTY) for s in WEBHOOKS}
    finally:
        creator.close()
    report(level)
    return level


def measure(
    level: Level, creator: Creator, pids: dict[str, int], setup: str, batch: list[str]
) -> str:
    """One setup's creates in a round, with the CPU spent meanwhile; its p50/p99 in words."""
    start = machine.Sample.take(list(pids.values()))
    webhook = machine.process_cpu(pids[setup]) if setup in pids else 0.0
    phase = creator.create(NAMESPACES[setup], POD, batch, INJECTED)
    level.usage += machine.Usage.between(start, machine.Sample.take(list(pids.values())))
    if setup in pids:
        level.webhook_cpu[setup] += machine.process_cpu(pids[setup]) - webhook
    check(setup, phase)
    level.rounds[setup].append(phase)
    p50, p99 = (quantile(phase.latencies, q) * 1e3 for q in (0.5, 0.99))
    return f"{setup} {p50:.1f}/{p99:.1f}"


def names(prefix: str, setup: str, count: int) -> list[str]:
    return [f"{prefix}-{setup}-{i:05d}" for i in range(count)]


def check(setup: str, phase: Phase) -> None:
    """Every create succeeded, and only the setups with our patch injected, each one: else the
    figures mean nothing."""
    if phase.errors:
        raise SystemExit(f"{setup}: {len(phase.errors)} creates failed, first: {phase.errors[0]}")
    expected = len(phase.latencies) if setup in INJECTING else 0
    if phase.marked != expected:
        raise SystemExit(f"{setup}: {phase.marked} of {len(phase.latencies)} Pods injected")


def clean(creator: Creator) -> None:
    """Every Pod gone, so each round starts from the same etcd contents."""
    for namespace in NAMESPACES.values():
        creator.delete_all(namespace)
    for namespace in NAMESPACES.values():
        listed = creator.get(f"/api/v1/namespaces/{namespace}/pods?limit=1")
        if b'"items":[]' not in listed.replace(b" ", b""):
            raise SystemExit(f"Pods left in {namespace} after deleting them all")


def scrape(creator: Creator) -> dict[str, Histogram]:
    text = creator.get("/metrics").decode()
    return {setup: webhook_histogram(text, name) for setup, name in WEBHOOKS.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def report(level: Level) -> None:
    print("| setup | creates | creates/s | p50 ms | p99 ms | webhook CPU µs/create |")
    print("|---|---|---|---|---|---|")
    for setup in SETUPS:
        pooled = level.pooled(setup)
        cpu = level.webhook_cpu[setup] / len(pooled.latencies) * 1e6 if setup != "none" else 0
        print(
            f"| {LABELS[setup]} | {len(pooled.latencies)} | {pooled.rate:.0f} | "
            f"{ms(quantile(pooled.latencies, 0.5))} | {ms(quantile(pooled.latencies, 0.99))} | "
            + (f"{cpu:.0f} |" if setup != "none" else "- |")
        )
    for setup in WEBHOOKS:
        busy = level.webhook_cpu[setup] / level.pooled(setup).seconds
        if busy > machine.LOOP_SATURATED:
            print(f"  the {setup} webhook's event loop was saturated: {busy:.2f} cores")
    for setup, base, what in STEPS:
        print(added(level, setup, base, what))
    print("the API server's apiserver_admission_webhook_admission_duration_seconds (deltas):")
    for setup in WEBHOOKS:
        print("  " + histogram_line(setup, level.histograms[setup]))
    machine.report(
        level.usage, client="client", servers="control plane + webhooks", event_loop=False
    )


def added(level: Level, setup: str, base: str, what: str) -> str:
    """What `setup` adds over `base`, pooled, with the spread of the per-round differences."""
    ours, theirs = level.pooled(setup).latencies, level.pooled(base).latencies
    per_round = [
        quantile(a.latencies, 0.5) - quantile(b.latencies, 0.5)
        for a, b in zip(level.rounds[setup], level.rounds[base], strict=True)
    ]
    return (
        f"{what}: p50 {delta(ours, theirs, 0.5)} ms, p99 {delta(ours, theirs, 0.99)} ms "
        f"(p50 per round: {', '.join(f'{d * 1e3:+.1f}' for d in per_round)}; "
        f"median {statistics.median(per_round) * 1e3:+.1f})"
    )


def delta(ours: list[float], theirs: list[float], q: float) -> str:
    return f"{(quantile(ours, q) - quantile(theirs, q)) * 1e3:+.1f}"


def histogram_line(setup: str, histogram: Histogram) -> str:
    if not histogram.count:
        return f"{setup}: no calls recorded"
    p50, p99 = (histogram.quantile(q) for q in (0.5, 0.99))
    low, high = histogram.bucket_of(0.99)
    return (
        f"{setup:6} ({WEBHOOKS[setup]}): {histogram.count:.0f} calls, mean {ms(histogram.mean)} "
        f"ms, p50 {ms(p50)} ms, p99 {ms(p99)} ms (p99 lies in the bucket "
        f"{ms(low)}-{ms(high)} ms; quantiles are interpolated within buckets, the mean is exact)"
    )


def summary(levels: list[Level]) -> None:
    """The table a platform team reads first: p50 / p99 ms, one column per client count."""
    heads = [f"{level.clients} client{'s' if level.clients > 1 else ''}" for level in levels]
    print("| setup | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(levels))

    def cell(level: Level, setup: str) -> str:
        latencies = level.pooled(setup).latencies
        return f"{ms(quantile(latencies, 0.5))} / {ms(quantile(latencies, 0.99))}"

    for setup in SETUPS:
        print(f"| {LABELS[setup]} | " + " | ".join(cell(lv, setup) for lv in levels) + " |")

    def over(level: Level, setup: str, base: str) -> str:
        ours, theirs = level.pooled(setup).latencies, level.pooled(base).latencies
        return f"{delta(ours, theirs, 0.5)} / {delta(ours, theirs, 0.99)}"

    for setup, base, what in STEPS[1:]:
        print(f"| {what} | " + " | ".join(over(lv, setup, base) for lv in levels) + " |")

    def api(level: Level) -> str:
        histogram = level.histograms["ours"]
        return f"{ms(histogram.quantile(0.5))} / {ms(histogram.quantile(0.99))}"

    print("| ours, as the API server timed it | " + " | ".join(api(lv) for lv in levels) + " |")


if __name__ == "__main__":
    main()
