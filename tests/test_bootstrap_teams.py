"""The per-team recipe (docs/configuration.md, "One webhook, many teams"): `bootstrap` once per
team, each with its own server, pod role, pod policy and server role names and
`--trust-namespaces team-x`; `--output json` gives the namespace annotations to paste, and pasted
they give that team's Pods that team's server and role. Against moto's server and the SageMaker
emulator."""

from __future__ import annotations

import json

from testing.support import settings
from tests.aws.moto import ACCOUNT, CLUSTER, REGION, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_bootstrap import cli, issuer_host, role_trust
from webhook.core import namespaces, policies

URI, ROLE = "mlflow-webhook.io/tracking-uri", "mlflow-webhook.io/role-arn"


def team_flags(team: str) -> list[str]:
    return [
        "bootstrap",
        "--cluster-name",
        CLUSTER,
        "--artifact-store-uri",
        f"s3://mlflow-{team}/artifacts",
        "--tracking-server-name",
        f"{team}-mlflow",
        "--pod-role-name",
        f"{team}-mlflow-pods",
        "--pod-policy-name",
        f"{team}-mlflow-pods",
        "--server-role-name",
        f"{team}-mlflow-server",
        "--trust-namespaces",
        team,
        "--output",
        "json",
    ]


def test_bootstrap_per_team_gives_the_annotations_to_paste(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    moto, _ = aws
    pasted = {}
    for team in ("team-a", "team-b"):
        done = cli(*team_flags(team))
        assert done.returncode == 0, done.stderr
        plan = json.loads(done.stdout)
        pasted[team] = plan["namespaceAnnotations"]
        assert pasted[team] == {
            URI: f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/{team}-mlflow",
            ROLE: f"arn:aws:iam::{ACCOUNT}:role/{team}-mlflow-pods",
        }
        assert pasted[team] == {URI: plan["trackingServerArn"], ROLE: plan["podRoleArn"]}

    iam, host = moto.client("iam"), issuer_host(moto)
    for team, other in (("team-a", "team-b"), ("team-b", "team-a")):
        # Each pod role trusts its own namespace's ServiceAccount only, and reaches its own
        # server and artifacts only: the second run changed nothing of the first.
        trust = role_trust(moto, f"{team}-mlflow-pods")
        assert policies.trusted_subjects(trust, host) == {
            f"system:serviceaccount:{team}:sagemaker-mlflow-sa"
        }
        policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/{team}-mlflow-pods"
        version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)
        text = json.dumps(document["PolicyVersion"]["Document"])
        assert pasted[team][URI] in text and f"mlflow-{team}/" in text
        assert pasted[other][URI] not in text and f"mlflow-{other}/" not in text

        # Pasted onto the namespace, they are that namespace's settings.
        resolved = namespaces.resolve(tuple(pasted[team].items()), settings())
        assert resolved.settings is not None, resolved.error
        assert resolved.settings.tracking.uri == pasted[team][URI]
        assert resolved.role_arn == pasted[team][ROLE]
