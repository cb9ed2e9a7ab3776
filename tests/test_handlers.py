"""The admission handler's flow, in process, against a table of facts: one YAML case a file in
`tests/fixtures/handlers`, compared as the Pod that results from the answer's patch.

The facts come from the table, as the EKS pod-identity webhook's handler tests take a fake
ServiceAccount cache: what the cluster says is the input, what the handler asks is checked.
The adapter that asks the real cluster is tested against `../shared/kube`
(`tests/test_namespace_settings.py`, `tests/test_cluster.py`).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import logging
from typing import Any

import pytest

from testing.support import STATUS_KEY, Body, apply, load_cases, readable, review_for, settings
from webhook.app import handlers
from webhook.app.config import ServeConfig
from webhook.core.decisions import Facts
from webhook.core.settings import Settings, parse_tracking_uri

CASES = dict(load_cases("handlers"))


class Table:
    """The facts a case gives, and a record of what the handler asked for."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.asked: list[dict[str, Any]] = []

    def known(self, settings: Settings, namespace: str, account: bool) -> Facts | None:
        return None  # as on a cache miss: the handler must then ask `gather`

    async def gather(self, settings: Settings, namespace: str, account: bool) -> Facts:
        self.asked.append({"namespace": namespace, "account": account})
        own = dict(self.facts.get("settings") or {})
        if "tracking_uri" in own:
            own["tracking"] = parse_tracking_uri(own.pop("tracking_uri"))
        return Facts(
            dataclasses.replace(settings, **own),
            self.facts.get("namespace_error", ""),
            self.facts.get("account_exists", True),
        )


def written(pod: dict[str, Any]) -> dict[str, Any]:
    """A fixture's Pod as the API server holds it: the status annotation a JSON string."""
    pod = copy.deepcopy(pod)
    annotations = pod["metadata"]["annotations"]
    annotations[STATUS_KEY] = json.dumps(annotations[STATUS_KEY], separators=(",", ":"))
    return pod


def pods(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The case's Pod (or the Pod another case results in) and the Pod expected after the
    patch (None: unchanged)."""
    pod = case.get("pod") or written(CASES[case["pod_from"]]["expected"])
    if case.get("unchanged"):
        return pod, None
    return pod, case.get("expected") or CASES[case["expected_from"]]["expected"]


async def call(case: dict[str, Any], pod: dict[str, Any]) -> tuple[dict[str, Any], Table]:
    chosen = settings(**(case.get("settings") or {}))
    table = Table(case.get("facts") or {})
    state = handlers.State(ServeConfig(settings=chosen), settings=chosen, facts_from=table)
    review = review_for(pod, **(case.get("request") or {}))
    answer = await handlers.mutate(state, Body(json.dumps(review).encode()))  # type: ignore[arg-type]
    assert answer.status == 200
    assert answer.body is not None
    body: dict[str, Any] = json.loads(bytes(answer.body))  # type: ignore[arg-type]
    assert body["response"]["uid"] == review["request"]["uid"]
    assert body["response"]["allowed"] is True
    return body["response"], table


def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return pod
    assert response["patchType"] == "JSONPatch"
    return apply(pod, json.loads(base64.b64decode(response["patch"])))


def decision_log(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    [record] = [r for r in caplog.records if r.name == "webhook.admission"]
    return record


@pytest.mark.parametrize("name", sorted(CASES))
async def test_case(name: str, caplog: pytest.LogCaptureFixture) -> None:
    case = CASES[name]
    pod, expected = pods(case)
    caplog.set_level(logging.INFO, "webhook.admission")
    response, table = await call(case, pod)
    assert table.asked == case["asked"]
    mutated = patched(pod, response)
    if expected is None:
        assert "patch" not in response
    else:
        assert readable(mutated) == readable(expected)
    warnings = response.get("warnings") or []
    for wanted in case.get("warnings") or []:
        assert any(wanted in w for w in warnings), warnings
    if not case.get("warnings"):
        assert warnings == []
    record = decision_log(caplog)
    fields = record.__dict__
    assert (fields["outcome"], fields["reason"]) == (case["outcome"], case["reason"])
    assert fields["patch_ops"] == len(json.loads(base64.b64decode(response.get("patch", "W10="))))
    wanted_log = case.get("log") or {"level": "INFO"}
    assert record.levelname == wanted_log["level"]
    assert wanted_log.get("message", "") in record.getMessage()
    assert fields["dry_run"] is wanted_log.get("dry_run", False)


async def test_namespace_error_is_counted() -> None:
    """The metric a platform team alerts on: errors in a namespace's own settings, by namespace."""
    case = CASES["namespace-settings-error"]
    chosen = settings(**case["settings"])
    state = handlers.State(
        ServeConfig(settings=chosen), settings=chosen, facts_from=Table(case["facts"])
    )
    review = review_for(case["pod"])
    await handlers.mutate(state, Body(json.dumps(review).encode()))  # type: ignore[arg-type]
    metrics = state.metrics.render().decode()
    assert 'mlflow_webhook_namespace_settings_errors_total{namespace="team-a"} 1.0' in metrics
    assert 'reason="namespace-settings-error"' in metrics
