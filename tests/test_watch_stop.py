"""A watch asked to stop while it is still opening ends at once, not when its stream times out.

In-process, with a lister that stands in for the API server: the moment to hit is between the
watch request going out and its response arriving, which a real server does not offer on
demand. The rest of the watch's behaviour is tested on the real control plane
(tests/test_watches.py, tests/test_cluster.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson

from webhook.kube.watches import Key, Watch


class Stream:
    """A watch response whose stream sends nothing until it is shut down, as an idle watch."""

    def __init__(self) -> None:
        self.cut = threading.Event()

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        self.cut.wait(120)  # a watch's own timeout, had it not been cut
        return iter(())

    def shutdown(self) -> None:
        self.cut.set()

    def release_conn(self) -> None:
        pass


class Listed:
    def __init__(self) -> None:
        self.data = orjson.dumps({"metadata": {"resourceVersion": "7"}, "items": []})


class Lister:
    """Lists at once; a watch request is answered only once `answer` is set."""

    def __init__(self) -> None:
        self.opening = threading.Event()
        self.answer = threading.Event()
        self.streams: list[Stream] = []

    def __call__(self, **params: Any) -> Any:
        if not params.get("watch"):
            return Listed()
        self.opening.set()
        self.answer.wait(30)
        stream = Stream()
        self.streams.append(stream)
        return stream


class Ignore:
    def keep(self, obj: dict[str, Any]) -> str:
        return ""

    def changed(self, key: Key, old: str | None, new: str | None) -> None:
        pass

    def synced(self) -> None:
        pass


def test_a_stop_while_the_watch_opens_ends_it_at_once() -> None:
    lister = Lister()
    watch: Watch[str] = Watch("test", lister, Ignore(), watch_seconds=60)
    watch.start()
    assert lister.opening.wait(10)
    stopping = threading.Thread(target=watch.stop)
    stopping.start()
    time.sleep(0.2)  # signal_stop has run: the flag is set, no response to cut yet
    lister.answer.set()
    started = time.monotonic()
    stopping.join(30)
    assert not stopping.is_alive()
    assert time.monotonic() - started < 20  # not the stream's 120 s, nor the join's 65 s
