"""An IAM policy evaluator of our own, for the emulators that enforce IAM.

moto's own enforcement (INITIAL_NO_AUTH_ACTION_COUNT) checks most IAM actions against the
resource "*" (a role only once it exists), so it denies any resource-scoped statement, such as
iam:CreateRole on one role's ARN, and it reads a condition whose key the request lacks as an
explicit Deny. This evaluator follows AWS's documented logic for what our policies use: an
explicit Deny wins, then any Allow, else an implicit deny; Action/NotAction and
Resource/NotResource with `*` and `?` wildcards; and the condition operators below, with a
missing key failing the condition. An operator it does not know fails loudly.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Context = dict[str, list[str]]


def _like(pattern: str, value: str) -> bool:
    # IAM wildcards: `*` and `?` only; fnmatch's `[` classes would be literal in IAM.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": _like,
    "ArnEquals": lambda want, have: want == have,
    "ArnLike": _like,
    "Bool": lambda want, have: want.lower() == have.lower(),
}
NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool = False


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any] | str) -> list[dict[str, Any]]:
    doc = json.loads(document) if isinstance(document, str) else document
    return as_list(doc.get("Statement", []))


def _matches(patterns: Any, value: str, *, case: bool = True) -> bool:
    if case:
        return any(_like(p, value) for p in as_list(patterns))
    return any(_like(p.lower(), value.lower()) for p in as_list(patterns))


def _conditions_hold(condition: dict[str, Any], context: Context) -> bool:
    for operator, tests in condition.items():
        negate = operator in NEGATED
        compare = OPERATORS.get(NEGATED.get(operator, operator))
        if compare is None:
            raise ValueError(f"condition operator {operator} is not emulated")
        for key, wanted in tests.items():
            have = context.get(key.lower())
            if not have:
                if not negate:
                    return False
                continue
            hit = any(compare(w, h) for w in as_list(wanted) for h in have)
            if hit == negate:
                return False
    return True


def _applies(statement: dict[str, Any], action: str, resource: str, context: Context) -> bool:
    if "Action" in statement:
        if not _matches(statement["Action"], action, case=False):
            return False
    elif _matches(statement.get("NotAction", []), action, case=False):
        return False
    if "Resource" in statement:
        if not _matches(statement["Resource"], resource):
            return False
    elif "NotResource" in statement and _matches(statement["NotResource"], resource):
        return False
    return _conditions_hold(statement.get("Condition") or {}, context)


def evaluate(
    documents: Iterable[dict[str, Any] | str],
    action: str,
    resource: str,
    context: Context | None = None,
) -> Decision:
    """Identity-based policies only: what our callers' permissions come from."""
    lowered = {k.lower(): v for k, v in (context or {}).items()}
    allowed = False
    for document in documents:
        for statement in statements(document):
            if not _applies(statement, action, resource, lowered):
                continue
            if statement["Effect"] == "Deny":
                return Decision(False, explicit_deny=True)
            allowed = True
    return Decision(allowed)


def allows(
    document: dict[str, Any] | str,
    action: str,
    resource: str,
    principal: dict[str, str],
    context: Context,
) -> Decision:
    """A resource-based policy (a role's trust, a bucket's policy): an Allow for `action` on
    `resource` naming one of `principal`'s values (by type, such as {"Federated": provider ARN}
    or {"AWS": role ARN}) whose conditions hold, and no such Deny. A trust policy's statements
    name no Resource, and so apply to any."""
    lowered = {k.lower(): v for k, v in context.items()}
    allowed = False
    for statement in statements(document):
        named = statement.get("Principal") or {}
        if named != "*" and not any(
            value in as_list(named.get(kind, [])) for kind, value in principal.items()
        ):
            continue
        if not _applies(statement, action, resource, lowered):
            continue
        if statement["Effect"] == "Deny":
            return Decision(False, explicit_deny=True)
        allowed = True
    return Decision(allowed)


def trusts(
    trust: dict[str, Any] | str, action: str, principal: dict[str, str], context: Context
) -> bool:
    """A role's trust policy allows `principal` to `action` (sts:AssumeRole*)."""
    return allows(trust, action, "*", principal, context).allowed


def role_of(caller_arn: str) -> str:
    """The role a session belongs to, as a policy's {"AWS": ...} principal names it: a session
    arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION is matched by arn:aws:iam::ACCOUNT:role/NAME;
    any other caller by its own ARN."""
    _, part, _, _, account, resource = caller_arn.split(":", 5)
    kind, _, rest = resource.partition("/")
    if kind != "assumed-role":
        return caller_arn
    return f"arn:{part}:iam::{account}:role/{rest.split('/')[0]}"
