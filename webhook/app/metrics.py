"""Prometheus metrics, in a registry of the app's own so that several apps can share a process."""

from __future__ import annotations

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
