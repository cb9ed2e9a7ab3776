"""The benchmarks' own arithmetic, and each one run once, tiny, to show that it works and says
what it must: no figure it prints is asserted (timing belongs to the benchmarks, not the tests).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cost, load, machine
from benchmarks.creates import quantile
from benchmarks.histograms import EMPTY, webhook_histogram
from testing.kube.controlplane import missing_reason

ROOT = Path(__file__).resolve().parents[1]
METRIC = "apiserver_admission_webhook_admission_duration_seconds"


def exposition(ours: list[int], floor_count: int, seconds: float = 0.0) -> str:
    """/metrics as the API server writes it: our webhook's buckets split over `rejected`, the
    floor's, and a validating call that must not count."""
    lines = [f"# HELP {METRIC} Admission webhook latency", f"# TYPE {METRIC} histogram"]
    bounds = ["0.005", "0.025", "0.1", "0.5", "+Inf"]

    def series(name: str, kind: str, rejected: str, counts: list[int], total: float) -> None:
        labels = f'name="{name}",operation="CREATE",rejected="{rejected}",type="{kind}"'
        for le, count in zip(bounds, counts, strict=True):
            lines.append(f'{METRIC}_bucket{{{labels},le="{le}"}} {count}')
        lines.append(f"{METRIC}_sum{{{labels}}} {total}")
        lines.append(f"{METRIC}_count{{{labels}}} {counts[-1]}")

    series("pods.mlflow-webhook.io", "admit", "false", ours, seconds)
    series("pods.mlflow-webhook.io", "admit", "true", [0, 0, 0, 1, 1], 0.2)
    series("floor.benchmark.mlflow-webhook.io", "admit", "false", [floor_count] * 5, 0.01)
    series("pods.mlflow-webhook.io", "validating", "false", [7, 7, 7, 7, 7], 0.01)
    return "\n".join(lines) + "\n"


def test_the_histogram_is_our_webhooks_admit_calls_and_its_quantiles_interpolate() -> None:
    ours = "pods.mlflow-webhook.io"
    before = webhook_histogram(exposition([5, 5, 5, 5, 5], 2, 0.05), ours)
    after = webhook_histogram(exposition([15, 95, 100, 100, 100], 9, 1.0), ours)
    run = after - before
    assert run.count == 95  # 100 + 1 rejected, less the 6 before; the validating calls not
    assert run.buckets == ((0.005, 10), (0.025, 90), (0.1, 95), (0.5, 95), (math.inf, 95))
    assert run.mean == pytest.approx(0.95 / 95)
    # Rank 47.5 falls in (5 ms, 25 ms], 37.5 of its 80 calls in: as histogram_quantile says.
    assert run.quantile(0.5) == pytest.approx(0.005 + 0.020 * 37.5 / 80)
    assert run.bucket_of(0.99) == (0.025, 0.1)
    assert (run - run).count == 0 and math.isnan(EMPTY.mean)


def test_a_rank_in_the_open_bucket_is_the_highest_finite_bound() -> None:
    text = exposition([0, 0, 0, 1, 10], 0)
    assert webhook_histogram(text, "pods.mlflow-webhook.io").quantile(0.99) == 0.5
    assert webhook_histogram(text, "floor.benchmark.mlflow-webhook.io").count == 0


def test_quantile_of_latencies() -> None:
    values = [i / 1000 for i in range(1, 101)]
    assert quantile(values, 0.5) == pytest.approx(0.0505)
    assert quantile(values, 0.99) == pytest.approx(0.09901)
    assert quantile([0.2], 0.99) == 0.2


@pytest.mark.parametrize(
    ("client", "servers", "busy", "words"),
    [
        (0.6, 0.8, 1.5, "DAMPED"),
        (0.1, 0.5, 1.95, "bottleneck: the machine"),
        (0.1, 0.95, 1.2, "bottleneck: the server"),
        (0.1, 0.3, 0.5, "latency-bound"),
    ],
)
def test_the_bottleneck_is_named(
    client: float, servers: float, busy: float, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "cores", lambda: 2)
    usage = machine.Usage(10.0, client * 10, servers * 10, busy * 10)
    assert words in usage.bottleneck(event_loop=True)
    assert usage.others == pytest.approx(max(0.0, busy - client - servers))


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def says_where_the_cpu_went(out: str) -> None:
    assert re.search(r"^machine: \d+ cores, .+; load average [\d.]+ [\d.]+ [\d.]+$", out, re.M)
    assert re.search(r"^CPU \(cores busy on average\): .+ of \d+$", out, re.M)
    assert re.search(r"^bottleneck: ", out, re.M)
    assert re.search(r"^load average after: [\d.]+ [\d.]+ [\d.]+$", out, re.M)


@pytest.mark.timeout(900)
def test_apiserver_benchmark_runs_and_the_api_server_counted_each_call() -> None:
    """Exit 0 means every create succeeded and every Pod in the opted-in namespace came back
    injected (the benchmark checks); the API server's histogram counts one call per create."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    out = run("benchmarks.apiserver", "--rounds", "1", "--pods", "3", "--clients", "1", "2")
    says_where_the_cpu_went(out)
    calls = re.findall(r"^  (floor|replay|ours) +\(\S+\): (\d+) calls", out, re.M)
    assert calls == [("floor", "3"), ("replay", "3"), ("ours", "3")] * 2
    steps = re.findall(r"^(.+): p50 [-+][\d.]+ ms, p99 [-+][\d.]+ ms \(p50 per round", out, re.M)
    assert (
        steps
        == [
            "calling any webhook",
            "the API server applying our patch",
            "our webhook's own work",
            "ours over the floor",
        ]
        * 2
    )
    table = out[out.index("| setup | 1 client | 2 clients |") :].splitlines()[2:]
    rows = [line.split(" | ")[0].strip("| ") for line in table[:8]]
    assert rows == [
        "no webhook called",
        "floor webhook (allows)",
        "floor answering with our patch",
        "ours",
        "the API server applying our patch",
        "our webhook's own work",
        "ours over the floor",
        "ours, as the API server timed it",
    ]
    cell = r"[-+]?[\d.]+ / [-+]?[\d.]+"
    for line in table[:8]:
        assert re.fullmatch(rf"\| [^|]+ \| {cell} \| {cell} \|", line), out


@pytest.mark.timeout(600)
def test_load_benchmark_runs_with_two_wrk_threads() -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    out = run(
        "benchmarks.load",
        "--threads",
        "2",
        "--rounds",
        "1",
        "--seconds",
        "1",
        "--memory-requests",
        "1500",
    )
    says_where_the_cpu_went(out)
    assert "wrk with 2 thread(s), 16 keep-alive TLS connections" in out
    assert "medians of fewer than five are not worth quoting" in out
    assert re.search(r"^throughput ratio ours/floor: [\d.]+ \(per round: [\d.]+\)$", out, re.M)
    assert len(re.findall(r"^  (floor|ours) +\d+ req/s .* wrk [\d.]+ cores", out, re.M)) == 2


def git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def test_a_revision_is_checked_out_whole_and_a_wrong_one_is_named() -> None:
    if not git_checkout():
        pytest.skip("not a git checkout, or no git: --against needs one")
    with load.checkout("HEAD") as tree:
        committed = subprocess.run(
            ["git", "show", "HEAD:webhook/core/patches.py"], cwd=ROOT, capture_output=True
        ).stdout
        assert (tree / "webhook" / "core" / "patches.py").read_bytes() == committed
    assert not tree.exists()
    # The working tree: tracked files as they are on disk now, committed or not.
    with load.checkout(load.WORKING_TREE) as tree:
        for path in ("webhook/core/mutation.py", "benchmarks/load.py"):
            assert (tree / path).read_bytes() == (ROOT / path).read_bytes()
    with pytest.raises(SystemExit, match="--against no-such-rev: "), load.checkout("no-such-rev"):
        pass


@pytest.mark.timeout(600)
def test_load_benchmark_runs_our_stack_and_another_revision() -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    brief = ("--rounds", "1", "--seconds", "1", "--memory-requests", "1500")
    out = run("benchmarks.load", "--compare", "stack", *brief)
    assert re.search(r"^throughput ratio stack/floor: [\d.]+ \(per round: [\d.]+\)$", out, re.M)
    assert len(re.findall(r"^  (floor|stack) +\d+ req/s .* errors 0", out, re.M)) == 2
    if not git_checkout():
        return
    out = run("benchmarks.load", "--against", "HEAD", *brief)
    says_where_the_cpu_went(out)
    assert re.search(r"^throughput ratio ours/HEAD: [\d.]+ \(per round: [\d.]+\)$", out, re.M)
    assert len(re.findall(r"^  (HEAD|ours) +\d+ req/s .* errors 0", out, re.M)) == 2


def test_one_requests_cost_is_the_difference_of_two_batches_in_kcachegrinds_cycles() -> None:
    dump = "version: 1\nevents: Ir I1mr D1mr D1mw ILmr DLmr DLmw Bcm Bim\nsummary: {}\ntotals: 0\n"
    small = cost.summary(dump.format("1000 10 20 30 1 0 0 40 50"))
    large = cost.summary(dump.format("3000 30 40 50 0 0 0 60 90"))
    one = cost.Cost.of(cost.difference(small, large), 2)
    # Per request: 1000 instructions, (20 + 20 + 20) / 2 L1 misses, the branches' (20 + 40) / 2,
    # and LL misses that fell by one: noise, counted as none.
    assert one == cost.Cost(instructions=1000, l1_misses=30, ll_misses=0, branch_misses=30)
    assert one.cycles == 1000 + 10 * 30 + 10 * 30


@pytest.mark.timeout(900)
def test_cost_benchmark_counts_the_floor_our_stack_and_ours() -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    out = run("benchmarks.cost", "--requests", "3")
    assert "one keep-alive TLS connection, one request at a time" in out
    row = r"^\| (floor|stack|ours) \| ([\d,]+) \|.* \| ([\d,]+) \| ([\d.]+) \|$"
    rows = re.findall(row, out, re.M)
    assert [row[0] for row in rows] == ["floor", "stack", "ours"], out
    # Every request was answered (the client checks each) and cost something.
    assert all(int(row[1].replace(",", "")) > 0 for row in rows), out
    assert rows[0][3] == "1.000"
