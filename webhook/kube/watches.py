"""One list-watch-resume loop with a cache, shared by every watch the leader keeps.

Like client-go's informers: it lists in pages, then watches from the list's resourceVersion with
bookmarks; a dropped watch resumes from the last version seen, `410 Gone` lists again, and a
periodic resync lists again to catch anything a watch may have missed. A continue token that
expires mid-list (`410`) starts the list again from its first page, never one unpaged list:
memory stays one page. Objects arrive as the API server's JSON (only their metadata, for a
metadata watch, as client-go's metadata informers ask for it); the cache keeps only what the
handler reduces each one to, and nothing at all for an object it has no use for, so the cache
grows with what is watched for, not with what the API server sends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import orjson
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("webhook.kube.watches")

# The API server's PartialObjectMetadata: names, labels, annotations and versions, no spec.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PAGE_SIZE = 500  # client-go's page size: a large list never sits in memory whole

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
T = TypeVar("T")
R = TypeVar("R")


class Handler(Protocol[T]):
    def keep(self, obj: dict[str, Any]) -> T | None:
        """What the cache holds for one object; None holds nothing, as if it did not exist."""

    def changed(self, key: Key, old: T | None, new: T | None) -> None:
        """An object held appeared, changed or was listed again (`new`), or is gone or no longer
        held (None). Never called for an object held neither before nor after."""

    def synced(self) -> None:
        """A full list has just been applied."""


class Telemetry(Protocol):
    """What the cluster side counts; the app's metrics implement it."""

    def leader_changed(self, leading: bool) -> None: ...

    def watch_restarted(self, watch: str, reason: str) -> None: ...

    def account_reconciled(self, outcome: str) -> None: ...

    def account_repaired(self, what: str) -> None: ...

    def missed_pods(self, counts: dict[tuple[str, str], int]) -> None: ...


class Quiet:
    """Counts nothing: for uses without metrics, such as tests of one part."""

    def leader_changed(self, leading: bool) -> None:
        pass

    def watch_restarted(self, watch: str, reason: str) -> None:
        pass

    def account_reconciled(self, outcome: str) -> None:
        pass

    def account_repaired(self, what: str) -> None:
        pass

    def missed_pods(self, counts: dict[tuple[str, str], int]) -> None:
        pass


def key_of(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return metadata.get("namespace") or "", metadata.get("name") or ""


class Watch(Generic[T]):
    """List, then watch, for one kind and selector, in a thread of its own."""

    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        handler: Handler[T],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        resync_seconds: float = 300.0,
        watch_seconds: int = 60,
        telemetry: Telemetry | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.name = name
        self.lister = lister
        self.handler = handler
        self.selectors = {"label_selector": label_selector, "field_selector": field_selector}
        self.metadata_only = metadata_only
        self.resync_seconds = resync_seconds
        self.watch_seconds = watch_seconds
        self.telemetry = telemetry or Quiet()
        self.page_size = page_size
        # By namespace, then name: a namespace's objects are found without a walk of them all.
        self._store: dict[str, dict[str, T]] = {}
        self._size = 0
        self.lists = 0  # full lists applied: a list once done, the cache is the cluster's
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._version = ""  # where the next watch resumes: the last resourceVersion seen
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-watch", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        """Ask the loop to end, and cut an open watch so that it ends now."""
        self._stop.set()
        response = self._response
        if response is not None:
            # Unblocks a read in progress (urllib3 >= 2.3); the flag ends the loop all the same.
            with contextlib.suppress(Exception):
                response.shutdown()

    def stop(self) -> None:
        self.signal_stop()
        if self._thread is not None:
            self._thread.join(timeout=self.watch_seconds + 5)
        with self._lock:
            self._store, self._size = {}, 0

    def get(self, key: Key) -> T | None:
        with self._lock:
            return self._store.get(key[0], {}).get(key[1])

    def in_namespace(self, namespace: str) -> dict[Key, T]:
        """What is held in one namespace ("" for cluster-scoped objects)."""
        with self._lock:
            held = self._store.get(namespace, {})
            return {(namespace, name): value for name, value in held.items()}

    def snapshot(self) -> dict[Key, T]:
        with self._lock:
            return {(ns, name): v for ns, held in self._store.items() for name, v in held.items()}

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def _run(self) -> None:
        self._version = ""
        resync_at = 0.0
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if not self._version or time.monotonic() >= resync_at:
                    self._version = self._list()
                    resync_at = time.monotonic() + self.resync_seconds
                self._follow(resync_at)
                backoff = 1.0
            except client.ApiException as error:
                if self._stop.is_set():
                    break
                if error.status == 410:
                    # A watch's version or a list's continue token too old: list from the start.
                    log.info("watch expired (410 Gone); listing again", extra={"watch": self.name})
                    self.telemetry.watch_restarted(self.name, "expired")
                    self._version = ""
                    continue
                log.warning(
                    f"{self.name} watch failed; retrying",
                    extra={"status": error.status, "delay": backoff},
                )
                self.telemetry.watch_restarted(self.name, "error")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as error:  # noqa: BLE001 - a dropped connection must not end the loop
                if self._stop.is_set():
                    break
                log.warning(
                    f"{self.name} watch dropped; resuming",
                    extra={"error": repr(error), "delay": backoff},
                )
                self.telemetry.watch_restarted(self.name, "dropped")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list(self) -> str:
        """A full list in pages; objects gone since the last one are reported gone. A page is
        let go once its objects are reduced, so only what is held outlives it."""
        fresh: dict[str, dict[str, T]] = {}
        size = 0
        version = ""
        for body in pages(self.lister, self.metadata_only, self.page_size, **self.selectors):
            version = str(body["metadata"]["resourceVersion"])
            for obj in body.get("items") or ():
                value = self.handler.keep(obj)
                if value is not None:
                    namespace, name = key_of(obj)
                    fresh.setdefault(namespace, {})[name] = value
                    size += 1
        with self._lock:
            old, self._store, self._size = self._store, fresh, size
        for namespace, held in old.items():
            for name, value in held.items():
                if name not in fresh.get(namespace, {}):
                    self._notify((namespace, name), value, None)
        for namespace, held in fresh.items():
            before = old.get(namespace, {})
            for name, value in held.items():
                self._notify((namespace, name), before.get(name), value)
        self._safely(self.handler.synced)
        self.lists += 1
        return version

    def _follow(self, resync_at: float) -> None:
        """Watch from the last version seen until the stream ends or a resync is due. The version
        moves with every event, so a stream that drops mid-way resumes where it stopped."""
        timeout = max(1, min(self.watch_seconds, int(resync_at - time.monotonic()) + 1))
        response = _call(
            self.lister,
            METADATA_WATCH if self.metadata_only else None,
            **self.selectors,
            watch=True,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(10, timeout + 30),
        )
        self._response = response
        try:
            if self._stop.is_set():
                # Asked to stop while the watch was opening, before it could be cut: the flag is
                # set before the response is read in signal_stop, so one of the two sees the other.
                return
            for event in self._events(response):
                if self._stop.is_set():
                    break
                self._version = self._apply(event, self._version)
        finally:
            self._response = None
            response.release_conn()

    @staticmethod
    def _events(response: Any) -> Iterator[dict[str, Any]]:
        for line in iter_resp_lines(response):
            event = orjson.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise client.ApiException(
                    status=int(status.get("code") or 500), reason=status.get("message")
                )
            yield event

    def _apply(self, event: dict[str, Any], version: str) -> str:
        obj = event.get("object") or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        kind = event.get("type")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return version  # BOOKMARK: only the version moves on
        new = None if kind == "DELETED" else self.handler.keep(obj)
        namespace, name = key = key_of(obj)
        with self._lock:
            held = self._store.get(namespace)
            old = None if held is None else held.pop(name, None)
            if new is not None:
                if held is None:
                    held = self._store[namespace] = {}
                held[name] = new
            elif held is not None and not held:
                del self._store[namespace]
            self._size += (new is not None) - (old is not None)
        if old is not None or new is not None:
            self._notify(key, old, new)
        return version

    def _notify(self, key: Key, old: T | None, new: T | None) -> None:
        self._safely(lambda: self.handler.changed(key, old, new))

    def _safely(self, call: Callable[[], None]) -> None:
        """A handler's failure is logged; the watch goes on."""
        try:
            call()
        except Exception:
            log.exception("watch handler failed", extra={"watch": self.name})


def _call(lister: Callable[..., Any], accept: str | None, **params: Any) -> Any:
    """The raw response: the JSON is read here, not turned into the client's models."""
    kwargs = {k: v for k, v in params.items() if v is not None}
    headers = {"Accept": accept} if accept else None
    return lister(_preload_content=False, _headers=headers, **kwargs)


def pages(
    lister: Callable[..., Any],
    metadata_only: bool = False,
    page_size: int = PAGE_SIZE,
    **params: Any,
) -> Iterator[dict[str, Any]]:
    """Every page of a list, as the API server's JSON; the last one carries its version. A
    continue token too old for the API server raises its `410`: the caller lists again."""
    token: str | None = None
    while True:
        response = _call(
            lister,
            METADATA_LIST if metadata_only else None,
            **params,
            limit=page_size,
            _continue=token,
            _request_timeout=60,
        )
        body: dict[str, Any] = orjson.loads(response.data)
        yield body
        token = (body.get("metadata") or {}).get("continue") or None
        if not token:
            return


def relisted(listing: Callable[[], R], attempts: int = 3) -> R:
    """A one-off paged list, made again from its first page when a continue token expires."""
    for attempt in range(1, attempts + 1):
        try:
            return listing()
        except client.ApiException as error:
            if error.status != 410 or attempt == attempts:
                raise
            log.info("list expired (410 Gone); listing again", extra={"attempt": attempt})
    raise AssertionError("unreachable")
