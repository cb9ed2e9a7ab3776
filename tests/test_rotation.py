"""Renewing the shared certificate with no CA key kept: the leader's steps, one by one, and at
every moment the served certificate is trusted by the caBundle the API server holds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from webhook.tls import certs, rotation

NAMES, IPS = ["mlflow-webhook.mlflow-webhook.svc"], ["127.0.0.1"]
OVERLAP = dt.timedelta(minutes=1)
NOW = dt.datetime.now(dt.UTC)


def near_expiry() -> dict[str, bytes]:
    """As a Secret is a year on: its serving certificate expires in 5 days."""
    ca = certs.generate_ca(days=366)
    serving = certs.issue_serving(ca, NAMES, IPS, days=5)
    return {"ca.crt": ca.cert, "tls.key": serving.key, "tls.crt": serving.cert}


def step(files: dict[str, bytes], **overrides: Any) -> rotation.Step:
    given: dict[str, Any] = {
        "live_bundle": files["ca.crt"],
        "since": None,
        "now": NOW,
        "overlap": OVERLAP,
        "dns_names": NAMES,
        "ips": IPS,
    }
    return rotation.next_step(files, **{**given, **overrides})


def trusted(files: dict[str, bytes], bundle: bytes) -> bool:
    return any(certs.issued_by(files["tls.crt"], ca) for ca in certs.bundle(bundle))


def test_a_fresh_secret_has_no_ca_key_and_needs_nothing() -> None:
    files = rotation.fresh(NAMES, IPS)
    assert set(files) == {"ca.crt", "tls.crt", "tls.key"}
    assert trusted(files, files["ca.crt"])
    assert step(files).action == "ok"


def test_a_renewal_from_start_to_end() -> None:
    """Stage, wait for the overlap and for the caBundle, switch, wait, trim; the API server's
    caBundle (`live`) trusts what is served at every moment, and no CA key is ever stored."""
    files = near_expiry()
    live = old_ca = files["ca.crt"]
    staged = step(files)
    assert staged.action == "stage"
    files = staged.files
    assert certs.bundle(files["ca.crt"])[0] == old_ca and len(certs.bundle(files["ca.crt"])) == 2
    assert trusted(files, live)  # still serving the old pair; the caBundle is not yet patched
    # Within the overlap, or before the caBundle holds the new CA, nothing moves.
    assert step(files, since=NOW, live_bundle=live).action == "wait"
    assert step(files, since=NOW - OVERLAP, live_bundle=live).action == "wait"
    live = files["ca.crt"]  # the leader patched the caBundle with the staged bundle
    assert step(files, since=NOW - OVERLAP / 2, live_bundle=live).action == "wait"
    switched = step(files, since=NOW - OVERLAP, live_bundle=live)
    assert switched.action == "switch"
    files = switched.files
    assert rotation.NEXT_CERT not in files and trusted(files, live)
    assert certs.not_after(files["tls.crt"]) > NOW + dt.timedelta(days=300)
    # Replicas still loading the new pair keep the old CA trusted for one more overlap.
    assert step(files, since=NOW, live_bundle=live).action == "ok"
    trimmed = step(files, since=NOW - OVERLAP, live_bundle=live)
    assert trimmed.action == "trim"
    files = trimmed.files
    assert certs.bundle(files["ca.crt"]) == certs.bundle(live)[1:]
    assert trusted(files, files["ca.crt"])
    assert step(files, since=NOW - OVERLAP).action == "ok"


@pytest.mark.parametrize(
    ("case", "files", "action"),
    [
        (
            "an earlier version's CA key: dropped, and that CA renewed away",
            {**rotation.fresh(NAMES, IPS), "ca.key": b"old key"},
            "stage",
        ),
        ("names not covered: a new pair", rotation.fresh(["other.svc"], IPS), "stage"),
    ],
)
def test_other_states(case: str, files: dict[str, bytes], action: str) -> None:
    done = step(files)
    assert done.action == action, case
    assert "ca.key" not in done.files


def test_no_switch_while_the_caBundle_cannot_be_read() -> None:
    staged = step(near_expiry()).files
    assert step(staged, live_bundle=None).action == "wait"
