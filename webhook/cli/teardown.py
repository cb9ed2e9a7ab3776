"""`mlflow-webhook teardown`: remove what `bootstrap` made, and nothing else.

It finds the bootstrap's resources by the same names and the tag it sets, shows the plan, asks
(unless --yes), then carries out exactly that plan. The bucket and its artifacts stay unless
--delete-artifacts is given. Exit 0 when done or nothing is left, 1 when declined or an AWS call
failed, 2 for a setup problem, in one line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.aws import teardown
from webhook.aws.clients import BootstrapError
from webhook.cli.commands import command
from webhook.cli.options import (
    add,
    add_artifact_flag,
    add_name_flags,
    add_plan_flags,
    add_region_flag,
    bootstrap_config_from,
)


def add_parser(commands: Any) -> None:
    p = command(
        commands,
        "teardown",
        help="remove what bootstrap made (plan first; asks unless --yes)",
        description="Remove what bootstrap made, and nothing else: found by the same names and "
        "the tag bootstrap sets, shown as a plan, asked about (unless --yes), then removed "
        "exactly as planned. The artifact bucket and its objects stay unless --delete-artifacts.",
        examples=[
            "mlflow-webhook teardown --cluster-name prod --artifact-store-uri "
            "s3://ml-artifacts/mlflow --dry-run",
        ],
    )
    add_region_flag(p)
    add_name_flags(p, use="remove")
    add(
        p,
        "--service-account",
        default="sagemaker-mlflow-sa",
        help="ServiceAccount whose EKS Pod Identity associations name the pod role",
    )
    add_artifact_flag(p, use="remove")
    add_plan_flags(p, verb="delete")
    add(p, "--yes", action="store_true", default=False, help="delete without asking")
    add(
        p,
        "--delete-artifacts",
        action="store_true",
        default=False,
        help="also delete the artifact bucket bootstrap made, with every object in it",
    )


def run(args: argparse.Namespace) -> int:
    config = bootstrap_config_from(args)
    try:
        found = teardown.plan(config, delete_artifacts=args.delete_artifacts)
        print(_shown(found.plan, args.output))
        if args.dry_run or not found.plan.changes:
            return 0
        if not args.yes and not _confirmed(found.plan.changes):
            print("mlflow-webhook: nothing removed", file=sys.stderr)
            return 1
        done = found.carry_out(progress=lambda line: print(line, file=sys.stderr))
    except BootstrapError as exc:
        print(f"mlflow-webhook: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(_shown(done, args.output))
    return 0


def _shown(plan: Any, output: str) -> str:
    return str(plan.as_json() if output == "json" else plan.as_table())


def _confirmed(count: int) -> bool:
    print(f"Delete or change the {count} resources above? [y/N] ", end="", file=sys.stderr)
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        raise BootstrapError(
            "nothing removed: no answer on stdin (give --yes to delete without asking)", 2
        ) from None
    return answer.strip().lower() in ("y", "yes")
