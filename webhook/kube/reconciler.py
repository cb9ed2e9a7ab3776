"""The leader's reconcilers: every namespace with the opt-in label gets the ServiceAccount, and
the ServiceAccounts we manage are watched, so one edited or deleted by hand is put back at once.

Both are uses of the one watch loop (`watches.Watch`): a dropped watch resumes from the last
version seen, a `410 Gone` lists again, and a periodic resync catches anything a watch missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from webhook.core import accounts
from webhook.core.namespaces import Annotations, Resolved, pick
from webhook.kube import errors
from webhook.kube.accounts import AccountCache, ensure
from webhook.kube.watches import Key, Quiet, Telemetry, Watch

log = logging.getLogger("webhook.kube.reconciler")

TERMINATING = "Terminating"
# What `ensure` says, as a metric label.
OUTCOMES = {
    "ok": "ok",
    "created": "created",
    "role annotation set": "repaired",
    "role annotation removed": "repaired",
}
REPAIRED = ("created", "role annotation set", "role annotation removed")


@dataclass(frozen=True)
class NamespaceState:
    """What the watch keeps of one namespace: its phase and our settings annotations."""

    phase: str
    annotations: Annotations = ()


def _active(state: NamespaceState | None) -> bool:
    return state is not None and state.phase != TERMINATING


class NamespaceReconciler:
    """Watches opted-in namespaces; the cache holds each one's phase and settings annotations.

    `resolve` gives a namespace's settings from its annotations (`webhook.core.namespaces`);
    without it every namespace's ServiceAccount gets `role_arn`.
    """

    def __init__(
        self,
        api: client.ApiClient,
        cache: AccountCache,
        selector: str,
        role_arn: str | None,
        resync_seconds: float = 300.0,
        watch_seconds: int = 60,
        telemetry: Telemetry | None = None,
        *,
        prefix: str = "mlflow-webhook.io",
        resolve: Callable[[Annotations], Resolved] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.cache = cache
        self.selector = selector
        self.role_arn = role_arn
        self.prefix = prefix
        self.resolve = resolve
        self.telemetry = telemetry or Quiet()
        # Told when a namespace starts or stops being opted in (the missed-Pod watch listens).
        self.listeners: list[Callable[[str], None]] = []
        # Every watch the leader keeps shares these: its timing, and where it counts.
        self.options: dict[str, Any] = {
            "resync_seconds": resync_seconds,
            "watch_seconds": watch_seconds,
            "telemetry": self.telemetry,
        }
        self.watch: Watch[NamespaceState] = Watch(
            "namespace", self.core.list_namespace, self, label_selector=selector, **self.options
        )

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def opted_in(self, namespace: str) -> bool:
        return _active(self.watch.get(("", namespace)))

    def annotations(self, namespace: str) -> Annotations | None:
        """Its settings annotations, or None when the watch does not hold it."""
        state = self.watch.get(("", namespace))
        return None if state is None else state.annotations

    def role_for(self, namespace: str) -> str | None:
        """The role its ServiceAccount should carry: its own, or the global one.

        None for a namespace this watch does not hold yet: the account watch's first list may
        come before this one's, and must not put the global role on a team's account. Empty
        for one whose own settings are wrong: its account carries no role, never the global one.
        """
        if self.resolve is None:
            return self.role_arn
        annotations = self.annotations(namespace)
        if annotations is None:
            return None
        resolved = self.resolve(annotations)
        if resolved.error and self.role_arn is not None:
            return ""
        return resolved.role_arn

    def keep(self, obj: dict[str, Any]) -> NamespaceState:
        phase = str((obj.get("status") or {}).get("phase") or "Active")
        annotations = (obj.get("metadata") or {}).get("annotations")
        return NamespaceState(phase, pick(annotations, self.prefix))

    def changed(self, key: Key, old: NamespaceState | None, new: NamespaceState | None) -> None:
        name = key[1]
        problem = self._problem(new)
        if new is not None and _active(new):
            if problem and (old is None or old.annotations != new.annotations):
                # Said once per change; each of its Pods then says it again as a warning.
                log.error(
                    f"namespace settings are wrong; its Pods get no MLflow settings: {problem}",
                    extra={"namespace": name},
                )
            self.reconcile(name)
        if _active(old) != _active(new) or bool(self._problem(old)) != bool(problem):
            for listener in self.listeners:
                listener(name)

    def in_error(self, namespace: str) -> bool:
        """Its own settings are wrong, so its Pods are left bare on purpose."""
        return bool(self._problem(self.watch.get(("", namespace))))

    def _problem(self, state: NamespaceState | None) -> str:
        if self.resolve is None or state is None:
            return ""
        return self.resolve(state.annotations).error

    def synced(self) -> None:
        pass

    def reconcile(self, namespace: str) -> str:
        """Ensure the ServiceAccount; return what was done, or "error"."""
        try:
            done = ensure(self.core, namespace, self.cache.name, self.role_for(namespace))
        except client.ApiException as error:
            log.error(
                f"could not ensure ServiceAccount: {errors.describe(error)}",
                extra={"namespace": namespace, **(errors.permission(error) or {})},
            )
            self.telemetry.account_reconciled("error")
            return "error"
        self.cache.add(namespace)
        self.telemetry.account_reconciled(OUTCOMES.get(done, "left-alone"))
        if done != "ok":
            log.info(
                "ServiceAccount " + done,
                extra={"namespace": namespace, "service_account": self.cache.name},
            )
        return done


class AccountReconciler:
    """Watches the ServiceAccounts we manage (by their managed-by label and our name).

    A changed role annotation is put back and a deleted account recreated, in the namespaces
    that are still opted in. One a person made carries no label of ours and is never seen here.
    """

    def __init__(self, api: client.ApiClient, namespaces: NamespaceReconciler) -> None:
        self.namespaces = namespaces
        self.telemetry = namespaces.telemetry
        self.watch: Watch[str] = Watch(
            "serviceaccount",
            client.CoreV1Api(api).list_service_account_for_all_namespaces,
            self,
            label_selector=f"{accounts.MANAGED_BY}={accounts.MANAGER}",
            field_selector=f"metadata.name={namespaces.cache.name}",
            **namespaces.options,
        )

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def keep(self, obj: dict[str, Any]) -> str:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return str(annotations.get(accounts.ROLE_ANNOTATION) or "")

    def changed(self, key: Key, old: str | None, new: str | None) -> None:
        namespace = key[0]
        role = self.namespaces.role_for(namespace)
        if new is None:
            self.namespaces.cache.discard(namespace)
            if not self.namespaces.opted_in(namespace):
                return  # the namespace left, or is being deleted: nothing to put back
            what, why = "recreated", "deleted"
        elif role is not None and new != role:
            what, why = "role-annotation", f"role annotation was {new or 'removed'}"
        else:
            return
        done = self.namespaces.reconcile(namespace)
        if done in REPAIRED:
            self.telemetry.account_repaired(what)
            log.warning(
                "repaired a managed ServiceAccount changed by hand",
                extra={"namespace": namespace, "service_account": key[1], "was": why, "did": done},
            )

    def synced(self) -> None:
        pass
