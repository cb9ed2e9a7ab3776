"""IAM: the cluster's OIDC provider, roles with their trust, and customer-managed policies."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from webhook.aws.clients import Clients, code
from webhook.core import policies
from webhook.core.plans import Plan
from webhook.core.teardown import MANAGED_BY_KEY, MANAGED_BY_VALUE

MANAGED_BY = [{"Key": MANAGED_BY_KEY, "Value": MANAGED_BY_VALUE}]


def parse_document(raw: Any) -> policies.Document:
    """IAM returns policy documents URL-encoded in some APIs and decoded in others."""
    if isinstance(raw, dict):
        return raw
    return dict(json.loads(unquote(raw)))


def oidc_provider(clients: Clients, plan: Plan, account: str, issuer: str) -> str:
    host = issuer.removeprefix("https://")
    arn = f"arn:{policies.partition(clients.region)}:iam::{account}:oidc-provider/{host}"
    listed = clients.iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    if arn not in {p["Arn"] for p in listed}:
        plan.add("iam-oidc-provider", host, "create")
        if not plan.dry_run:
            try:
                clients.iam.create_open_id_connect_provider(
                    Url=issuer, ClientIDList=["sts.amazonaws.com"], Tags=MANAGED_BY
                )
            except ClientError as error:
                if code(error) != "EntityAlreadyExists":
                    raise
        return arn
    audiences = clients.iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)[
        "ClientIDList"
    ]
    if "sts.amazonaws.com" in audiences:
        plan.add("iam-oidc-provider", host, "ok")
    else:
        plan.add("iam-oidc-provider", host, "update", "add audience sts.amazonaws.com")
        if not plan.dry_run:
            clients.iam.add_client_id_to_open_id_connect_provider(
                OpenIDConnectProviderArn=arn, ClientID="sts.amazonaws.com"
            )
    return arn


def get_role(clients: Clients, name: str) -> dict[str, Any] | None:
    try:
        return dict(clients.iam.get_role(RoleName=name)["Role"])
    except ClientError as error:
        if code(error) == "NoSuchEntity":
            return None
        raise


def role(
    clients: Clients, plan: Plan, account: str, name: str, trust: policies.Document, merge: bool
) -> str:
    """Ensure the role with `trust`. With `merge`, only our statement is ours to set.

    Returns the role's ARN.
    """
    arn = f"arn:{policies.partition(clients.region)}:iam::{account}:role/{name}"
    current = get_role(clients, name)
    if current is None:
        plan.add("iam-role", name, "create")
        if not plan.dry_run:
            try:
                clients.iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=MANAGED_BY,
                    Description="Managed by mlflow-webhook",
                )
            except ClientError as error:
                if code(error) != "EntityAlreadyExists":
                    raise
                return role(clients, plan, account, name, trust, merge)
        return arn
    existing = parse_document(current["AssumeRolePolicyDocument"])
    wanted = policies.merge_trust(existing, trust["Statement"][-1]) if merge else trust
    if policies.same(existing, wanted):
        plan.add("iam-role", name, "ok")
    else:
        plan.add("iam-role", name, "update", "trust policy")
        if not plan.dry_run:
            clients.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(wanted))
    return str(current["Arn"])


def inline_policy(
    clients: Clients, plan: Plan, role_name: str, name: str, doc: policies.Document
) -> None:
    current = None
    if get_role(clients, role_name) is not None:
        try:
            current = parse_document(
                clients.iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
            )
        except ClientError as error:
            if code(error) != "NoSuchEntity":
                raise
    if current is not None and policies.same(current, doc):
        plan.add("iam-role-policy", f"{role_name}/{name}", "ok")
        return
    plan.add("iam-role-policy", f"{role_name}/{name}", "create" if current is None else "update")
    if not plan.dry_run:
        clients.iam.put_role_policy(
            RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(doc)
        )


def managed_policy(
    clients: Clients, plan: Plan, account: str, name: str, doc: policies.Document
) -> str:
    arn = f"arn:{policies.partition(clients.region)}:iam::{account}:policy/{name}"
    try:
        version = clients.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    except ClientError as error:
        if code(error) != "NoSuchEntity":
            raise
        plan.add("iam-policy", name, "create")
        if not plan.dry_run:
            try:
                clients.iam.create_policy(
                    PolicyName=name, PolicyDocument=json.dumps(doc), Tags=MANAGED_BY
                )
            except ClientError as exists:
                if code(exists) != "EntityAlreadyExists":
                    raise
        return arn
    current = clients.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"][
        "Document"
    ]
    if policies.same(parse_document(current), doc):
        plan.add("iam-policy", name, "ok")
        return arn
    plan.add("iam-policy", name, "update", "new default version")
    if not plan.dry_run:
        versions = clients.iam.list_policy_versions(PolicyArn=arn)["Versions"]
        if len(versions) >= 5:  # IAM keeps at most five; drop the oldest that is not the default
            oldest = min(
                (v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"]
            )
            clients.iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"])
        clients.iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=True
        )
    return arn


def attachment(clients: Clients, plan: Plan, role_name: str, policy_arn: str) -> None:
    attached = set()
    if get_role(clients, role_name) is not None:
        listed = clients.iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
        attached = {p["PolicyArn"] for p in listed}
    name = f"{role_name} <- {policy_arn.rsplit('/', 1)[-1]}"
    if policy_arn in attached:
        plan.add("iam-attachment", name, "ok")
        return
    plan.add("iam-attachment", name, "create")
    if not plan.dry_run:
        clients.iam.attach_role_policy(RoleName=role_name, PolicyArn=policy_arn)
