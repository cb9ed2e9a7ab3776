"""The bootstrap's plan: each resource and what was, or would be, done to it; a table or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from webhook.core.kinds import SERVER, Kind
from webhook.core.namespaces import keys

Action = Literal["ok", "create", "update", "start", "wait", "delete", "keep"]


@dataclass(frozen=True)
class Step:
    resource: str
    name: str
    action: Action
    detail: str = ""


@dataclass
class Plan:
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    kind: Kind = SERVER  # what tracking_arn names
    tracking_arn: str = ""
    tracking_status: str = ""
    artifact_store_uri: str = ""
    pod_role_arn: str = ""
    artifact_uploads: str = "direct"
    assume_role_arn: str = ""
    writes: list[str] = field(default_factory=list)
    prefix: str = "mlflow-webhook.io"  # of the namespace annotations the JSON gives

    def add(self, resource: str, name: str, action: Action, detail: str = "") -> None:
        self.steps.append(Step(resource, name, action, detail))

    @property
    def changes(self) -> int:
        return sum(step.action not in ("ok", "keep") for step in self.steps)

    def as_json(self) -> str:
        data: dict[str, Any] = {
            "dryRun": self.dry_run,
            "kind": self.kind.name,
            "steps": [asdict(step) for step in self.steps],
            "trackingServerArn": self.tracking_arn,
            "trackingServerStatus": self.tracking_status,
            "podRoleArn": self.pod_role_arn,
            "writeCalls": self.writes,
            "namespaceAnnotations": self.namespace_annotations(),
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()

    def namespace_annotations(self) -> dict[str, str]:
        """What a namespace served by this bootstrap's server and role carries, to paste: with
        presigned uploads the Pods' policy has no S3 write, so the namespace must ask for them
        too; direct, the default, needs no annotation."""
        uri, role, *_, uploads, assume = keys(self.prefix)
        found = {uri: self.tracking_arn, role: self.pod_role_arn, assume: self.assume_role_arn}
        if self.artifact_uploads != "direct":
            found[uploads] = self.artifact_uploads
        return {key: value for key, value in found.items() if value}

    def as_table(self) -> str:
        rows = [("RESOURCE", "NAME", "ACTION", "DETAIL")]
        rows += [(s.resource, s.name, s.action, s.detail) for s in self.steps]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
            + f"  {row[3]}"
            for row in rows
        ]
        verb = "would change" if self.dry_run else "changed"
        counts = f"{self.changes} of {len(self.steps)} resources {verb}"
        lines.append(f"\n{counts}; {len(self.writes)} write calls")
        what = self.kind.noun
        if self.tracking_arn:
            lines.append(f"{what}: {self.tracking_arn} ({self.tracking_status or 'unknown'})")
        elif self.kind.arn_assigned and self.tracking_status == "Creating":
            lines.append(f"{what}: its ARN is assigned by SageMaker when it is created")
        if self.pod_role_arn:
            lines.append(f"pod role: {self.pod_role_arn}")
        return "\n".join(line.rstrip() for line in lines)
