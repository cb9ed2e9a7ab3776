"""The two MLflow kinds, decided in one place and described once: what each command means by
its flags, and what the words and policies of each are, with no AWS call."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.aws import adapters
from webhook.aws.config import BootstrapConfig
from webhook.core import kinds, policies
from webhook.core.plans import Plan
from webhook.core.settings import ConfigError

ACCOUNT = "210987654321"
SERVER_ARN = f"arn:aws:sagemaker:us-west-2:{ACCOUNT}:mlflow-tracking-server/mlflow-tracking"
APP_ARN = f"arn:aws:sagemaker:us-west-2:{ACCOUNT}:mlflow-app/app-0123456789ab"


@pytest.mark.parametrize(
    ("arn", "flag", "kind"),
    [
        (None, "tracking-server", kinds.SERVER),
        (None, "app", kinds.APP),
        # An ARN given says for itself what it is, whatever --kind says.
        (APP_ARN, "tracking-server", kinds.APP),
        (SERVER_ARN, "app", kinds.SERVER),
        (f"arn:aws-cn:sagemaker:cn-north-1:{ACCOUNT}:mlflow-app/app-1", "app", kinds.APP),
    ],
)
def test_the_kind_is_the_arns_else_the_flags(arn: str | None, flag: str, kind: kinds.Kind) -> None:
    assert kinds.chosen(arn, flag) is kind
    config = BootstrapConfig(kind=flag, tracking_server_arn=arn, credentials="none")
    assert config.target is kind
    assert adapters.of(kind).kind is kind


def test_every_kind_has_its_calls_and_each_flag_value_names_one() -> None:
    assert [adapter.kind for adapter in adapters.ALL] == list(kinds.ALL)
    assert [kinds.named(name) for name in kinds.NAMES] == list(kinds.ALL)


@pytest.mark.parametrize(
    ("arn", "sid", "action"),
    [
        (SERVER_ARN, "TrackingServer", "sagemaker-mlflow:*"),
        (APP_ARN, "MlflowApp", "sagemaker:CallMlflowAppApi"),
    ],
)
def test_the_pods_may_call_mlflow_on_that_one_only(arn: str, sid: str, action: str) -> None:
    doc = policies.pod_access("aws", arn, "team-mlflow", "runs/")
    assert doc["Statement"][0] == {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": arn}


@pytest.mark.parametrize(
    ("kind", "arn", "line"),
    [
        (kinds.SERVER, SERVER_ARN, f"tracking server: {SERVER_ARN} (Creating)"),
        (kinds.APP, "", "MLflow App: its ARN is assigned by SageMaker when it is created"),
        (kinds.APP, APP_ARN, f"MLflow App: {APP_ARN} (Creating)"),
    ],
)
def test_a_plan_names_what_it_keeps(kind: kinds.Kind, arn: str, line: str) -> None:
    plan = Plan(dry_run=True, kind=kind, tracking_arn=arn, tracking_status="Creating")
    assert line in plan.as_table().splitlines()
    assert f'"kind": "{kind.name}"' in plan.as_json()


@pytest.mark.parametrize(
    ("kind", "asked", "says"),
    [
        ("tracking-server", {"account_default": True}, "--account-default applies to --kind app"),
        (
            "app",
            {"tracking_server_size": "Large", "mlflow_version": "3.0"},
            "--tracking-server-size and --mlflow-version apply to a tracking server, not to "
            "--kind app",
        ),
    ],
)
def test_a_flag_of_the_other_kind_is_refused(kind: str, asked: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        BootstrapConfig(kind=kind, **asked)
