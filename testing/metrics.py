"""Read a running webhook's /metrics, as Prometheus would, over TLS."""

from __future__ import annotations

import re
import urllib.request

from testing.servers import WebhookProcess

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(server: WebhookProcess) -> str:
    with urllib.request.urlopen(
        server.url + "/metrics", context=server.client_context(), timeout=5
    ) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` with these labels, or None when there is none."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match[1] != name:
            continue
        have = dict(_LABEL.findall(match[2] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return None


def value(server: WebhookProcess, name: str, **labels: str) -> float:
    """One sample, read now; 0 when absent."""
    return sample(scrape(server), name, **labels) or 0.0
