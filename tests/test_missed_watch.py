"""The leader's missed-Pod watch on a real API server, run in this process as the webhook's own
ServiceAccount: it holds facts only on Pods that could be missed, so the Pods of a large cluster
that never opt in cost it nothing it keeps; a namespace labelled later has its held Pods found;
and a list whose continue token expired is made again from its first page.

The API server expires a continue token only once etcd has compacted past it (every five
minutes, not on demand): the proxy answers one continue request with the API server's 410, and
everything else is the real server's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config

from testing.kube.controlplane import NAMESPACE, WEBHOOK_SA, ControlPlane, eventually
from testing.kube.proxy import ApiProxy, Call
from testing.support import free_port, settings
from webhook.kube.accounts import AccountCache
from webhook.kube.missed import MissedPods
from webhook.kube.reconciler import NamespaceReconciler

pytestmark = pytest.mark.timeout(300)

STATUS_KEY = "mlflow-webhook.io/status"
STATUS = '{"injected": ["main"], "serviceAccount": "sagemaker-mlflow-sa", "skipped": []}'


def pod(plane: ControlPlane, namespace: str, name: str, **annotations: str) -> None:
    plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
        }
    )


@pytest.fixture
def proxy(control_plane: ControlPlane, tmp_path: Path) -> Iterator[ApiProxy]:
    proxy = ApiProxy(control_plane.url, control_plane.ca, tmp_path / "proxy")
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def watched(control_plane: ControlPlane, proxy: ApiProxy, tmp_path: Path) -> Iterator[MissedPods]:
    """The namespace and Pod watches of a leader, reading through the proxy, two Pods a page."""
    plane = control_plane
    plane.install(free_port(), "overlays/ignore")  # no webhook answers: Pods come in as sent
    kubeconfig = plane.kubeconfig_for(
        WEBHOOK_SA, NAMESPACE, tmp_path / "proxied", server=proxy.url, ca=proxy.ca
    )
    api = config.new_client_from_config(config_file=str(kubeconfig))
    selector = "mlflow-webhook.io/inject=enabled"
    namespaces = NamespaceReconciler(api, AccountCache(api, "sagemaker-mlflow-sa"), selector, None)
    pods = MissedPods(api, settings(), namespaces, "test")
    pods.watch.page_size = 2
    yield pods
    pods.stop()
    namespaces.stop()


def missed(pods: MissedPods) -> set[tuple[str, str]]:
    return {(f.namespace, f.name) for f in pods.findings()}


def test_only_pods_that_could_be_missed_are_held_and_an_expired_list_starts_again(
    control_plane: ControlPlane, proxy: ApiProxy, watched: MissedPods
) -> None:
    plane = control_plane
    plane.label_namespace("held")
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}})
    pod(plane, "held", "missed", **{"mlflow-webhook.io/inject": "true"})
    pod(plane, "held", "injected", **{"mlflow-webhook.io/inject": "true", STATUS_KEY: STATUS})
    pod(plane, "held", "opted-out", **{"mlflow-webhook.io/inject": "false"})
    pod(plane, "held", "not-asking")
    pod(plane, "later", "waiting", **{"mlflow-webhook.io/inject": "true"})
    pod(plane, "later", "plain")

    expired: list[Call] = []

    def first_continue(call: Call) -> bool:
        if call.path != "/api/v1/pods" or "continue" not in call.query or expired:
            return False
        expired.append(call)
        return True

    proxy.refuse(first_continue, 410)
    watched.namespaces.start()
    watched.start()
    eventually(lambda: watched.watch.lists, what="the Pod list")
    lists = proxy.recorded(lambda c: c.path == "/api/v1/pods" and not c.watch)
    pages = [("continue" if "continue" in c.query else "first", c.status) for c in lists]
    expired_at = pages.index(("continue", 410))
    assert pages[expired_at + 1] == ("first", 200), pages  # listed again from its first page
    assert pages.count(("first", 200)) == 2, pages

    # Every Pod in the cluster was listed; only those that could be missed are held.
    assert set(watched.watch.snapshot()) == {("held", "missed"), ("later", "waiting")}
    eventually(lambda: missed(watched) == {("held", "missed")}, what="the missed Pod")

    plane.label_namespace("later")  # its opted-in Pod is found, with no list
    eventually(lambda: ("later", "waiting") in missed(watched), what="the namespace's Pod")
    assert watched.watch.lists == 1

    # Events keep holding only candidates: a Pod made, one that opts in after, one deleted.
    pod(plane, "held", "new-plain")
    plane.kubectl("annotate", "pod", "not-asking", "-n", "held", "mlflow-webhook.io/inject=true")
    plane.delete("pod", "missed", "held")
    eventually(
        lambda: missed(watched) == {("held", "not-asking"), ("later", "waiting")},
        what="the events applied",
    )
    assert len(watched.watch) == 2
