"""The webhook's work with its cluster, wired to the server's lifetime.

Every replica serves admission, keeps the shared certificate files in sync and knows which
namespaces have the ServiceAccount. Only the leader watches and writes: ServiceAccounts (it
watches namespaces and the accounts it manages), Events on Pods it missed, the renewed
certificate and the caBundle.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
from collections.abc import Callable

from webhook.app.config import ClusterConfig, ServeConfig
from webhook.core import namespaces
from webhook.core.namespaces import Annotations, Resolved
from webhook.core.settings import Settings
from webhook.kube import errors
from webhook.kube.accounts import AccountCache
from webhook.kube.certificates import ClusterCertificates
from webhook.kube.configuration import drift_warnings
from webhook.kube.connection import Connection, connect
from webhook.kube.election import LeaderElector
from webhook.kube.missed import MissedPods
from webhook.kube.namespaces import NamespaceCache
from webhook.kube.reconciler import AccountReconciler, NamespaceReconciler
from webhook.kube.watches import Quiet, Telemetry
from webhook.tls.certs import LOCAL_IPS, LOCAL_NAMES, service_names

log = logging.getLogger("webhook.cluster")
NO_CLUSTER = "cluster: none (--no-kube): admission only; nothing read or written in any cluster"


class Cluster:
    """The API server reached, and what this replica does there, in the order `serve` asks:
    `campaign` for the Lease, `watch` once settings exist, then `unwatch` and `resign`."""

    def __init__(self, serve: ServeConfig, config: ClusterConfig, connection: Connection) -> None:
        api = connection.client
        self.serve, self.config, self.api = serve, config, api
        self.identity = (
            config.identity or f"{os.environ.get('HOSTNAME', 'local')}-{secrets.token_hex(3)}"
        )
        self.accounts: AccountCache | None = None
        # With namespace settings on: each namespace's annotations, and what they resolve to.
        self.namespaces: NamespaceCache | None = None
        self.resolve: Callable[[Annotations], Resolved] | None = None
        self.certificates: ClusterCertificates | None = None
        if serve.self_signed:
            names = service_names(serve.service, config.namespace) + list(LOCAL_NAMES)
            self.certificates = ClusterCertificates(
                api,
                config.namespace,
                config.secret_name,
                config.webhook_config_name,
                serve.cert_dir,
                names,
                list(LOCAL_IPS),
                reload_seconds=serve.cert_reload_seconds,
            )
        # The app's metrics, once it has them; the leader's watches count into them.
        self.metrics: Telemetry = Quiet()
        self._reconciler: NamespaceReconciler | None = None
        self._watchers: list[AccountReconciler | MissedPods] = []
        self._elector: LeaderElector | None = None
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._maintainer: threading.Thread | None = None
        self.line = f"cluster: {api.configuration.host}"

    @classmethod
    def connect(cls, serve: ServeConfig) -> Cluster | None:
        """The cluster the command line chose, reached; its `line` says which, and what the
        leader writes there, for a person to read at startup."""
        if serve.cluster is None:
            return None
        api = connect(serve.cluster.kubeconfig, serve.cluster.source)
        cluster = cls(serve, serve.cluster, api)
        context = f", context {api.context}" if api.context else ""
        cluster.line = (
            f"cluster: {api.client.configuration.host} (from {serve.cluster.source}{context}); "
            f"the leader writes there: {', '.join(writes(serve, serve.cluster))}"
        )
        return cluster

    def campaign(self) -> None:
        """Campaign for the Lease now: a follower must know it follows before it bootstraps."""
        if not self.config.leader_election:
            self._lead()
            return
        self._elector = LeaderElector(
            self.api,
            self.config.namespace,
            self.config.lease_name,
            self.identity,
            on_start=self._lead,
            on_stop=self._follow,
            duration_seconds=self.config.lease_seconds,
            retry_seconds=self.config.retry_seconds,
        )
        self._elector.start()

    def _check_drift(self) -> None:
        """Warnings only: a check that fails says so and must not keep admission's caches from
        being made after it."""
        try:
            warnings = drift_warnings(
                self.api, self.config.webhook_config_name, self.config.namespace
            )
        except Exception as error:  # noqa: BLE001 - any failure of a check is one warning
            warnings = [
                f"could not check the webhook configuration for drift: {errors.describe(error)}"
            ]
        for warning in warnings:
            log.warning(warning, extra={"check": "webhook configuration"})

    def watch(self, settings: Settings) -> None:
        """Once settings exist: check for drift, and (on the leader) reconcile namespaces."""
        self._check_drift()
        self.accounts = AccountCache(self.api, settings.service_account, self.config.lookup_timeout)
        role = settings.role_arn if settings.credentials == "irsa" else None
        if self.serve.namespace_settings:
            # Namespaces share few distinct annotation sets: each is resolved once.
            self.resolve = functools.lru_cache(maxsize=1024)(
                functools.partial(namespaces.resolve, base=settings)
            )
        with self._lock:
            self._reconciler = NamespaceReconciler(
                self.api,
                self.accounts,
                self.config.namespace_selector,
                role,
                self.config.resync_seconds,
                telemetry=self.metrics,
                prefix=settings.prefix,
                resolve=self.resolve,
            )
            if self.serve.namespace_settings:
                cache = NamespaceCache(self.api, settings.prefix, self.config.lookup_timeout)
                cache.watched = self._reconciler.annotations
                self.namespaces = cache
            self._watchers = [
                AccountReconciler(self.api, self._reconciler),
                MissedPods(self.api, settings, self._reconciler, self.identity),
            ]
            if self.leading:
                self._start_watches()

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def _start_watches(self) -> None:
        assert self._reconciler is not None
        self._reconciler.start()
        for watcher in self._watchers:
            watcher.start()

    def _lead(self) -> None:
        with self._lock:
            self._leading.set()
            self.metrics.leader_changed(True)
            if self._reconciler is not None:
                self._start_watches()
        if self.certificates is not None:
            self._maintainer = threading.Thread(
                target=self._maintain, name="certificates", daemon=True
            )
            self._maintainer.start()

    def _follow(self) -> None:
        with self._lock:
            self._leading.clear()
            self.metrics.leader_changed(False)
            self._stop_watches()

    def unwatch(self) -> None:
        """The leader's watches end; the Lease is still held until `resign`."""
        with self._lock:
            if self._leading.is_set():
                self._stop_watches()
            self._reconciler, self._watchers = None, []

    def _stop_watches(self) -> None:
        if self._reconciler is None:
            return
        # Cut every open watch first, so that they end together, not one after another.
        for watch in [self._reconciler.watch] + [w.watch for w in self._watchers]:
            watch.signal_stop()
        self._reconciler.stop()
        for watcher in self._watchers:
            watcher.stop()

    def _maintain(self) -> None:
        while self._leading.is_set() and not self._stopping.is_set():
            try:
                assert self.certificates is not None
                self.certificates.maintain()
            except Exception as error:  # noqa: BLE001 - retried on the next round
                log.warning(
                    f"certificate maintenance failed: {errors.describe(error)}",
                    extra=errors.permission(error),
                )
            self._stopping.wait(self.serve.cert_reload_seconds)

    def resign(self) -> None:
        """Stop campaigning; a leader gives the Lease up so another replica takes over at once."""
        self._stopping.set()
        if self._elector is not None:
            self._elector.stop()
        elif self._leading.is_set():
            self._follow()


def writes(serve: ServeConfig, config: ClusterConfig) -> list[str]:
    """What the leader writes in its cluster, for the startup line: the RBAC's list, in words."""
    where = f"in namespace {config.namespace}"
    found = [
        f"ServiceAccounts in namespaces labelled {config.namespace_selector}",
        "Warning Events on opted-in Pods it missed",
    ]
    if config.leader_election:
        found.append(f"Lease {config.lease_name} {where}")
    if serve.self_signed:
        found.append(f"Secret {config.secret_name} {where}")
        found.append(f"the caBundle of MutatingWebhookConfiguration {config.webhook_config_name}")
    return found
