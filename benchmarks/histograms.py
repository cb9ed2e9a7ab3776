"""The API server's own view of a webhook: `apiserver_admission_webhook_admission_duration_seconds`
read from /metrics before and after a run, its quantiles taken from the buckets' deltas the way
Prometheus' `histogram_quantile` does (linear within a bucket)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRIC = "apiserver_admission_webhook_admission_duration_seconds"


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts by upper bound (ascending, +Inf last), with the sum and count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def __sub__(self, before: Histogram) -> Histogram:
        earlier = dict(before.buckets)
        return Histogram(
            tuple((le, n - earlier.get(le, 0.0)) for le, n in self.buckets),
            self.total - before.total,
            self.count - before.count,
        )

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """As `histogram_quantile`: linear within the bucket that holds the rank; in the +Inf
        bucket, the highest finite bound."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = le, cumulative
        return lower

    def bucket_of(self, q: float) -> tuple[float, float]:
        """The bounds of the bucket that holds the q-quantile: how coarse the figure is."""
        rank, lower = q * self.count, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                return lower, le
            lower = le
        return lower, math.inf


EMPTY = Histogram((), 0.0, 0.0)


def webhook_histogram(text: str, webhook: str, operation: str = "CREATE") -> Histogram:
    """The mutating webhook's admission durations in an exposition, summed over `rejected`."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get("name") != webhook or labels.get("operation") != operation:
                continue
            if labels.get("type") != "admit":
                continue
            if sample.name.endswith("_bucket"):
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return Histogram(tuple(sorted(buckets.items())), total, count)
