"""What the leader costs as the cluster grows, on a real control plane (../shared/kube).

    .venv/bin/python -m benchmarks.scale [--namespaces 1000] [--opted 8000] [--plain 24000]
        [--missed 1000] [--patches 8000]

One real `mlflow-webhook serve` replica leads, as its own ServiceAccount with the manifests'
RBAC. Everything is made through the API server, in parallel, as controllers would:
- N opted-in namespaces: the time until every one has its ServiceAccount;
- Pods of three kinds, each added in its own step so that its cost is a marginal between two
  sizes: Pods that never opt in (half in unlabelled namespaces, half in opted-in ones, nothing
  asking), opted-in Pods as the webhook leaves them (injected, with their status annotation),
  and missed Pods (opted in, never injected: each gets its Event);
- the status of many Pods patched, as kubelets do all day: the leader's CPU per watch event.

After each step the leader's RSS is read twice: once it has followed the step's events (a
missed "sentinel" Pod, made last, is in its gauge), and from a new leader that has just listed
everything (after a restart or a failover); the peak (VmHWM) of that one covers the list. The
webhook configuration admits nothing here, so admission's memory is not counted: the Pods carry
what the webhook would have written. The leader's own first list, and what the API server sends
for it with and without a label selector, are measured from this process too.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client, config

from benchmarks.podwatch import OPT_IN, in_parallel, injected, pod, rss_mib
from testing.kube.controlplane import ControlPlane, eventually, replica
from testing.metrics import scrape
from testing.servers import WebhookProcess
from testing.support import ROLE_ARN, TRACKING_ARN, free_port
from webhook.core.missed import ACTIVE_PODS
from webhook.kube.watches import pages

SA = "sagemaker-mlflow-sa"
GAUGE = "mlflow_webhook_missed_pods"
SENTINEL = "sentinel"
PLAIN_NAMESPACES = 50
TICK = os.sysconf("SC_CLK_TCK")


def admits_nothing(doc: dict[str, Any]) -> None:
    """The webhook configuration, matching no Pod: what is measured is the leader's watches."""
    if doc["kind"] == "MutatingWebhookConfiguration":
        for hook in doc["webhooks"]:
            expression = {"key": "mlflow-webhook.io/benchmark-admits", "operator": "Exists"}
            hook["objectSelector"] = {"matchExpressions": [expression]}


def cpu_seconds(pid: int) -> float:
    """User and system time of every thread of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Reading:
    step: str
    opted: int
    plain: int
    missed: int
    followed: float  # RSS MiB of the leader that followed the step's events
    listed: float  # RSS MiB of a new leader, once its first list is in
    peak: float  # VmHWM MiB of that new leader
    list_seconds: float  # from its start to its first list applied


class Bench:
    def __init__(self, plane: ControlPlane, args: argparse.Namespace) -> None:
        self.plane, self.args = plane, args
        self.api = config.new_client_from_config(config_file=str(plane.admin))
        self.api.configuration.connection_pool_maxsize = 16
        self.core = client.CoreV1Api(self.api)
        self.port = free_port()
        self.kubeconfig = plane.install(self.port, edit=admits_nothing)
        self.counts = {"opted": 0, "plain": 0, "missed": 0}
        self.sentinels = 0
        self.leader = self.lead()

    def lead(self) -> WebhookProcess:
        cert_dir = self.plane.run_dir / f"certs-{time.monotonic_ns()}"
        leader = replica(
            self.plane, self.kubeconfig, cert_dir, self.port,
            "--tracking-uri", TRACKING_ARN, "--role-arn", ROLE_ARN,
            # No resync inside a reading: each one ensures every namespace's ServiceAccount.
            "--resync-seconds", "3600", fast=False,
        )  # fmt: skip
        return leader

    def namespaces(self) -> float:
        """Opted-in namespaces made at once; seconds until each has its ServiceAccount."""
        n = self.args.namespaces
        names = [f"team-{i:05d}" for i in range(n)] + [SENTINEL]
        started = time.monotonic()
        labels = {OPT_IN: "enabled"}
        in_parallel(
            lambda i: self.core.create_namespace(
                {"metadata": {"name": names[i], "labels": labels}}
            ),
            range(n + 1),
        )
        eventually(lambda: self.accounts() == n + 1, timeout=1200, what="every ServiceAccount")
        seconds = time.monotonic() - started
        for i in range(PLAIN_NAMESPACES):
            self.core.create_namespace({"metadata": {"name": f"plain-{i:03d}"}})
        return seconds

    def accounts(self) -> int:
        lister = self.core.list_service_account_for_all_namespaces
        return sum(
            len(body["items"]) for body in pages(lister, field_selector=f"metadata.name={SA}")
        )

    def add(self, kind: str, count: int) -> None:
        first = self.counts[kind]
        n = self.args.namespaces

        def create(i: int) -> None:
            where = f"team-{i % n:05d}"
            annotations = {"plain": {}, "opted": injected(), "missed": {OPT_IN: "true"}}[kind]
            if kind == "plain" and i % 2:  # half where nothing opts in, half beside opted-in
                where = f"plain-{i % PLAIN_NAMESPACES:03d}"
            body = pod(f"{kind}-{i:06d}", annotations, i // 8)
            if kind != "plain" and i % 2:  # half opt in by label, half by annotation
                body["metadata"]["labels"][OPT_IN] = annotations.pop(OPT_IN)
            self.core.create_namespaced_pod(where, body)

        seconds = in_parallel(create, range(first, first + count))
        self.counts[kind] += count
        print(f"  made {count} {kind} Pods in {seconds:.0f} s (load {load()})", flush=True)

    def followed(self, leader: WebhookProcess | None = None) -> None:
        """Returns once the leader has applied every event so far: a new missed Pod, made
        now, is in its gauge (events arrive in order)."""
        self.sentinels += 1
        body = pod(f"sentinel-{self.sentinels:04d}", {OPT_IN: "true"}, 0)
        self.core.create_namespaced_pod(SENTINEL, body)
        self.caught_up(leader or self.leader)

    def caught_up(self, leader: WebhookProcess) -> None:
        def counted() -> bool:
            text = scrape(leader)
            wanted = f'{GAUGE}{{namespace="{SENTINEL}",reason="not-injected"}} {self.sentinels}.0'
            return wanted in text

        eventually(counted, timeout=1200, what="the leader to count the sentinel")

    def measure(self, step: str) -> Reading:
        time.sleep(5)  # the leader's own work after the events (Event writes, gauges) settles
        followed = rss_mib(self.leader.proc.pid)
        self.leader.stop()
        started = time.monotonic()
        self.leader = self.lead()
        self.leader.wait_for_log("became leader", timeout=120)
        self.caught_up(self.leader)
        list_seconds = time.monotonic() - started
        time.sleep(5)
        pid = self.leader.proc.pid
        reading = Reading(
            step, **self.counts, followed=followed, listed=rss_mib(pid),
            peak=rss_mib(pid, "VmHWM"), list_seconds=list_seconds,
        )  # fmt: skip
        print(f"  {reading}", flush=True)
        return reading

    def per_event(self, count: int) -> tuple[float, float, float]:
        """CPU ms of the leader per Pod status update, its idle CPU subtracted; and wall."""
        pid = self.leader.proc.pid
        time.sleep(10)  # a new leader's own start is over
        idle_from, started = cpu_seconds(pid), time.monotonic()
        time.sleep(20)
        idle = (cpu_seconds(pid) - idle_from) / (time.monotonic() - started)
        names = [
            (f"team-{i % self.args.namespaces:05d}", f"plain-{i:06d}")
            for i in range(0, 2 * count, 2)
        ]
        cpu_from, started = cpu_seconds(pid), time.monotonic()

        def patch(i: int) -> None:
            namespace, name = names[i]
            condition = {
                "type": "Ready",
                "status": "False",
                "reason": f"Probe{i}",
                "lastProbeTime": None,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            self.core.patch_namespaced_pod_status(
                name, namespace, {"status": {"conditions": [condition]}}
            )

        in_parallel(patch, range(len(names)))
        self.followed()
        wall = time.monotonic() - started
        used = cpu_seconds(pid) - cpu_from - idle * wall
        return used * 1000 / len(names), idle * 1000, wall

    def list_cost(self, selector: str | None) -> tuple[int, int, float]:
        """What the API server sends the leader's Pod list: items, bytes, seconds."""
        started, items, size = time.monotonic(), 0, 0
        lister = self.core.list_pod_for_all_namespaces
        for body in pages(lister, True, field_selector=ACTIVE_PODS, label_selector=selector):
            items += len(body.get("items") or ())
            size += len(orjson.dumps(body))  # the API server's JSON, as compact
        return items, size, time.monotonic() - started


def marginal(a: Reading, b: Reading, kind: str) -> tuple[float, float]:
    """Bytes per Pod of one kind between two readings: in the leader that listed `a` and then
    followed the step's events, and between two new leaders that listed `a` and `b`."""
    count = getattr(b, kind) - getattr(a, kind)
    return ((b.followed - a.listed) * 2**20 / count, (b.listed - a.listed) * 2**20 / count)


def run(bench: Bench, args: argparse.Namespace) -> None:
    time.sleep(5)
    before = rss_mib(bench.leader.proc.pid)
    seconds = bench.namespaces()
    print(f"{args.namespaces} opted-in namespaces: every ServiceAccount in {seconds:.1f} s")
    bench.followed()
    time.sleep(5)
    after = rss_mib(bench.leader.proc.pid)
    print(
        f"leader RSS {before:.1f} MiB before the namespaces, {after:.1f} MiB after: "
        f"{(after - before) * 2**20 / (args.namespaces + 1):.0f} B each"
    )
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "start",
            lambda: (bench.add("opted", args.opted // 4), bench.add("plain", args.plain // 4)),
        ),
        ("plain", lambda: bench.add("plain", args.plain - args.plain // 4)),
        ("opted", lambda: bench.add("opted", args.opted - args.opted // 4)),
        ("missed", lambda: bench.add("missed", args.missed)),
    ]
    readings = []
    for step, make in steps:
        print(f"step {step}:", flush=True)
        make()
        bench.followed()
        readings.append(bench.measure(step))
    cpu, idle, wall = bench.per_event(args.patches)
    print(
        f"CPU per Pod status update: {cpu:.3f} ms ({args.patches} in {wall:.0f} s, "
        f"leader idle {idle:.1f} ms/s, load {load()})"
    )
    for selector in (None, OPT_IN):
        items, size, took = bench.list_cost(selector)
        print(
            f"Pod list, label selector {selector}: {items} items, {size / 2**20:.1f} MiB "
            f"({size / max(items, 1):.0f} B each), {took:.1f} s"
        )
    base = readings[0]
    for reading, kind in zip(readings[1:], ("plain", "opted", "missed"), strict=True):
        followed, listed = marginal(base, reading, kind)
        print(f"{kind} Pods: {followed:.0f} B each followed, {listed:.0f} B each listed")
        base = reading
    last = readings[-1]
    print(
        f"leader at the end: {last.followed:.1f} MiB followed, {last.listed:.1f} MiB listed, "
        f"peak {last.peak:.1f} MiB, first list {last.list_seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--opted", type=int, default=8000)
    parser.add_argument("--plain", type=int, default=24000)
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--patches", type=int, default=8000)
    args = parser.parse_args()
    plane = ControlPlane()
    plane.start()
    bench: Bench | None = None
    try:
        bench = Bench(plane, args)
        bench.leader.wait_for_log("became leader", timeout=120)
        run(bench, args)
    finally:
        if bench is not None:
            bench.leader.stop()
        plane.stop()


if __name__ == "__main__":
    main()
