"""Pods the webhook missed: the leader's metadata-only Pod watch, its Events, and `audit`'s list.

The decision is `webhook.core.missed`; here is the I/O that feeds it. Each missed Pod gets one
Warning Event, named after the Pod's uid, so a new leader's attempt at the same Event is a
409 and not a second one.

The watch holds facts only on Pods that could be missed: they opt in, were not injected, and
are not being deleted. Opt-in is decided at CREATE, so a Pod that does not opt in (nearly every
Pod of a large cluster) or one the webhook injected can never be missed: it costs the leader the
parse of its events and nothing it keeps. Were its metadata edited into a candidate later, that
edit is an event, and it is held from then. A namespace labelled later needs nothing more than
its own candidates judged again: every candidate in the cluster is held, whichever namespace it
is in, so no list is needed. The API server cannot narrow the watch further: a Pod opts in by
annotation as well as by label, and no selector reads annotations (docs/scale.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client

from webhook.core import missed, namespaces
from webhook.core.missed import Finding, PodFacts
from webhook.core.namespaces import pick
from webhook.core.optin import opt_in
from webhook.core.settings import Settings
from webhook.kube.reconciler import TERMINATING, NamespaceReconciler
from webhook.kube.watches import Key, Watch, pages, relisted

log = logging.getLogger("webhook.kube.missed")
# An API server that does not answer must not hold the Pod watch: the write fails, and is tried
# again on the Pod's next change or the next resync.
WRITE_TIMEOUT_SECONDS = 10.0


class MissedPods:
    """Watches Pod metadata cluster-wide; judges each Pod against the namespace watch's cache."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: Settings,
        namespaces: NamespaceReconciler,
        identity: str,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.namespaces = namespaces
        self.identity = identity
        self.telemetry = namespaces.telemetry
        self._missed: dict[Key, Finding] = {}
        # Kept as Pods come and go, so a change costs the same with 10 or 10,000 missed.
        self._counts: dict[tuple[str, str], int] = {}
        self._reported: set[str] = set()  # uids whose Event exists, ours or a former leader's
        self._lock = threading.Lock()
        self.watch: Watch[PodFacts] = Watch(
            "pod",
            self.core.list_pod_for_all_namespaces,
            self,
            field_selector=missed.ACTIVE_PODS,
            metadata_only=True,
            **namespaces.options,
        )
        namespaces.listeners.append(self.namespace_changed)

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()
        with self._lock:
            self._missed.clear()
            self._counts.clear()
        self._export()  # a follower reports none: only the leader's count is the truth

    def findings(self) -> list[Finding]:
        with self._lock:
            return list(self._missed.values())

    def keep(self, obj: dict[str, Any]) -> PodFacts | None:
        return candidate(obj.get("metadata") or {}, self.settings)

    def changed(self, key: Key, old: PodFacts | None, new: PodFacts | None) -> None:
        self._judge(key, new)
        if new is None and old is not None:
            with self._lock:
                self._reported.discard(old.uid)
        self._export()

    def synced(self) -> None:
        pass

    def namespace_changed(self, namespace: str) -> None:
        for key, pod in self.watch.in_namespace(namespace).items():
            self._judge(key, pod)
        self._export()

    def _judge(self, key: Key, pod: PodFacts | None) -> None:
        finding = (
            None
            if pod is None
            # A namespace whose own settings are wrong leaves its Pods bare on purpose, and
            # says so with a warning and a metric of its own: they are not missed.
            else missed.find(
                pod,
                self.namespaces.opted_in(key[0]) and not self.namespaces.in_error(key[0]),
                self.settings,
            )
        )
        with self._lock:
            before = self._missed.pop(key, None)
            if before is not None:
                self._count(before, -1)
            if finding is None:
                return
            self._missed[key] = finding
            self._count(finding, 1)
            if finding.uid in self._reported:
                return
            self._reported.add(finding.uid)
        if not self._record(finding):
            with self._lock:
                self._reported.discard(finding.uid)  # tried again on the next change or resync

    def _record(self, finding: Finding) -> bool:
        body = missed.event(finding, dt.datetime.now(dt.UTC), self.identity)
        where = {"namespace": finding.namespace, "pod": finding.name}
        try:
            self.core.create_namespaced_event(
                finding.namespace, body, _request_timeout=WRITE_TIMEOUT_SECONDS
            )
        except client.ApiException as error:
            if error.status == 409:
                return True  # written before, by us or a former leader
            log.warning(
                "could not write the missed-Pod Event", extra={**where, "status": error.status}
            )
            return bool(error.status == 404)  # the namespace or Pod is gone: nothing to tell
        except urllib3.exceptions.HTTPError as error:  # a timeout, a dropped connection
            log.warning(
                "could not write the missed-Pod Event", extra={**where, "error": repr(error)}
            )
            return False
        log.warning(
            "Pod missed by the webhook",
            extra={**where, "reason": finding.reason},
        )
        return True

    def _count(self, finding: Finding, step: int) -> None:
        label = (finding.namespace, finding.reason)
        self._counts[label] = self._counts.get(label, 0) + step

    def _export(self) -> None:
        with self._lock:
            counts = {label: n for label, n in self._counts.items() if n}
        self.telemetry.missed_pods(counts)


def candidate(metadata: dict[str, Any], settings: Settings) -> PodFacts | None:
    """The facts on a Pod that would be missed were its namespace opted in; else None. The
    opt-in is read first: it is all that most Pods' events need."""
    if not opt_in(metadata, settings).inject:
        return None
    pod = missed.facts(metadata, settings)
    return pod if missed.reason(pod, True) is not None else None  # as if its namespace opted in


@dataclass
class Audit:
    findings: list[Finding] = field(default_factory=list)
    pods: int = 0
    # Namespaces whose own settings are wrong, and why: their Pods are bare on purpose.
    in_error: dict[str, str] = field(default_factory=dict)


def audit(
    api: client.ApiClient,
    settings: Settings,
    selector: str,
    namespace: str | None = None,
    *,
    namespace_settings: bool = True,
) -> Audit:
    """Every missed Pod, listed once (reads only): what the leader's watch finds, for a person.
    A list whose continue token expires mid-way (`410`) is made again from the start."""
    return relisted(
        lambda: _audit(api, settings, selector, namespace, namespace_settings=namespace_settings)
    )


def _audit(
    api: client.ApiClient,
    settings: Settings,
    selector: str,
    namespace: str | None,
    *,
    namespace_settings: bool,
) -> Audit:
    core = client.CoreV1Api(api)
    only = f"metadata.name={namespace}" if namespace else None
    opted: set[str] = set()
    result = Audit()
    for body in pages(core.list_namespace, label_selector=selector, field_selector=only):
        for item in body.get("items") or ():
            if (item.get("status") or {}).get("phase") == TERMINATING:
                continue
            name, annotations = item["metadata"]["name"], item["metadata"].get("annotations")
            problem = ""
            if namespace_settings:
                problem = namespaces.resolve(pick(annotations, settings.prefix), settings).error
            if problem:
                result.in_error[name] = problem
            else:
                opted.add(name)
    if namespace:
        lister: Any = lambda **kw: core.list_namespaced_pod(namespace, **kw)  # noqa: E731
    else:
        lister = core.list_pod_for_all_namespaces
    for body in pages(lister, metadata_only=True, field_selector=missed.ACTIVE_PODS):
        for item in body.get("items") or ():
            result.pods += 1
            pod = candidate(item.get("metadata") or {}, settings)
            finding = None if pod is None else missed.find(pod, pod.namespace in opted, settings)
            if finding is not None:
                result.findings.append(finding)
    result.findings.sort(key=lambda f: (f.namespace, f.name))
    return result


def namespace_labels(api: client.ApiClient, name: str) -> dict[str, str] | None:
    """The labels of the namespace `name`; None when there is no such namespace."""
    try:
        found = client.CoreV1Api(api).read_namespace(name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(found.metadata.labels or {})
