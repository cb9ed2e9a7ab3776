"""Open many idle TLS connections to a server and hold them until the server closes each one.

Run as a process of its own (`python -m tests.flood`), on uvloop, so that thousands of
handshakes are quick and the test's own event loop stays free to watch the server. Prints one
JSON line when every connection is open and one when every connection has ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time

import uvloop


async def flood(port: int, ca: str, count: int, wait: float) -> None:
    context = ssl.create_default_context(cafile=ca)
    gate = asyncio.Semaphore(512)
    readers: list[asyncio.StreamReader] = []
    started = time.monotonic()

    async def open_one() -> None:
        async with gate:
            reader, _ = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            readers.append(reader)

    await asyncio.gather(*(open_one() for _ in range(count)))
    report(opened=len(readers), seconds=time.monotonic() - started)

    async def ended(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), wait) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    results = await asyncio.gather(*(ended(reader) for reader in readers))
    report(ended=sum(results), seconds=time.monotonic() - started)


def report(**fields: float) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--wait", type=float, default=60.0, help="longest wait for the ends")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.count + 256:
        sys.exit(f"needs {args.count + 256} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(flood(args.port, args.ca, args.count, args.wait))


if __name__ == "__main__":
    main()
