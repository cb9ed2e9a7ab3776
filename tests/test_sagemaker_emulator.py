"""The SageMaker MLflow emulator keeps to botocore's service model and the real lifecycle."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.aws.sagemaker import SageMakerEmulator

ROLE = "arn:aws:iam::123456789012:role/server"


@pytest.fixture
def emulator() -> Iterator[SageMakerEmulator]:
    e = SageMakerEmulator()
    e.start()
    yield e
    e.stop()


def client(
    emulator: SageMakerEmulator, validate: bool = True, retries: dict[str, Any] | None = None
) -> Any:
    return boto3.client(
        "sagemaker",
        endpoint_url=emulator.url,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=validate, retries=retries or {"max_attempts": 1}),
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("TrackingServerName", "bad name!", "regular expression pattern"),
        ("TrackingServerName", "x" * 257, "length less than or equal to 256"),
        ("TrackingServerSize", "Huge", "enum value set: [Small, Medium, Large]"),
        ("RoleArn", "arn:aws:iam::1:r", "length greater than or equal to 20"),
        ("WeeklyMaintenanceWindowStart", "Someday", "regular expression pattern"),
        ("Tags", [{"Key": "k\u0007", "Value": "v"}], "regular expression pattern"),
    ],
)
def test_requests_are_checked_against_the_model(
    emulator: SageMakerEmulator, field: str, value: Any, says: str
) -> None:
    """What botocore's client leaves unchecked (patterns, enums, maximum lengths) is checked."""
    request = {
        "TrackingServerName": "ok",
        "ArtifactStoreUri": "s3://b/p",
        "RoleArn": ROLE,
        field: value,
    }
    refused(lambda: client(emulator, validate=False).create_mlflow_tracking_server(**request), says)
    assert emulator.servers == {}


def refused(call: Callable[[], Any], says: str) -> None:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert says in caught.value.response["Error"]["Message"]


def test_unicode_letters_pass_tag_patterns(emulator: SageMakerEmulator) -> None:
    client(emulator).create_mlflow_tracking_server(
        TrackingServerName="ok",
        ArtifactStoreUri="s3://b/p",
        RoleArn=ROLE,
        Tags=[{"Key": "équipe", "Value": "ML 1"}],
    )


def test_lifecycle_and_errors(emulator: SageMakerEmulator) -> None:
    emulator.transition_seconds = 0.2
    sm = client(emulator)
    sm.create_mlflow_tracking_server(
        TrackingServerName="t", ArtifactStoreUri="s3://b/p", RoleArn=ROLE
    )
    assert (
        sm.describe_mlflow_tracking_server(TrackingServerName="t")["TrackingServerStatus"]
        == "Creating"
    )
    with pytest.raises(ClientError, match="ResourceInUse"):
        sm.create_mlflow_tracking_server(
            TrackingServerName="t", ArtifactStoreUri="s3://b/p", RoleArn=ROLE
        )
    time.sleep(0.3)
    assert (
        sm.describe_mlflow_tracking_server(TrackingServerName="t")["TrackingServerStatus"]
        == "Created"
    )
    sm.stop_mlflow_tracking_server(TrackingServerName="t")
    assert (
        sm.describe_mlflow_tracking_server(TrackingServerName="t")["TrackingServerStatus"]
        == "Stopping"
    )
    with pytest.raises(ClientError, match="Cannot start"):
        sm.start_mlflow_tracking_server(TrackingServerName="t")
    time.sleep(0.3)
    sm.start_mlflow_tracking_server(TrackingServerName="t")
    time.sleep(0.3)
    assert (
        sm.describe_mlflow_tracking_server(TrackingServerName="t")["TrackingServerStatus"]
        == "Started"
    )
    with pytest.raises(ClientError) as caught:
        sm.describe_mlflow_tracking_server(TrackingServerName="missing")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFound"


def test_wire_protocol_is_enforced(emulator: SageMakerEmulator) -> None:
    def post(headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(
            emulator.url + "/", data=b"{}", headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    json11 = "application/x-amz-json-1.1"
    status, body = post(
        {"X-Amz-Target": "SageMaker.ListMlflowTrackingServers", "Content-Type": json11}
    )
    assert (status, "MissingAuthenticationTokenException" in body) == (400, True)
    status, body = post({"X-Amz-Target": "SageMaker.NoSuchThing", "Content-Type": json11})
    assert "UnknownOperationException" in body
    scope = "Credential=AKID/20261126/us-west-2/sagemaker/aws4_request"
    auth = f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=0"
    status, body = post(
        {
            "X-Amz-Target": "SageMaker.ListMlflowTrackingServers",
            "Content-Type": "text/plain",
            "Authorization": auth,
        }
    )
    assert "SerializationException" in body


def test_throttling_is_retried_by_botocore(emulator: SageMakerEmulator) -> None:
    emulator.throttle("ListMlflowTrackingServers", 2)
    adaptive = client(emulator, retries={"mode": "adaptive", "max_attempts": 5})
    response = adaptive.list_mlflow_tracking_servers()
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    # Every try reaches the emulator: two throttled, then one served.
    assert emulator.calls.count("ListMlflowTrackingServers") == 3


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("Name", "bad name!", "regular expression pattern"),
        ("ModelRegistrationMode", "On", "enum value set: [AutoModelRegistrationEnabled"),
        ("AccountDefaultStatus", "YES", "enum value set: [ENABLED, DISABLED]"),
        ("ArtifactStoreUri", "ftp://b/p", "regular expression pattern"),
        ("Tags", [{"Key": "k", "Value": "v"}] * 51, "length less than or equal to 50"),
    ],
)
def test_app_requests_are_checked_against_the_model(
    emulator: SageMakerEmulator, field: str, value: Any, says: str
) -> None:
    request = {"Name": "ok", "ArtifactStoreUri": "s3://b/p", "RoleArn": ROLE, field: value}
    refused(lambda: client(emulator, validate=False).create_mlflow_app(**request), says)
    assert emulator.apps == {}


def test_app_lifecycle_and_errors(emulator: SageMakerEmulator) -> None:
    # Slow creation, as far as a client can tell; long enough for a busy machine.
    emulator.transition_seconds = 1.0
    sm = client(emulator)
    arn = sm.create_mlflow_app(Name="a", ArtifactStoreUri="s3://b/p", RoleArn=ROLE)["Arn"]
    assert arn.startswith("arn:aws:sagemaker:us-west-2:123456789012:mlflow-app/app-")
    assert sm.describe_mlflow_app(Arn=arn)["Status"] == "Creating"
    with pytest.raises(ClientError, match="ResourceInUse"):
        sm.create_mlflow_app(Name="a", ArtifactStoreUri="s3://b/p", RoleArn=ROLE)
    with pytest.raises(ClientError, match="ConflictException"):
        sm.update_mlflow_app(Arn=arn, ModelRegistrationMode="AutoModelRegistrationEnabled")
    time.sleep(1.1)
    described = sm.describe_mlflow_app(Arn=arn)
    assert (described["Status"], described["ModelRegistrationMode"]) == (
        "Created",
        "AutoModelRegistrationDisabled",
    )
    sm.update_mlflow_app(Arn=arn, ModelRegistrationMode="AutoModelRegistrationEnabled")
    assert sm.describe_mlflow_app(Arn=arn)["Status"] == "Updating"
    time.sleep(1.1)
    assert sm.describe_mlflow_app(Arn=arn)["Status"] == "Updated"
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "a"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "a"}]
    url = sm.create_presigned_mlflow_app_url(Arn=arn, ExpiresInSeconds=60)["AuthorizedUrl"]
    assert url.startswith("https://") and "authToken=" in url
    sm.delete_mlflow_app(Arn=arn)
    assert sm.describe_mlflow_app(Arn=arn)["Status"] == "Deleting"
    time.sleep(1.1)
    with pytest.raises(ClientError) as caught:
        sm.describe_mlflow_app(Arn=arn)
    assert caught.value.response["Error"]["Code"] == "ResourceNotFound"
    # Once deleted, the name is free again.
    sm.create_mlflow_app(Name="a", ArtifactStoreUri="s3://b/p", RoleArn=ROLE)


def test_app_creation_can_fail(emulator: SageMakerEmulator) -> None:
    emulator.create_outcome = "CreateFailed"
    sm = client(emulator)
    arn = sm.create_mlflow_app(Name="a", ArtifactStoreUri="s3://b/p", RoleArn=ROLE)["Arn"]
    assert sm.describe_mlflow_app(Arn=arn)["Status"] == "CreateFailed"
    [summary] = sm.list_mlflow_apps(Status="CreateFailed")["Summaries"]
    assert summary["Arn"] == arn


def test_apps_are_listed_in_pages_and_throttling_is_retried(emulator: SageMakerEmulator) -> None:
    for i in range(12):
        emulator.put_app(f"app-{i}", "Created")
    emulator.throttle("ListMlflowApps", 1)
    adaptive = client(emulator, retries={"mode": "adaptive", "max_attempts": 5})
    pages = list(adaptive.get_paginator("list_mlflow_apps").paginate(PaginationConfig={}))
    assert [len(p["Summaries"]) for p in pages] == [10, 2]
    assert [s["Name"] for p in pages for s in p["Summaries"]] == [f"app-{i}" for i in range(12)]
    assert pages[0]["ResponseMetadata"]["RetryAttempts"] == 1


def test_only_one_app_is_the_account_default(emulator: SageMakerEmulator) -> None:
    sm = client(emulator)
    first = emulator.put_app("first", "Created", AccountDefaultStatus="ENABLED")
    second = sm.create_mlflow_app(
        Name="second", ArtifactStoreUri="s3://b/p", RoleArn=ROLE, AccountDefaultStatus="ENABLED"
    )["Arn"]
    assert sm.describe_mlflow_app(Arn=first)["AccountDefaultStatus"] == "DISABLED"
    assert sm.describe_mlflow_app(Arn=second)["AccountDefaultStatus"] == "ENABLED"
