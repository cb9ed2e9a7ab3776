"""A namespace's own MLflow settings, from annotations a cluster admin sets on the namespace.

Namespaces are cluster-scoped, so a tenant who can only edit objects inside one cannot change
them. A namespace without our annotations gets the global settings. One whose annotations are
wrong gets none at all: its Pods are admitted untouched, never given the global role for a
server the global role was not meant for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.settings import (
    ConfigError,
    Settings,
    check_artifact_uploads,
    check_role_arn,
    example_value,
    parse_tracking_uri,
)

NAMES = (
    "tracking-uri",
    "role-arn",
    "experiment",
    "run-tags",
    "system-metrics",
    "artifact-uploads",
    "assume-role-arn",
)

# What a cache keeps of one namespace: our annotations only, hashable, in NAMES order.
Annotations = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Resolved:
    """The settings for one namespace's Pods, or None with `error` saying exactly why."""

    settings: Settings | None
    error: str = ""

    @property
    def role_arn(self) -> str | None:
        """The role for the namespace's ServiceAccount; none for a namespace in error."""
        if self.settings is None or self.settings.credentials != "irsa":
            return None
        return self.settings.role_arn


def keys(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}/{name}" for name in NAMES)


def pick(annotations: Mapping[str, Any] | None, prefix: str) -> Annotations:
    """Our annotations from a namespace's, blank values dropped."""
    found = annotations if isinstance(annotations, Mapping) else {}
    kept = []
    for key in keys(prefix):
        value = found.get(key)
        if isinstance(value, str) and value.strip():
            kept.append((key, value.strip()))
    return tuple(kept)


def resolve(annotations: Annotations, base: Settings) -> Resolved:
    """The effective settings for a namespace carrying `annotations` (see `pick`)."""
    found = dict(annotations)
    uri, role, experiment, run_tags, system_metrics, uploads, assume = (
        found.get(k) for k in keys(base.prefix)
    )
    # Read with each Pod's own (webhook.core.provenance), which says what is wrong in them.
    if experiment or run_tags or system_metrics:
        base = dataclasses.replace(
            base, experiment=experiment, run_tags=run_tags, system_metrics=system_metrics
        )
    try:
        if uploads is not None:
            # The namespace's Pods must then be given a role whose policy fits: the admin's call.
            mode = check_artifact_uploads(uploads, f"{base.prefix}/artifact-uploads")
            base = dataclasses.replace(base, artifact_uploads=mode)
        if assume is not None:
            key = f"{base.prefix}/assume-role-arn"
            reason = example_value(assume)
            if reason:
                raise ConfigError(f"{key} {assume!r} {reason}")
            check_role_arn(assume, key)
        if uri is None and role is None:
            if assume is None:
                return Resolved(base)
            return Resolved(dataclasses.replace(base, assume_role_arn=assume, source="namespace"))
        # A namespace's own server is reached through its own role to assume, or none: the
        # global one was granted for the global server.
        own = _own(base, uri, role)
        return Resolved(dataclasses.replace(own, assume_role_arn=assume))
    except ConfigError as exc:
        return Resolved(None, str(exc))


def _own(base: Settings, uri: str | None, role: str | None) -> Settings:
    uri_key, role_key = keys(base.prefix)[:2]
    for key, value in ((uri_key, uri), (role_key, role)):
        reason = example_value(value or "")
        if reason:
            raise ConfigError(f"{key} {value!r} {reason}")
    tracking = base.tracking
    if uri is not None:
        try:
            tracking = parse_tracking_uri(uri)
        except ConfigError as exc:
            raise ConfigError(f"{uri_key}: {exc}") from None
    if role is not None:
        check_role_arn(role, role_key)
        if base.credentials != "irsa":
            raise ConfigError(
                f"{role_key} is set, but the webhook's credentials mode is {base.credentials}; "
                "a role is only used with irsa"
            )
    elif base.credentials == "irsa":
        # The global role was granted for the global server: never lend it to another one.
        raise ConfigError(
            f"{uri_key} is set but {role_key} is not: with irsa credentials the namespace "
            "needs its own role for its own tracking server"
        )
    return dataclasses.replace(base, tracking=tracking, role_arn=role, source="namespace")
