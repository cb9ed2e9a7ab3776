"""Open many TLS connections to a server and hold them, as a process of its own.

Run as `python -m tests.flood`, on uvloop, so that thousands of handshakes are quick and the
test's own event loop stays free to watch the server. Prints one JSON line when every
connection is open and one when every connection has ended.

Two clients:
- `--mode read` (the default) reads, so it answers the server's close at once, and waits
  until the server has closed each connection;
- `--mode still` never reads from its socket once its handshake is done, as an attacker would,
  so it never answers the server's close_notify (an asyncio client's TLS layer would, even with
  reading paused: hence a handshake of our own over memory BIOs). It holds what it opened for
  `--hold` seconds, then drops it all.
- `--mode hello` is a handshake slowloris: each connection sends its ClientHello a byte every
  `--every` seconds until the server closes it, and the last line gives how long they lived.

`--burst N` opens N at a time, each group once the one before is open (1: one after another).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import ssl
import sys
import time

import uvloop


async def flood(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(cafile=args.ca)
    readers: list[asyncio.StreamReader] = []
    held: list[socket.socket] = []
    started = time.monotonic()
    failed = 0

    async def open_one() -> None:
        nonlocal failed
        try:
            if args.mode == "still":
                held.append(await handshake(args.port, context))
            else:
                reader, _ = await asyncio.open_connection(
                    "127.0.0.1", args.port, ssl=context, server_hostname="localhost"
                )
                readers.append(reader)
        except (OSError, ssl.SSLError, TimeoutError):
            failed += 1  # closed by the server before the handshake ended, to make room

    if args.mode == "hello":
        await slowloris(args, context)
        return

    for first in range(0, args.count, args.burst):
        await asyncio.gather(*(open_one() for _ in range(min(args.burst, args.count - first))))
    report(opened=len(readers) + len(held), failed=failed, seconds=time.monotonic() - started)

    if args.mode == "still":
        await asyncio.sleep(args.hold)
        for sock in held:
            sock.close()
        report(ended=len(held), seconds=time.monotonic() - started)
        return

    async def ended(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), args.wait) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    results = await asyncio.gather(*(ended(reader) for reader in readers))
    report(ended=sum(results), seconds=time.monotonic() - started)


async def handshake(port: int, context: ssl.SSLContext) -> socket.socket:
    """A TLS handshake over a plain socket, which is then never read again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if outgoing.pending:
            await loop.sock_sendall(sock, outgoing.read())
        if done:
            return sock
        data = await loop.sock_recv(sock, 65536)
        if not data:
            sock.close()
            raise ConnectionResetError("closed during the handshake")
        incoming.write(data)


async def slowloris(args: argparse.Namespace, context: ssl.SSLContext) -> None:
    started = time.monotonic()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="x")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # it waits for the server's answer, the ClientHello written
    hello = outgoing.read()
    lives: list[float] = []

    async def dribble() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        opened = time.monotonic()
        closed: asyncio.Future[bytes] | None = None
        try:
            await loop.sock_connect(sock, ("127.0.0.1", args.port))
            closed = asyncio.ensure_future(loop.sock_recv(sock, 1024))
            for byte in range(len(hello)):
                await loop.sock_sendall(sock, hello[byte : byte + 1])
                await asyncio.wait([closed], timeout=args.every)
                if closed.done():
                    lives.append(time.monotonic() - opened)
                    return
        except OSError:
            lives.append(time.monotonic() - opened)
        finally:
            if closed is not None and closed.done():
                closed.exception()  # a reset is how the server ends it: retrieved, not logged
            elif closed is not None:
                closed.cancel()
            sock.close()

    tasks = []
    for first in range(0, args.count, args.burst):
        batch = min(args.burst, args.count - first)
        tasks += [asyncio.ensure_future(dribble()) for _ in range(batch)]
        await asyncio.sleep(0.5)
    report(opened=len(tasks), seconds=time.monotonic() - started)
    await asyncio.gather(*tasks)
    longest = max(lives, default=0.0)
    report(ended=len(lives), longest=longest, seconds=time.monotonic() - started)


def report(**fields: float) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--burst", type=int, default=512, help="connections opened at a time")
    parser.add_argument("--mode", choices=["read", "still", "hello"], default="read")
    parser.add_argument("--every", type=float, default=1.0, help="a hello's pace, s a byte")
    parser.add_argument("--wait", type=float, default=60.0, help="longest wait for the ends")
    parser.add_argument("--hold", type=float, default=0.0, help="a still client's hold, s")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.count + 256:
        sys.exit(f"needs {args.count + 256} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(flood(args))


if __name__ == "__main__":
    main()
