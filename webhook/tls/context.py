"""A server SSLContext that picks up rotated certificate files without a restart."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

from webhook.tls.certs import CERT_FILE, KEY_FILE, not_after


class ReloadingContext:
    """One SSLContext for the server's lifetime, whose certificate can be replaced in place.

    New handshakes use the new pair; connections already open keep theirs. A pair that
    does not load (say, a key written before its certificate) is tried again next time,
    while the old pair keeps serving.
    """

    def __init__(self, cert_dir: Path) -> None:
        self.cert_path = cert_dir / CERT_FILE
        self.key_path = cert_dir / KEY_FILE
        self.context = self._new_context()
        self._loaded: tuple[bytes, bytes] = (b"", b"")
        self.expiry: dt.datetime | None = None
        self.generation = 0
        if not self.reload():
            raise FileNotFoundError(f"no usable {CERT_FILE}/{KEY_FILE} in {cert_dir}")

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The API server offers h2 first; say plainly that this server speaks HTTP/1.1.
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _read(self) -> tuple[bytes, bytes] | None:
        try:
            return self.cert_path.read_bytes(), self.key_path.read_bytes()
        except OSError:
            return None

    def reload(self) -> bool:
        """Load the files if they changed; True when the context now holds them."""
        pair = self._read()
        if pair is None:
            return False
        if pair == self._loaded:
            return True
        try:
            expiry = not_after(pair[0])
            # Prove the pair in a scratch context first, so a bad pair never reaches the live one,
            # and load both from the very bytes just read, not from files that may move again.
            _load(self._new_context(), pair)
            _load(self.context, pair)
        except (ssl.SSLError, OSError, ValueError):
            return False
        self._loaded, self.expiry = pair, expiry
        self.generation += 1
        return True


def _load(context: ssl.SSLContext, pair: tuple[bytes, bytes]) -> None:
    """load_cert_chain reads only paths; an anonymous memory file is one nothing else changes."""
    fd = os.memfd_create("tls-pair", os.MFD_CLOEXEC)
    try:
        os.write(fd, pair[0] + b"\n" + pair[1])
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
