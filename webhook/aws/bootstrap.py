"""The bootstrap: each AWS piece, in order, created, verified or repaired; a plan first."""

from __future__ import annotations

import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from webhook.aws import adapters, iam, storage
from webhook.aws.clients import BootstrapError, Clients, explain
from webhook.aws.config import BootstrapConfig, split_s3_uri
from webhook.aws.mlflow import elsewhere
from webhook.core import policies
from webhook.core.plans import Plan
from webhook.core.settings import account_of

SERVER_POLICY = "mlflow-webhook-artifacts"


def run(
    config: BootstrapConfig,
    progress: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """Ensure everything and return the plan carried out (with --dry-run: the plan alone)."""
    if config.trust_error:
        raise BootstrapError(config.trust_error, 2)
    clients = Clients(config.region, config.dry_run)
    mlflow = adapters.of(config.target)
    plan = Plan(
        dry_run=config.dry_run,
        kind=config.target,
        artifact_uploads=config.artifact_uploads,
        assume_role_arn=config.assume_role_arn or "",
    )
    resource = "the caller identity"
    try:
        account = str(clients.sts.get_caller_identity()["Account"])
        resource = "the tracking server"
        theirs = account_of(config.tracking_server_arn or "")
        if config.tracking_server_arn and theirs != account:
            if not config.assume_role_arn:
                raise BootstrapError(
                    f"--tracking-server-arn is in account {theirs}, not {account}: give "
                    "--assume-role-arn, the role there the Pods assume",
                    2,
                )
            elsewhere(plan, config.tracking_server_arn, theirs)
        elif config.tracking_server_arn:
            mlflow.verify(clients, plan, config.tracking_server_arn)
        else:
            resource = f"bucket {config.bucket}" if config.bucket else resource
            server_role_arn = _server_side(clients, plan, config, account)
            resource = config.what
            mlflow.ensure(clients, plan, config, account, server_role_arn, sleep)
        if config.credentials != "none":
            resource = f"role {config.pod_role_name}"
            _pod_side(clients, plan, config, account)
        if config.wait and not config.dry_run and not config.tracking_server_arn:
            resource = config.what
            plan.tracking_status = mlflow.wait_ready(
                clients, config, plan.tracking_arn, progress, sleep
            )
    except BootstrapError:
        raise
    except (ClientError, BotoCoreError) as error:
        raise explain(error, resource) from error
    finally:
        plan.writes = clients.writes
    return plan


def _server_side(clients: Clients, plan: Plan, config: BootstrapConfig, account: str) -> str:
    """The artifact bucket, and the execution role SageMaker runs the server or App as.

    Without --artifact-store-uri there is nothing to create here; ensuring the server or App
    says so if it is missing too.
    """
    if not config.bucket:
        role = iam.get_role(clients, config.server_role_name)
        return str(role["Arn"]) if role else ""
    storage.bucket(clients, plan, config.bucket)
    arn = iam.role(
        clients, plan, account, config.server_role_name, policies.server_trust(), merge=False
    )
    access = policies.server_access(
        policies.partition(clients.region), config.bucket, config.prefix
    )
    iam.inline_policy(clients, plan, config.server_role_name, SERVER_POLICY, access)
    return arn


def _pod_side(clients: Clients, plan: Plan, config: BootstrapConfig, account: str) -> None:
    """The Pods' policy and role: least privilege on this server and its artifact prefix."""
    part = policies.partition(clients.region)
    # The server's own artifact store, as SageMaker reports it, unless one was given.
    bucket, prefix = split_s3_uri(config.artifact_store_uri or plan.artifact_store_uri)
    if not bucket:
        raise BootstrapError(
            f"cannot tell the artifact store of {plan.tracking_arn}: give --artifact-store-uri"
        )
    doc = policies.pod_access(
        part, plan.tracking_arn, bucket, prefix, config.artifact_uploads, config.assume_role_arn
    )
    policy_arn = iam.managed_policy(clients, plan, account, config.pod_policy_name, doc)
    namespaces = list(config.trust_namespaces)
    if config.credentials == "irsa":
        if not config.cluster_name:
            raise BootstrapError(
                "--credentials irsa needs --cluster-name to find the OIDC issuer", 2
            )
        issuer = clients.eks.describe_cluster(name=config.cluster_name)["cluster"]["identity"][
            "oidc"
        ]["issuer"]
        provider = iam.oidc_provider(clients, plan, account, issuer)
        host = issuer.removeprefix("https://")
        statement = policies.irsa_statement(provider, host, config.service_account, namespaces)
    else:
        statement = policies.pod_identity_statement(config.service_account, namespaces)
    arn = iam.role(
        clients, plan, account, config.pod_role_name, policies.document(statement), merge=True
    )
    plan.pod_role_arn = arn
    iam.attachment(clients, plan, config.pod_role_name, policy_arn)
    if config.credentials == "pod-identity":
        _associations(clients, plan, config, arn)


def _associations(clients: Clients, plan: Plan, config: BootstrapConfig, role_arn: str) -> None:
    if not config.cluster_name:
        raise BootstrapError("--credentials pod-identity needs --cluster-name", 2)
    for namespace in config.trust_namespaces:
        name = f"{namespace}/{config.service_account}"
        found = clients.eks.list_pod_identity_associations(
            clusterName=config.cluster_name,
            namespace=namespace,
            serviceAccount=config.service_account,
        )["associations"]
        if found:
            plan.add("eks-pod-identity", name, "ok")
            continue
        plan.add("eks-pod-identity", name, "create")
        if not plan.dry_run:
            clients.eks.create_pod_identity_association(
                clusterName=config.cluster_name,
                namespace=namespace,
                serviceAccount=config.service_account,
                roleArn=role_arn,
            )
