"""Each namespace's settings annotations, known to admission without asking per request.

The leader's namespace watch keeps them for every opted-in namespace. What it does not hold
(a namespace labelled a moment before its first Pod, or any namespace on a replica that does
not lead and so keeps no watch) is asked live with one bounded GET and kept briefly, so a
busy namespace costs one lookup per `ttl`, and a changed annotation is seen within it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kubernetes import client

from webhook.core.namespaces import Annotations, pick

# How long a looked-up namespace's annotations are trusted where no watch keeps them.
LOOKUP_TTL_SECONDS = 10.0


class NamespaceCache:
    def __init__(
        self,
        api: client.ApiClient,
        prefix: str,
        lookup_timeout: float = 1.0,
        ttl: float = LOOKUP_TTL_SECONDS,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.prefix = prefix
        self.timeout = lookup_timeout
        self.ttl = ttl
        # The leader's watch, once there is one: None for a namespace it does not hold.
        self.watched: Callable[[str], Annotations | None] = lambda namespace: None
        self._looked_up: dict[str, tuple[float, Annotations]] = {}
        self._lock = threading.Lock()

    def known(self, namespace: str) -> Annotations | None:
        found = self.watched(namespace)
        if found is not None:
            return found
        with self._lock:
            entry = self._looked_up.get(namespace)
        if entry is not None and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        return None

    def last_known(self, namespace: str) -> Annotations | None:
        """What a lookup last found, however old: better than nothing when a new one fails."""
        with self._lock:
            entry = self._looked_up.get(namespace)
        return None if entry is None else entry[1]

    def lookup(self, namespace: str) -> Annotations:
        """The one API call allowed on the request path for it: a GET with a short timeout."""
        try:
            found = self.core.read_namespace(namespace, _request_timeout=self.timeout)
            annotations = pick(found.metadata.annotations, self.prefix)
        except client.ApiException as error:
            if error.status != 404:
                raise
            annotations = ()
        # Kept past the ttl for `last_known`: one small entry per namespace ever looked up.
        with self._lock:
            self._looked_up[namespace] = (time.monotonic(), annotations)
        return annotations
