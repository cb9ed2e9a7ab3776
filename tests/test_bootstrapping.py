"""When a follower replica takes the leader's bootstrap as done: the same rule the leader keeps,
read from the plan a follower's dry run gives."""

from __future__ import annotations

import pytest

from webhook.app.bootstrapping import done
from webhook.aws.config import BootstrapConfig
from webhook.core import kinds
from webhook.core.plans import Plan

ELSEWHERE = "arn:aws:sagemaker:us-west-2:210987654321:mlflow-tracking-server/central"
APP = "arn:aws:sagemaker:us-west-2:210987654321:mlflow-app/app-ABCDEF123456"


def plan(status: str, *actions: str, kind: kinds.Kind = kinds.SERVER) -> Plan:
    made = Plan(dry_run=True, kind=kind, tracking_status=status)
    for i, action in enumerate(actions or ("ok",)):
        made.add("role", f"r{i}", action)  # type: ignore[arg-type]
    return made


CASES = {
    # name: (config, plan, done)
    "no wait, everything made": (BootstrapConfig(), plan("Creating"), True),
    "no wait, a step still to make": (BootstrapConfig(), plan("", "ok", "create"), False),
    "wait, server still creating": (BootstrapConfig(wait=True), plan("Creating"), False),
    "wait, server created": (BootstrapConfig(wait=True), plan("Created"), True),
    "wait, App created": (BootstrapConfig(wait=True), plan("Created", kind=kinds.APP), True),
    # The leader never waits for a server named by its ARN; one in another account reads as
    # unknown to a dry run, and a follower used to poll for it for ever.
    "wait, another account's server by ARN": (
        BootstrapConfig(wait=True, tracking_server_arn=ELSEWHERE),
        plan("unknown"),
        True,
    ),
    "wait, an App by ARN, stopped": (
        BootstrapConfig(wait=True, tracking_server_arn=APP),
        plan("Stopped", kind=kinds.APP),
        True,
    ),
    "wait, by ARN, the pod role still to make": (
        BootstrapConfig(wait=True, tracking_server_arn=ELSEWHERE),
        plan("unknown", "ok", "create"),
        False,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_follower_takes_the_bootstrap_as_done(case: str) -> None:
    config, found, expected = CASES[case]
    assert done(config, found) is expected
