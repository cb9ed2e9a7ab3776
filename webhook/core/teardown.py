"""What a teardown removes: only what the bootstrap made, found by its names and proven ours by
the tag it sets (app.kubernetes.io/managed-by: mlflow-webhook), and nothing anyone else uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.plans import Step
from webhook.core.policies import MANAGED_BY_KEY as MANAGED_BY_KEY
from webhook.core.policies import MANAGED_BY_VALUE as MANAGED_BY_VALUE
from webhook.core.policies import TRUST_SID, Document, document

NOT_OURS = "not made by mlflow-webhook"


@dataclass(frozen=True)
class Found:
    """One resource the bootstrap would have made, as it is now."""

    resource: str  # the plan's resource names, as the bootstrap writes them
    name: str
    ours: bool  # carries our managed-by tag
    users: tuple[str, ...] = ()  # what else, not being removed, still depends on it
    # In a resource someone else made, what the bootstrap put there: our trust statement, our
    # policy's attachment. Those are taken out again; the resource stays.
    inside: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Running:
    """A tracking server or MLflow App that the teardown leaves in place (anyone's), and what it
    depends on: its artifact bucket and the role it runs as."""

    what: str  # how the plan names it: "tracking server NAME" or "MLflow App NAME"
    bucket: str
    role_arn: str


def used_by(running: Iterable[Running], *, bucket: str = "", role_arn: str = "") -> tuple[str, ...]:
    """What of `running` still stores artifacts in `bucket` or runs as `role_arn`."""
    return tuple(
        r.what
        for r in running
        if (bucket and r.bucket == bucket) or (role_arn and r.role_arn == role_arn)
    )


def is_ours(tags: Iterable[Mapping[str, Any]] | Mapping[str, str] | None) -> bool:
    """Whether AWS tags, as a Key/Value list or a plain mapping, carry our managed-by tag."""
    if not tags:
        return False
    if isinstance(tags, Mapping):
        return tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE
    return any(t.get("Key") == MANAGED_BY_KEY and t.get("Value") == MANAGED_BY_VALUE for t in tags)


def decide(found: Iterable[Found], *, delete_artifacts: bool) -> list[Step]:
    """The teardown's plan, one step per resource found: delete, update (take out what was ours
    from something that is not) or keep, with the reason."""
    steps = []
    for item in found:
        if not item.ours:
            if item.inside:
                steps.append(
                    Step(item.resource, item.name, "update", "remove " + ", ".join(item.inside))
                )
            else:
                steps.append(Step(item.resource, item.name, "keep", NOT_OURS))
        elif item.users:
            steps.append(
                Step(item.resource, item.name, "keep", "still used by " + ", ".join(item.users))
            )
        elif item.resource == "s3-bucket" and not delete_artifacts:
            steps.append(
                Step(
                    item.resource,
                    item.name,
                    "keep",
                    "artifacts kept (--delete-artifacts removes them)",
                )
            )
        else:
            steps.append(Step(item.resource, item.name, "delete"))
    return steps


def statements(doc: Document) -> list[Document]:
    """A policy's statements; IAM allows a lone statement as an object instead of a list."""
    listed = doc.get("Statement", [])
    return [listed] if isinstance(listed, dict) else list(listed)


def without_our_trust(trust: Document) -> Document:
    """A trust policy with our statement taken out; every other statement kept as it is."""
    return document(*[s for s in statements(trust) if s.get("Sid") != TRUST_SID])


def trusts_provider(trust: Document, provider_arn: str) -> bool:
    """Whether any statement of a trust policy names the OIDC provider as its principal."""
    for statement in statements(trust):
        federated = (statement.get("Principal") or {}).get("Federated")
        names = [federated] if isinstance(federated, str) else federated or []
        if provider_arn in names:
            return True
    return False
