"""Our admission handler against the floor's, called in-process: no TLS, no sockets, no loop.

    .venv/bin/python -m benchmarks.handlers [--compare floor|namespace-settings|run-context]
    .venv/bin/python -m benchmarks.handlers --instructions   # needs valgrind

Separates the handler's own work (parse, decide, patch, metrics, decision log, response) from
what HTTP and TLS cost, which `benchmarks.load` measures together. `--compare
namespace-settings` times our handler with a namespace's own settings against the global ones:
the one cost they add, reading the namespace's cached annotations and resolved settings.

`--instructions` counts instead, under callgrind, the instructions our handler takes a request
for each Pod of the mix (110 calls less 10, over 100, `PYTHONHASHSEED=0`): exact, and the same
on a busy machine and a quiet one, where timings are not.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from kubernetes import client

from benchmarks import bodies
from benchmarks.tenants import TEAM
from testing.support import Body, settings
from webhook.app import handlers
from webhook.app.cluster import Cluster
from webhook.app.config import ServeConfig
from webhook.app.logs import JsonHandler, configure
from webhook.core import namespaces
from webhook.kube.accounts import AccountCache
from webhook.kube.namespaces import NamespaceCache

sys.path.insert(0, str(Path(__file__).parent))
import floor  # a script beside this one, not a package module


async def per_call(handler: Callable[[Any], Awaitable[Any]], request: Body, n: int = 300) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await handler(request)
    return (time.perf_counter() - started) / n * 1e6


def ours(
    namespace_settings: bool | None, run_context: bool = True
) -> Callable[[Any], Awaitable[Any]]:
    """Our handler, bound to its state. With `namespace_settings` (on or off) it has the cluster
    side's real caches, as the leader has them once its watches are synced: the ServiceAccount
    known, and the request's namespace (team-a) carrying its own tracking URI and role."""
    chosen = settings(run_context=run_context)  # on, as `serve` has it by default
    config = ServeConfig(settings=chosen, namespace_settings=bool(namespace_settings))
    state = handlers.State(config, settings=chosen)
    if namespace_settings is not None:
        cluster = SimpleNamespace(
            accounts=AccountCache(client.ApiClient(), "sagemaker-mlflow-sa"),
            namespaces=NamespaceCache(client.ApiClient(), "mlflow-webhook.io"),
            resolve=functools.lru_cache(maxsize=1024)(
                functools.partial(namespaces.resolve, base=chosen)
            ),
        )
        cluster.accounts.add("team-a")
        own = namespaces.pick(TEAM, "mlflow-webhook.io")
        cluster.namespaces.watched = lambda namespace: own if namespace == "team-a" else ()
        state.cluster = cast(Cluster, cluster)
    return functools.partial(handlers.mutate, state)


def instructions() -> None:
    """Each body's instructions a request: two runs under callgrind, 110 calls less 10."""
    for name in bodies.MIX:
        found = []
        # Once outside valgrind first, so that neither counted run writes bytecode.
        subprocess.run([sys.executable, "-m", "benchmarks.handlers", "--calls", name, "1"])
        for calls in (10, 110):
            command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
            command += [sys.executable, "-m", "benchmarks.handlers", "--calls", name, str(calls)]
            run = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}
            )
            [line] = [line for line in run.stderr.splitlines() if "Collected" in line]
            found.append(int(line.split()[-1]))
        print(f"{name:16} {(found[1] - found[0]) // 100:>10,} instructions a request")


async def calls(name: str, count: int) -> None:
    handler, raw = ours(None), json.dumps(bodies.MIX[name]()).encode()
    for _ in range(count):
        await handler(Body(raw))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--compare", choices=("floor", "namespace-settings", "run-context"), default="floor"
    )
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--calls", nargs=2, metavar=("BODY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure("info")
    [log] = logging.getLogger().handlers
    assert isinstance(log, JsonHandler)
    log.fd = os.open(os.devnull, os.O_WRONLY)  # the decision log is written, to nowhere
    if args.instructions:
        instructions()
        return
    if args.calls:
        await calls(args.calls[0], int(args.calls[1]))
        return
    if args.compare == "floor":
        pair = {"floor": floor.mutate, "ours": ours(None)}
    elif args.compare == "run-context":
        pair = {"off": ours(None, run_context=False), "on": ours(None)}
    else:
        pair = {"off": ours(False), "on": ours(True)}
    (base, base_handler), (mine, our_handler) = pair.items()
    total = {base: 0.0, mine: 0.0}
    for name, build in bodies.MIX.items():
        raw = json.dumps(build()).encode()
        runs: dict[str, list[float]] = {base: [], mine: []}
        for _ in range(7):  # alternating, the best of each
            runs[base].append(await per_call(base_handler, Body(raw)))
            runs[mine].append(await per_call(our_handler, Body(raw)))
        times = {label: min(found) for label, found in runs.items()}
        for label in total:
            total[label] += times[label]
        print(
            f"{name:16} {base} {times[base]:7.1f} us  {mine} {times[mine]:7.1f} us  "
            f"{mine} - {base} {times[mine] - times[base]:+7.1f} us"
        )
    print(f"the mix, one of each: {mine}/{base} time {total[mine] / total[base]:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
