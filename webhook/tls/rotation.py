"""Renewing the shared self-signed certificate when no CA key is kept.

The CA's key is dropped as soon as it has signed the serving certificate, so nothing that reads
the Secret (every replica does) can sign anything. A renewal is therefore a new CA with a new
serving pair, rolled out in steps that keep every client trusting the caBundle working:

1. stage: the new CA joins the bundle, so the caBundle trusts the old and the new, and the new
   pair waits in the Secret as next.crt and next.key;
2. switch: once the caBundle has held both for `overlap`, the new pair becomes tls.crt and
   tls.key, and every replica loads it;
3. trim: once the replicas have had `overlap` to load it, a CA that signed neither pair leaves
   the bundle.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from webhook.tls import certs

SERVING = ("ca.crt", "tls.key", "tls.crt")  # all a replica writes to its certificate folder
NEXT_CERT, NEXT_KEY = "next.crt", "next.key"
OLD_CA_KEY = "ca.key"  # kept by earlier versions


@dataclass(frozen=True)
class Step:
    action: str  # ok, wait, stage, switch, trim or forget-ca-key
    files: dict[str, bytes]  # the Secret's data after the step

    @property
    def changed(self) -> bool:
        return self.action not in ("ok", "wait")


def fresh(dns_names: list[str], ips: list[str]) -> dict[str, bytes]:
    """A first CA and serving pair, the CA's key already gone."""
    ca, serving = certs.issue_without_ca_key(dns_names, ips)
    return {"ca.crt": ca, "tls.key": serving.key, "tls.crt": serving.cert}


def due(cert: bytes, now: dt.datetime, dns_names: list[str], ips: list[str]) -> bool:
    return certs.not_after(cert) < now + certs.RENEW_BEFORE or not certs.covers(
        cert, dns_names, ips
    )


def next_step(
    files: dict[str, bytes],
    *,
    live_bundle: bytes | None,
    since: dt.datetime | None,
    now: dt.datetime,
    overlap: dt.timedelta,
    dns_names: list[str],
    ips: list[str],
) -> Step:
    """The one step the leader takes now. `live_bundle` is the caBundle the webhook
    configuration holds; `since` is when the last stage or switch was written."""
    files = dict(files)
    # An earlier version kept the CA's key beside the rest: whoever read it could sign, so that
    # CA is renewed away at once.
    exposed = files.pop(OLD_CA_KEY, None) is not None
    waited = since is None or now - since >= overlap
    cas = certs.bundle(files["ca.crt"])
    if NEXT_CERT in files:
        trusted = certs.bundle(live_bundle) if live_bundle else []
        ready = [ca for ca in trusted if certs.issued_by(files[NEXT_CERT], ca)]
        if not (waited and ready):
            return Step("forget-ca-key" if exposed else "wait", files)
        files["tls.crt"], files["tls.key"] = files.pop(NEXT_CERT), files.pop(NEXT_KEY)
        return Step("switch", files)
    signing = [ca for ca in cas if certs.issued_by(files["tls.crt"], ca)]
    if exposed or due(files["tls.crt"], now, dns_names, ips):
        ca, serving = certs.issue_without_ca_key(dns_names, ips)
        files["ca.crt"] = b"".join([*signing, ca])
        files[NEXT_CERT], files[NEXT_KEY] = serving.cert, serving.key
        return Step("stage", files)
    if signing and len(signing) < len(cas) and waited:
        files["ca.crt"] = b"".join(signing)
        return Step("trim", files)
    return Step("ok", files)
