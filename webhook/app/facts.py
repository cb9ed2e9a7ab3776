"""What the cluster says about an opted-in Pod's namespace: the facts `decide` reads.

Most requests are answered from the caches, with no coroutine of their own. A namespace the
caches do not hold (labelled a moment before its first Pod, most often) costs one bounded
lookup for its settings and one for our ServiceAccount, run side by side: one wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from webhook.core.decisions import Facts
from webhook.core.namespaces import Annotations, Resolved
from webhook.core.settings import Settings
from webhook.kube.accounts import AccountCache
from webhook.kube.namespaces import NamespaceCache

log = logging.getLogger("webhook.admission")
T = TypeVar("T")
NOT_STARTED = "they are not known yet: the cluster side has not started"


class Caches(Protocol):
    """The cluster side's caches (`webhook.app.cluster.Cluster`); None while it starts."""

    accounts: AccountCache | None
    namespaces: NamespaceCache | None
    resolve: Callable[[Annotations], Resolved] | None


class FactSource(Protocol):
    """Where the handler gets its facts: the cluster, or a test's table."""

    def known(self, settings: Settings, namespace: str, account: bool) -> Facts | None:
        """The facts when no lookup is needed, else None. `account`: whether the decision
        reads whether our ServiceAccount exists."""

    async def gather(self, settings: Settings, namespace: str, account: bool) -> Facts:
        """The facts, looked up where `known` had none."""


@dataclass(frozen=True)
class ClusterFacts:
    """The facts from the cluster side's caches, and a bounded lookup for what they miss."""

    # Read on each request: the cluster side is connected after the app is built.
    cluster: Callable[[], Caches | None]
    # Whether namespaces may name settings of their own (`--namespace-settings`).
    namespace_settings: bool

    def known(self, settings: Settings, namespace: str, account: bool) -> Facts | None:
        caches = self.cluster()
        if caches is None:
            return Facts(settings)  # no cluster access: nothing to check against
        own = _known_settings(caches, self.namespace_settings, settings, namespace)
        if own is None:
            return None
        chosen, problem = own
        if not account or problem:
            return Facts(chosen, problem)
        if caches.accounts is None:
            return Facts(chosen, account_exists=False)  # unknown counts as missing
        return Facts(chosen) if caches.accounts.known(namespace) else None

    async def gather(self, settings: Settings, namespace: str, account: bool) -> Facts:
        caches = self.cluster()
        if caches is None:
            return Facts(settings)
        own = _known_settings(caches, self.namespace_settings, settings, namespace)
        asked = _account(caches, namespace) if account and not (own and own[1]) else _given(True)
        if own is None:
            looked, exists = await asyncio.gather(_namespace(caches, settings, namespace), asked)
            return Facts(*looked, exists)
        return Facts(*own, await asked)


def _known_settings(
    caches: Caches, enabled: bool, settings: Settings, namespace: str
) -> tuple[Settings, str] | None:
    """The settings for a Pod in `namespace`, or the global ones and why its own are unusable;
    None when the namespace is not in the cache."""
    if not enabled or not namespace:
        return settings, ""
    if caches.namespaces is None or caches.resolve is None:
        # Never the global settings for a namespace that may name its own.
        return settings, NOT_STARTED
    annotations = caches.namespaces.known(namespace)
    if annotations is None:
        return None
    return _resolved(caches, settings, annotations)


def _resolved(caches: Caches, settings: Settings, annotations: Annotations) -> tuple[Settings, str]:
    if not annotations or caches.resolve is None:
        return settings, ""
    resolved = caches.resolve(annotations)
    return resolved.settings or settings, resolved.error


async def _namespace(caches: Caches, settings: Settings, namespace: str) -> tuple[Settings, str]:
    """A namespace the cache does not hold: one bounded lookup, else what one last found."""
    cache = caches.namespaces
    assert cache is not None  # `_known_settings` answered without one
    try:
        annotations = await _bounded(cache.lookup, namespace, cache.timeout)
    except Exception as error:  # noqa: BLE001 - reported to the person by the decision
        log.warning("namespace lookup failed", extra={"namespace": namespace, "error": repr(error)})
        last = cache.last_known(namespace)
        if last is None:
            return settings, f"they could not be read ({type(error).__name__})"
        annotations = last
    return _resolved(caches, settings, annotations)


async def _account(caches: Caches, namespace: str) -> bool:
    """Whether our ServiceAccount exists: the cache, else one bounded lookup.

    That lookup on a cache miss is, with the namespace's, the only API-server call on the
    request path, for a namespace labelled a moment before its first Pod.
    """
    accounts = caches.accounts
    if accounts is None:
        return False  # the cluster side is still starting: unknown counts as missing
    if accounts.known(namespace):
        return True
    try:
        return await _bounded(accounts.lookup, namespace, accounts.timeout)
    except Exception as error:  # noqa: BLE001 - unknown counts as missing: never risk a rejection
        log.warning(
            "ServiceAccount lookup failed", extra={"namespace": namespace, "error": repr(error)}
        )
        return False


async def _bounded(call: Callable[[str], T], namespace: str, timeout: float) -> T:
    # The client's own timeout bounds the call; this one bounds a thread pool that is full.
    return await asyncio.wait_for(asyncio.to_thread(call, namespace), timeout + 0.5)


async def _given(value: T) -> T:
    return value
