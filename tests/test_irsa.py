"""How the EKS pod-identity webhook's Pod annotations read, for the cases its own source decides:
skip-containers as one line of Go CSV, token-expiration as strconv.ParseInt with its minimum."""

from __future__ import annotations

import pytest

from webhook.core.irsa import read


@pytest.mark.parametrize(
    ("raw", "skipped"),
    [
        ("sidecar", {"sidecar"}),
        ("a,b", {"a", "b"}),
        # Go's reader keeps spaces (TrimLeadingSpace is off): " b" is not "b".
        ("a, b", {"a", " b"}),
        ('"a,b",c', {"a,b", "c"}),
        ('x,"a,b"', {"x", "a,b"}),
        ('a,"b""c"', {"a", 'b"c'}),
        ("a,", {"a", ""}),
        ("\nsidecar", {"sidecar"}),
        ('"a"b', set()),
        ('"a', set()),
        ("", set()),
        # A bare quote inside a field is an error, and an error skips nothing.
        ('a"b', set()),
        # One record: a second line is not read.
        ("a\nb", {"a"}),
    ],
)
def test_skip_containers(raw: str, skipped: set[str]) -> None:
    metadata = {"annotations": {"eks.amazonaws.com/skip-containers": raw}}
    assert read(metadata, {}).skipped == skipped


@pytest.mark.parametrize(
    ("raw", "seconds", "noted"),
    [
        ("3600", 3600, False),
        ("+3600", 3600, False),
        ("0", 600, False),
        ("-5", 600, False),
        ("599", 600, False),
        (" 3600", 86400, True),
        ("1_000", 86400, True),
        ("an hour", 86400, True),
        (str(2**32 + 1), 2**32, True),
    ],
)
def test_token_expiration(raw: str, seconds: int, noted: bool) -> None:
    found = read({"annotations": {"eks.amazonaws.com/token-expiration": raw}}, {})
    assert found.expiration == seconds
    assert bool(found.problems) is noted


@pytest.mark.parametrize(
    ("spec", "windows"),
    [
        ({"nodeSelector": {"kubernetes.io/os": "windows"}}, True),
        ({"nodeSelector": {"beta.kubernetes.io/os": "windows"}}, True),
        ({"os": {"name": "windows"}}, True),
        ({"nodeSelector": {"kubernetes.io/os": "linux"}}, False),
        ({"nodeSelector": {"kubernetes.io/os": "Windows"}}, False),
        ({"nodeSelector": "windows"}, False),
        ({}, False),
    ],
)
def test_windows(spec: dict[str, object], windows: bool) -> None:
    found = read({}, spec)
    assert found.windows is windows
    expected = "C:\\var\\run\\token" if windows else "/var/run/token"
    assert found.token_file("/var/run/token") == expected
    # A Windows mount path of the container's own keeps its drive.
    own = "C:\\creds\\token" if windows else "C:\\creds/token"
    assert found.token_file("C:\\creds/token") == own
