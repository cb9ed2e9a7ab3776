"""The AWS bootstrap against moto's server (IAM, STS, S3, EKS) and the SageMaker emulator, both
reached only through the SDK's AWS_ENDPOINT_URL_<SERVICE> variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.aws.eks import EksPodIdentityEmulator
from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto, serve_bootstrapping
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_iam_enforced import READS
from webhook.aws import bootstrap
from webhook.aws.clients import BootstrapError
from webhook.aws.config import BootstrapConfig
from webhook.core import policies

URI = "s3://team-mlflow/artifacts"
SERVER_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/mlflow-tracking"


def config(**overrides: Any) -> BootstrapConfig:
    base: dict[str, Any] = {
        "cluster_name": CLUSTER,
        "artifact_store_uri": URI,
        "trust_namespaces": ("team-a", "team-b"),
        "role_propagation_seconds": 20,
    }
    return BootstrapConfig(**{**base, **overrides})


def role_trust(moto: Moto, name: str) -> policies.Document:
    return dict(moto.client("iam").get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"])


def issuer_host(moto: Moto) -> str:
    issuer = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]["identity"]["oidc"][
        "issuer"
    ]
    return str(issuer).removeprefix("https://")


def test_fresh_account_then_nothing_to_do(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    plan = bootstrap.run(config())
    assert [(s.resource, s.name, s.action) for s in plan.steps] == [
        ("s3-bucket", "team-mlflow", "create"),
        ("iam-role", "mlflow-webhook-tracking-server", "create"),
        ("iam-role-policy", "mlflow-webhook-tracking-server/mlflow-webhook-artifacts", "create"),
        ("tracking-server", "mlflow-tracking", "create"),
        ("iam-policy", "SageMakerMlFlowAccessPolicy", "create"),
        ("iam-oidc-provider", issuer_host(moto), "create"),
        ("iam-role", "SM_MLFLOW_ACCESS_ROLE", "create"),
        ("iam-attachment", "SM_MLFLOW_ACCESS_ROLE <- SageMakerMlFlowAccessPolicy", "create"),
    ]
    assert plan.tracking_arn == SERVER_ARN
    assert plan.pod_role_arn == f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE"
    s3, iam = moto.client("s3"), moto.client("iam")
    assert s3.get_public_access_block(Bucket="team-mlflow")["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket="team-mlflow")["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # The execution role: SageMaker only, and S3 on the artifact prefix only.
    assert role_trust(moto, "mlflow-webhook-tracking-server")["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    access = iam.get_role_policy(
        RoleName="mlflow-webhook-tracking-server", PolicyName="mlflow-webhook-artifacts"
    )
    resources = {s["Resource"] for s in access["PolicyDocument"]["Statement"]}
    assert resources == {"arn:aws:s3:::team-mlflow/artifacts/*", "arn:aws:s3:::team-mlflow"}
    created = emulator.servers["mlflow-tracking"].record
    assert created["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/mlflow-webhook-tracking-server"
    assert created["ArtifactStoreUri"] == URI
    # The pod policy: sagemaker-mlflow on this server only, not the recipe's sagemaker:*.
    policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"][
        "Document"
    ]
    assert doc["Statement"][0] == {
        "Sid": "TrackingServer",
        "Effect": "Allow",
        "Action": "sagemaker-mlflow:*",
        "Resource": SERVER_ARN,
    }
    assert {"s3:GetObject", "s3:PutObject"} == set(doc["Statement"][1]["Action"])
    # The pod role: the cluster's OIDC provider, our audience, our ServiceAccount in exactly the
    # namespaces asked for.
    host = issuer_host(moto)
    [statement] = role_trust(moto, "SM_MLFLOW_ACCESS_ROLE")["Statement"]
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"}
    assert statement["Condition"] == {
        "StringEquals": {
            f"{host}:aud": "sts.amazonaws.com",
            f"{host}:sub": [
                "system:serviceaccount:team-a:sagemaker-mlflow-sa",
                "system:serviceaccount:team-b:sagemaker-mlflow-sa",
            ],
        }
    }
    attached = iam.list_attached_role_policies(RoleName="SM_MLFLOW_ACCESS_ROLE")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [policy_arn]

    again = bootstrap.run(config())
    assert again.writes == []
    assert {s.action for s in again.steps} == {"ok"}
    assert again.tracking_arn == SERVER_ARN


def test_dry_run_writes_nothing(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    plan = bootstrap.run(config(dry_run=True))
    assert plan.writes == []
    assert plan.changes == len(plan.steps) == 8
    assert plan.tracking_arn == SERVER_ARN
    assert moto.client("s3").list_buckets()["Buckets"] == []
    assert moto.client("iam").list_roles()["Roles"] == []
    assert moto.client("iam").list_policies(Scope="Local")["Policies"] == []
    assert moto.client("iam").list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    assert emulator.servers == {}
    assert all(not c.startswith(("Create", "Start", "Update")) for c in emulator.calls)


def test_half_created_state_is_repaired(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    emulator.inject(
        "CreateMlflowTrackingServer",
        "ResourceLimitExceeded",
        "The account-level service limit for tracking servers is 1",
    )
    with pytest.raises(
        BootstrapError,
        match="CreateMlflowTrackingServer on tracking server mlflow-tracking failed: "
        "ResourceLimitExceeded",
    ):
        bootstrap.run(config())
    assert emulator.servers == {}
    plan = bootstrap.run(config())
    actions = {s.resource: s.action for s in plan.steps}
    assert actions["s3-bucket"] == actions["iam-role-policy"] == "ok"
    assert actions["tracking-server"] == actions["iam-policy"] == "create"
    assert bootstrap.run(config()).writes == []


def test_stopped_server_is_started_and_waited_for(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    bootstrap.run(config())
    emulator.set_status("mlflow-tracking", "Stopped")
    emulator.transition_seconds = 2.0  # longer than the pod side takes on a busy machine
    progress: list[str] = []
    plan = bootstrap.run(config(wait=True), progress=progress.append)
    assert [s.action for s in plan.steps if s.resource == "tracking-server"] == ["start"]
    assert plan.tracking_status == "Started"
    assert progress[0].startswith("tracking server mlflow-tracking: Starting (0m0")
    assert "StartMlflowTrackingServer" in emulator.calls


def test_trust_drift_adds_the_namespace_and_keeps_the_rest(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    """A role made by hand from the recipe, trusting team-a only, beside a statement of its own."""
    moto, _ = aws
    host = issuer_host(moto)
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"
    theirs = {
        "Effect": "Allow",
        "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {f"{host}:sub": "system:serviceaccount:team-a:sagemaker-mlflow-sa"}
        },
    }
    ci = {
        "Sid": "CiRunner",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "sts:AssumeRole",
    }
    iam = moto.client("iam")
    iam.create_role(
        RoleName="SM_MLFLOW_ACCESS_ROLE",
        AssumeRolePolicyDocument=json.dumps(policies.document(theirs, ci)),
        Description="hand-made",
        MaxSessionDuration=7200,
    )
    bootstrap.run(config(trust_namespaces=("team-a", "team-b")))
    trust = role_trust(moto, "SM_MLFLOW_ACCESS_ROLE")
    assert trust["Statement"][:2] == [theirs, ci]
    assert policies.trusted_subjects(trust, host) >= {
        "system:serviceaccount:team-a:sagemaker-mlflow-sa",
        "system:serviceaccount:team-b:sagemaker-mlflow-sa",
    }
    role = iam.get_role(RoleName="SM_MLFLOW_ACCESS_ROLE")["Role"]
    assert (role["Description"], role["MaxSessionDuration"]) == ("hand-made", 7200)
    assert bootstrap.run(config(trust_namespaces=("team-a", "team-b"))).writes == []


def our_subjects(moto: Moto) -> dict[str, list[str]]:
    """The subject condition of our statement, by operator."""
    host = issuer_host(moto)
    trust = role_trust(moto, "SM_MLFLOW_ACCESS_ROLE")
    [ours] = [s for s in trust["Statement"] if s.get("Sid") == policies.TRUST_SID]
    return {
        operator: values[f"{host}:sub"]
        for operator, values in ours["Condition"].items()
        if f"{host}:sub" in values
    }


def test_trust_lists_exactly_the_namespaces_asked_for(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, _ = aws
    with pytest.raises(BootstrapError, match="needs --trust-namespaces") as caught:
        bootstrap.run(config(trust_namespaces=()))
    assert caught.value.exit_code == 2
    assert moto.client("iam").list_roles()["Roles"] == []

    def sub(namespace: str) -> str:
        return f"system:serviceaccount:{namespace}:sagemaker-mlflow-sa"

    bootstrap.run(config(trust_namespaces=("team-a", "team-b")))
    assert our_subjects(moto) == {"StringEquals": [sub("team-a"), sub("team-b")]}
    # A namespace dropped from the list loses the trust: our statement is the list, no more.
    bootstrap.run(config(trust_namespaces=("team-b",)))
    assert our_subjects(moto) == {"StringEquals": [sub("team-b")]}
    # Every namespace only when asked for, and then as the one pattern.
    bootstrap.run(config(trust_namespaces=("*",)))
    assert our_subjects(moto) == {"StringLike": [sub("*")]}


def test_two_runs_at_once_end_with_one_of_each(aws: tuple[Moto, SageMakerEmulator]) -> None:
    moto, emulator = aws
    plans: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            plans.append(bootstrap.run(config()))
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert {p.tracking_arn for p in plans} == {SERVER_ARN}
    assert list(emulator.servers) == ["mlflow-tracking"]
    assert emulator.calls.count("CreateMlflowTrackingServer") <= 2
    names = sorted(r["RoleName"] for r in moto.client("iam").list_roles()["Roles"])
    assert names == ["SM_MLFLOW_ACCESS_ROLE", "mlflow-webhook-tracking-server"]
    assert bootstrap.run(config()).writes == []


def test_throttling_and_a_role_not_yet_propagated_are_retried(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    _, emulator = aws
    emulator.throttle("DescribeMlflowTrackingServer", 3)
    emulator.inject(
        "CreateMlflowTrackingServer",
        "ValidationException",
        "SageMaker could not assume the role "
        "arn:aws:iam::123456789012:role/mlflow-webhook-tracking-server",
        times=2,
    )
    plan = bootstrap.run(config(), sleep=lambda _: None)
    assert plan.tracking_arn == SERVER_ARN
    assert emulator.calls.count("CreateMlflowTrackingServer") == 3


def test_denied_permission_names_action_and_resource(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    emulator.deny("CreateMlflowTrackingServer", SERVER_ARN)
    with pytest.raises(BootstrapError) as caught:
        bootstrap.run(config())
    message = str(caught.value)
    assert message.startswith(
        "access denied: CreateMlflowTrackingServer on tracking server mlflow-tracking"
    )
    assert f"sagemaker:CreateMlflowTrackingServer on resource: {SERVER_ARN}" in message
    assert "\n" not in message


def test_failed_server_ends_the_run(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    emulator.create_outcome = "CreateFailed"
    with pytest.raises(BootstrapError, match="tracking server mlflow-tracking is CreateFailed"):
        bootstrap.run(config(wait=True), sleep=lambda _: None)
    with pytest.raises(BootstrapError, match="is CreateFailed"):
        bootstrap.run(config())


def test_existing_tracking_server_arn_is_only_verified(aws: tuple[Moto, SageMakerEmulator]) -> None:
    _, emulator = aws
    emulator.put_server("shared", "Created", ArtifactStoreUri="s3://shared-bucket/mlflow/")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/shared"
    plan = bootstrap.run(config(tracking_server_arn=arn, artifact_store_uri=None))
    assert plan.tracking_arn == arn
    assert not [c for c in emulator.calls if not c.startswith("Describe")]
    assert [s.action for s in plan.steps if s.resource == "mlflow-tracking-server"] == ["ok"]
    # The pod policy follows the server's own artifact store, as SageMaker reports it.
    iam = aws[0].client("iam")
    policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/SageMakerMlFlowAccessPolicy"
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"][
        "Document"
    ]
    assert doc["Statement"][0]["Resource"] == arn
    assert doc["Statement"][1]["Resource"] == "arn:aws:s3:::shared-bucket/mlflow/*"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=120,
    )


def test_cli_dry_run_json_and_table(aws: tuple[Moto, SageMakerEmulator]) -> None:
    flags = ["bootstrap", "--cluster-name", CLUSTER, "--artifact-store-uri", URI, "--dry-run"]
    missing = cli(*flags)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith(
        "mlflow-webhook: error: --credentials irsa needs --trust-namespaces"
    )
    flags += ["--trust-namespaces", "team-a"]
    result = cli(*flags, "--output", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dryRun"] is True and plan["writeCalls"] == []
    assert {s["action"] for s in plan["steps"]} == {"create"}
    table = cli(*flags)
    assert table.stdout.splitlines()[0].split() == ["RESOURCE", "NAME", "ACTION", "DETAIL"]
    assert "8 of 8 resources would change; 0 write calls" in table.stdout


def test_cli_missing_credentials_is_one_line_exit_2(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    flags = ["--cluster-name", CLUSTER, "--artifact-store-uri", URI, "--trust-namespaces", "a"]
    result = cli("bootstrap", *flags, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mlflow-webhook: error: no AWS credentials found: "
        "set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run with a role"
    ]


def test_cli_iam_policy_and_ui_url(aws: tuple[Moto, SageMakerEmulator]) -> None:
    flags = ["--artifact-store-uri", URI, "--region", REGION, "--account", ACCOUNT]
    result = cli("iam-policy", *flags, "--cluster-name", CLUSTER)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    # The provider of this cluster's issuer, as EKS reports it, and nothing broader.
    [oidc] = [s for s in doc["Statement"] if s["Sid"] == "OidcProvider"]
    assert oidc["Resource"] == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{issuer_host(aws[0])}"
    assert cli("iam-policy", *flags).stderr.strip() == (
        "mlflow-webhook: error: --credentials irsa needs --cluster-name"
    )
    passrole = [s for s in doc["Statement"] if s.get("Action") == "iam:PassRole"]
    assert passrole == [
        {
            "Sid": "PassServerRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": f"arn:aws:iam::{ACCOUNT}:role/mlflow-webhook-tracking-server",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        }
    ]
    scoped = [s for s in doc["Statement"] if s["Sid"] != "FindOidcProvider"]
    assert "*" not in {
        r
        for s in scoped
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    read = json.loads(cli("iam-policy", "--serve", *flags, "--cluster-name", CLUSTER).stdout)
    actions = {a for s in read["Statement"] for a in s["Action"]}
    # Named by hand, not by the code's own classifier; `tests/test_iam_enforced.py` shows that
    # this policy is enough for serve's bootstrap with everything in place.
    assert actions == READS - {"sts:GetCallerIdentity"}

    cli(
        "bootstrap",
        "--cluster-name",
        CLUSTER,
        "--artifact-store-uri",
        URI,
        "--trust-namespaces",
        "a",
    )
    url = cli("ui-url")
    assert url.returncode == 0, url.stderr
    assert url.stdout.startswith("https://") and "authToken=" in url.stdout
    assert "valid for 300 seconds" in url.stderr


def test_serve_bootstraps_at_startup_and_is_ready_once_usable(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Any
) -> None:
    """No tracking URI: serve runs the bootstrap off the request path; --wait holds readiness."""
    _, emulator = aws
    emulator.transition_seconds = 2.0
    server = serve_bootstrapping(tmp_path, URI)
    try:
        context = server.client_context()

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(server.url + path, context=context, timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        assert status("/healthz") == 200
        assert status("/readyz") == 503
        serving = server.wait_for_log("serving", timeout=60)
        assert serving["tracking_uri"] == SERVER_ARN
        assert serving["credentials"] == "irsa"
        assert status("/readyz") == 200
        assert any(
            e.get("msg", "").startswith("tracking server mlflow-tracking: Creating")
            for e in server.logs
        )
    finally:
        server.stop()


def test_pod_identity_trust_and_associations(
    aws: tuple[Moto, SageMakerEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, _ = aws
    eks = EksPodIdentityEmulator(moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EKS", eks.start())
    try:
        wanted = config(credentials="pod-identity", trust_namespaces=("team-a", "team-b"))
        plan = bootstrap.run(wanted)
        assert [s.name for s in plan.steps if s.resource == "eks-pod-identity"] == [
            "team-a/sagemaker-mlflow-sa",
            "team-b/sagemaker-mlflow-sa",
        ]
        [statement] = role_trust(moto, "SM_MLFLOW_ACCESS_ROLE")["Statement"]
        assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert statement["Action"] == ["sts:AssumeRole", "sts:TagSession"]
        assert statement["Condition"] == {
            "StringEquals": {
                "aws:RequestTag/kubernetes-namespace": ["team-a", "team-b"],
                "aws:RequestTag/kubernetes-service-account": ["sagemaker-mlflow-sa"],
            }
        }
        assert [(a["namespace"], a["serviceAccount"], a["roleArn"]) for a in eks.associations] == [
            ("team-a", "sagemaker-mlflow-sa", plan.pod_role_arn),
            ("team-b", "sagemaker-mlflow-sa", plan.pod_role_arn),
        ]
        assert not [s for s in plan.steps if s.resource == "iam-oidc-provider"]
        assert bootstrap.run(wanted).writes == []
    finally:
        eks.stop()
