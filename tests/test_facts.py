"""The facts adapter (`webhook.app.facts.ClusterFacts`) over the cluster side's real caches, in
process: what it answers from them, and what it does when a lookup cannot reach the API server
(a client pointed at a closed port: a real refused connection, not a mock).

The lookups that succeed run against a real control plane in `tests/test_namespace_settings.py`
and `tests/test_cluster.py`.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from testing.support import free_port, settings
from webhook.app.facts import NOT_STARTED, ClusterFacts
from webhook.core import namespaces
from webhook.core.decisions import Facts
from webhook.kube.accounts import AccountCache
from webhook.kube.namespaces import NamespaceCache

GLOBAL = settings()
TEAM_URI = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team-a"
TEAM_ROLE = "arn:aws:iam::123456789012:role/team-a"


def unreachable() -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    configuration.retries = False
    return client.ApiClient(configuration)


def caches(*, started: bool = True, accounts: tuple[str, ...] = (), own: bool = False) -> Any:
    """The cluster side as `Cluster.start` leaves it; `own`: team-a names its own server."""
    if not started:
        return SimpleNamespace(accounts=None, namespaces=None, resolve=None)
    api = unreachable()
    found = AccountCache(api, GLOBAL.service_account, lookup_timeout=0.5)
    for namespace in accounts:
        found.add(namespace)
    cache = NamespaceCache(api, GLOBAL.prefix, lookup_timeout=0.5)
    annotations = {
        f"{GLOBAL.prefix}/tracking-uri": TEAM_URI,
        f"{GLOBAL.prefix}/role-arn": TEAM_ROLE,
    }
    watched = namespaces.pick(annotations, GLOBAL.prefix) if own else ()
    cache.watched = lambda namespace: watched if namespace == "team-a" else None
    resolve = functools.lru_cache(maxsize=16)(functools.partial(namespaces.resolve, base=GLOBAL))
    return SimpleNamespace(accounts=found, namespaces=cache, resolve=resolve)


async def facts(source: ClusterFacts, namespace: str, account: bool) -> tuple[str, Facts]:
    """Where the facts came from (`cache` or `lookup`), and the facts."""
    known = source.known(GLOBAL, namespace, account)
    if known is not None:
        return "cache", known
    return "lookup", await source.gather(GLOBAL, namespace, account)


# (case, cluster side, namespace settings on, namespace, account asked) ->
#   (from, tracking URI, namespace error, account exists)
TABLE: list[tuple[str, dict[str, Any] | None, bool, str, bool, tuple[str, str, str, bool]]] = [
    ("no cluster", None, True, "team-a", True, ("cache", "global", "", True)),
    ("starting", {"started": False}, False, "team-a", True, ("cache", "global", "", False)),
    (
        "starting, namespace settings on",
        {"started": False},
        True,
        "team-a",
        True,
        ("cache", "global", NOT_STARTED, True),
    ),
    (
        "account cached",
        {"accounts": ("team-a",)},
        False,
        "team-a",
        True,
        ("cache", "global", "", True),
    ),
    ("account not asked", {}, False, "team-a", False, ("cache", "global", "", True)),
    (
        "namespace's own settings",
        {"accounts": ("team-a",), "own": True},
        True,
        "team-a",
        True,
        ("cache", TEAM_URI, "", True),
    ),
    (
        "account lookup refused: unknown counts as missing",
        {},
        False,
        "team-b",
        True,
        ("lookup", "global", "", False),
    ),
    (
        "namespace lookup refused: its settings are unusable, never the global ones",
        {"accounts": ("team-b",)},
        True,
        "team-b",
        True,
        ("lookup", "global", "they could not be read", True),
    ),
]


@pytest.mark.parametrize(
    ("cluster", "enabled", "namespace", "account", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
async def test_facts(
    cluster: dict[str, Any] | None,
    enabled: bool,
    namespace: str,
    account: bool,
    expected: tuple[str, str, str, bool],
) -> None:
    side = None if cluster is None else caches(**cluster)
    where, found = await facts(ClusterFacts(lambda: side, enabled), namespace, account)
    uri = "global" if found.settings is GLOBAL else found.settings.tracking.uri
    wanted_from, wanted_uri, wanted_error, wanted_account = expected
    assert (where, uri, found.account_exists) == (wanted_from, wanted_uri, wanted_account)
    assert found.namespace_error.startswith(wanted_error)
    assert bool(found.namespace_error) == bool(wanted_error)
