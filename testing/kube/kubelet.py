"""A container's environment as the kubelet makes it: Downward API fields, then `$(VAR)`.

The rules are the kubelet's (`pkg/kubelet/kubelet_pods.go` makeEnvironmentVariables, and
`third_party/forked/golang/expansion/expand.go`), as Kubernetes documents them for
"Define Dependent Environment Variables":
- variables are made in the order they are defined; a value is expanded with those defined
  before it (and the service variables), never with later ones;
- `$(VAR)` of a defined variable is its value; of an undefined one, stays as written;
- `$$` is one `$`, so `$$(VAR)` is the text `$(VAR)`; any other `$` stays as it is, and so does
  a `$(` with no closing `)`;
- a Downward API value is used as it is, never expanded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_INDEXED = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def expand(value: str, defined: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "$" or i + 1 == len(value):
            out.append(char)
            i += 1
            continue
        after = value[i + 1]
        if after == "$":
            out.append("$")
            i += 2
        elif after == "(":
            close = value.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = value[i + 2 : close]
            out.append(defined.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append("$" + after)
            i += 2
    return "".join(out)


def field(pod: dict[str, Any], path: str) -> str:
    """A Downward API `fieldRef.fieldPath` of a stored Pod ("" where not yet set)."""
    indexed = _INDEXED.match(path)
    if indexed:
        return str((pod["metadata"].get(indexed[1]) or {}).get(indexed[2], ""))
    paths = {
        "metadata.name": ("metadata", "name"),
        "metadata.namespace": ("metadata", "namespace"),
        "metadata.uid": ("metadata", "uid"),
        "spec.nodeName": ("spec", "nodeName"),
        "spec.serviceAccountName": ("spec", "serviceAccountName"),
        "status.hostIP": ("status", "hostIP"),
        "status.podIP": ("status", "podIP"),
    }
    if path not in paths:
        raise NotImplementedError(f"fieldPath {path}")
    section, key = paths[path]
    return str((pod.get(section) or {}).get(key) or "")


def environment(
    pod: dict[str, Any], container: str, service: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables the named container's process starts with (env only, no envFrom)."""
    [spec] = [
        c
        for group in ("initContainers", "containers")
        for c in pod["spec"].get(group) or ()
        if c["name"] == container
    ]
    made: dict[str, str] = {}
    for entry in spec.get("env") or ():
        if entry.get("value"):
            made[entry["name"]] = expand(entry["value"], {**(service or {}), **made})
        elif "valueFrom" in entry:
            source = entry["valueFrom"]
            if "fieldRef" not in source:
                raise NotImplementedError(f"valueFrom {sorted(source)}")
            made[entry["name"]] = field(pod, source["fieldRef"]["fieldPath"])
        else:
            made[entry["name"]] = ""
    return made
