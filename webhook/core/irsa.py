"""The EKS pod-identity webhook's own rules for IRSA wiring, so that whichever of the two runs
first, a Pod ends up wired the same (aws/amazon-eks-pod-identity-webhook, pkg/handler/handler.go
and pkg/annotations.go).

Its ServiceAccount annotations are not read here: the ServiceAccount is ours, its `role-arn` is
ours to set, the token's audience is `sts.amazonaws.com` because the role's trust policy says so,
and `sts-regional-endpoints` only adds `AWS_STS_REGIONAL_ENDPOINTS=regional`, which botocore
has used by default since 1.36 (the pod-identity webhook still adds it where it is set up to,
whether it runs before or after us).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from webhook.core.echo import shown
from webhook.core.optin import mapping
from webhook.core.settings import TOKEN_EXPIRATION_SECONDS

DOMAIN = "eks.amazonaws.com"
SKIP_CONTAINERS = f"{DOMAIN}/skip-containers"  # SkipContainersAnnotation
TOKEN_EXPIRATION = f"{DOMAIN}/token-expiration"  # TokenExpirationAnnotation
# pkg.MinTokenExpiration: what the API server accepts at the least. The API server also refuses
# more than 2**32 seconds, which the pod-identity webhook would pass on; we cap it instead.
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2**32
# The node selectors getPodSpecPatch reads; `spec.os.name` (GA since Kubernetes 1.25) says the
# same, and we read it too: such a Pod can only run on Windows.
_OS_SELECTORS = ("kubernetes.io/os", "beta.kubernetes.io/os")
_KEYS = frozenset({SKIP_CONTAINERS, TOKEN_EXPIRATION})
_INTEGER = re.compile(r"\A[+-]?[0-9]+\Z")


@dataclass(frozen=True)
class Irsa:
    """What a Pod's own annotations and node selection change in its IRSA wiring."""

    windows: bool = False
    skipped: frozenset[str] = frozenset()
    expiration: int = TOKEN_EXPIRATION_SECONDS
    # (target, reason) pairs, for the mutation's notes.
    problems: tuple[tuple[str, str], ...] = ()

    def token_file(self, path: str) -> str:
        """The token's path as the container's process sees it: on Windows, `C:\\var\\...`."""
        if not self.windows:
            return path
        # A mount at a Windows path of the container's own has its drive already.
        drive = "C:" if path.startswith("/") else ""
        return drive + path.replace("/", "\\")


_PLAIN = Irsa()


def read(metadata: dict[str, Any], spec: dict[str, Any]) -> Irsa:
    annotations = metadata.get("annotations") or {}
    if not ("nodeSelector" in spec or "os" in spec or _KEYS.intersection(annotations)):
        return _PLAIN  # most Pods: nothing of this to read
    selector = mapping(spec.get("nodeSelector"))
    windows = any(selector.get(k) == "windows" for k in _OS_SELECTORS)
    windows = windows or mapping(spec.get("os")).get("name") == "windows"
    problems: list[tuple[str, str]] = []
    expiration = _expiration(annotations.get(TOKEN_EXPIRATION), problems)
    return Irsa(windows, _skipped(annotations.get(SKIP_CONTAINERS)), expiration, tuple(problems))


def _skipped(raw: str | None) -> frozenset[str]:
    """The names in a skip-containers annotation, read as its webhook reads them: the first
    record of Go's encoding/csv (quotes honoured, spaces kept), none when it does not parse."""
    try:
        return frozenset(_csv_record(raw or ""))
    except ValueError:
        return frozenset()


def _csv_record(text: str) -> list[str]:
    """Go's csv.Reader.Read with its defaults: empty lines skipped, a bare quote in an unquoted
    field or anything but a comma after a closing quote an error (ValueError)."""
    text = text.lstrip("\r\n")
    if not text:
        return []
    fields: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            field, i = [], i + 1
            while True:
                close = text.find('"', i)
                if close < 0:
                    raise ValueError("extraneous or missing quote in a quoted field")
                field.append(text[i:close])
                if text.startswith('"', close + 1):  # "" is one quote
                    field.append('"')
                    i = close + 2
                    continue
                i = close + 1
                break
            fields.append("".join(field))
            if i == len(text) or text[i] in "\r\n":
                return fields
            if text[i] != ",":
                raise ValueError("extraneous or missing quote in a quoted field")
            i += 1
            continue
        end = len(text)
        for stop in (",", "\n", "\r"):
            found = text.find(stop, i)
            if 0 <= found < end:
                end = found
        field_text = text[i:end]
        if '"' in field_text:
            raise ValueError("bare quote in a non-quoted field")
        fields.append(field_text)
        if end == len(text) or text[end] != ",":
            return fields
        i = end + 1


def _expiration(raw: str | None, problems: list[tuple[str, str]]) -> int:
    if raw is None:
        return TOKEN_EXPIRATION_SECONDS
    target = f"annotation {TOKEN_EXPIRATION}"
    # strconv.ParseInt(raw, 10, 64): a sign and digits, nothing else (Python's int() would
    # also take spaces and underscores).
    if not _INTEGER.match(raw):
        problems.append((target, f"{shown(raw)} is not a number of seconds; the token lasts "
                                 f"{TOKEN_EXPIRATION_SECONDS} s"))  # fmt: skip
        return TOKEN_EXPIRATION_SECONDS
    seconds = int(raw)
    if seconds > MAX_EXPIRATION:
        problems.append((target, f"{seconds} s is more than the API server takes; "
                                 f"{MAX_EXPIRATION} s"))  # fmt: skip
        return MAX_EXPIRATION
    return max(seconds, MIN_EXPIRATION)
