"""The namespace reconciler: every namespace with the opt-in label gets the ServiceAccount.

It lists, then watches from the list's resourceVersion with bookmarks; a dropped watch resumes
from the last version seen, a `410 Gone` lists again, and a periodic resync catches anything a
watch may have missed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kubernetes import client, watch

from webhook.kube.accounts import AccountCache, ensure

log = logging.getLogger("webhook.kube.reconciler")


class NamespaceReconciler:
    def __init__(
        self,
        api: client.ApiClient,
        cache: AccountCache,
        selector: str,
        role_arn: str | None,
        resync_seconds: float = 300.0,
        watch_seconds: int = 60,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.cache = cache
        self.selector = selector
        self.role_arn = role_arn
        self.resync_seconds = resync_seconds
        self.watch_seconds = watch_seconds
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="namespace-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=self.watch_seconds + 5)

    def reconcile(self, namespace: str) -> None:
        try:
            done = ensure(self.core, namespace, self.cache.name, self.role_arn)
        except client.ApiException as error:
            log.error(
                "could not ensure ServiceAccount",
                extra={"namespace": namespace, "status": error.status, "reason": error.reason},
            )
            return
        self.cache.add(namespace)
        if done != "ok":
            log.info(
                "ServiceAccount " + done,
                extra={"namespace": namespace, "service_account": self.cache.name},
            )

    def _list(self) -> str:
        listed = self.core.list_namespace(label_selector=self.selector)
        for namespace in listed.items:
            self.reconcile(namespace.metadata.name)
        return str(listed.metadata.resource_version)

    def _run(self) -> None:
        version = ""
        resync_at = 0.0
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if not version or time.monotonic() >= resync_at:
                    version = self._list()
                    resync_at = time.monotonic() + self.resync_seconds
                version = self._follow(version, resync_at)
                backoff = 1.0
            except client.ApiException as error:
                if error.status == 410:
                    log.info("watch expired (410 Gone); listing again")
                    version = ""
                    continue
                log.warning(
                    "namespace watch failed; retrying",
                    extra={"status": error.status, "delay": backoff},
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as error:  # noqa: BLE001 - a dropped connection must not end the loop
                log.warning(
                    "namespace watch dropped; resuming",
                    extra={"error": repr(error), "delay": backoff},
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _follow(self, version: str, resync_at: float) -> str:
        """Watch from `version` until the stream ends or a resync is due; return the last seen."""
        self._watch = watch.Watch()
        timeout = max(1, min(self.watch_seconds, int(resync_at - time.monotonic()) + 1))
        stream: Any = self._watch.stream(
            self.core.list_namespace,
            label_selector=self.selector,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
        )
        for event in stream:
            if self._stop.is_set():
                break
            obj = event["object"]
            if event["type"] == "BOOKMARK":
                version = (
                    obj["metadata"]["resourceVersion"]
                    if isinstance(obj, dict)
                    else obj.metadata.resource_version
                )
                continue
            version = obj.metadata.resource_version
            if event["type"] in ("ADDED", "MODIFIED"):
                self.reconcile(obj.metadata.name)
        return version
