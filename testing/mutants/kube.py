"""A sampled mutation score for `webhook/kube`.

    .venv/bin/pip install -e '.[test,mutation]'
    nice -n 19 .venv/bin/python -m testing.mutants.kube [--sample N] [--seed S]

Every test of `webhook/kube` runs `mlflow-webhook serve` as a subprocess against a real control
plane (or, for `410 Gone`, the API server emulator), so `mutmut run` cannot attribute a kill:
its tests import the mutated code in the pytest process, and the code under test here runs in
another process. This runner uses mutmut only to write the mutants, and does the rest itself:

1. `git archive HEAD` is unpacked into a work folder outside the checkout (`--work`), so it
   cannot clash with the `mutants/` folder `mutmut run` keeps for `webhook/core`.
2. mutmut's own generator rewrites each `webhook/kube/*.py` there: every function becomes a
   trampoline that calls the original, or the mutant named by `MUTANT_UNDER_TEST`.
3. For each mutant, pytest runs in the work folder with `MUTANT_UNDER_TEST` set. The tests start
   `python -m webhook serve` with the environment and working directory they have, so every
   `serve` loads the work folder's `webhook` (it is the working directory and first on
   `PYTHONPATH`, ahead of the editable install's finder) and runs that mutant. Only
   `tests/test_kube_mutants.py` imports `webhook.kube` in the pytest process (from the work
   folder too); for every other test a failure is the subprocess's doing.
4. The same selection runs first with no mutant (it must pass) and with `MUTANT_UNDER_TEST=fail`,
   which makes every mutated function raise (it must fail): the check that `serve` picked up the
   mutated tree.

Each module has its own tests (`TESTS`, fastest first, `pytest -x`). A run takes tens of seconds
to minutes, so a seeded sample is run, spread over the modules in proportion to their mutants,
with a per-mutant timeout (a timeout counts as killed). The score comes with a 95 % Wilson
interval. Control planes a killed run leaves behind are stopped through `../shared/kube/stop`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_KUBE = Path(os.environ.get("MLFLOW_WEBHOOK_KUBE", ROOT.parent / "shared" / "kube"))
MARKER = ".kube-mutants"  # only a folder holding this is ever emptied by this runner

_CLUSTER = "tests/test_cluster.py::"
_MISSED = "tests/test_missed.py::"
_WATCHES = "tests/test_watches.py"
_GONE = "tests/test_cluster_gone.py"
_STARTUP = "tests/test_startup_errors.py"
_SETTINGS = "tests/test_namespace_settings.py"

# The tests that reach each module, fastest first (grep of what each test drives `serve` to do).
TESTS: dict[str, tuple[str, ...]] = {
    "accounts": (
        _WATCHES,
        _CLUSTER + "test_admission_knows_the_accounts_the_reconciler_made",
        _CLUSTER + "test_a_miss_is_looked_up_once_with_a_timeout",
        _CLUSTER + "test_service_accounts_follow_the_opt_in_label",
    ),
    "certificates": (
        _CLUSTER + "test_shared_certificate_cabundle_and_rotation",
        _CLUSTER + "test_a_ca_key_left_by_an_earlier_version_is_renewed_away",
        _CLUSTER + "test_no_kube_touches_nothing",
    ),
    "configuration": (_CLUSTER + "test_drift_warnings",),
    "connection": (_STARTUP, _GONE, _WATCHES),
    "election": (
        _CLUSTER + "test_one_leader_and_failover",
        _CLUSTER + "test_sigterm_releases_the_lease",
        _CLUSTER + "test_a_missing_grant_is_named[lease-update]",  # its log line
        _CLUSTER + "test_a_leader_that_cannot_renew_steps_down",  # a live leader loses its Lease
        _WATCHES,
    ),
    "errors": (
        _STARTUP,
        _CLUSTER + "test_a_missing_grant_is_named",
        _MISSED + "test_audit_that_cannot_ask_says_so_in_one_line_with_exit_2",
    ),
    "missed": ("tests/test_missed.py",),
    "namespaces": (_SETTINGS,),
    "reconciler": (
        _GONE,
        _WATCHES,
        _CLUSTER + "test_service_accounts_follow_the_opt_in_label",
        _CLUSTER + "test_resync_repairs_what_no_watch_delivers",
        _MISSED + "test_pod_of_a_namespace_labelled_later_is_missed_from_then",  # its listener
        _SETTINGS,
    ),
    "watches": (
        "tests/test_kube_mutants.py",  # in-process: what no control-plane test reaches
        _GONE,
        _WATCHES,
        _CLUSTER + "test_a_dropped_watch_resumes_from_its_resource_version",
        _CLUSTER + "test_bookmarks_move_the_resume_point",
        _CLUSTER + "test_resync_repairs_what_no_watch_delivers",
    ),
}


@dataclass(frozen=True)
class Mutant:
    name: str  # as mutmut names it: webhook.kube.accounts.xǁAccountCacheǁlookup__mutmut_3
    module: str
    path: str
    line: int
    diff: str


@dataclass(frozen=True)
class Outcome:
    mutant: str
    verdict: str  # killed, timeout (counted as killed), survived, error
    seconds: float
    exit_code: int | None
    tail: str


def snapshot(work: Path) -> str:
    """HEAD's tree, unpacked into `work` (emptied first if this runner made it); its commit."""
    if work.exists():
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} exists and is not a work folder of this runner; pick --work")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by python -m testing.mutants.kube\n")
    commit = _git("rev-parse", "HEAD").strip()
    archive = work / ".head.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    archive.unlink()
    changed = _git("status", "--porcelain", "--", "webhook/kube").strip()
    if changed:
        print(f"note: webhook/kube differs from HEAD; HEAD ({commit[:12]}) is what is mutated")
    return commit


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


def generate(work: Path) -> list[Mutant]:
    """mutmut's mutants of every `webhook/kube` module, written into `work` with trampolines."""
    try:
        import libcst
        from mutmut.mutation.diff_apply import read_mutant_function, read_original_function
        from mutmut.mutation.file_mutation import mutate_file_contents
        from mutmut.utils.format_utils import get_mutant_name
    except ImportError as error:
        hint = "install it with .venv/bin/pip install -e '.[test,mutation]'"
        raise SystemExit(f"{error}: {hint}") from error

    mutants: list[Mutant] = []
    for source in sorted((work / "webhook" / "kube").glob("*.py")):
        relative = source.relative_to(work)
        code = source.read_text()
        mutated = mutate_file_contents(str(relative), code)
        if not mutated.mutant_names:
            continue
        source.write_text(mutated.code)
        tree = libcst.parse_module(mutated.code)  # once: mutmut's own diff parses it per mutant
        for short in mutated.mutant_names:
            name = get_mutant_name(relative, short)
            before, after = (
                libcst.Module([f(tree, name)]).code.strip().splitlines()
                for f in (read_original_function, read_mutant_function)
            )
            diff = "\n".join(
                difflib.unified_diff(before, after, str(relative), str(relative), lineterm="")
            )
            mutants.append(
                Mutant(name, relative.stem, str(relative), _line_of(name, diff, code), diff)
            )
    return mutants


def _line_of(name: str, diff: str, code: str) -> int:
    """The source line a mutant changes: its first removed line, looked for in the function."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(name)
    span = (1, len(code.splitlines()))
    scope: list[ast.stmt] = ast.parse(code).body
    if cls is not None:
        scope = [
            item
            for node in scope
            if isinstance(node, ast.ClassDef) and node.name == cls
            for item in node.body
        ]
    for item in scope:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == function:
            span = (item.lineno, item.end_lineno or item.lineno)
    lines = code.splitlines()
    for text in diff.splitlines():
        if text.startswith("-") and not text.startswith("---"):
            for number in range(span[0], span[1] + 1):
                if lines[number - 1].strip() == text[1:].strip():
                    return number
            break
    return span[0]


def sample(mutants: Sequence[Mutant], size: int, seed: int) -> list[Mutant]:
    """`size` mutants at random, each module's share in proportion to its number of mutants."""
    by_module: dict[str, list[Mutant]] = {}
    for mutant in mutants:
        by_module.setdefault(mutant.module, []).append(mutant)
    size = min(size, len(mutants))
    quota = {m: size * len(ms) / len(mutants) for m, ms in by_module.items()}
    counts = {m: math.floor(q) for m, q in quota.items()}
    for module in sorted(quota, key=lambda m: (counts[m] - quota[m], m))[
        : size - sum(counts.values())
    ]:
        counts[module] += 1  # largest remainders
    rng = random.Random(seed)
    chosen: list[Mutant] = []
    for module in sorted(by_module):
        chosen += rng.sample(by_module[module], counts[module])
    rng.shuffle(chosen)
    return chosen


def run_tests(work: Path, tests: Sequence[str], mutant: str, timeout: float) -> Outcome:
    """The tests, in `work`, with `MUTANT_UNDER_TEST=mutant`; whatever they started, stopped."""
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=work / ".runs"))
    env = {
        **os.environ,
        "MUTANT_UNDER_TEST": mutant,
        "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "MLFLOW_WEBHOOK_KUBE": str(SHARED_KUBE.resolve()),
        "TMPDIR": str(scratch),  # where the control planes' run folders go, to stop leftovers
    }
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the serve processes it starts too
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    seconds = time.monotonic() - started
    _stop_leftovers(proc.pid, scratch)
    if code is None:
        verdict = "timeout"
    elif code == 0:
        verdict = "survived"
    elif code == 1:
        verdict = "killed"
    else:
        verdict = "error"  # interrupted, internal error, usage, no tests: not a verdict
    tail = "\n".join(output.splitlines()[-15:])
    return Outcome(mutant, verdict, round(seconds, 1), code, tail)


def _stop_leftovers(group: int, scratch: Path) -> None:
    """Stop control planes started under `scratch`, then what is left of the run's group."""
    for run_dir in scratch.rglob("kube-*"):
        if run_dir.is_dir() and any(run_dir.glob("*.pid")):
            subprocess.run(
                [str(SHARED_KUBE / "stop")],
                env={**os.environ, "K8S_E2E_RUN_DIR": str(run_dir)},
                capture_output=True,
                timeout=120,
                check=False,
            )
    if _members(group):  # the group outlives its leader only while it has members: still ours
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    shutil.rmtree(scratch, ignore_errors=True)


def _members(group: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # after the name: state, ppid, pgrp
            found.append(int(stat.parent.name))
    return found


def wilson(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of killed / total."""
    if total == 0:
        return 0.0, 1.0
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def check(work: Path, modules: Sequence[str], timeout: float) -> dict[str, float]:
    """Each module's tests pass with no mutant, and fail with every function raising."""
    seconds: dict[str, float] = {}
    for module in modules:
        clean = run_tests(work, TESTS[module], "", timeout)
        print(f"check {module:<14} no mutant: {clean.verdict} in {clean.seconds} s", flush=True)
        if clean.verdict != "survived":
            raise SystemExit(f"the tests of {module} fail with no mutant:\n{clean.tail}")
        seconds[module] = clean.seconds
    fastest = min(modules, key=lambda m: seconds[m])
    failing = run_tests(work, TESTS[fastest], "fail", timeout)
    print(f"check {fastest:<14} every function raising: {failing.verdict}", flush=True)
    if failing.verdict not in ("killed", "timeout"):
        raise SystemExit(f"MUTANT_UNDER_TEST=fail did not fail the tests of {fastest}")
    return seconds


def report(mutants: Sequence[Mutant], outcomes: Sequence[Outcome], total: Counter[str]) -> str:
    by_name = {m.name: m for m in mutants}
    rows = ["| module | mutants | sampled | killed | timeout | survived | error |"]
    rows.append("|---|---|---|---|---|---|---|")
    for module in sorted(total):
        mine = [o for o in outcomes if by_name[o.mutant].module == module]
        count = Counter(o.verdict for o in mine)
        rows.append(
            f"| `{module}` | {total[module]} | {len(mine)} | {count['killed']} | "
            f"{count['timeout']} | {count['survived']} | {count['error']} |"
        )
    count = Counter(o.verdict for o in outcomes)
    killed = count["killed"] + count["timeout"]
    decided = killed + count["survived"]
    low, high = wilson(killed, decided)
    score = killed / decided if decided else 0.0
    lines = [
        *rows,
        "",
        f"score: {killed} of {decided} sampled mutants killed ({count['timeout']} of them by the "
        f"timeout), {100 * score:.1f} %; 95 % interval {100 * low:.1f}-{100 * high:.1f} % "
        f"({count['error']} errors left out)",
    ]
    for outcome in outcomes:
        if outcome.verdict in ("survived", "error"):
            mutant = by_name[outcome.mutant]
            lines += ["", f"{outcome.verdict}: {mutant.name} ({mutant.path}:{mutant.line})"]
            lines += [mutant.diff]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testing.mutants.kube", description=__doc__)
    parser.add_argument("--sample", type=int, default=60, help="how many mutants (default 60)")
    parser.add_argument("--seed", type=int, default=15, help="the sample's seed (default 15)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="seconds a mutant may take (default: "
        "twice the module's clean run plus 60 s, or 600 s with --no-check)",
    )
    parser.add_argument("--mutant", action="append", default=[], help="run these, not a sample")
    parser.add_argument("--list", action="store_true", help="count the mutants and stop")
    parser.add_argument("--no-check", action="store_true", help="skip the clean and fail runs")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mlflow-webhook-kube-mutants",
        help="the work folder, outside the checkout (emptied on each run)",
    )
    args = parser.parse_args(argv)

    commit = snapshot(args.work)
    (args.work / ".runs").mkdir()
    mutants = generate(args.work)
    total = Counter(m.module for m in mutants)
    print(f"{len(mutants)} mutants of webhook/kube at {commit[:12]}: {dict(sorted(total.items()))}")
    if args.list:
        return 0
    by_name = {m.name: m for m in mutants}
    unknown = [name for name in args.mutant if name not in by_name]
    if unknown:
        raise SystemExit(f"no such mutant: {', '.join(unknown)}")
    chosen = [by_name[n] for n in args.mutant] or sample(mutants, args.sample, args.seed)
    modules = sorted({m.module for m in chosen})

    seconds: dict[str, float] = {}
    if not args.no_check:
        seconds = check(args.work, modules, args.timeout or 900)
    results = args.work / "results.jsonl"
    outcomes: list[Outcome] = []
    for number, mutant in enumerate(chosen, 1):
        timeout = args.timeout or (2 * seconds[mutant.module] + 60 if seconds else 600)
        outcome = run_tests(args.work, TESTS[mutant.module], mutant.name, timeout)
        outcomes.append(outcome)
        with results.open("a") as out:
            out.write(json.dumps({**asdict(outcome), **asdict(mutant)}) + "\n")
        print(
            f"[{number}/{len(chosen)}] {outcome.verdict:<8} {outcome.seconds:>6} s "
            f"{mutant.path}:{mutant.line} {mutant.name}",
            flush=True,
        )
    summary = report(mutants, outcomes, total)
    (args.work / "summary.md").write_text(
        f"commit {commit}, seed {args.seed}, {len(chosen)} of {len(mutants)} mutants\n\n{summary}\n"
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
