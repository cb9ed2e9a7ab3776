"""`mlflow-webhook teardown` against moto's server (IAM, STS, S3, EKS) and the SageMaker and EKS
Pod Identity emulators, after a real `bootstrap`. Writes are counted where they land: moto's own
recording of the requests it served, and each emulator's record of the operations it answered."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.aws.eks import EksPodIdentityEmulator
from tests.aws.moto import CLUSTER, READS, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import URI, config
from tests.test_lifecycle import cli
from webhook.aws import bootstrap
from webhook.core.plans import Step
from webhook.core.teardown import Found, decide

FLAGS = ["--cluster-name", CLUSTER]
PERSON_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Notebooks",
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def inventory(moto: Moto, emulator: SageMakerEmulator) -> set[str]:
    """Everything in the account that a bootstrap could have made, by kind and name."""
    iam, s3 = moto.client("iam"), moto.client("s3")
    found = {f"role/{r['RoleName']}" for r in iam.list_roles()["Roles"]}
    found |= {f"policy/{p['PolicyName']}" for p in iam.list_policies(Scope="Local")["Policies"]}
    found |= {
        f"role/{r}:attached/{p['PolicyName']}"
        for r in [x.removeprefix("role/") for x in found if x.startswith("role/")]
        for p in iam.list_attached_role_policies(RoleName=r)["AttachedPolicies"]
    }
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    found |= {f"oidc/{p['Arn'].rsplit('/', 1)[-1]}" for p in providers}
    found |= {f"bucket/{b['Name']}" for b in s3.list_buckets()["Buckets"]}
    found |= {f"server/{name}" for name in emulator.servers}
    return found


def emulator_writes(calls: list[str]) -> list[str]:
    return [c for c in calls if not c.startswith(READS)]


def teardown(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cli("teardown", *FLAGS, *args, stdin=stdin)


def test_removes_exactly_what_bootstrap_made(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    before = inventory(moto, emulator)
    bootstrap.run(config())
    made = inventory(moto, emulator) - before
    assert "bucket/team-mlflow" in made and "server/mlflow-tracking" in made

    moto.record()
    emulator.calls.clear()
    dry = teardown("--dry-run", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    assert moto.writes() == [] and emulator_writes(emulator.calls) == []
    planned = {(s["resource"], s["name"]): s["action"] for s in json.loads(dry.stdout)["steps"]}
    assert planned[("s3-bucket", "team-mlflow")] == "keep"
    assert planned[("tracking-server", "mlflow-tracking")] == "delete"
    assert inventory(moto, emulator) - before == made

    moto.record()
    done = teardown("--yes")
    assert done.returncode == 0, done.stderr
    # Everything the bootstrap made is gone but the bucket, kept without --delete-artifacts.
    assert inventory(moto, emulator) - before == {"bucket/team-mlflow"}
    assert before <= inventory(moto, emulator)
    assert "DeleteOpenIDConnectProvider" in moto.writes()

    moto.record()
    emulator.calls.clear()
    # With the server gone, the bucket is found by the artifact store bootstrap was given.
    again = teardown("--yes", "--artifact-store-uri", URI)
    assert again.returncode == 0, again.stderr
    assert moto.writes() == [] and emulator_writes(emulator.calls) == []
    assert "0 of 1 resources would change" in again.stdout


def test_what_others_made_survives(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    iam, s3 = moto.client("iam"), moto.client("s3")
    # A bucket with artifacts, the pod role and the cluster's OIDC provider, all made by people.
    s3.create_bucket(
        Bucket="team-mlflow", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    s3.put_object(Bucket="team-mlflow", Key="artifacts/run-1/model.pkl", Body=b"weights")
    iam.create_role(
        RoleName="SM_MLFLOW_ACCESS_ROLE", AssumeRolePolicyDocument=json.dumps(PERSON_TRUST)
    )
    issuer = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]["identity"]["oidc"][
        "issuer"
    ]
    iam.create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"])
    before = inventory(moto, emulator)
    bootstrap.run(config())
    trust = iam.get_role(RoleName="SM_MLFLOW_ACCESS_ROLE")["Role"]["AssumeRolePolicyDocument"]
    assert len(trust["Statement"]) == 2  # the bootstrap added ours beside the person's

    done = teardown("--yes", "--delete-artifacts")
    assert done.returncode == 0, done.stderr
    assert inventory(moto, emulator) == before
    assert s3.get_object(Bucket="team-mlflow", Key="artifacts/run-1/model.pkl")["Body"].read() == (
        b"weights"
    )
    trust = iam.get_role(RoleName="SM_MLFLOW_ACCESS_ROLE")["Role"]["AssumeRolePolicyDocument"]
    assert trust == PERSON_TRUST
    assert "not made by mlflow-webhook" in done.stdout

    moto.record()
    emulator.calls.clear()
    assert teardown("--yes", "--delete-artifacts").returncode == 0
    assert moto.writes() == [] and emulator_writes(emulator.calls) == []


def test_delete_artifacts_removes_our_bucket_with_its_objects(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, _ = aws
    bootstrap.run(config())
    s3 = moto.client("s3")
    s3.put_object(Bucket="team-mlflow", Key="artifacts/run-1/metric.json", Body=b"{}")
    done = teardown("--yes", "--delete-artifacts")
    assert done.returncode == 0, done.stderr
    assert s3.list_buckets()["Buckets"] == []


SERVER_ROLE = "mlflow-webhook-tracking-server"


def someone_elses_server_on_ours(moto: Moto, emulator: SageMakerEmulator, case: str) -> str:
    """After a bootstrap, a tracking server or App that this teardown keeps and that stores its
    artifacts in our bucket and runs as our execution role; how the plan names it."""
    role = moto.client("iam").get_role(RoleName=SERVER_ROLE)["Role"]["Arn"]
    uses = {"ArtifactStoreUri": "s3://team-mlflow/theirs", "RoleArn": role}
    if case == "our-name-untagged":
        # Made by a person under the name bootstrap uses: bootstrap found it and left it untagged.
        server = emulator.servers["mlflow-tracking"].record
        emulator.tags[server["TrackingServerArn"]] = []
        return "tracking server mlflow-tracking"
    if case == "other-server":
        emulator.put_server("their-tracking", "Created", **uses)
        return "tracking server their-tracking"
    emulator.put_app("their-app", "Created", **uses)
    return "MLflow App their-app"


@pytest.mark.parametrize("case", ["our-name-untagged", "other-server", "other-app"])
def test_a_bucket_and_role_a_kept_server_uses_stay(
    aws: tuple[Moto, SageMakerEmulator], case: str
) -> None:
    """With --delete-artifacts: our bucket holds a kept server's artifacts and our execution
    role runs it, so both stay, and the plan says which server still uses them."""
    moto, emulator = aws
    bootstrap.run(config())
    s3 = moto.client("s3")
    s3.put_object(Bucket="team-mlflow", Key="theirs/run-1/model.pkl", Body=b"weights")
    user = someone_elses_server_on_ours(moto, emulator, case)

    dry = teardown("--dry-run", "--delete-artifacts", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    steps = {(s["resource"], s["name"]): s for s in json.loads(dry.stdout)["steps"]}
    for kept in [("s3-bucket", "team-mlflow"), ("iam-role", SERVER_ROLE)]:
        assert steps[kept]["action"] == "keep", steps[kept]
        assert steps[kept]["detail"] == f"still used by {user}"
    done = teardown("--yes", "--delete-artifacts")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"still used by {user}") >= 2
    assert s3.get_object(Bucket="team-mlflow", Key="theirs/run-1/model.pkl")["Body"].read() == (
        b"weights"
    )
    assert moto.client("iam").get_role(RoleName=SERVER_ROLE)["Role"]["Arn"]
    theirs = case != "our-name-untagged"
    assert ("mlflow-tracking" in emulator.servers) is not theirs  # ours went, unless it is not
    assert steps[("iam-role", "SM_MLFLOW_ACCESS_ROLE")]["action"] == "delete"


def test_an_oidc_provider_another_role_trusts_stays(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, _ = aws
    bootstrap.run(config())
    iam = moto.client("iam")
    [provider] = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    other = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider["Arn"]},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    iam.create_role(RoleName="external-dns", AssumeRolePolicyDocument=json.dumps(other))
    done = teardown("--yes")
    assert done.returncode == 0, done.stderr
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == [provider]
    assert "still used by role external-dns" in done.stdout


def test_pod_identity_associations_go_with_the_role(
    aws: tuple[Moto, SageMakerEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, _ = aws
    eks = EksPodIdentityEmulator(moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EKS", eks.start())
    try:
        bootstrap.run(config(credentials="pod-identity", trust_namespaces=("team-a", "team-b")))
        assert len(eks.associations) == 2
        eks.calls.clear()
        assert teardown("--dry-run").returncode == 0
        assert emulator_writes(eks.calls) == []
        done = teardown("--yes")
        assert done.returncode == 0, done.stderr
        assert eks.associations == []
        assert emulator_writes(eks.calls) == ["DeletePodIdentityAssociation"] * 2
    finally:
        eks.stop()


@pytest.mark.parametrize(
    ("stdin", "code", "says"),
    [
        (
            "",
            2,
            "mlflow-webhook: error: nothing removed: no answer on stdin "
            "(give --yes to delete without asking)\n",
        ),
        ("n\n", 1, "[y/N] mlflow-webhook: nothing removed\n"),
    ],
    ids=["no-answer", "no"],
)
def test_it_asks_before_deleting(
    aws: tuple[Moto, SageMakerEmulator], stdin: str, code: int, says: str
) -> None:
    moto, emulator = aws
    bootstrap.run(config())
    moto.record()
    emulator.calls.clear()
    result = teardown(stdin=stdin)
    assert result.returncode == code
    # Each case its own last words: the question, then why nothing was removed.
    assert result.stderr.endswith(says), result.stderr
    assert moto.writes() == [] and emulator_writes(emulator.calls) == []


def test_the_artifact_store_is_checked_like_bootstrap() -> None:
    result = cli("teardown", "--artifact-store-uri", "s3://b/p", "--region", "us-west-2")
    assert result.returncode == 2
    assert "'b', which is not a valid S3 bucket name" in result.stderr


DECISIONS: list[tuple[Found, bool, Step]] = [
    (Found("tracking-server", "t", True), False, Step("tracking-server", "t", "delete")),
    (
        Found("tracking-server", "t", False),
        False,
        Step("tracking-server", "t", "keep", "not made by mlflow-webhook"),
    ),
    (
        Found("s3-bucket", "b", True),
        False,
        Step("s3-bucket", "b", "keep", "artifacts kept (--delete-artifacts removes them)"),
    ),
    (Found("s3-bucket", "b", True), True, Step("s3-bucket", "b", "delete")),
    (
        Found("s3-bucket", "b", False),
        True,
        Step("s3-bucket", "b", "keep", "not made by mlflow-webhook"),
    ),
    (
        Found("iam-oidc-provider", "h", True, ("role x",)),
        False,
        Step("iam-oidc-provider", "h", "keep", "still used by role x"),
    ),
    (
        Found("iam-role", "r", False, inside=("trust statement S",)),
        False,
        Step("iam-role", "r", "update", "remove trust statement S"),
    ),
]


@pytest.mark.parametrize(("found", "artifacts", "step"), DECISIONS)
def test_decisions(found: Found, artifacts: bool, step: Step) -> None:
    assert decide([found], delete_artifacts=artifacts) == [step]
