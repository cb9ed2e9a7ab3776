"""Promises of the bootstrap (docs/aws.md) that had no test: the tracking server's drift update, and
`--tag` with the naming flags, through the command line."""

from __future__ import annotations

import json

from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import URI, cli, config
from webhook.aws import bootstrap


def test_drifted_server_settings_are_updated_once(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    bootstrap.run(config())
    record = emulator.servers["mlflow-tracking"].record
    assert (record["TrackingServerSize"], record["AutomaticModelRegistration"]) == ("Small", False)

    wanted = config(tracking_server_size="Medium", automatic_model_registration=True)
    plan = bootstrap.run(wanted)
    [step] = [s for s in plan.steps if s.resource == "tracking-server"]
    assert (step.action, step.detail) == (
        "update",
        "AutomaticModelRegistration, TrackingServerSize",
    )
    assert (record["TrackingServerSize"], record["AutomaticModelRegistration"]) == ("Medium", True)
    assert emulator.calls.count("UpdateMlflowTrackingServer") == 1
    # Nothing else drifted, so nothing else changed; and once in place, no second update.
    assert {s.action for s in plan.steps if s.resource != "tracking-server"} == {"ok"}
    again = bootstrap.run(wanted)
    assert {s.action for s in again.steps} == {"ok"}
    assert emulator.calls.count("UpdateMlflowTrackingServer") == 1


def test_tags_and_naming_flags_name_every_resource(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    result = cli(
        "bootstrap",
        "--cluster-name",
        CLUSTER,
        "--artifact-store-uri",
        URI,
        "--trust-namespaces",
        "team-a",
        "--tag",
        "team=ml",
        "--tag",
        "cost-center=42",
        "--tracking-server-name",
        "research",
        "--tracking-server-size",
        "Large",
        "--pod-role-name",
        "research-pods",
        "--pod-policy-name",
        "research-mlflow",
        "--server-role-name",
        "research-server",
        "--service-account",
        "trainer",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["trackingServerArn"] == (
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/research"
    )
    [server] = emulator.servers.values()
    assert server.record["TrackingServerName"] == "research"
    assert server.record["TrackingServerSize"] == "Large"
    assert server.record["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/research-server"
    create = [c for c in emulator.requests if c[0] == "CreateMlflowTrackingServer"]
    [(_, body)] = create
    assert {t["Key"]: t["Value"] for t in body["Tags"]} == {
        "app.kubernetes.io/managed-by": "mlflow-webhook",
        "team": "ml",
        "cost-center": "42",
    }
    iam = moto.client("iam")
    assert sorted(r["RoleName"] for r in iam.list_roles()["Roles"]) == [
        "research-pods",
        "research-server",
    ]
    attached = iam.list_attached_role_policies(RoleName="research-pods")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["research-mlflow"]
    trust = iam.get_role(RoleName="research-pods")["Role"]["AssumeRolePolicyDocument"]
    subjects = [
        value
        for statement in trust["Statement"]
        for test in (statement.get("Condition") or {}).values()
        for key, value in test.items()
        if key.endswith(":sub")
    ]
    assert subjects == [["system:serviceaccount:team-a:trainer"]]
