"""Memory back to the system after a flood of connections.

The connections a flood opens free their TLS buffers when they close, but glibc's malloc keeps
what was freed for the next allocation: without a trim, a replica stays at its flood's peak.
`malloc_trim` returns it, so it runs once the pool has shrunk by a flood's worth since its peak,
and again at each look while it goes on shrinking.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from collections.abc import Callable

from webhook.app.connections import Pool

log = logging.getLogger("webhook.memory")
# About 8 MiB of idle TLS connections: fewer freed is not worth a trim.
FLOOD = 256
EVERY_SECONDS = 5.0


def malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


async def trim_after_floods(pool: Pool, every: float = EVERY_SECONDS) -> None:
    trim = malloc_trim()
    if trim is None:
        return
    last: int | None = None  # the pool's size at the last trim, until it grows again
    while True:
        await asyncio.sleep(every)
        now = len(pool)
        # A flood's tail (handshakes that end at their deadline, a few seconds apart) may
        # shrink the pool by less than a flood's worth a look: trimmed again while it shrinks.
        if pool.peak - now >= FLOOD or (last is not None and now < last):
            # Handshakes that failed leave cycles (a task, its exception, its traceback) that
            # only a full collection frees; what startup loaded is frozen, out of its way.
            gc.collect()
            # In a thread: it walks the heap, which can take a few milliseconds.
            await asyncio.to_thread(trim)
            log.debug("returned freed memory", extra={"peak": pool.peak, "open": now})
            last = now
        elif last is not None and now > last:
            last = None
        pool.peak = now
