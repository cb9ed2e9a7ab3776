"""`--kind app`: the bootstrap keeps a serverless MLflow App as it keeps a tracking server, against
moto's server and the SageMaker emulator, with writes counted from the servers' side."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testing.servers import WebhookProcess
from testing.support import decode_patch, review_for
from tests import test_iam_enforced
from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import URI, cli
from tests.test_iam_enforced import READS, Enforced, without
from tests.test_iam_enforced import URI as IAM_URI
from tests.test_policies import listed
from webhook.aws import bootstrap
from webhook.aws.clients import BootstrapError
from webhook.aws.config import BootstrapConfig

FLAGS = ["--kind", "app", "--cluster-name", CLUSTER, "--trust-namespaces", "team-a"]
FLAGS += ["--artifact-store-uri", URI]
READ_VERBS = ("Describe", "List", "Get", "Head")
enforced = test_iam_enforced.enforced  # the IAM gate in front of moto and the emulator
MANAGED_BY = {"Key": "app.kubernetes.io/managed-by", "Value": "mlflow-webhook"}


def app_config(**overrides: Any) -> BootstrapConfig:
    base: dict[str, Any] = {
        "kind": "app",
        "cluster_name": CLUSTER,
        "artifact_store_uri": URI,
        "trust_namespaces": ("team-a",),
        "role_propagation_seconds": 20,
    }
    return BootstrapConfig(**{**base, **overrides})


def sagemaker_writes(emulator: SageMakerEmulator, since: int = 0) -> list[str]:
    """What the emulator was asked to change, from its own record of requests."""
    return [op for op, _ in emulator.requests[since:] if not op.startswith(READ_VERBS)]


def test_fresh_account_one_run_creates_everything_then_nothing(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, emulator = aws
    moto.record()
    first = cli("bootstrap", *FLAGS, "--output", "json")
    assert first.returncode == 0, first.stderr
    plan = json.loads(first.stdout)
    [app] = emulator.apps.values()
    arn = app.record["Arn"]
    assert plan["kind"] == "app" and plan["trackingServerArn"] == arn
    assert arn.startswith(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-app/app-")
    assert [(s["resource"], s["action"]) for s in plan["steps"]] == [
        ("s3-bucket", "create"),
        ("iam-role", "create"),
        ("iam-role-policy", "create"),
        ("mlflow-app", "create"),
        ("iam-policy", "create"),
        ("iam-oidc-provider", "create"),
        ("iam-role", "create"),
        ("iam-attachment", "create"),
    ]
    # Created as asked: the artifact store, the execution role, the registration mode, our tag;
    # and not the account's default, which was not asked for.
    [(_, request)] = [(op, body) for op, body in emulator.requests if op == "CreateMlflowApp"]
    assert request == {
        "Name": "mlflow-tracking",
        "ArtifactStoreUri": URI,
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/mlflow-webhook-tracking-server",
        "ModelRegistrationMode": "AutoModelRegistrationDisabled",
        "Tags": [MANAGED_BY],
    }
    assert app.record["AccountDefaultStatus"] == "DISABLED"
    # The pod policy grants MLflow's API on this App's ARN.
    iam = moto.client("iam")
    policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]
    assert doc["Document"]["Statement"][0]["Resource"] == arn
    table = cli("bootstrap", *FLAGS)
    assert table.returncode == 0, table.stderr
    assert f"MLflow App: {arn} (Created)" in table.stdout
    assert "0 of 8 resources changed; 0 write calls" in table.stdout

    # The second run and a dry run: counted where the calls arrive, not by the client.
    moto.record()
    since = len(emulator.requests)
    for extra in ([], ["--dry-run"]):
        again = cli("bootstrap", *FLAGS, *extra, "--output", "json")
        assert again.returncode == 0, again.stderr
        assert {s["action"] for s in json.loads(again.stdout)["steps"]} == {"ok"}
    assert moto.writes() == []
    assert sagemaker_writes(emulator, since) == []


def test_dry_run_in_a_fresh_account_shows_the_app_and_writes_nothing(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, emulator = aws
    moto.record()
    result = cli("bootstrap", *FLAGS, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["RESOURCE", "NAME", "ACTION", "DETAIL"]
    [row] = [line for line in result.stdout.splitlines() if line.startswith("mlflow-app")]
    assert row.split()[:3] == ["mlflow-app", "mlflow-tracking", "create"]
    assert "8 of 8 resources would change; 0 write calls" in result.stdout
    assert "MLflow App: its ARN is assigned by SageMaker when it is created" in result.stdout
    assert moto.writes() == []
    assert sagemaker_writes(emulator) == [] and emulator.apps == {}


@pytest.mark.parametrize(
    ("change", "written", "field", "value"),
    [
        (
            {"automatic_model_registration": True},
            ["UpdateMlflowApp"],
            "ModelRegistrationMode",
            "AutoModelRegistrationEnabled",
        ),
        ({"tags": {"team": "vision"}}, ["AddTags"], None, None),
    ],
)
def test_drift_is_updated_and_nothing_else_touched(
    aws: tuple[Moto, SageMakerEmulator],
    change: dict[str, Any],
    written: list[str],
    field: str | None,
    value: str | None,
) -> None:
    moto, emulator = aws
    bootstrap.run(app_config())
    [app] = emulator.apps.values()
    arn = app.record["Arn"]
    moto.record()
    since = len(emulator.requests)
    plan = bootstrap.run(app_config(**change))
    assert [(s.resource, s.action) for s in plan.steps if s.action != "ok"] == [
        ("mlflow-app", "update")
    ]
    assert sagemaker_writes(emulator, since) == written
    assert moto.writes() == []
    if field:
        assert app.record[field] == value
    else:
        assert emulator.tags[arn] == [MANAGED_BY, {"Key": "team", "Value": "vision"}]
    # The App's other settings, and the App itself, are as they were.
    assert list(emulator.apps) == [arn] and app.record["ArtifactStoreUri"] == URI
    emulator.set_status("mlflow-tracking", "Updated")
    since = len(emulator.requests)
    assert bootstrap.run(app_config(**change)).writes == []
    assert sagemaker_writes(emulator, since) == []


def test_someone_elses_tags_are_kept(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    arn = emulator.put_app(
        "mlflow-tracking",
        "Created",
        tags={"owner": "platform"},
        ArtifactStoreUri=URI,
    )
    plan = bootstrap.run(app_config())
    assert plan.tracking_arn == arn
    [step] = [s for s in plan.steps if s.resource == "mlflow-app"]
    assert (step.action, step.detail) == ("update", "Tags")
    assert emulator.tags[arn] == [{"Key": "owner", "Value": "platform"}, MANAGED_BY]


def test_create_failed_exits_nonzero_with_the_reason_and_no_traceback(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    _, emulator = aws
    emulator.create_outcome = "CreateFailed"
    result = cli("bootstrap", *FLAGS, "--wait")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "mlflow-webhook: error: MLflow App mlflow-tracking is CreateFailed; "
    )
    # The App's state, not the run, is what failed: the next run says so at once.
    again = cli("bootstrap", *FLAGS)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [result.stderr.splitlines()[-1]]


def test_update_failed_ends_the_wait(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    bootstrap.run(app_config())
    emulator.update_outcome = "UpdateFailed"
    with pytest.raises(BootstrapError, match="MLflow App mlflow-tracking is UpdateFailed"):
        bootstrap.run(app_config(automatic_model_registration=True, wait=True), sleep=lambda _: 0)


@pytest.mark.parametrize(
    "given",
    [
        ["--tracking-server-size", "Small"],
        ["--mlflow-version", "3.0.0"],
    ],
)
def test_server_only_flags_with_an_app_are_a_usage_error(
    aws: tuple[Moto, SageMakerEmulator], given: list[str]
) -> None:
    _, emulator = aws
    for command in ("bootstrap", "serve"):
        result = cli(command, *FLAGS, *given)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"mlflow-webhook: error: {given[0]} applies to a tracking server")
    # The kind from the environment is refused the same way.
    env = {**os.environ, "MLFLOW_WEBHOOK_KIND": "app"}
    result = cli("bootstrap", *FLAGS[2:], *given, env=env)
    assert result.returncode == 2 and "not to --kind app" in result.stderr
    assert emulator.requests == []


def test_account_default_only_when_asked(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    other = emulator.put_app("theirs", "Created", AccountDefaultStatus="ENABLED")
    bootstrap.run(app_config())
    ours = emulator.app_named("mlflow-tracking").record
    assert ours["AccountDefaultStatus"] == "DISABLED"
    assert emulator.apps[other].record["AccountDefaultStatus"] == "ENABLED"
    emulator.set_status("mlflow-tracking", "Created")
    plan = bootstrap.run(app_config(account_default=True))
    assert [s.detail for s in plan.steps if s.resource == "mlflow-app"] == ["AccountDefaultStatus"]
    assert ours["AccountDefaultStatus"] == "ENABLED"
    result = cli("bootstrap", "--account-default", *FLAGS[2:])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mlflow-webhook: error: --account-default applies to --kind app only"
    )


def test_wait_shows_progress_until_created(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    emulator.transition_seconds = 1.5  # slow creation
    progress: list[str] = []
    plan = bootstrap.run(app_config(wait=True), progress=progress.append)
    assert plan.tracking_status == "Created"
    assert progress[0].startswith("MLflow App mlflow-tracking: Creating (0m0")
    assert progress[-1].startswith("MLflow App mlflow-tracking: Created (")


def test_found_by_name_across_pages_and_through_throttling(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    _, emulator = aws
    for i in range(23):
        emulator.put_app(f"other-{i}", "Created")
    arn = emulator.put_app("mlflow-tracking", "Created", ArtifactStoreUri=URI, tags={})
    emulator.throttle("ListMlflowApps", 2)
    plan = bootstrap.run(app_config(), sleep=lambda _: None)
    assert plan.tracking_arn == arn
    assert "CreateMlflowApp" not in emulator.calls
    # Two throttled tries, retried; then three pages of ten.
    tokens = [body.get("NextToken") for op, body in emulator.requests if op == "ListMlflowApps"]
    assert tokens == [None, None, None, "10", "20"]


def test_ui_url_and_teardown_find_the_app_by_name(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    assert cli("bootstrap", *FLAGS).returncode == 0
    url = cli("ui-url", "--kind", "app")
    assert url.returncode == 0, url.stderr
    assert url.stdout.startswith("https://") and "authToken=" in url.stdout
    assert "CreatePresignedMlflowAppUrl" in emulator.calls
    missing = cli("ui-url", "--kind", "app", "--tracking-server-name", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "mlflow-webhook: error: no MLflow App is named nope",
    )
    done = cli("teardown", "--kind", "app", "--cluster-name", CLUSTER, "--yes")
    assert done.returncode == 0, done.stderr
    assert "DeleteMlflowApp" in emulator.calls
    assert [a.record["Status"] for a in emulator.apps.values()] == ["Deleting"]


def test_serve_bootstraps_the_app_and_injects_its_arn(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Path
) -> None:
    _, emulator = aws
    server = WebhookProcess(tmp_path, "--self-signed", "--no-kube", *FLAGS, env=dict(os.environ))
    try:
        serving = server.wait_for_log("serving", timeout=90)
        [app] = emulator.apps.values()
        assert serving["tracking_uri"] == app.record["Arn"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer", "labels": {"mlflow-webhook.io/inject": "true"}},
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
        }
        request = urllib.request.Request(
            f"{server.url}/mutate",
            data=json.dumps(review_for(pod)).encode(),
            headers={"Content-Type": "application/json"},
        )
        context: ssl.SSLContext = server.client_context()
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            patch = decode_patch(json.load(response))
        env = [
            op["value"]
            for op in patch
            if op["path"].endswith("/env/-") or op["path"].endswith("/env")
        ]
        flat = [e for item in env for e in (item if isinstance(item, list) else [item])]
        assert {"name": "MLFLOW_TRACKING_URI", "value": app.record["Arn"]} in flat
    finally:
        server.stop()


# Under IAM: the bootstrap as a user whose only policy is what `iam-policy --kind app` prints.
APP_READS = READS | {
    "sagemaker:ListMlflowApps",
    "sagemaker:DescribeMlflowApp",
    "sagemaker:ListTags",
}


def printed_app_policy(moto: Moto, *extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {**moto.endpoints(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    flags = ["--kind", "app", "--artifact-store-uri", IAM_URI, "--region", REGION]
    done = cli(
        "iam-policy", *flags, "--account", ACCOUNT, "--cluster-name", CLUSTER, *extra, env=env
    )
    assert done.returncode == 0, done.stderr
    policy: dict[str, Any] = json.loads(done.stdout)
    return policy


def iam_config(**overrides: Any) -> BootstrapConfig:
    return app_config(artifact_store_uri=IAM_URI, trust_namespaces=("*",), **overrides)


def test_the_printed_policy_is_for_apps_only(aws: tuple[Moto, SageMakerEmulator]) -> None:
    policy = printed_app_policy(aws[0])
    actions = {a for s in policy["Statement"] for a in listed(s["Action"])}
    resources = {r for s in policy["Statement"] for r in listed(s["Resource"])}
    assert not [a for a in actions if "TrackingServer" in a]
    assert not [r for r in resources if ":mlflow-tracking-server/" in r]
    assert {"sagemaker:CreateMlflowApp", "sagemaker:UpdateMlflowApp"} <= actions
    [passrole] = [s for s in policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert passrole["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/mlflow-webhook-tracking-server"
    assert passrole["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


def test_bootstrap_under_exactly_the_printed_app_policy(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    enforced.run_as(printed_app_policy(enforced.moto), monkeypatch)
    plan = bootstrap.run(iam_config(), sleep=lambda _: None)
    assert {s.action for s in plan.steps} == {"create"}
    assert enforced.gate.denials() == []
    [app] = enforced.emulator.apps.values()
    assert plan.tracking_arn == app.record["Arn"]
    assert {c.caller for c in enforced.gate.calls} == {f"arn:aws:iam::{ACCOUNT}:user/bootstrap"}
    first = len(enforced.gate.calls)
    again = bootstrap.run(iam_config(), sleep=lambda _: None)
    assert {s.action for s in again.steps} == {"ok"}
    assert {c.action for c in enforced.gate.calls[first:]} <= APP_READS
    # A drifted registration mode and tag are ours to change under the same policy.
    enforced.emulator.set_status("mlflow-tracking", "Created")
    drifted = iam_config(automatic_model_registration=True, tags={"team": "vision"})
    changed = bootstrap.run(drifted, sleep=lambda _: None)
    assert [s.detail for s in changed.steps if s.action == "update"] == [
        "ModelRegistrationMode, Tags"
    ]
    assert enforced.gate.denials() == []


def test_an_app_someone_else_made_is_read_but_not_changed(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = enforced.emulator.put_app("mlflow-tracking", "Created", ArtifactStoreUri=IAM_URI)
    enforced.run_as(printed_app_policy(enforced.moto), monkeypatch)
    with pytest.raises(BootstrapError) as caught:
        bootstrap.run(iam_config(), sleep=lambda _: None)
    assert str(caught.value).startswith("access denied: AddTags on MLflow App mlflow-tracking")
    assert [(c.action, c.resource) for c in enforced.gate.denials()] == [("sagemaker:AddTags", arn)]
    assert enforced.emulator.tags[arn] == []


def test_serve_needs_only_the_printed_read_only_app_policy(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch
) -> None:
    enforced.run_as(printed_app_policy(enforced.moto), monkeypatch)
    bootstrap.run(iam_config(), sleep=lambda _: None)
    enforced.run_as(printed_app_policy(enforced.moto, "--serve"), monkeypatch, user="serve")
    first = len(enforced.gate.calls)
    plan = bootstrap.run(iam_config(), sleep=lambda _: None)
    assert {s.action for s in plan.steps} == {"ok"}
    calls = enforced.gate.calls[first:]
    assert [c for c in calls if not c.allowed] == []
    assert {c.action for c in calls} <= APP_READS


@pytest.mark.parametrize(
    "action",
    ["sagemaker:ListMlflowApps", "sagemaker:CreateMlflowApp", "sagemaker:AddTags", "iam:PassRole"],
)
def test_a_policy_missing_one_app_action_is_denied_naming_it(
    enforced: Enforced, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    enforced.run_as(without(printed_app_policy(enforced.moto), action), monkeypatch)
    with pytest.raises(BootstrapError) as caught:
        bootstrap.run(iam_config(), sleep=lambda _: None)
    assert action in str(caught.value)
    assert enforced.emulator.apps == {}
