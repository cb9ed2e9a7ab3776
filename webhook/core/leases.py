"""Leader election on a coordination.k8s.io/v1 Lease: what to do, given the Lease and the time."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

Decision = Literal["acquire", "renew", "follow"]
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime(MICRO)


def parse(value: str | None) -> dt.datetime | None:
    """RFC 3339 as the API server writes it, or as the client serialises a datetime."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def decide(spec: dict[str, Any] | None, me: str, now: dt.datetime) -> Decision:
    """Renew our own Lease, take one that is free or expired, otherwise follow its holder."""
    spec = spec or {}
    holder = spec.get("holderIdentity")
    if holder == me:
        return "renew"
    renewed = parse(spec.get("renewTime")) or parse(spec.get("acquireTime"))
    duration = dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    if not holder or renewed is None or now > renewed + duration:
        return "acquire"
    return "follow"


def spec_for(
    me: str, now: dt.datetime, duration_seconds: int, previous: dict[str, Any] | None
) -> dict[str, Any]:
    previous = previous or {}
    taking = previous.get("holderIdentity") != me
    transitions = int(previous.get("leaseTransitions") or 0) + (
        1 if taking and previous.get("holderIdentity") else 0
    )
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": stamp(now) if taking else previous.get("acquireTime", stamp(now)),
        "renewTime": stamp(now),
        "leaseTransitions": transitions,
    }
