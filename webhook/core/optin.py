"""Whether a Pod (or Pod template) asks to be injected, from its labels and annotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.settings import Settings

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

_TRUE = frozenset({"true", "enabled", "yes"})
_FALSE = frozenset({"false", "disabled", "no"})

Verdict = Literal["opted-in", "not-opted-in", "opted-out", "mirror-pod", "invalid-opt-in"]


@dataclass(frozen=True)
class OptIn:
    verdict: Verdict
    detail: str = ""

    @property
    def inject(self) -> bool:
        return self.verdict == "opted-in"


def opt_in(metadata: dict[str, Any], settings: Settings, *, default: bool = False) -> OptIn:
    """The label wins over the annotation; `default` is what an unmarked object gets."""
    annotations = metadata.get("annotations") or {}
    if MIRROR_ANNOTATION in annotations:
        return OptIn("mirror-pod")
    key = settings.inject_key
    labels = metadata.get("labels") or {}
    source, value = (
        ("label", labels[key]) if key in labels else ("annotation", annotations.get(key))
    )
    if value is None:
        return OptIn("opted-in" if default else "not-opted-in")
    word = str(value).strip().lower()
    if word in _TRUE:
        return OptIn("opted-in")
    if word in _FALSE:
        return OptIn("opted-out")
    return OptIn(
        "invalid-opt-in",
        f"{source} {key}={value!r} is neither true nor false, so nothing was injected",
    )
