"""End to end with a tracking server in another account: the Pod's web identity gives it our
Pods' role, the plugin assumes the central account's role with it, and the front door takes the
MLflow calls only from that assumed session, and only as far as that role's permissions go.

Everything of the central account is as `iam-policy --central-role` prints it: the role's trust
and permissions, and the statements of its artifact bucket's policy. Where the artifacts go
follows from the plugin (sagemaker_mlflow 0.5.0): its S3 repository is MLflow's, whose boto3
client takes the default credential chain, so the assumed session signs only the MLflow calls.
An artifact lands in the central account's bucket, the tracking server's artifact store:

- direct uploads: written by our Pods' own role, across accounts, so both its identity policy
  (the bootstrap's) and the bucket's policy (the printed statements) must allow it; the IAM
  gate in front of moto checks both (tests/aws/gate.py, `owner_allows`);
- presigned uploads: PUT to a URL the tracking server signed with its execution role, asked
  for through the front door as the assumed session (sagemaker-mlflow:CreatePresignedUploadUrl).

Reading an artifact back (list_artifacts, download_artifacts) is our Pods' own role reading the
central bucket, in both modes.

What moto cannot model, and so is not shown: a presigned PUT goes to moto directly, which takes
it without checking the signature or the signer's permissions, so the execution role's S3 grant
is not exercised; and the bucket policy's account-root principals are not emulated.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from testing.servers import WebhookProcess
from tests.aws.gate import Call
from tests.aws.policy import as_list
from tests.e2e import chain
from tests.e2e.front import Front
from tests.test_end_to_end import cluster, webhook_for  # noqa: F401 - a fixture
from webhook.core import policies

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("cluster")]
CENTRAL = "444455556666"
CENTRAL_ROLE = f"arn:aws:iam::{CENTRAL}:role/central-mlflow-pods"
CENTRAL_SERVER = f"arn:aws:sagemaker:{chain.REGION}:{CENTRAL}:mlflow-tracking-server/central"
CENTRAL_BUCKET = "central-mlflow"
EXECUTION_ROLE = "central-mlflow-server"
VAR = "SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN"
ROUNDTRIP = Path(chain.__file__).with_name("roundtrip.py")
NOTES = "trained by a Pod the webhook wired up"
STEPS = ("run", "metric", "artifact", "listed", "read")
# Every MLflow call of the run, as the front door authorized it for the central role's session.
RUN_ACTIONS = {
    "sagemaker-mlflow:GetExperimentByName",
    "sagemaker-mlflow:CreateExperiment",
    "sagemaker-mlflow:CreateRun",
    "sagemaker-mlflow:LogMetric",
    "sagemaker-mlflow:GetRun",
    "sagemaker-mlflow:UpdateRun",
}


def central(stack: chain.Aws, service: str) -> Any:
    """A client of the central account, as its administrator (moto keys accounts by
    credentials)."""
    admin = stack.moto.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{CENTRAL}:role/admin", RoleSessionName="central-admin"
    )["Credentials"]
    return boto3.client(
        service,
        endpoint_url=stack.moto.url,
        region_name=chain.REGION,
        aws_access_key_id=admin["AccessKeyId"],
        aws_secret_access_key=admin["SecretAccessKey"],
        aws_session_token=admin["SessionToken"],
    )


def printed(uploads: str) -> policies.Document:
    """What `iam-policy --central-role` prints for the central account's administrator."""
    return policies.central_role(
        "aws", chain.ROLE_ARN, CENTRAL_SERVER, CENTRAL_BUCKET, chain.ARTIFACTS, uploads
    )


def put_role_permissions(stack: chain.Aws, doc: policies.Document) -> None:
    """The central role's permissions policy; none at all when `doc` has no statement left."""
    iam, name = central(stack, "iam"), CENTRAL_ROLE.rsplit("/", 1)[1]
    if doc["Statement"]:
        iam.put_role_policy(RoleName=name, PolicyName="mlflow", PolicyDocument=json.dumps(doc))
    else:
        iam.delete_role_policy(RoleName=name, PolicyName="mlflow")


def put_bucket_statements(stack: chain.Aws, statements: list[policies.Document]) -> None:
    s3 = central(stack, "s3")
    if statements:
        doc = policies.document(*statements)
        s3.put_bucket_policy(Bucket=CENTRAL_BUCKET, Policy=json.dumps(doc))
    else:
        s3.delete_bucket_policy(Bucket=CENTRAL_BUCKET)


def put_pod_policy(stack: chain.Aws, uploads: str) -> None:
    """Our Pods' policy as `bootstrap --assume-role-arn` makes it."""
    doc = policies.pod_access(
        "aws", CENTRAL_SERVER, CENTRAL_BUCKET, chain.ARTIFACTS, uploads, CENTRAL_ROLE
    )
    stack.moto.client("iam").put_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="pod", PolicyDocument=json.dumps(doc)
    )


def as_printed(stack: chain.Aws, uploads: str) -> None:
    put_role_permissions(stack, printed(uploads)["RolePermissionsPolicy"])
    put_bucket_statements(stack, printed(uploads)["BucketPolicyStatements"])
    put_pod_policy(stack, uploads)


@pytest.fixture(scope="module")
def execution_role(stack: chain.Aws) -> dict[str, str]:
    """The central account as its administrator sets it up: the tracking server's artifact
    bucket and execution role (as our bootstrap makes them in an account of its own), and the
    central role; everything printed for direct uploads. The execution role's session, which
    SageMaker runs the server with, is returned."""
    iam = central(stack, "iam")
    central(stack, "s3").create_bucket(
        Bucket=CENTRAL_BUCKET, CreateBucketConfiguration={"LocationConstraint": chain.REGION}
    )
    role = iam.create_role(
        RoleName=EXECUTION_ROLE, AssumeRolePolicyDocument=json.dumps(policies.server_trust())
    )["Role"]["Arn"]
    access = policies.server_access("aws", CENTRAL_BUCKET, chain.ARTIFACTS)
    iam.put_role_policy(RoleName=EXECUTION_ROLE, PolicyName="s3", PolicyDocument=json.dumps(access))
    trust = printed("direct")["RoleTrustPolicy"]
    iam.create_role(
        RoleName=CENTRAL_ROLE.rsplit("/", 1)[1], AssumeRolePolicyDocument=json.dumps(trust)
    )
    as_printed(stack, "direct")
    session = stack.moto.client("sts").assume_role(RoleArn=role, RoleSessionName="SageMaker")
    credentials = session["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


@pytest.fixture(scope="module")
def mlflow(
    stack: chain.Aws, execution_role: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[chain.MlflowServer]:
    """The central tracking server: its artifact store is the central account's bucket."""
    server = chain.MlflowServer(
        tmp_path_factory.mktemp("central"),
        stack.moto,
        artifact_root=f"s3://{CENTRAL_BUCKET}/mlflow",
        credentials=execution_role,
    )
    yield server
    server.stop()


def central_webhook(tmp: Path, uploads: str) -> WebhookProcess:
    return webhook_for(
        tmp,
        CENTRAL_SERVER,
        "--credentials",
        "irsa",
        "--role-arn",
        chain.ROLE_ARN,
        "--assume-role-arn",
        CENTRAL_ROLE,
        "--artifact-uploads",
        uploads,
    )


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = central_webhook(tmp_path_factory.mktemp("certs"), "direct")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def presigned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = central_webhook(tmp_path_factory.mktemp("certs"), "presigned")
    yield server
    server.stop()


def steps(ran: chain.Ran) -> list[str]:
    return [line.split()[1] for line in ran.result.stdout.splitlines() if line.startswith("STEP ")]


def central_objects(stack: chain.Aws, artifact_uri: str) -> dict[str, bytes]:
    """The run's artifacts as the central account's administrator finds them in its bucket."""
    bucket, _, prefix = artifact_uri.removeprefix("s3://").partition("/")
    s3 = central(stack, "s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def assert_lands_in_the_central_bucket(
    ran: chain.Ran, stack: chain.Aws, mlflow: chain.MlflowServer, experiment: str
) -> None:
    denied = [c for c in ran.calls if not c.allowed]
    assert ran.result.returncode == 0, (denied, ran.result.stderr[-3000:])
    assert steps(ran) == list(STEPS)
    assert f"READ {NOTES}" in ran.result.stdout
    run = mlflow.run_in(experiment)
    assert [(m["key"], m["value"]) for m in run["data"]["metrics"]] == [("foo", 1.0)]
    artifact_uri = run["info"]["artifact_uri"]
    assert artifact_uri.startswith(f"s3://{CENTRAL_BUCKET}/{chain.ARTIFACTS}")
    objects = central_objects(stack, artifact_uri)
    assert [(k.rsplit("/", 1)[1], v) for k, v in objects.items()] == [
        ("notes.txt", f"{NOTES}\n".encode())
    ]


def front_calls(front: Front, before: int) -> list[Call]:
    return front.calls[before:]


def test_the_run_reaches_the_central_server_and_bucket_as_printed(
    webhook: WebhookProcess,
    pods: chain.Pods,
    stack: chain.Aws,
    mlflow: chain.MlflowServer,
    front: Front,
) -> None:
    verdicts, calls = len(stack.sts.verdicts), len(front.calls)
    ran = pods.train(webhook, "central", ROUNDTRIP)
    assert ran.env[VAR] == CENTRAL_ROLE
    assert_lands_in_the_central_bucket(ran, stack, mlflow, "central")
    # STS let our Pods' role assume the central role, as its trust allows.
    assumed = [v for v in stack.sts.verdicts[verdicts:] if v.role_arn == CENTRAL_ROLE]
    assert assumed and all(v.allowed and v.subject == chain.ROLE_ARN for v in assumed)
    # Every MLflow call came signed by the central role's session, for the central server, and
    # the front door allowed each as that role's printed permissions allow its action.
    assert {(s.arn, s.role_arn) for s in ran.seen} == {(CENTRAL_SERVER, CENTRAL_ROLE)}
    authorized = front_calls(front, calls)
    assert {c.action for c in authorized} == RUN_ACTIONS
    assert all(c.allowed and c.resource == CENTRAL_SERVER for c in authorized)
    assert {c.caller.rsplit("/", 1)[0] for c in authorized} == {
        f"arn:aws:sts::{CENTRAL}:assumed-role/central-mlflow-pods"
    }
    # S3 was our Pods' own role, on the central bucket, as its policy and the bucket's allow.
    s3 = [c for c in ran.calls if c.action.startswith("s3:")]
    assert {(c.action, c.caller.split("/")[1]) for c in s3} == {
        ("s3:PutObject", "SM_MLFLOW_ACCESS_ROLE"),
        ("s3:ListBucket", "SM_MLFLOW_ACCESS_ROLE"),
        ("s3:GetObject", "SM_MLFLOW_ACCESS_ROLE"),
    }
    assert all(c.allowed and c.resource.startswith(f"arn:aws:s3:::{CENTRAL_BUCKET}") for c in s3)


def test_the_printed_central_role_grants_these_actions_and_no_more() -> None:
    """What the central account's administrator is asked to grant, by name."""
    for uploads in ("direct", "presigned"):
        doc = printed(uploads)
        grants = {
            (a, s["Resource"])
            for s in doc["RolePermissionsPolicy"]["Statement"]
            for a in as_list(s["Action"])
        }
        # Training code may make any MLflow call (delete a run, register a model, trace), and
        # some calls have no action in the Service Authorization Reference yet (the presigned
        # upload URL, MLflow 3's trace calls): the wildcard, on the one server only. No
        # sagemaker: control-plane action (the UI's presigned URL included), and no S3.
        assert grants == {("sagemaker-mlflow:*", CENTRAL_SERVER)}
        bucket = {
            (a, s["Principal"]["AWS"])
            for s in doc["BucketPolicyStatements"]
            for a in as_list(s["Action"])
        }
        reads = {("s3:GetObject", chain.ROLE_ARN), ("s3:ListBucket", chain.ROLE_ARN)}
        writes = {("s3:PutObject", chain.ROLE_ARN)} if uploads == "direct" else set()
        assert bucket == reads | writes


def granted(doc: policies.Document) -> list[tuple[str, int, str]]:
    """Each action the printed documents grant: (document, statement, action)."""
    found = []
    for i, s in enumerate(doc["RolePermissionsPolicy"]["Statement"]):
        found += [("RolePermissionsPolicy", i, a) for a in as_list(s["Action"])]
    for i, s in enumerate(doc["BucketPolicyStatements"]):
        found += [("BucketPolicyStatements", i, a) for a in as_list(s["Action"])]
    return found


def without(doc: policies.Document, part: str, index: int, action: str) -> policies.Document:
    """`doc` with one action taken from one statement (the statement gone when it was its
    last)."""
    doc = json.loads(json.dumps(doc))
    statements = doc[part]["Statement"] if part == "RolePermissionsPolicy" else doc[part]
    left = [a for a in as_list(statements[index]["Action"]) if a != action]
    if left:
        statements[index]["Action"] = left
    else:
        del statements[index]
    return doc


@contextlib.contextmanager
def printed_but(stack: chain.Aws, doc: policies.Document) -> Iterator[None]:
    put_role_permissions(stack, doc["RolePermissionsPolicy"])
    put_bucket_statements(stack, doc["BucketPolicyStatements"])
    try:
        yield
    finally:
        as_printed(stack, "direct")


@pytest.mark.parametrize(
    ("part", "index", "action"), granted(printed("direct")), ids=lambda v: str(v)
)
def test_each_granted_action_is_needed(
    part: str,
    index: int,
    action: str,
    webhook: WebhookProcess,
    pods: chain.Pods,
    stack: chain.Aws,
    front: Front,
) -> None:
    calls = len(front.calls)
    with printed_but(stack, without(printed("direct"), part, index, action)):
        ran = pods.train(webhook, f"without-{part}-{index}-{action.replace(':', '-')}", ROUNDTRIP)
    assert ran.result.returncode != 0
    assert steps(ran) != list(STEPS)
    # The first refusal is of that very action: by the front door as the central role, or by
    # S3 as our Pods' role for want of the bucket's leave.
    refused = [c for c in [*front_calls(front, calls), *ran.calls] if not c.allowed]
    assert refused
    pattern = action.removesuffix("*")
    assert all(c.action.startswith(pattern) for c in refused), refused
    if part == "BucketPolicyStatements":
        # Our Pods' own role, refused on the central bucket whose policy alone changed. S3
        # answers a refused HEAD with a bare 403, anything else with AccessDenied.
        assert "AccessDenied" in ran.result.stderr or "(403)" in ran.result.stderr
        assert {c.caller.split("/")[1] for c in refused} == {"SM_MLFLOW_ACCESS_ROLE"}
        assert all(c.resource.startswith(f"arn:aws:s3:::{CENTRAL_BUCKET}") for c in refused)
    else:
        assert "is not authorized to perform: sagemaker-mlflow:" in ran.result.stderr


def test_presigned_uploads_land_in_the_central_bucket(
    presigned: WebhookProcess,
    pods: chain.Pods,
    stack: chain.Aws,
    mlflow: chain.MlflowServer,
    front: Front,
) -> None:
    """Neither our Pods' policy nor the bucket's grants them any S3 write."""
    as_printed(stack, "presigned")
    calls = len(front.calls)
    try:
        ran = pods.train(presigned, "central-presigned", ROUNDTRIP)
    finally:
        as_printed(stack, "direct")
    assert ran.env["SAGEMAKER_PRESIGNED_URL_UPLOAD_ENABLED"] == "true"
    assert_lands_in_the_central_bucket(ran, stack, mlflow, "central-presigned")
    assert "s3:PutObject" not in {c.action for c in ran.calls}
    asked = [c for c in front_calls(front, calls) if c.operation == "CreatePresignedUploadUrl"]
    assert [(c.action, c.caller.split("/")[1], c.allowed) for c in asked] == [
        ("sagemaker-mlflow:CreatePresignedUploadUrl", "central-mlflow-pods", True)
    ]


def test_without_the_role_to_assume_the_run_fails(
    webhook: WebhookProcess, pods: chain.Pods, front: Front
) -> None:
    rejected = len(front.rejected)
    ran = pods.train(webhook, "alone", ROUNDTRIP, without=VAR)
    assert ran.result.returncode != 0
    assert ran.seen == []
    assert front.rejected[rejected:] and all(
        r == f"{chain.ROLE_ARN} is not authorized to call {CENTRAL_SERVER}"
        for r in front.rejected[rejected:]
    )


def test_a_central_role_that_trusts_another_role_is_not_assumed(
    webhook: WebhookProcess, pods: chain.Pods, stack: chain.Aws
) -> None:
    iam = central(stack, "iam")
    name = CENTRAL_ROLE.rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    other = json.loads(json.dumps(trust).replace(chain.ROLE_ARN, chain.ROLE_ARN + "-other"))
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(other))
    try:
        verdicts = len(stack.sts.verdicts)
        ran = pods.train(webhook, "untrusted", ROUNDTRIP)
    finally:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    assert ran.result.returncode != 0
    assert "AccessDenied" in ran.result.stderr
    refused = [v for v in stack.sts.verdicts[verdicts:] if v.role_arn == CENTRAL_ROLE]
    assert refused and not any(v.allowed for v in refused)
    assert ran.seen == []
