"""The artifact bucket: present, private and encrypted."""

from __future__ import annotations

from botocore.exceptions import ClientError

from webhook.aws.clients import Clients, code
from webhook.aws.iam import MANAGED_BY
from webhook.core.plans import Plan

PRIVATE = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTED = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def bucket(clients: Clients, plan: Plan, name: str) -> None:
    s3 = clients.s3
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as error:
        if code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        plan.add("s3-bucket", name, "create", "private, encrypted")
        if not plan.dry_run:
            _create(clients, name)
            # The tag is how a teardown knows this bucket is ours to delete, and no other is.
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": MANAGED_BY})
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=PRIVATE)
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTED)
        return
    repairs = []
    if _public_access(clients, name) != PRIVATE:
        repairs.append("block public access")
    if not _encrypted(clients, name):
        repairs.append("default encryption")
    if not repairs:
        plan.add("s3-bucket", name, "ok")
        return
    plan.add("s3-bucket", name, "update", ", ".join(repairs))
    if not plan.dry_run:
        if "block public access" in repairs:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=PRIVATE)
        if "default encryption" in repairs:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTED)


def _create(clients: Clients, name: str) -> None:
    extra = {}
    if clients.region != "us-east-1":
        extra["CreateBucketConfiguration"] = {"LocationConstraint": clients.region}
    try:
        clients.s3.create_bucket(Bucket=name, **extra)
    except ClientError as error:
        if code(error) != "BucketAlreadyOwnedByYou":
            raise


def _public_access(clients: Clients, name: str) -> dict[str, bool]:
    try:
        config = clients.s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        return dict(config)
    except ClientError as error:
        if code(error) == "NoSuchPublicAccessBlockConfiguration":
            return {}
        raise


def _encrypted(clients: Clients, name: str) -> bool:
    try:
        rules = clients.s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
    except ClientError as error:
        if code(error) == "ServerSideEncryptionConfigurationNotFoundError":
            return False
        raise
    return any(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules)
