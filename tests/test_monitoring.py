"""The monitoring component: its alerts under `promtool test rules`, and a real Prometheus
scraping a running webhook over TLS as the ServiceMonitor says, holding every metric that the
alerts and the dashboard query. Debian's `prometheus` package provides both binaries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.metrics import value
from testing.servers import WebhookProcess, start
from testing.support import FIXTURES, free_port, review_for
from tests.aws.moto import Moto, serve_bootstrapping
from tests.aws.sagemaker import SageMakerEmulator
from webhook.app.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
COMPONENT = ROOT / "manifests" / "components" / "monitoring"
ALERTS = {
    "MlflowWebhookNoReadyReplica",
    "MlflowWebhookAdmissionErrors",
    "MlflowWebhookCertificateExpiring",
    "MlflowWebhookMissedPods",
    "MlflowWebhookBootstrapFailing",
    "MlflowWebhookNoLeader",
    "MlflowWebhookFailedOpen",
    "MlflowWebhookCallsFailing",
}
METRIC = re.compile(r"\bmlflow_webhook_[a-z_]+")


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPONENT / name).read_text())
    return loaded


def rules() -> list[dict[str, Any]]:
    return [r for g in manifest("prometheusrule.yaml")["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads((COMPONENT / "dashboard.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def queried_metrics() -> set[str]:
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    return {name for expr in exprs for name in METRIC.findall(expr)}


def needs(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (Debian: apt-get install prometheus)")


def promtool(folder: Path, *args: str) -> None:
    done = subprocess.run(
        ["promtool", *args], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_monitoring_doc_names_every_exported_metric() -> None:
    """One table in docs/monitoring.md names every metric /metrics exports, and nothing else."""
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    rows = re.findall(r"^\| `(mlflow_webhook_\w+)` \| (\w+) \|", doc, re.M)
    exported = {
        (f"{m.name}_total" if m.type == "counter" else m.name, m.type)
        for m in Metrics().registry.collect()
    }
    assert set(rows) == exported
    assert len(rows) == len(exported)


def test_every_alert_says_what_to_do() -> None:
    found = {r["alert"]: r for r in rules()}
    assert set(found) == ALERTS
    for name, rule in found.items():
        notes = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(notes), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
    assert found["MlflowWebhookMissedPods"]["for"] == "10m"
    assert "14 * 86400" in found["MlflowWebhookCertificateExpiring"]["expr"]


def test_alert_rules_fire_and_stay_silent(tmp_path: Path) -> None:
    """promtool compares annotations word for word, so the unit tests run on the rules without
    them (their templates are checked by `promtool check rules` on the rules as shipped)."""
    needs("promtool")
    groups = manifest("prometheusrule.yaml")["spec"]["groups"]
    (tmp_path / "shipped.yaml").write_text(yaml.safe_dump({"groups": groups}))
    promtool(tmp_path, "check", "rules", "shipped.yaml")
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(FIXTURES / "monitoring" / "alerts.yaml", tmp_path / "alerts.yaml")
    promtool(tmp_path, "test", "rules", "alerts.yaml")
    tested_alerts = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts.yaml").read_text()))
    assert tested_alerts == ALERTS


def scrape_config(webhook: WebhookProcess) -> dict[str, Any]:
    """The ServiceMonitor's endpoint as Prometheus's own configuration: the Prometheus Operator
    writes the same, with the Service's endpoints for targets and the CA from the Secret."""
    [endpoint] = manifest("servicemonitor.yaml")["spec"]["endpoints"]
    tls = endpoint["tlsConfig"]
    return {
        "job_name": manifest("servicemonitor.yaml")["metadata"]["name"],
        "scheme": endpoint["scheme"],
        "metrics_path": endpoint["path"],
        # The ServiceMonitor's 30 s, shortened so the test does not wait for it.
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "tls_config": {
            "ca_file": str(webhook.cert_dir / tls["ca"]["secret"]["key"]),
            "server_name": tls["serverName"],
        },
        "static_configs": [{"targets": [f"127.0.0.1:{webhook.port}"]}],
    }


class Prometheus:
    def __init__(self, directory: Path, scrape: dict[str, Any]) -> None:
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {}, "scrape_configs": [scrape]}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **query: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]

    def wait(self, check: Any, what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except OSError:
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"Prometheus: timed out waiting for {what}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[WebhookProcess]:
    server = start(tmp_path / "certs")
    yield server
    server.stop()


def admit_one(webhook: WebhookProcess) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"mlflow-webhook.io/inject": "true"}},
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }
    request = urllib.request.Request(
        webhook.url + "/mutate",
        data=json.dumps(review_for(pod)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=5) as r:
        assert r.status == 200


def test_prometheus_scrapes_every_queried_metric(webhook: WebhookProcess, tmp_path: Path) -> None:
    needs("prometheus")
    admit_one(webhook)
    prometheus = Prometheus(tmp_path, scrape_config(webhook))
    try:
        [target] = prometheus.wait(
            lambda: [t for t in prometheus.api("targets")["activeTargets"] if t["health"] == "up"],
            "the webhook's target to be up",
        )
        assert target["scrapeUrl"].startswith("https://") and target["lastError"] == ""
        names = queried_metrics()
        prometheus.wait(
            lambda: prometheus.api("series", **{"match[]": "mlflow_webhook_ready"}),
            "the first samples",
        )
        metadata = prometheus.api("targets/metadata", match_target='{job="mlflow-webhook"}')
        families = {m["metric"] for m in metadata}
        missing = []
        for name in sorted(names):
            series = prometheus.api("series", **{"match[]": name})
            family = re.sub(r"_(bucket|sum|count|total)$", "", name)
            # A labelled gauge with no label set yet (missed Pods, without a cluster) has no
            # series; its HELP and TYPE still reach Prometheus.
            if not series and family not in families:
                missing.append(name)
        assert missing == [], f"queried but not exported: {missing}"
        assert "mlflow_webhook_missed_pods" in families
    finally:
        prometheus.stop()


def test_a_failing_bootstrap_is_retried_and_counted(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Path
) -> None:
    """What MlflowWebhookBootstrapFailing reads: serve stays up, says so, and tries again."""
    _, emulator = aws
    emulator.create_outcome = "CreateFailed"
    emulator.transition_seconds = 0.5
    server = serve_bootstrapping(tmp_path, "s3://team-mlflow/artifacts")
    try:
        failed = server.wait_for_log("bootstrap failed; retrying", timeout=60)
        assert "CreateFailed" in failed["error"] and failed["delay"] == 10.0
        assert value(server, "mlflow_webhook_bootstrap_failures_total") >= 1
        assert value(server, "mlflow_webhook_bootstrap_succeeded") == 0
        assert value(server, "mlflow_webhook_bootstrap_last_success_timestamp_seconds") == 0
        assert value(server, "mlflow_webhook_ready") == 0
        assert server.proc.poll() is None
    finally:
        server.stop()
