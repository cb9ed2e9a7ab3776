"""What the bootstrap keeps for MLflow: a SageMaker tracking server, or a serverless MLflow App.

Each is described once here, in words, statuses and IAM statements, and which one a command
means is decided here alone (`chosen`): the kind an ARN names, else the --kind flag. The calls
that make, keep, describe and delete one are webhook/aws's (tracking.py and apps.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from webhook.core.documents import MANAGED_BY_KEY, MANAGED_BY_VALUE, Document, allow


@dataclass(frozen=True)
class Kind(ABC):
    name: str  # the --kind value, and the plan's "kind"
    noun: str  # how a message names one
    arn_type: str  # the resource type in its ARN
    step: str  # the plan's RESOURCE for the one the bootstrap keeps
    ready: frozenset[str]  # the statuses in which Pods can use it
    gone: frozenset[str]  # the statuses of one going away: a teardown neither deletes nor counts it
    # True when SageMaker puts an ID of its own in the ARN at creation: unknown until then.
    arn_assigned: bool
    sid: str  # of the Pods' statement on it
    invoke: str  # the action the MLflow client's calls need
    describe: str
    presign: str  # a presigned URL for its UI
    # The flags only the other kind takes, and the end of the sentence that refuses them.
    refuses: tuple[str, ...]
    refusal: str

    def what(self, name: str) -> str:
        return f"{self.noun} {name}"

    def failed(self, status: str) -> bool:
        """A state SageMaker will not leave by itself; "missing": described, and not there."""
        return status.endswith("Failed") or status == "missing"

    def arn(self, part: str, region: str, account: str, name: str) -> str:
        """Its ARN, by name; empty when SageMaker assigns it."""
        if self.arn_assigned:
            return ""
        return f"arn:{part}:sagemaker:{region}:{account}:{self.arn_type}/{name}"

    def pod_statement(self, arn: str) -> Document:
        """What a training Pod needs on this one: the MLflow calls, and nothing else."""
        return allow(self.sid, arn, self.invoke)

    def verifying(self, arn: str) -> Document:
        """The bootstrap identity's statement for one it only verifies: described, and the
        ui-url command."""
        return allow("TrackingServer", arn, self.describe, self.presign)

    @abstractmethod
    def managing(self, part: str, region: str, account: str, name: str) -> list[Document]:
        """The bootstrap identity's statements to find, create and keep the one named `name`."""


@dataclass(frozen=True)
class _TrackingServer(Kind):
    def managing(self, part: str, region: str, account: str, name: str) -> list[Document]:
        return [
            allow(
                "TrackingServer",
                self.arn(part, region, account, name),
                self.describe,
                "sagemaker:CreateMlflowTrackingServer",
                "sagemaker:AddTags",  # CreateMlflowTrackingServer with tags
                "sagemaker:StartMlflowTrackingServer",
                "sagemaker:UpdateMlflowTrackingServer",
                self.presign,  # the ui-url command
            )
        ]


@dataclass(frozen=True)
class _App(Kind):
    def managing(self, part: str, region: str, account: str, name: str) -> list[Document]:
        """Its ARN holds an ID SageMaker assigns at creation, so no policy can name it
        beforehand: the resource type of this account and region is granted, and every write
        is bound by our managed-by tag, on the request when creating and on the App itself
        when changing it. An App someone else made is only read."""
        apps = f"arn:{part}:sagemaker:{region}:{account}:{self.arn_type}/*"
        ours = {"StringEquals": {f"aws:ResourceTag/{MANAGED_BY_KEY}": MANAGED_BY_VALUE}}
        return [
            # ListMlflowApps has no resource type: it can only be granted on "*".
            allow("FindApp", "*", "sagemaker:ListMlflowApps"),
            # ListTags: DescribeMlflowApp gives no tags.
            allow("ReadApp", apps, self.describe, "sagemaker:ListTags", self.presign),
            allow(
                "CreateApp",
                apps,
                "sagemaker:CreateMlflowApp",
                StringEquals={f"aws:RequestTag/{MANAGED_BY_KEY}": MANAGED_BY_VALUE},
            ),
            # CreateMlflowApp with tags is authorized for sagemaker:AddTags too, which
            # sagemaker:TaggingAction confines to that creation, so no App already there is
            # tagged.
            allow(
                "TagAppOnCreate",
                apps,
                "sagemaker:AddTags",
                StringEquals={
                    "sagemaker:TaggingAction": "CreateMlflowApp",
                    f"aws:RequestTag/{MANAGED_BY_KEY}": MANAGED_BY_VALUE,
                },
            ),
            allow("UpdateApp", apps, "sagemaker:UpdateMlflowApp", "sagemaker:AddTags", **ours),
        ]


SERVER: Kind = _TrackingServer(
    name="tracking-server",
    noun="tracking server",
    arn_type="mlflow-tracking-server",
    step="tracking-server",
    ready=frozenset({"Created", "Started", "Updated", "MaintenanceComplete"}),
    gone=frozenset({"Deleting", "DeleteFailed"}),
    arn_assigned=False,
    sid="TrackingServer",
    # The "Amazon SageMaker with MLflow" page of the Service Authorization Reference (prefix
    # sagemaker-mlflow) has one resource type, mlflow-tracking-server: its actions are a
    # server's only (list_amazonsagemakerwithmlflow.html).
    invoke="sagemaker-mlflow:*",
    describe="sagemaker:DescribeMlflowTrackingServer",
    presign="sagemaker:CreatePresignedMlflowTrackingServerUrl",
    refuses=("--account-default",),
    refusal="to --kind app only",
)
APP: Kind = _App(
    name="app",
    noun="MLflow App",
    arn_type="mlflow-app",
    step="mlflow-app",
    ready=frozenset({"Created", "Updated"}),
    gone=frozenset({"Deleting", "Deleted"}),
    arn_assigned=True,
    sid="MlflowApp",
    # The resource type mlflow-app is on the "Amazon SageMaker" page of the Service
    # Authorization Reference (prefix sagemaker), where sagemaker:CallMlflowAppApi, "to invoke
    # MLflow APIs", takes it; the sagemaker-mlflow plugin signs an App's calls for the service
    # `sagemaker` accordingly (list_amazonsagemaker.html).
    invoke="sagemaker:CallMlflowAppApi",
    describe="sagemaker:DescribeMlflowApp",
    presign="sagemaker:CreatePresignedMlflowAppUrl",
    refuses=("--tracking-server-size", "--mlflow-version"),
    refusal="to a tracking server, not to --kind app (an MLflow App is serverless and AWS "
    "chooses its MLflow version)",
)
ALL = (SERVER, APP)
NAMES = tuple(kind.name for kind in ALL)


def named(name: str) -> Kind:
    """The kind a --kind value names (one of NAMES)."""
    return {kind.name: kind for kind in ALL}[name]


def of_arn(arn: str) -> Kind:
    # arn:PARTITION:sagemaker:REGION:ACCOUNT:mlflow-app/ID is an App; any other, a server.
    return APP if ":mlflow-app/" in arn else SERVER


def chosen(arn: str | None, flag: str) -> Kind:
    """The one a command means: what an ARN given names, else what --kind says."""
    return of_arn(arn) if arn else named(flag)
