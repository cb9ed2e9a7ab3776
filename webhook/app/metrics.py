"""Prometheus metrics, in a registry of the app's own so that several apps can share a process."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created samples double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._missed_lock = threading.Lock()
        self._missed_seen: set[tuple[str, str]] = set()
        self.admissions = Counter(
            "mlflow_webhook_admissions",
            "Admission requests by outcome (injected, skipped, error, invalid) and reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlflow_webhook_admission_duration_seconds",
            "Time to answer one admission request, from body read to response built.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "mlflow_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires, as a Unix time.",
            registry=self.registry,
        )
        self.cert_reloads = Counter(
            "mlflow_webhook_certificate_reloads",
            "Times a changed serving certificate was loaded.",
            registry=self.registry,
        )
        self.connections = Gauge(
            "mlflow_webhook_open_connections",
            "Client connections open now, TLS handshakes in progress included.",
            registry=self.registry,
        )
        self.namespace_errors = Counter(
            "mlflow_webhook_namespace_settings_errors",
            "Opted-in Pods admitted with no MLflow settings because their namespace's own "
            "settings are wrong (a malformed ARN or URL, a tracking URI without a role), "
            "by namespace.",
            ["namespace"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "mlflow_webhook_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 0.1 s: how long requests waited "
            "behind other work.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "mlflow_webhook_event_loop_lag_max_seconds",
            "The event loop's longest lag since the process started.",
            registry=self.registry,
        )
        self.evictions = Counter(
            "mlflow_webhook_connections_evicted",
            "Idle connections closed to make room at the --max-connections bound.",
            registry=self.registry,
        )

        # One child a label pair, found once: labels() validates and locks on every call.
        self._admitted: dict[tuple[str, str], Any] = {}
        self._lag_max = 0.0
        self._cluster_metrics()
        self._bootstrap_metrics()

    def _cluster_metrics(self) -> None:
        self.ready = Gauge(
            "mlflow_webhook_ready",
            "1 while this replica answers /readyz as ready (it has its settings), else 0.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "mlflow_webhook_leader",
            "1 while this replica holds the Lease and does the cluster writes, else 0.",
            registry=self.registry,
        )
        self.accounts_reconciled = Counter(
            "mlflow_webhook_service_accounts_reconciled",
            "ServiceAccount checks by the leader, by outcome (ok, created, repaired, "
            "left-alone, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.accounts_repaired = Counter(
            "mlflow_webhook_service_accounts_repaired",
            "Managed ServiceAccounts changed by hand and put back: role-annotation or recreated.",
            ["what"],
            registry=self.registry,
        )
        self.watch_restarts = Counter(
            "mlflow_webhook_watch_restarts",
            "Watches started again other than on their own timeout, by watch (namespace, "
            "serviceaccount, pod) and reason (expired: 410 Gone, error, dropped).",
            ["watch", "reason"],
            registry=self.registry,
        )
        self.missed = Gauge(
            "mlflow_webhook_missed_pods",
            "Running Pods that opt in but were not injected (the leader's count), by namespace "
            "and reason (not-injected, service-account-kept).",
            ["namespace", "reason"],
            registry=self.registry,
        )
        # Known label values start at 0, so that a rate or an alert sees the series at once.
        for outcome in ("ok", "created", "repaired", "left-alone", "error"):
            self.accounts_reconciled.labels(outcome)
        for what in ("role-annotation", "recreated"):
            self.accounts_repaired.labels(what)
        for watch in ("namespace", "serviceaccount", "pod"):
            for reason in ("expired", "error", "dropped"):
                self.watch_restarts.labels(watch, reason)

    def _bootstrap_metrics(self) -> None:
        self.bootstrap_succeeded = Gauge(
            "mlflow_webhook_bootstrap_succeeded",
            "With the AWS bootstrap at startup: 1 once it succeeded, 0 while it runs or fails.",
            registry=self.registry,
        )
        self.bootstrap_failures = Counter(
            "mlflow_webhook_bootstrap_failures",
            "Failed runs of the AWS bootstrap at startup; each is retried.",
            registry=self.registry,
        )
        self.bootstrap_last_success = Gauge(
            "mlflow_webhook_bootstrap_last_success_timestamp_seconds",
            "When the AWS bootstrap last succeeded, as a Unix time (0: not yet).",
            registry=self.registry,
        )

    def admitted(self, outcome: str, reason: str) -> None:
        child = self._admitted.get((outcome, reason))
        if child is None:
            child = self._admitted[outcome, reason] = self.admissions.labels(outcome, reason)
        child.inc()

    def loop_late(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        if seconds > self._lag_max:
            self._lag_max = seconds
            self.loop_lag_max.set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # What the cluster side reports (webhook.kube.watches.Telemetry).

    def leader_changed(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def watch_restarted(self, watch: str, reason: str) -> None:
        self.watch_restarts.labels(watch, reason).inc()

    def account_reconciled(self, outcome: str) -> None:
        self.accounts_reconciled.labels(outcome).inc()

    def account_repaired(self, what: str) -> None:
        self.accounts_repaired.labels(what).inc()

    def missed_pods(self, counts: dict[tuple[str, str], int]) -> None:
        """Set every series; one whose Pods are gone stays, at 0."""
        with self._missed_lock:
            self._missed_seen.update(counts)
            for labels in self._missed_seen:
                self.missed.labels(*labels).set(counts.get(labels, 0))

    # What the AWS bootstrap at startup reports.

    def bootstrap_failed(self) -> None:
        self.bootstrap_succeeded.set(0)
        self.bootstrap_failures.inc()

    def bootstrap_done(self) -> None:
        self.bootstrap_succeeded.set(1)
        self.bootstrap_last_success.set_to_current_time()
