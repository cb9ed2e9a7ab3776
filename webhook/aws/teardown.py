"""The teardown: find what the bootstrap made by its names and tag, plan its removal (a dry run
with reads only), then carry out exactly that plan."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from webhook.aws import adapters, iam
from webhook.aws.clients import BootstrapError, Clients, code, explain
from webhook.aws.config import BootstrapConfig, split_s3_uri
from webhook.core import policies
from webhook.core.plans import Plan
from webhook.core.teardown import (
    Found,
    Running,
    decide,
    is_ours,
    statements,
    trusts_provider,
    used_by,
    without_our_trust,
)

Work = Callable[[Clients], None]


@dataclass
class Teardown:
    """The plan, and for each step that changes something the calls that carry it out."""

    region: str | None
    plan: Plan
    work: dict[tuple[str, str], Work] = field(default_factory=dict)

    def carry_out(self, progress: Callable[[str], None] = lambda _: None) -> Plan:
        clients = Clients(self.region, dry_run=False)
        done = Plan(dry_run=False, steps=list(self.plan.steps), kind=self.plan.kind)
        resource = ""
        try:
            for step in self.plan.steps:
                if step.action in ("delete", "update"):
                    resource = f"{step.resource} {step.name}"
                    progress(f"{step.action} {resource}")
                    self.work[(step.resource, step.name)](clients)
        except (ClientError, BotoCoreError) as error:
            raise explain(error, resource) from error
        finally:
            done.writes = clients.writes
        return done


def plan(config: BootstrapConfig, *, delete_artifacts: bool) -> Teardown:
    """What the teardown would remove, found with reads only (the dry-run guard refuses a write)."""
    clients = Clients(config.region, dry_run=True)
    resource = "the caller identity"
    try:
        account = str(clients.sts.get_caller_identity()["Account"])
        resource = "the bootstrap's resources"
        found, work = _inventory(clients, config, account)
    except BootstrapError:
        raise
    except (ClientError, BotoCoreError) as error:
        raise explain(error, resource) from error
    steps = decide(found, delete_artifacts=delete_artifacts)
    result = Plan(dry_run=True, steps=steps, kind=config.target)
    result.writes = clients.writes
    return Teardown(config.region, result, work)


def _inventory(
    clients: Clients, config: BootstrapConfig, account: str
) -> tuple[list[Found], dict[tuple[str, str], Work]]:
    part = policies.partition(clients.region)
    found: list[Found] = []
    work: dict[tuple[str, str], Work] = {}

    def add(item: Found, job: Work) -> None:
        found.append(item)
        work[(item.resource, item.name)] = job

    mlflow = adapters.of(config.target)
    server = mlflow.find(clients, config.tracking_server_name)
    deleted = ""  # the server or App this teardown removes; it keeps every other one
    bucket = config.bucket
    if server is not None and server.status not in mlflow.kind.gone:
        ours = is_ours(clients.sagemaker.list_tags(ResourceArn=server.arn).get("Tags"))
        add(
            Found(mlflow.kind.step, config.tracking_server_name, ours),
            functools.partial(mlflow.delete, found=server),
        )
        bucket = bucket or split_s3_uri(server.artifact_store_uri)[0]
        deleted = server.arn if ours else ""
    running = _running(clients, deleted)

    pod_role = iam.get_role(clients, config.pod_role_name)
    pod_role_ours = pod_role is not None and is_ours(pod_role.get("Tags"))
    policy_arn = f"arn:{part}:iam::{account}:policy/{config.pod_policy_name}"
    policy = _pod_policy(clients, config, policy_arn)
    goes = policy is not None and policy[0].ours and not policy[0].users
    if pod_role is not None:
        trust = iam.parse_document(pod_role["AssumeRolePolicyDocument"])
        if pod_role_ours and config.cluster_name and _pod_identity(trust):
            _associations(clients, config, str(pod_role["Arn"]), add)
        _pod_role(clients, config, pod_role, trust, policy_arn if goes else "", add)
    if policy is not None:
        add(*policy)  # after the role: deleting the role detaches the policy first

    server_role = iam.get_role(clients, config.server_role_name)
    if server_role is not None:
        users = used_by(running, role_arn=str(server_role["Arn"]))
        add(
            Found("iam-role", config.server_role_name, is_ours(server_role.get("Tags")), users),
            lambda c: _delete_role(c, config.server_role_name),
        )
    if config.cluster_name:
        _oidc_provider(clients, config, account, pod_role if pod_role_ours else None, add)
    if bucket:
        _bucket(clients, bucket, used_by(running, bucket=bucket), add)
    return found, work


def _running(clients: Clients, deleted: str) -> list[Running]:
    """Every tracking server and MLflow App in the region but the one this teardown deletes:
    any of them, ours or anyone's, may store artifacts in our bucket or run as our role."""
    return [
        Running(
            mlflow.kind.what(found.name), split_s3_uri(found.artifact_store_uri)[0], found.role_arn
        )
        for mlflow in adapters.ALL
        for found in mlflow.others(clients, deleted)
    ]


def _pod_identity(trust: policies.Document) -> bool:
    return any(
        (s.get("Principal") or {}).get("Service") == "pods.eks.amazonaws.com"
        for s in statements(trust)
    )


def _pod_policy(clients: Clients, config: BootstrapConfig, arn: str) -> tuple[Found, Work] | None:
    """The Pods' policy and who else it is attached to; None when there is none."""
    try:
        clients.iam.get_policy(PolicyArn=arn)
    except ClientError as error:
        if code(error) != "NoSuchEntity":
            raise
        return None
    ours = is_ours(clients.iam.list_policy_tags(PolicyArn=arn).get("Tags"))
    entities = clients.iam.list_entities_for_policy(PolicyArn=arn)
    users = tuple(
        [
            f"role {r['RoleName']}"
            for r in entities["PolicyRoles"]
            if r["RoleName"] != config.pod_role_name
        ]
        + [f"user {u['UserName']}" for u in entities["PolicyUsers"]]
        + [f"group {g['GroupName']}" for g in entities["PolicyGroups"]]
    )
    return Found("iam-policy", config.pod_policy_name, ours, users), lambda c: _delete_policy(
        c, arn
    )


def _associations(
    clients: Clients, config: BootstrapConfig, role_arn: str, add: Callable[[Found, Work], None]
) -> None:
    """The EKS Pod Identity associations of our ServiceAccount that name our role."""
    cluster = str(config.cluster_name)
    listed = clients.eks.list_pod_identity_associations(
        clusterName=cluster, serviceAccount=config.service_account
    )["associations"]
    for summary in listed:
        association_id = summary["associationId"]
        described = clients.eks.describe_pod_identity_association(
            clusterName=cluster, associationId=association_id
        )["association"]
        if described["roleArn"] != role_arn:
            continue
        name = f"{summary['namespace']}/{summary['serviceAccount']}"
        add(Found("eks-pod-identity", name, True), _deleting_association(cluster, association_id))


def _deleting_association(cluster: str, association_id: str) -> Work:
    def delete(clients: Clients) -> None:
        clients.eks.delete_pod_identity_association(
            clusterName=cluster, associationId=association_id
        )

    return delete


def _pod_role(
    clients: Clients,
    config: BootstrapConfig,
    role: dict[str, Any],
    trust: policies.Document,
    goes: str,
    add: Callable[[Found, Work], None],
) -> None:
    name = config.pod_role_name
    if is_ours(role.get("Tags")):
        add(Found("iam-role", name, True), lambda c: _delete_role(c, name))
        return
    # A role someone else made keeps everything but what the bootstrap added to it.
    inside = []
    kept_trust = without_our_trust(trust)
    # A trust with only our statement cannot be emptied (IAM needs one); it stays as it is.
    if 0 < len(kept_trust["Statement"]) < len(statements(trust)):
        inside.append(f"trust statement {policies.TRUST_SID}")
    attached = clients.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    if goes and goes in {p["PolicyArn"] for p in attached}:
        inside.append(f"attachment of {config.pod_policy_name}")

    def revert(c: Clients) -> None:
        if f"trust statement {policies.TRUST_SID}" in inside:
            c.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(kept_trust))
        if goes and f"attachment of {config.pod_policy_name}" in inside:
            c.iam.detach_role_policy(RoleName=name, PolicyArn=goes)

    add(Found("iam-role", name, False, inside=tuple(inside)), revert)


def _oidc_provider(
    clients: Clients,
    config: BootstrapConfig,
    account: str,
    our_pod_role: dict[str, Any] | None,
    add: Callable[[Found, Work], None],
) -> None:
    try:
        cluster = clients.eks.describe_cluster(name=config.cluster_name)["cluster"]
    except ClientError as error:
        if code(error) != "ResourceNotFoundException":
            raise
        return  # without the cluster its issuer is unknown; the provider is left alone
    issuer = cluster.get("identity", {}).get("oidc", {}).get("issuer", "")
    host = issuer.removeprefix("https://")
    arn = f"arn:{policies.partition(clients.region)}:iam::{account}:oidc-provider/{host}"
    listed = clients.iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    if not host or arn not in {p["Arn"] for p in listed}:
        return
    tags = clients.iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn).get("Tags")
    users = []
    for page in clients.iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            trust = iam.parse_document(role["AssumeRolePolicyDocument"])
            if role["RoleName"] == config.pod_role_name:
                if our_pod_role is not None:
                    continue  # removed with this teardown
                trust = without_our_trust(trust)
            if trusts_provider(trust, arn):
                users.append(f"role {role['RoleName']}")
    add(
        Found("iam-oidc-provider", host, is_ours(tags), tuple(users)),
        lambda c: c.iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=arn),
    )


def _bucket(
    clients: Clients, name: str, users: tuple[str, ...], add: Callable[[Found, Work], None]
) -> None:
    try:
        clients.s3.head_bucket(Bucket=name)
    except ClientError as error:
        if code(error) in ("404", "NoSuchBucket", "NotFound"):
            return
        raise
    try:
        tags = clients.s3.get_bucket_tagging(Bucket=name)["TagSet"]
    except ClientError as error:
        if code(error) != "NoSuchTagSet":
            raise
        tags = []
    add(Found("s3-bucket", name, is_ours(tags), users), lambda c: _delete_bucket(c, name))


def _delete_role(clients: Clients, name: str) -> None:
    """IAM deletes a role only once nothing is attached to it and it has no inline policy."""
    for attached in clients.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        clients.iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    for policy in clients.iam.list_role_policies(RoleName=name)["PolicyNames"]:
        clients.iam.delete_role_policy(RoleName=name, PolicyName=policy)
    clients.iam.delete_role(RoleName=name)


def _delete_policy(clients: Clients, arn: str) -> None:
    """IAM deletes a policy only without attachments and without non-default versions."""
    for role in clients.iam.list_entities_for_policy(PolicyArn=arn)["PolicyRoles"]:
        clients.iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
    for version in clients.iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            clients.iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
    clients.iam.delete_policy(PolicyArn=arn)


def _delete_bucket(clients: Clients, name: str) -> None:
    """Every object version and delete marker first: S3 deletes only an empty bucket."""
    for page in clients.s3.get_paginator("list_object_versions").paginate(Bucket=name):
        objects = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if objects:
            clients.s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    clients.s3.delete_bucket(Bucket=name)
